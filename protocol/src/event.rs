//! What an agent publishes, and under which topics.
//!
//! A published message is two frames: the topic, then the encoded body. Topics put
//! the kind first and the node second, so that a subscriber filters by prefix and the
//! same tool works for one node or a pool:
//!
//! | topic | body |
//! | --- | --- |
//! | `event.<node>.<watcher>.<action>` | [`Event`] |
//!
//! Every body carries the node name, a timestamp and a per-agent sequence number, so
//! that a subscriber of many nodes can order messages and notice gaps (pub/sub drops
//! silently; on a gap, re-sync with `status`).

use serde::{Deserialize, Serialize};

/// Topic prefix of watcher events.
pub const EVENT_PREFIX: &str = "event";

/// The topic of an event: `event.<node>.<watcher>.<action>`.
pub fn event_topic(node: &str, watcher: &str, action: &str) -> String {
    format!("{EVENT_PREFIX}.{node}.{watcher}.{action}")
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when it exited by itself.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => match crate::Signal::from_number(sig) {
                Some(name) => write!(f, "killed by {name}"),
                None => write!(f, "killed by signal {sig}"),
            },
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

/// One thing that happened on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The node that published it.
    pub node: String,
    /// Per-agent sequence number, +1 for every message the agent publishes.
    pub seq: u64,
    /// When it happened, seconds since the Unix epoch.
    pub time: f64,
    /// The watcher it is about.
    pub watcher: String,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The topic this event is published under.
    pub fn topic(&self) -> String {
        event_topic(&self.node, &self.watcher, self.kind.action())
    }
}

/// What happened, with the details of each kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A process was started.
    Spawn {
        /// Its pid.
        pid: u32,
        /// Its worker id.
        wid: u32,
    },
    /// A process could not be started.
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// A process ended (exactly one `reap` per process).
    Reap {
        /// Its pid.
        pid: u32,
        /// Its worker id.
        wid: u32,
        /// How it ended.
        exit: ExitInfo,
        /// True when the agent had asked it to stop.
        expected: bool,
        /// Seconds it ran.
        uptime: f64,
    },
    /// The agent sent a stop signal or SIGKILL to a process.
    Kill {
        /// Its pid.
        pid: u32,
        /// The signal sent.
        signal: String,
        /// Sent to the whole process group.
        group: bool,
    },
    /// The watcher started.
    Start {},
    /// The watcher stopped.
    Stop {},
    /// Options of the watcher changed.
    Updated {
        /// Which options.
        keys: Vec<String>,
    },
    /// The watcher was flapping and was stopped.
    Flapping {
        /// How many times in a row it has flapped.
        attempt: u32,
        /// Seconds until it is started again; absent when the agent gave up.
        retry_in: Option<f64>,
    },
    /// The watcher was added.
    Add {},
    /// The watcher was removed.
    Rm {},
    /// A hook of the watcher ran and exited 0.
    HookSuccess {
        /// Which hook (`before_start`, `after_spawn`, ...).
        hook: String,
        /// Seconds it ran.
        duration: f64,
        /// The process it was about, for the process hooks.
        pid: Option<u32>,
    },
    /// A hook of the watcher failed: it exited non-zero, was killed, ran past its
    /// timeout, or could not be started.
    HookFailure {
        /// Which hook (`before_start`, `after_spawn`, ...).
        hook: String,
        /// Seconds it ran.
        duration: f64,
        /// The process it was about, for the process hooks.
        pid: Option<u32>,
        /// How it ended, when it ended by itself (or by a signal).
        exit: Option<ExitInfo>,
        /// True when it ran past its timeout and its process group was killed.
        timed_out: bool,
        /// What went wrong, in words.
        error: String,
        /// The end of what it printed (stdout and stderr together), bounded.
        output: String,
        /// True when the action went on anyway (`ignore_errors`, or a hook whose
        /// failure is only reported).
        ignored: bool,
    },
}

impl EventKind {
    /// The action name used in the topic.
    pub fn action(&self) -> &'static str {
        match self {
            EventKind::Spawn { .. } => "spawn",
            EventKind::SpawnFailed { .. } => "spawn_failed",
            EventKind::Reap { .. } => "reap",
            EventKind::Kill { .. } => "kill",
            EventKind::Start {} => "start",
            EventKind::Stop {} => "stop",
            EventKind::Updated { .. } => "updated",
            EventKind::Flapping { .. } => "flapping",
            EventKind::Add {} => "add",
            EventKind::Rm {} => "rm",
            EventKind::HookSuccess { .. } => "hook_success",
            EventKind::HookFailure { .. } => "hook_failure",
        }
    }
}
