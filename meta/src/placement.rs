//! Choosing nodes for new processes, from live node snapshots.
//!
//! [`snapshots`] asks every candidate node for its `nodeinfo` and `status`; [`plan`]
//! is a pure function of those snapshots, so every strategy can be tested with a
//! known load, and `--dry-run` shows exactly what would be done and why. Nothing is
//! remembered between calls: round-robin, for instance, continues from the number
//! of the watcher's processes the pool runs now.
//!
//! Processes are placed one at a time; each placed process counts against its node
//! (one more process, one more unit of load), so `-n 6` spreads rather than piling
//! onto the node that looked best at first.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ringmaster_protocol::message::{NodeInfo, WatcherStatus};
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, Response};

use crate::fanout::NodeError;
use crate::pools::NodeSpec;

/// How to choose nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Lowest 1-minute load per CPU (counting what is placed).
    LeastLoaded,
    /// Nodes in name order, continuing from the watcher's current process count.
    RoundRobin,
    /// Fewest supervised processes (counting what is placed).
    FewestProcesses,
    /// Balance the watcher's processes across the values of a label (e.g. zones),
    /// then least-loaded within a value. Nodes without the label are not used.
    Spread(String),
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "least-loaded" => Ok(Strategy::LeastLoaded),
            "round-robin" => Ok(Strategy::RoundRobin),
            "fewest-processes" => Ok(Strategy::FewestProcesses),
            other => match other.strip_prefix("spread:") {
                Some(label) if !label.is_empty() => Ok(Strategy::Spread(label.to_string())),
                _ => Err(format!(
                    "unknown placement strategy '{other}': use least-loaded, round-robin, \
                     fewest-processes or spread:LABEL"
                )),
            },
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::LeastLoaded => f.write_str("least-loaded"),
            Strategy::RoundRobin => f.write_str("round-robin"),
            Strategy::FewestProcesses => f.write_str("fewest-processes"),
            Strategy::Spread(label) => write!(f, "spread:{label}"),
        }
    }
}

/// What a node said about itself just now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// The node as the pools file describes it.
    pub spec: NodeSpec,
    /// Its `nodeinfo`.
    pub info: NodeInfo,
    /// Its `status`.
    pub watchers: Vec<WatcherStatus>,
    /// Round trip of the `nodeinfo` request.
    pub rtt: Duration,
}

impl NodeSnapshot {
    /// The watcher called `name`, if the node has it.
    pub fn watcher(&self, name: &str) -> Option<&WatcherStatus> {
        self.watchers.iter().find(|w| w.name == name)
    }

    /// 1-minute load per CPU.
    pub fn load_per_cpu(&self) -> f64 {
        self.info.load[0] / f64::from(self.info.cpus.max(1))
    }
}

/// Asks each node for `nodeinfo` then `status`, concurrently across nodes.
pub async fn snapshots(
    nodes: &[NodeSpec],
    timeout: Duration,
) -> Vec<(NodeSpec, Result<NodeSnapshot, NodeError>)> {
    join_all(
        nodes
            .iter()
            .map(|node| async move { (node.clone(), snapshot(node, timeout).await) }),
    )
    .await
}

/// One node's snapshot.
pub async fn snapshot(node: &NodeSpec, timeout: Duration) -> Result<NodeSnapshot, NodeError> {
    let mut client = Client::new(node.control.clone(), timeout).with_keys(node.keys.clone());
    let started = Instant::now();
    let info = match client.call(Command::NodeInfo {}).await? {
        Response::NodeInfo(info) => *info,
        other => return Err(unexpected("nodeinfo", &other)),
    };
    let rtt = started.elapsed();
    let watchers = match client.call(Command::Status { name: None }).await? {
        Response::Status(list) => list,
        other => return Err(unexpected("status", &other)),
    };
    Ok(NodeSnapshot {
        spec: node.clone(),
        info,
        watchers,
        rtt,
    })
}

fn unexpected(what: &str, response: &Response) -> NodeError {
    NodeError::Unreachable(format!("unexpected answer to {what}: {response:?}"))
}

/// What to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The watcher.
    pub watcher: String,
    /// How many processes in all.
    pub count: u32,
    /// How to choose.
    pub strategy: Strategy,
    /// Only nodes that already have the watcher (`incr`), rather than any node
    /// (`add`).
    pub existing_only: bool,
}

/// Processes to place on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node.
    pub node: String,
    /// How many processes.
    pub count: u32,
    /// The node already has the watcher (so processes are added with `incr`).
    pub has_watcher: bool,
    /// Why this node, in the strategy's terms.
    pub why: String,
}

/// A node that was not a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// The node.
    pub node: String,
    /// Why not.
    pub reason: String,
}

/// The outcome of planning: where processes go and which nodes were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The strategy used.
    pub strategy: Strategy,
    /// Nodes that get processes, by name.
    pub placements: Vec<Placement>,
    /// Nodes that were not candidates.
    pub excluded: Vec<Excluded>,
}

/// Why nothing can be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlacementError {
    /// What is wrong.
    pub message: String,
    /// Nodes that were not candidates, and why.
    pub excluded: Vec<Excluded>,
}

struct Candidate<'a> {
    snap: &'a NodeSnapshot,
    placed: u32,
}

impl Candidate<'_> {
    fn projected_load(&self) -> f64 {
        (self.snap.info.load[0] + f64::from(self.placed)) / f64::from(self.snap.info.cpus.max(1))
    }
    fn projected_processes(&self) -> u64 {
        u64::from(self.snap.info.processes) + u64::from(self.placed)
    }
    fn watcher_processes(&self, watcher: &str) -> u64 {
        u64::from(self.snap.watcher(watcher).map_or(0, |w| w.numprocesses))
    }
}

/// Chooses nodes for `request` among `snapshots`; `excluded` are nodes already
/// left out (unreachable ones), reported with the rest.
pub fn plan(
    snapshots: &[NodeSnapshot],
    mut excluded: Vec<Excluded>,
    request: &Request,
) -> Result<Plan, PlacementError> {
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for snap in snapshots {
        let has = snap.watcher(&request.watcher).is_some();
        if request.existing_only && !has {
            excluded.push(Excluded {
                node: snap.spec.name.clone(),
                reason: format!("has no watcher '{}'", request.watcher),
            });
            continue;
        }
        if let Strategy::Spread(label) = &request.strategy {
            if !snap.spec.labels.contains_key(label) && !snap.info.labels.contains_key(label) {
                excluded.push(Excluded {
                    node: snap.spec.name.clone(),
                    reason: format!("has no label '{label}'"),
                });
                continue;
            }
        }
        candidates.push(Candidate { snap, placed: 0 });
    }
    if candidates.is_empty() {
        return Err(PlacementError {
            message: format!(
                "no node can take processes of '{}' with {}",
                request.watcher, request.strategy
            ),
            excluded,
        });
    }
    candidates.sort_by(|a, b| a.snap.spec.name.cmp(&b.snap.spec.name));
    let mut order: Vec<usize> = Vec::new();
    let rotation_start = {
        let total: u64 = candidates
            .iter()
            .map(|c| c.watcher_processes(&request.watcher))
            .sum();
        (total % candidates.len() as u64) as usize
    };
    for step in 0..request.count as usize {
        let chosen = match &request.strategy {
            Strategy::LeastLoaded => min_index(&candidates, |c| {
                (c.projected_load(), c.projected_processes() as f64)
            }),
            Strategy::FewestProcesses => min_index(&candidates, |c| {
                (c.projected_processes() as f64, c.projected_load())
            }),
            Strategy::RoundRobin => (rotation_start + step) % candidates.len(),
            Strategy::Spread(label) => {
                let value_of = |c: &Candidate<'_>| label_value(c.snap, label);
                let mut per_value: BTreeMap<String, u64> = BTreeMap::new();
                for c in &candidates {
                    *per_value.entry(value_of(c)).or_default() +=
                        c.watcher_processes(&request.watcher) + u64::from(c.placed);
                }
                min_index(&candidates, |c| {
                    (
                        per_value.get(&value_of(c)).copied().unwrap_or(0) as f64,
                        c.projected_load(),
                    )
                })
            }
        };
        candidates[chosen].placed += 1;
        if !order.contains(&chosen) {
            order.push(chosen);
        }
    }
    let mut placements: Vec<Placement> = order
        .into_iter()
        .map(|i| {
            let c = &candidates[i];
            Placement {
                node: c.snap.spec.name.clone(),
                count: c.placed,
                has_watcher: c.snap.watcher(&request.watcher).is_some(),
                why: why(c.snap, request, rotation_start, &candidates),
            }
        })
        .collect();
    placements.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Plan {
        strategy: request.strategy.clone(),
        placements,
        excluded,
    })
}

fn label_value(snap: &NodeSnapshot, label: &str) -> String {
    snap.spec
        .labels
        .get(label)
        .or_else(|| snap.info.labels.get(label))
        .cloned()
        .unwrap_or_default()
}

/// Index of the candidate with the smallest key; ties go to the first in name
/// order.
fn min_index<F>(candidates: &[Candidate<'_>], key: F) -> usize
where
    F: Fn(&Candidate<'_>) -> (f64, f64),
{
    let mut best = 0;
    let mut best_key = (f64::INFINITY, f64::INFINITY);
    for (i, c) in candidates.iter().enumerate() {
        let k = key(c);
        if k.0 < best_key.0 || (k.0 == best_key.0 && k.1 < best_key.1) {
            best = i;
            best_key = k;
        }
    }
    best
}

fn why(
    snap: &NodeSnapshot,
    request: &Request,
    rotation_start: usize,
    candidates: &[Candidate<'_>],
) -> String {
    let load = format!(
        "load {:.2} on {} CPUs ({:.2}/CPU)",
        snap.info.load[0],
        snap.info.cpus,
        snap.load_per_cpu()
    );
    match &request.strategy {
        Strategy::LeastLoaded => load,
        Strategy::FewestProcesses => format!("{} processes supervised", snap.info.processes),
        Strategy::RoundRobin => {
            let first = candidates
                .get(rotation_start)
                .map_or("", |c| c.snap.spec.name.as_str());
            format!(
                "in turn over {} nodes by name, starting at {first}",
                candidates.len()
            )
        }
        Strategy::Spread(label) => {
            let value = label_value(snap, label);
            let here: u64 = candidates
                .iter()
                .filter(|c| label_value(c.snap, label) == value)
                .map(|c| c.watcher_processes(&request.watcher))
                .sum();
            format!(
                "{label}={value} had {here} '{}' processes; {load}",
                request.watcher
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ringmaster_protocol::message::WatcherState;

    fn node(
        name: &str,
        zone: &str,
        load: f64,
        cpus: u32,
        processes: u32,
        worker: u32,
    ) -> NodeSnapshot {
        let labels: BTreeMap<String, String> = [("zone".to_string(), zone.to_string())].into();
        let watchers = if worker > 0 {
            vec![WatcherStatus {
                processes: worker,
                numprocesses: worker,
                ..WatcherStatus::new("worker", WatcherState::Active)
            }]
        } else {
            Vec::new()
        };
        NodeSnapshot {
            spec: NodeSpec {
                name: name.into(),
                control: String::new(),
                pubsub: String::new(),
                labels: labels.clone(),
                keys: None,
            },
            info: NodeInfo {
                node: name.into(),
                labels,
                version: String::new(),
                pid: 0,
                binary: String::new(),
                upgrades: 0,
                protocol: 1,
                uptime: 0.0,
                cpus,
                memory_total: 0,
                memory_available: 0,
                load: [load, load, load],
                processes,
                watchers: 1,
                host_processes: 0,
                control: String::new(),
                pubsub: String::new(),
                events_dropped: 0,
                sealed: false,
                refused: Default::default(),
                malformed: 0,
                control_connections: Default::default(),
                pubsub_connections: Default::default(),
            },
            watchers,
            rtt: Duration::ZERO,
        }
    }

    fn pool() -> Vec<NodeSnapshot> {
        vec![
            node("a", "eu-1", 3.0, 4, 10, 2),
            node("b", "eu-1", 0.5, 2, 40, 0),
            node("c", "eu-2", 1.0, 8, 2, 1),
        ]
    }

    fn counts(plan: &Plan) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = plan
            .placements
            .iter()
            .map(|p| (p.node.clone(), p.count))
            .collect();
        v.sort();
        v
    }

    fn request(strategy: Strategy, count: u32) -> Request {
        Request {
            watcher: "worker".into(),
            count,
            strategy,
            existing_only: false,
        }
    }

    #[test]
    fn least_loaded_takes_the_lowest_load_per_cpu_and_spreads() {
        // per CPU: a 0.75, b 0.25, c 0.125
        let plan = plan(&pool(), vec![], &request(Strategy::LeastLoaded, 1)).unwrap();
        assert_eq!(counts(&plan), [("c".into(), 1)]);
        assert!(plan.placements[0].why.contains("0.12/CPU"), "{:?}", plan);
        // c: (1+k)/8, b: (0.5+k)/2 — c takes 2 before b's 0.25 is beaten
        let plan = super::plan(&pool(), vec![], &request(Strategy::LeastLoaded, 4)).unwrap();
        assert_eq!(counts(&plan), [("b".into(), 1), ("c".into(), 3)]);
    }

    #[test]
    fn fewest_processes_counts_what_it_places() {
        let plan = plan(&pool(), vec![], &request(Strategy::FewestProcesses, 10)).unwrap();
        // c has 2, a has 10: c gets 8 to reach 10, then they alternate.
        assert_eq!(counts(&plan), [("a".into(), 1), ("c".into(), 9)]);
    }

    #[test]
    fn round_robin_continues_from_the_pools_process_count() {
        // 3 worker processes in the pool, 3 nodes: start at index 0 (a).
        let plan = plan(&pool(), vec![], &request(Strategy::RoundRobin, 4)).unwrap();
        assert_eq!(
            counts(&plan),
            [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]
        );
        let mut more = pool();
        more[1] = node("b", "eu-1", 0.5, 2, 40, 1); // 4 in the pool: start at b
        let plan = super::plan(&more, vec![], &request(Strategy::RoundRobin, 1)).unwrap();
        assert_eq!(counts(&plan), [("b".into(), 1)]);
    }

    #[test]
    fn spread_balances_label_values_then_load() {
        // eu-1 has 2 worker processes (a), eu-2 has 1 (c): first to eu-2 (c),
        // then eu-1 and eu-2 are even at 2; eu-1's least loaded is b.
        let plan = plan(
            &pool(),
            vec![],
            &request(Strategy::Spread("zone".into()), 2),
        )
        .unwrap();
        assert_eq!(counts(&plan), [("b".into(), 1), ("c".into(), 1)]);
        let mut unlabelled = pool();
        unlabelled[2].spec.labels.clear();
        unlabelled[2].info.labels.clear();
        let plan = super::plan(
            &unlabelled,
            vec![],
            &request(Strategy::Spread("zone".into()), 1),
        )
        .unwrap();
        assert_eq!(counts(&plan), [("b".into(), 1)]);
        assert_eq!(plan.excluded[0].node, "c");
        assert!(plan.excluded[0].reason.contains("no label 'zone'"));
    }

    #[test]
    fn incr_uses_only_nodes_with_the_watcher() {
        let mut req = request(Strategy::LeastLoaded, 3);
        req.existing_only = true;
        let plan = plan(&pool(), vec![], &req).unwrap();
        assert_eq!(counts(&plan), [("c".into(), 3)]);
        assert!(plan.placements.iter().all(|p| p.has_watcher));
        assert!(plan.excluded.iter().any(|e| e.node == "b"));
    }

    #[test]
    fn nothing_to_choose_from_is_an_error_with_reasons() {
        let excluded = vec![Excluded {
            node: "d".into(),
            reason: "unreachable".into(),
        }];
        let err = plan(&[], excluded, &request(Strategy::LeastLoaded, 1)).unwrap_err();
        assert!(err.message.contains("no node can take"));
        assert_eq!(err.excluded.len(), 1);
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in [
            "least-loaded",
            "round-robin",
            "fewest-processes",
            "spread:zone",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        assert!("spread:".parse::<Strategy>().is_err());
        assert!("random"
            .parse::<Strategy>()
            .unwrap_err()
            .contains("spread:LABEL"));
    }
}
