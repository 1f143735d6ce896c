//! What `nodetop` knows: the published stream of any number of nodes, folded into
//! one snapshot.
//!
//! The model is pure data. [`Model::apply`] folds one [`Published`] message (a
//! statistics sample or an event, from whichever node sent it) into per-node host
//! statistics, per-watcher processes and per-process samples; [`Model::prune`]
//! forgets what the nodes stopped reporting; the query methods turn the snapshot
//! into sorted, filtered rows. Time is always passed in (`now`), so that tests are
//! deterministic, and nothing here knows about terminals or sockets: whether the
//! messages come from one agent, several, or a `nodemeta` relaying a pool makes no
//! difference. The relay's own `stat.pool` message (whose `node` is the pool's
//! name, not a node's) only tells which nodes the pool has: each is expected, as
//! [`Model::expect_node`] does for the nodes of `--pool`, so that a node never heard
//! from is listed too.
//!
//! With several nodes and no node chosen, [`Model::watcher_rows`] gives one row per
//! watcher with its totals across the nodes that have it (and their count), and
//! [`Model::process_rows`] of such a row lists its processes on every node; with one
//! node chosen (or only one known) the rows are that node's watchers.
//!
//! A node counts as up while messages keep coming; once nothing has arrived for
//! [`STALE_INTERVALS`] times its stats interval it is [`Health::Stale`]. A `reap`
//! event removes a process at once; a process or watcher the agent stops reporting
//! is pruned after the same delay.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringmaster_protocol::event::{Event, EventKind};
use ringmaster_protocol::stats::{
    HostStats, PoolStats, ProcessStats, Stat, StatKind, WatcherStats,
};
use ringmaster_protocol::transport::Published;

/// A node is stale once nothing has arrived from it for this many stats intervals.
pub const STALE_INTERVALS: f64 = 3.0;

/// The stats interval assumed for a node that has not sent host statistics yet.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a reaped pid or a removed watcher is remembered, so that a sample
/// taken just before the `reap` (or `rm`) and delivered after it does not bring it
/// back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// Everything known about every node.
#[derive(Debug, Clone, Default)]
pub struct Model {
    nodes: BTreeMap<String, Node>,
}

/// One node, as last heard of.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its latest host statistics.
    pub host: Option<HostStats>,
    /// When we started to expect messages from it (its first message, or when
    /// we learned its name from `nodeinfo`).
    pub expected_since: Instant,
    /// When its latest message arrived.
    pub last_seen: Option<Instant>,
    /// Its watchers, by name.
    pub watchers: BTreeMap<String, Watcher>,
    /// Watchers removed recently, with the event time of their `rm`.
    removed: BTreeMap<String, Tombstone>,
}

/// One watcher of a node.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// Its name.
    pub name: String,
    /// The totals the agent reported last (the rows shown are summed from the
    /// processes instead, so that they agree with the process table).
    pub reported: Option<WatcherStats>,
    /// When it was last reported or created.
    pub updated: Instant,
    /// Its processes, by pid.
    pub processes: BTreeMap<u32, Process>,
    /// Pids reaped recently, with the event time of their `reap`.
    reaped: BTreeMap<u32, Tombstone>,
}

/// One process of a watcher.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Its worker id.
    pub wid: u32,
    /// Its latest sample; absent between its `spawn` and its first sample.
    pub sample: Option<ProcessStats>,
    /// When it was last sampled (or spawned).
    pub updated: Instant,
    /// Its age in seconds at `updated`.
    age_at_update: f64,
}

impl Process {
    /// Its age at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        let since = now.saturating_duration_since(self.updated);
        Duration::try_from_secs_f64(self.age_at_update.max(0.0)).unwrap_or_default() + since
    }
}

/// Something gone, and when (in the publisher's clock), to ignore older samples.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    time: f64,
    seen: Instant,
}

/// Whether a node is sending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Health {
    /// Known, but no statistics yet.
    Waiting,
    /// Messages are arriving.
    Up,
    /// Nothing arrived for [`STALE_INTERVALS`] stats intervals.
    Stale {
        /// How long nothing has arrived.
        silent: Duration,
    },
}

/// How the model changed by a message: what a screen must redraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only figures changed; redrawing can wait for the next tick.
    Values,
    /// A node, watcher or process appeared or went away; redraw now.
    Structure,
}

/// What to sort rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// CPU use, highest first.
    #[default]
    Cpu,
    /// Resident memory, highest first.
    Memory,
    /// Node, then watcher name (processes: worker id).
    Name,
}

impl SortKey {
    /// A short name for the screen.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Memory => "mem",
            SortKey::Name => "name",
        }
    }
}

/// Which watcher rows to show, and in what order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Only this node. When absent, every node: with several nodes known, one row
    /// per watcher with its totals across them.
    pub node: Option<String>,
    /// Only watchers whose name contains this (case-insensitive); all when empty.
    pub filter: String,
    /// The order.
    pub sort: SortKey,
}

/// Names a watcher of one node, or a watcher across every node that has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatcherKey {
    /// The node; `None` for the watcher's totals across every node.
    pub node: Option<String>,
    /// The watcher.
    pub watcher: String,
}

/// One line of the watchers table: totals over its processes.
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherRow {
    /// Which watcher.
    pub key: WatcherKey,
    /// Nodes that have it (1 for a row of one node).
    pub nodes: usize,
    /// Processes known.
    pub processes: usize,
    /// Sum of their CPU use, in % of one core.
    pub cpu: f32,
    /// Sum of their resident memory, in bytes.
    pub rss: u64,
    /// Their memory in % of the host's; across nodes, in % of the memory of the
    /// nodes that have it (those whose host statistics are known).
    pub mem: f32,
}

/// One line of the processes table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    /// Its node.
    pub node: String,
    /// Pid.
    pub pid: u32,
    /// Worker id.
    pub wid: u32,
    /// CPU use in % of one core, once sampled.
    pub cpu: Option<f32>,
    /// Resident memory in bytes, once sampled.
    pub rss: Option<u64>,
    /// Memory in % of the host's, once sampled.
    pub mem: Option<f32>,
    /// Time since it started.
    pub age: Duration,
}

/// One node's header line.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Whether it is sending.
    pub health: Health,
    /// Its latest host statistics.
    pub host: Option<HostStats>,
    /// Processes known in the model.
    pub processes: usize,
}

/// The pool total line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolTotal {
    /// Nodes known.
    pub nodes: usize,
    /// Nodes up.
    pub up: usize,
    /// CPU use over the up nodes' host statistics, weighted by their CPUs (0..100).
    pub cpu: f32,
    /// Logical CPUs of those nodes.
    pub cpus: u32,
    /// Memory in use on those nodes, in bytes.
    pub memory_used: u64,
    /// Memory in all on those nodes, in bytes.
    pub memory_total: u64,
    /// Processes known, on every node.
    pub processes: usize,
}

impl Node {
    fn new(name: &str, now: Instant) -> Node {
        Node {
            name: name.to_string(),
            host: None,
            expected_since: now,
            last_seen: None,
            watchers: BTreeMap::new(),
            removed: BTreeMap::new(),
        }
    }

    /// Seconds between two samples of this node.
    pub fn interval(&self) -> Duration {
        self.host
            .as_ref()
            .and_then(|h| Duration::try_from_secs_f64(h.interval).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_INTERVAL)
    }

    /// How long silence lasts before the node counts as stale.
    pub fn stale_after(&self) -> Duration {
        self.interval().mul_f64(STALE_INTERVALS)
    }

    /// Whether it is sending, at `now`.
    pub fn health(&self, now: Instant) -> Health {
        let since = self.last_seen.unwrap_or(self.expected_since);
        let silent = now.saturating_duration_since(since);
        if silent > self.stale_after() {
            Health::Stale { silent }
        } else if self.host.is_none() {
            Health::Waiting
        } else {
            Health::Up
        }
    }

    /// Processes known, over every watcher.
    pub fn process_count(&self) -> usize {
        self.watchers.values().map(|w| w.processes.len()).sum()
    }

    fn watcher(&mut self, name: &str, now: Instant) -> (&mut Watcher, bool) {
        let created = !self.watchers.contains_key(name);
        let watcher = self
            .watchers
            .entry(name.to_string())
            .or_insert_with(|| Watcher {
                name: name.to_string(),
                reported: None,
                updated: now,
                processes: BTreeMap::new(),
                reaped: BTreeMap::new(),
            });
        (watcher, created)
    }

    /// True when `watcher` was removed after `time` (a late sample).
    fn removed_after(&self, watcher: &str, time: f64) -> bool {
        self.removed.get(watcher).is_some_and(|t| t.time >= time)
    }

    fn apply_stat(&mut self, stat: &Stat, now: Instant) -> Change {
        match &stat.kind {
            StatKind::Host(host) => {
                self.host = Some(host.clone());
                Change::Values
            }
            StatKind::Watcher(totals) => {
                if self.removed_after(&totals.name, stat.time) {
                    return Change::Values;
                }
                self.removed.remove(&totals.name);
                let (watcher, created) = self.watcher(&totals.name, now);
                watcher.reported = Some(totals.clone());
                watcher.updated = now;
                if created {
                    Change::Structure
                } else {
                    Change::Values
                }
            }
            StatKind::Process(process) => {
                if self.removed_after(&process.watcher, stat.time) {
                    return Change::Values;
                }
                self.removed.remove(&process.watcher);
                let (watcher, created) = self.watcher(&process.watcher, now);
                if watcher
                    .reaped
                    .get(&process.pid)
                    .is_some_and(|t| t.time >= stat.time)
                {
                    return Change::Values;
                }
                watcher.reaped.remove(&process.pid);
                let new = !watcher.processes.contains_key(&process.pid);
                watcher.processes.insert(
                    process.pid,
                    Process {
                        pid: process.pid,
                        wid: process.wid,
                        sample: Some(process.clone()),
                        updated: now,
                        age_at_update: process.age,
                    },
                );
                if created || new {
                    Change::Structure
                } else {
                    Change::Values
                }
            }
            _ => Change::Values,
        }
    }

    fn apply_event(&mut self, event: &Event, now: Instant) -> Change {
        match &event.kind {
            EventKind::Spawn { pid, wid } => {
                self.removed.remove(&event.watcher);
                let (watcher, _) = self.watcher(&event.watcher, now);
                watcher.reaped.remove(pid);
                watcher.processes.entry(*pid).or_insert(Process {
                    pid: *pid,
                    wid: *wid,
                    sample: None,
                    updated: now,
                    age_at_update: 0.0,
                });
                Change::Structure
            }
            EventKind::Reap { pid, .. } => {
                let (watcher, _) = self.watcher(&event.watcher, now);
                watcher.processes.remove(pid);
                watcher.reaped.insert(
                    *pid,
                    Tombstone {
                        time: event.time,
                        seen: now,
                    },
                );
                Change::Structure
            }
            EventKind::Add {} => {
                self.removed.remove(&event.watcher);
                self.watcher(&event.watcher, now);
                Change::Structure
            }
            EventKind::Rm {} => {
                self.watchers.remove(&event.watcher);
                self.removed.insert(
                    event.watcher.clone(),
                    Tombstone {
                        time: event.time,
                        seen: now,
                    },
                );
                Change::Structure
            }
            _ => Change::Values,
        }
    }
}

impl Watcher {
    fn row(&self, node: Option<&str>) -> WatcherRow {
        let samples = self.processes.values().filter_map(|p| p.sample.as_ref());
        let (cpu, rss, mem) = samples.fold((0.0, 0, 0.0), |(cpu, rss, mem), s| {
            (cpu + s.cpu, rss + s.rss, mem + s.mem)
        });
        WatcherRow {
            key: WatcherKey {
                node: node.map(str::to_string),
                watcher: self.name.clone(),
            },
            nodes: 1,
            processes: self.processes.len(),
            cpu,
            rss,
            mem,
        }
    }
}

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model::default()
    }

    /// Declares a node we expect messages from (learned from `nodeinfo`), so that
    /// its silence shows even before it has sent anything.
    pub fn expect_node(&mut self, name: &str, now: Instant) {
        self.nodes
            .entry(name.to_string())
            .or_insert_with(|| Node::new(name, now));
    }

    /// Folds one message into the model; `now` is when it arrived.
    pub fn apply(&mut self, message: &Published, now: Instant) -> Change {
        if let Published::Stat(Stat {
            kind: StatKind::Pool(pool),
            ..
        }) = message
        {
            return self.apply_pool(pool, now);
        }
        let name = match message {
            Published::Stat(stat) => &stat.node,
            Published::Event(event) => &event.node,
            Published::Log(batch) => &batch.node,
        };
        let created = !self.nodes.contains_key(name);
        let node = self
            .nodes
            .entry(name.clone())
            .or_insert_with(|| Node::new(name, now));
        node.last_seen = Some(now);
        let change = match message {
            Published::Stat(stat) => node.apply_stat(stat, now),
            Published::Event(event) => node.apply_event(event, now),
            // nodetop does not subscribe to lines; one that comes says the node is up.
            Published::Log(_) => Change::Values,
        };
        if created {
            Change::Structure
        } else {
            change
        }
    }

    /// A relay's `stat.pool`: expects every node of the pool (a node it has never
    /// heard from included, so that its silence shows). Its totals are not kept:
    /// they are computed from the nodes' own messages, which the relay passes on.
    fn apply_pool(&mut self, pool: &PoolStats, now: Instant) -> Change {
        let before = self.nodes.len();
        for node in &pool.nodes {
            self.expect_node(&node.name, now);
        }
        if self.nodes.len() == before {
            Change::Values
        } else {
            Change::Structure
        }
    }

    /// Forgets processes and watchers that a node which is still sending has not
    /// reported for [`STALE_INTERVALS`] intervals (their `reap` or `rm` was lost),
    /// and old tombstones. A stale node keeps its last known state. Returns true
    /// when something was removed.
    pub fn prune(&mut self, now: Instant) -> bool {
        let mut removed = false;
        for node in self.nodes.values_mut() {
            let fresh = node.host.is_some() && node.health(now) == Health::Up;
            let limit = node.stale_after();
            let old = |at: Instant| now.saturating_duration_since(at) > limit;
            node.removed
                .retain(|_, t| now.saturating_duration_since(t.seen) <= TOMBSTONE_TTL);
            for watcher in node.watchers.values_mut() {
                watcher
                    .reaped
                    .retain(|_, t| now.saturating_duration_since(t.seen) <= TOMBSTONE_TTL);
                if fresh {
                    let before = watcher.processes.len();
                    watcher.processes.retain(|_, p| !old(p.updated));
                    removed |= watcher.processes.len() != before;
                }
            }
            if fresh {
                let before = node.watchers.len();
                node.watchers
                    .retain(|_, w| !w.processes.is_empty() || !old(w.updated));
                removed |= node.watchers.len() != before;
            }
        }
        removed
    }

    /// One node.
    #[cfg(test)]
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Names of every node, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// One header line per node, in name order.
    pub fn node_rows(&self, now: Instant) -> Vec<NodeRow> {
        self.nodes
            .values()
            .map(|node| NodeRow {
                name: node.name.clone(),
                health: node.health(now),
                host: node.host.clone(),
                processes: node.process_count(),
            })
            .collect()
    }

    /// Totals over every node.
    pub fn pool_total(&self, now: Instant) -> PoolTotal {
        let mut total = PoolTotal {
            nodes: self.nodes.len(),
            ..PoolTotal::default()
        };
        let mut weighted_cpu = 0.0_f64;
        for node in self.nodes.values() {
            total.processes += node.process_count();
            if node.health(now) != Health::Up {
                continue;
            }
            total.up += 1;
            if let Some(host) = &node.host {
                total.cpus += host.cpus;
                weighted_cpu += f64::from(host.cpu) * f64::from(host.cpus);
                total.memory_used += host.memory_used;
                total.memory_total += host.memory_total;
            }
        }
        if total.cpus > 0 {
            total.cpu = (weighted_cpu / f64::from(total.cpus)) as f32;
        }
        total
    }

    /// Whether `query` asks for watchers across nodes: no node chosen, and
    /// several known.
    pub fn across_nodes(&self, query: &Query) -> bool {
        query.node.is_none() && self.nodes.len() > 1
    }

    /// The watcher rows `query` selects, in its order: one per watcher of the
    /// chosen node (or of the only node), else one per watcher with its totals
    /// across the nodes that have it.
    pub fn watcher_rows(&self, query: &Query) -> Vec<WatcherRow> {
        let filter = query.filter.to_lowercase();
        let selected = self
            .nodes
            .values()
            .filter(|node| query.node.as_ref().is_none_or(|n| *n == node.name))
            .flat_map(|node| {
                node.watchers
                    .values()
                    .filter(|w| filter.is_empty() || w.name.to_lowercase().contains(&filter))
                    .map(move |w| (node, w))
            });
        let mut rows: Vec<WatcherRow> = if self.across_nodes(query) {
            across(selected)
        } else {
            selected.map(|(node, w)| w.row(Some(&node.name))).collect()
        };
        rows.sort_by(|a, b| {
            let by_value = match query.sort {
                SortKey::Cpu => b.cpu.total_cmp(&a.cpu),
                SortKey::Memory => b.rss.cmp(&a.rss),
                SortKey::Name => Ordering::Equal,
            };
            by_value.then_with(|| a.key.cmp(&b.key))
        });
        rows
    }

    /// The processes of one watcher, on its node or (`key.node` absent) on every
    /// node, in `sort` order (empty when it is unknown).
    pub fn process_rows(&self, key: &WatcherKey, sort: SortKey, now: Instant) -> Vec<ProcessRow> {
        let mut rows: Vec<ProcessRow> = self
            .nodes
            .values()
            .filter(|node| key.node.as_ref().is_none_or(|n| *n == node.name))
            .filter_map(|node| node.watchers.get(&key.watcher).map(|w| (node, w)))
            .flat_map(|(node, watcher)| watcher.processes.values().map(move |p| (node, p)))
            .map(|(node, p)| ProcessRow {
                node: node.name.clone(),
                pid: p.pid,
                wid: p.wid,
                cpu: p.sample.as_ref().map(|s| s.cpu),
                rss: p.sample.as_ref().map(|s| s.rss),
                mem: p.sample.as_ref().map(|s| s.mem),
                age: p.age(now),
            })
            .collect();
        rows.sort_by(|a, b| {
            let by_value = match sort {
                // Unsampled processes (None) go last.
                SortKey::Cpu => b.cpu.unwrap_or(-1.0).total_cmp(&a.cpu.unwrap_or(-1.0)),
                SortKey::Memory => b.rss.cmp(&a.rss),
                SortKey::Name => Ordering::Equal,
            };
            by_value
                .then_with(|| a.node.cmp(&b.node))
                .then_with(|| a.wid.cmp(&b.wid))
                .then_with(|| a.pid.cmp(&b.pid))
        });
        rows
    }
}

/// One row per watcher name over `(node, watcher)` pairs: summed processes, CPU
/// and memory, the number of nodes, and the memory in % of those nodes' memory.
fn across<'a>(pairs: impl Iterator<Item = (&'a Node, &'a Watcher)>) -> Vec<WatcherRow> {
    /// A row, and the memory of the nodes with host statistics and their rss.
    struct Sum {
        row: WatcherRow,
        memory_total: u64,
        rss_of_known: u64,
    }
    let mut sums: BTreeMap<&str, Sum> = BTreeMap::new();
    for (node, watcher) in pairs {
        let row = watcher.row(None);
        let memory_total = node.host.as_ref().map_or(0, |h| h.memory_total);
        let rss_of_known = if memory_total > 0 { row.rss } else { 0 };
        match sums.get_mut(watcher.name.as_str()) {
            Some(sum) => {
                sum.row.nodes += 1;
                sum.row.processes += row.processes;
                sum.row.cpu += row.cpu;
                sum.row.rss += row.rss;
                sum.memory_total += memory_total;
                sum.rss_of_known += rss_of_known;
            }
            None => {
                sums.insert(
                    &watcher.name,
                    Sum {
                        row,
                        memory_total,
                        rss_of_known,
                    },
                );
            }
        }
    }
    sums.into_values()
        .map(|sum| WatcherRow {
            mem: if sum.memory_total > 0 {
                (sum.rss_of_known as f64 / sum.memory_total as f64 * 100.0) as f32
            } else {
                0.0
            },
            ..sum.row
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ringmaster_protocol::event::ExitInfo;
    use ringmaster_protocol::stats::{NodeState, PoolNode};

    pub(crate) fn host(node: &str, seq: u64, cpu: f32, interval: f64) -> Published {
        Published::Stat(Stat {
            node: node.into(),
            seq,
            time: 1000.0 + seq as f64,
            kind: StatKind::Host(HostStats {
                cpu,
                cpus: 4,
                load: [0.5, 0.25, 0.125],
                memory_used: 3 << 30,
                memory_total: 8 << 30,
                host_processes: 200,
                processes: 3,
                watchers: 2,
                interval,
                refused: 0,
            }),
        })
    }

    pub(crate) fn process(
        node: &str,
        watcher: &str,
        pid: u32,
        wid: u32,
        cpu: f32,
        rss: u64,
    ) -> Published {
        Published::Stat(Stat {
            node: node.into(),
            seq: 1,
            time: 1000.0,
            kind: StatKind::Process(ProcessStats {
                watcher: watcher.into(),
                pid,
                wid,
                cpu,
                rss,
                mem: rss as f32 / (8u64 << 30) as f32 * 100.0,
                age: 100.0 * f64::from(wid),
                cpu_time: 1.0,
                threads: 1,
            }),
        })
    }

    pub(crate) fn totals(node: &str, watcher: &str) -> Published {
        Published::Stat(Stat {
            node: node.into(),
            seq: 1,
            time: 1000.0,
            kind: StatKind::Watcher(WatcherStats {
                name: watcher.into(),
                processes: 0,
                cpu: 0.0,
                rss: 0,
                mem: 0.0,
                max_age: 0.0,
            }),
        })
    }

    /// A relay's `stat.pool` for pool `pool` with `nodes` (`node` is the pool).
    pub(crate) fn pool_stat(pool: &str, nodes: &[(&str, NodeState)]) -> Published {
        Published::Stat(Stat {
            node: pool.into(),
            seq: 1,
            time: 1000.0,
            kind: StatKind::Pool(PoolStats {
                nodes: nodes
                    .iter()
                    .map(|(name, state)| PoolNode {
                        name: (*name).into(),
                        state: *state,
                        silent_for: None,
                    })
                    .collect(),
                processes: 0,
                cpus: 0,
                cpu: 0.0,
                memory_used: 0,
                memory_total: 0,
                watchers: Vec::new(),
                interval: 1.0,
            }),
        })
    }

    fn event(node: &str, watcher: &str, time: f64, kind: EventKind) -> Published {
        Published::Event(Event {
            node: node.into(),
            seq: 1,
            time,
            watcher: watcher.into(),
            kind,
        })
    }

    fn reap(node: &str, watcher: &str, pid: u32, time: f64) -> Published {
        event(
            node,
            watcher,
            time,
            EventKind::Reap {
                pid,
                wid: 1,
                exit: ExitInfo {
                    code: None,
                    signal: Some(15),
                },
                expected: true,
                uptime: 3.0,
            },
        )
    }

    fn pids(model: &Model, node: &str, watcher: &str, now: Instant) -> Vec<u32> {
        let key = WatcherKey {
            node: Some(node.into()),
            watcher: watcher.into(),
        };
        model
            .process_rows(&key, SortKey::Name, now)
            .iter()
            .map(|p| p.pid)
            .collect()
    }

    const MB: u64 = 1 << 20;

    /// Two nodes: a (web: 2 processes, db: 1) and b (web: 1).
    pub(crate) fn two_nodes(t0: Instant) -> Model {
        let mut model = Model::new();
        for message in [
            host("a", 1, 20.0, 1.0),
            process("a", "web", 101, 1, 10.0, 100 * MB),
            process("a", "web", 102, 2, 5.5, 120 * MB),
            totals("a", "web"),
            process("a", "db", 201, 1, 1.0, 500 * MB),
            totals("a", "db"),
            host("b", 1, 50.0, 0.5),
            process("b", "web", 301, 1, 30.0, 50 * MB),
            totals("b", "web"),
        ] {
            model.apply(&message, t0);
        }
        model
    }

    #[test]
    fn stats_of_two_nodes_fold_into_one_snapshot() {
        let t0 = Instant::now();
        let model = two_nodes(t0);
        assert_eq!(model.node_names(), ["a", "b"]);
        let nodes = model.node_rows(t0);
        assert_eq!(nodes[0].health, Health::Up);
        assert_eq!(nodes[0].processes, 3);
        assert_eq!(nodes[1].processes, 1);
        assert_eq!(nodes[1].host.as_ref().map(|h| h.cpu), Some(50.0));

        let summary = |node: Option<&str>| {
            let rows = model.watcher_rows(&Query {
                node: node.map(str::to_string),
                sort: SortKey::Name,
                ..Query::default()
            });
            rows.into_iter()
                .map(|r| {
                    let node = r.key.node.unwrap_or_else(|| "*".into());
                    (node, r.key.watcher, r.nodes, r.processes, r.cpu, r.rss)
                })
                .collect::<Vec<_>>()
        };
        let row = |node: &str, watcher: &str, nodes, processes, cpu, rss| {
            (
                node.to_string(),
                watcher.to_string(),
                nodes,
                processes,
                cpu,
                rss,
            )
        };
        assert_eq!(
            summary(Some("a")),
            [
                row("a", "db", 1, 1, 1.0, 500 * MB),
                row("a", "web", 1, 2, 15.5, 220 * MB),
            ]
        );
        assert_eq!(summary(Some("b")), [row("b", "web", 1, 1, 30.0, 50 * MB)]);
        // All nodes: one row per watcher, with its totals across the nodes.
        let query = Query::default();
        assert!(model.across_nodes(&query));
        assert_eq!(
            summary(None),
            [
                row("*", "db", 1, 1, 1.0, 500 * MB),
                row("*", "web", 2, 3, 45.5, 270 * MB),
            ]
        );
        let web = model
            .watcher_rows(&query)
            .into_iter()
            .find(|r| r.key.watcher == "web");
        // 270 MB of the two nodes' 16 GB.
        let mem = web.map(|r| r.mem).unwrap_or_default();
        assert!((mem - 1.6479).abs() < 0.001, "{mem}");
        // Its processes on every node, by node.
        let web_everywhere = WatcherKey {
            node: None,
            watcher: "web".into(),
        };
        let processes: Vec<(String, u32)> = model
            .process_rows(&web_everywhere, SortKey::Name, t0)
            .into_iter()
            .map(|p| (p.node, p.pid))
            .collect();
        assert_eq!(
            processes,
            [("a".into(), 101), ("a".into(), 102), ("b".into(), 301)]
        );
        assert_eq!(
            model.process_rows(&web_everywhere, SortKey::Cpu, t0)[0].pid,
            301
        );

        let pool = model.pool_total(t0);
        assert_eq!(
            (pool.nodes, pool.up, pool.cpus, pool.processes),
            (2, 2, 8, 4)
        );
        assert_eq!(pool.cpu, 35.0);
        assert_eq!(pool.memory_total, 16 << 30);

        // A later sample replaces the earlier one.
        let mut model = model;
        let change = model.apply(&process("a", "web", 101, 1, 70.0, 100 * MB), t0);
        assert_eq!(change, Change::Values);
        let key = WatcherKey {
            node: Some("a".into()),
            watcher: "web".into(),
        };
        let rows = model.process_rows(&key, SortKey::Cpu, t0);
        assert_eq!(rows[0].pid, 101);
        assert_eq!(rows[0].cpu, Some(70.0));
        assert_eq!(rows[0].age, Duration::from_secs(100));
        assert_eq!(
            model.process_rows(&key, SortKey::Cpu, t0 + Duration::from_secs(5))[0].age,
            Duration::from_secs(105),
            "ages keep counting between samples"
        );
    }

    #[test]
    fn a_relays_pool_message_lists_the_pools_nodes_and_is_no_node_itself() {
        let t0 = Instant::now();
        let mut model = two_nodes(t0);
        let pool = pool_stat(
            "prod",
            &[
                ("a", NodeState::Up),
                ("b", NodeState::Stale),
                ("c", NodeState::Down),
            ],
        );
        assert_eq!(model.apply(&pool, t0), Change::Structure);
        assert_eq!(model.node_names(), ["a", "b", "c"], "no node 'prod'");
        assert_eq!(model.apply(&pool, t0), Change::Values);
        // c, never heard from, waits and then shows as silent.
        let c = |ms| {
            model
                .node("c")
                .map(|n| n.health(t0 + Duration::from_millis(ms)))
        };
        assert_eq!(c(1000), Some(Health::Waiting));
        assert!(matches!(c(3500), Some(Health::Stale { .. })));
        // A's figures are untouched; the pool counts 3 nodes.
        assert_eq!(model.pool_total(t0).nodes, 3);
        assert_eq!(model.pool_total(t0).processes, 4);
    }

    #[test]
    fn one_node_alone_shows_its_own_watchers() {
        let t0 = Instant::now();
        let mut model = Model::new();
        model.apply(&host("a", 1, 20.0, 1.0), t0);
        model.apply(&process("a", "web", 101, 1, 10.0, 100 * MB), t0);
        let query = Query::default();
        assert!(!model.across_nodes(&query));
        let rows = model.watcher_rows(&query);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key.node.as_deref(), Some("a"));
        // A second node (even one only expected) turns it into the pool view.
        model.expect_node("b", t0);
        assert!(model.across_nodes(&query));
        assert_eq!(model.watcher_rows(&query)[0].key.node, None);
        assert_eq!(model.watcher_rows(&query)[0].nodes, 1);
    }

    #[test]
    fn a_reap_removes_the_process_at_once_and_a_late_sample_does_not_revive_it() {
        let t0 = Instant::now();
        let mut model = two_nodes(t0);
        assert_eq!(pids(&model, "a", "web", t0), [101, 102]);
        let change = model.apply(&reap("a", "web", 101, 1001.0), t0);
        assert_eq!(change, Change::Structure);
        assert_eq!(pids(&model, "a", "web", t0), [102]);
        // The same pid on the other node is another process.
        assert_eq!(pids(&model, "b", "web", t0), [301]);
        // A sample taken before the reap, delivered after it.
        model.apply(&process("a", "web", 101, 1, 1.0, MB), t0);
        assert_eq!(pids(&model, "a", "web", t0), [102]);

        // A spawn shows at once, before its first sample.
        let spawn = event("a", "web", 1002.0, EventKind::Spawn { pid: 103, wid: 3 });
        assert_eq!(model.apply(&spawn, t0), Change::Structure);
        let key = WatcherKey {
            node: Some("a".into()),
            watcher: "web".into(),
        };
        let rows = model.process_rows(&key, SortKey::Cpu, t0 + Duration::from_secs(2));
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].pid, rows[1].cpu), (103, None), "unsampled last");
        assert_eq!(rows[1].age, Duration::from_secs(2));

        // rm drops the watcher and its processes.
        model.apply(&event("a", "web", 1003.0, EventKind::Rm {}), t0);
        assert!(model
            .node("a")
            .is_some_and(|n| !n.watchers.contains_key("web")));
        model.apply(&totals("a", "web"), t0);
        assert!(model
            .node("a")
            .is_some_and(|n| !n.watchers.contains_key("web")));
    }

    #[test]
    fn a_node_silent_for_three_intervals_is_stale() {
        let t0 = Instant::now();
        let mut model = two_nodes(t0);
        // b samples every 0.5 s, a every second.
        let at = |ms| t0 + Duration::from_millis(ms);
        let health = |model: &Model, ms| {
            model
                .node_rows(at(ms))
                .into_iter()
                .map(|n| n.health)
                .collect::<Vec<_>>()
        };
        assert_eq!(health(&model, 1400), [Health::Up, Health::Up]);
        assert_eq!(
            health(&model, 1600),
            [
                Health::Up,
                Health::Stale {
                    silent: Duration::from_millis(1600)
                }
            ]
        );
        model.apply(&host("b", 2, 1.0, 0.5), at(1600));
        assert_eq!(health(&model, 3000), [Health::Up, Health::Up]);
        assert_eq!(
            health(&model, 3100)[0],
            Health::Stale {
                silent: Duration::from_millis(3100)
            }
        );
        let pool = model.pool_total(at(3100));
        assert_eq!((pool.nodes, pool.up, pool.cpus), (2, 1, 4));

        // A node named by nodeinfo waits, then goes stale if nothing comes.
        model.expect_node("c", t0);
        assert_eq!(
            model.node("c").map(|n| n.health(at(2000))),
            Some(Health::Waiting)
        );
        assert!(matches!(
            model.node("c").map(|n| n.health(at(3500))),
            Some(Health::Stale { .. })
        ));
    }

    #[test]
    fn processes_no_longer_reported_are_pruned_but_a_stale_node_keeps_its_own() {
        let t0 = Instant::now();
        let mut model = two_nodes(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        // a keeps sending, but stops reporting pid 102 (its reap was lost) and db.
        for ms in [1000, 2000, 3000] {
            model.apply(&host("a", 2, 20.0, 1.0), at(ms));
            model.apply(&process("a", "web", 101, 1, 10.0, MB), at(ms));
            model.apply(&totals("a", "web"), at(ms));
        }
        assert!(!model.prune(at(2900)));
        assert_eq!(pids(&model, "a", "web", t0), [101, 102]);
        assert!(model.prune(at(3100)));
        assert_eq!(pids(&model, "a", "web", t0), [101]);
        assert!(model
            .node("a")
            .is_some_and(|n| !n.watchers.contains_key("db")));
        // b went quiet: what it last said stays on screen.
        assert_eq!(pids(&model, "b", "web", t0), [301]);
    }

    #[test]
    fn rows_sort_by_cpu_memory_or_name_and_filter_by_node_and_watcher() {
        let t0 = Instant::now();
        let model = two_nodes(t0);
        let order = |query: Query| {
            model
                .watcher_rows(&query)
                .into_iter()
                .map(|r| format!("{}/{}", r.key.node.as_deref().unwrap_or("*"), r.key.watcher))
                .collect::<Vec<_>>()
        };
        let sorted = |node: &str, sort| Query {
            node: Some(node.into()),
            sort,
            ..Query::default()
        };
        assert_eq!(order(sorted("a", SortKey::Cpu)), ["a/web", "a/db"]);
        assert_eq!(order(sorted("a", SortKey::Memory)), ["a/db", "a/web"]);
        assert_eq!(order(sorted("a", SortKey::Name)), ["a/db", "a/web"]);
        let all = |sort| Query {
            sort,
            ..Query::default()
        };
        assert_eq!(order(all(SortKey::Cpu)), ["*/web", "*/db"]);
        assert_eq!(order(all(SortKey::Memory)), ["*/db", "*/web"]);
        assert_eq!(order(all(SortKey::Name)), ["*/db", "*/web"]);
        let filtered = Query {
            filter: "WE".into(),
            ..Query::default()
        };
        assert_eq!(order(filtered), ["*/web"]);
        let one_node = Query {
            node: Some("b".into()),
            filter: "WE".into(),
            ..Query::default()
        };
        assert_eq!(order(one_node), ["b/web"]);
        let nothing = Query {
            node: Some("a".into()),
            filter: "zzz".into(),
            sort: SortKey::Name,
        };
        assert!(order(nothing).is_empty());

        let key = WatcherKey {
            node: Some("a".into()),
            watcher: "web".into(),
        };
        let pids_by = |sort| {
            model
                .process_rows(&key, sort, t0)
                .iter()
                .map(|p| p.pid)
                .collect::<Vec<_>>()
        };
        assert_eq!(pids_by(SortKey::Cpu), [101, 102]);
        assert_eq!(pids_by(SortKey::Memory), [102, 101]);
        assert_eq!(pids_by(SortKey::Name), [101, 102]);
    }
}
