//! Live statistics an agent publishes every `stats_interval`.
//!
//! | topic | body |
//! | --- | --- |
//! | `stat.<node>` | [`Stat`] with [`StatKind::Host`] |
//! | `stat.<node>.<watcher>` | [`Stat`] with [`StatKind::Watcher`] (totals) |
//! | `stat.<node>.<watcher>.<pid>` | [`Stat`] with [`StatKind::Process`] |
//! | `stat.pool` | [`Stat`] with [`StatKind::Pool`], published by `nodemeta` |
//!
//! Like events, every body carries the node name, a timestamp and the agent's
//! sequence number (shared with events), so that one subscriber can follow many
//! nodes, and the host message doubles as the node's heartbeat.

use serde::{Deserialize, Serialize};

/// Topic prefix of statistics.
pub const STAT_PREFIX: &str = "stat";

/// `stat.pool`: the totals `nodemeta` publishes for its pool. `pool` is therefore
/// not a valid node name.
pub const POOL_TOPIC: &str = "stat.pool";

/// `stat.<node>`
pub fn host_topic(node: &str) -> String {
    format!("{STAT_PREFIX}.{node}")
}

/// `stat.<node>.<watcher>`
pub fn watcher_topic(node: &str, watcher: &str) -> String {
    format!("{STAT_PREFIX}.{node}.{watcher}")
}

/// `stat.<node>.<watcher>.<pid>`
pub fn process_topic(node: &str, watcher: &str, pid: u32) -> String {
    format!("{STAT_PREFIX}.{node}.{watcher}.{pid}")
}

/// One published statistics message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// The node that published it.
    pub node: String,
    /// Per-agent sequence number (shared with events).
    pub seq: u64,
    /// When it was sampled, seconds since the Unix epoch.
    pub time: f64,
    /// What was sampled.
    pub kind: StatKind,
}

impl Stat {
    /// The topic this message is published under.
    pub fn topic(&self) -> String {
        match &self.kind {
            StatKind::Host(_) => host_topic(&self.node),
            StatKind::Watcher(w) => watcher_topic(&self.node, &w.name),
            StatKind::Process(p) => process_topic(&self.node, &p.watcher, p.pid),
            StatKind::Pool(_) => POOL_TOPIC.to_string(),
        }
    }
}

/// The three levels of statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StatKind {
    /// The whole host.
    Host(HostStats),
    /// One watcher's totals.
    Watcher(WatcherStats),
    /// One process.
    Process(ProcessStats),
    /// A whole pool, as `nodemeta` sees it (`node` is then the pool's name).
    Pool(PoolStats),
}

/// One supervised process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// Its watcher.
    pub watcher: String,
    /// Its pid.
    pub pid: u32,
    /// Its worker id.
    pub wid: u32,
    /// CPU use since the previous sample, in % of one core (may exceed 100).
    pub cpu: f32,
    /// Resident memory in bytes.
    pub rss: u64,
    /// Resident memory in % of the host's memory.
    pub mem: f32,
    /// Seconds since it started.
    pub age: f64,
    /// CPU time used since it started, in seconds.
    pub cpu_time: f64,
    /// Threads of the process.
    pub threads: u32,
}

/// A watcher's totals over its processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatcherStats {
    /// Watcher name.
    pub name: String,
    /// Processes sampled.
    pub processes: u32,
    /// Sum of their CPU use, in % of one core.
    pub cpu: f32,
    /// Sum of their resident memory in bytes.
    pub rss: u64,
    /// Sum of their memory in % of the host's memory.
    pub mem: f32,
    /// Age of the oldest process, in seconds.
    pub max_age: f64,
}

/// The host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStats {
    /// CPU use of the whole host, in % of all its cores (0..100).
    pub cpu: f32,
    /// Logical CPUs.
    pub cpus: u32,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Memory in use, in bytes.
    pub memory_used: u64,
    /// Memory in all, in bytes.
    pub memory_total: u64,
    /// Processes on the host.
    pub host_processes: u32,
    /// Processes the agent supervises.
    pub processes: u32,
    /// Watchers of the agent.
    pub watchers: u32,
    /// Seconds between two samples: a subscriber that hears nothing for a few of
    /// these knows the node has gone quiet.
    pub interval: f64,
    /// What the agent refused since it started: connections over its limits,
    /// peers that failed ZeroMQ's handshake, and control frames it refused or
    /// could not read (`nodeinfo` has them one by one).
    #[serde(default)]
    pub refused: u64,
}

/// Totals over the nodes of a pool, published by `nodemeta` on `stat.pool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Every node of the pool and whether it is heard from.
    pub nodes: Vec<PoolNode>,
    /// Processes supervised on the nodes that are up.
    pub processes: u32,
    /// CPUs of the nodes that are up.
    pub cpus: u32,
    /// CPU use of those nodes' hosts, in % of all their cores together (0..100).
    pub cpu: f32,
    /// Memory in use on those hosts, in bytes.
    pub memory_used: u64,
    /// Memory of those hosts in all, in bytes.
    pub memory_total: u64,
    /// Per-watcher totals across the nodes that are up, by watcher name.
    pub watchers: Vec<WatcherStats>,
    /// Seconds between two of these messages.
    pub interval: f64,
}

/// One node as `nodemeta` sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolNode {
    /// Node name.
    pub name: String,
    /// Up, stale or never heard from.
    pub state: NodeState,
    /// Seconds since the node was last heard from (None: never).
    pub silent_for: Option<f64>,
}

/// Whether a node is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeState {
    /// It published within the last 3 of its stats intervals.
    Up,
    /// It was heard from, but not for 3 of its stats intervals.
    Stale,
    /// Never heard from since `nodemeta` started.
    Down,
    /// A state this client does not know.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Up => "up",
            NodeState::Stale => "stale",
            NodeState::Down => "down",
            NodeState::Unknown => "unknown",
        })
    }
}
