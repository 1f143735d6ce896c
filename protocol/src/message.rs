//! Requests and replies on the control endpoint.
//!
//! A [`Request`] carries the protocol version, an id chosen by the client and one
//! [`Command`]. The agent answers with a [`Reply`] carrying the same id and either a
//! [`Response`] or an [`ErrorReply`]. Every command is a struct variant (even those
//! without arguments), so that every command encodes the same way: a one-key map from
//! the command name to its arguments. That lets a server tell an unknown command from
//! bad arguments to a known one (see [`crate::codec`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::ExitInfo;

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub v: u16,
    /// Client-chosen id, echoed in the reply; lets a client drop stale replies.
    pub id: u64,
    /// Reply as soon as the command is accepted instead of when its action is done.
    #[serde(default)]
    pub no_wait: bool,
    /// What to do.
    pub command: Command,
}

/// Options of a watcher as they travel on the wire (`add`, `set`, `get`, `options`).
pub type OptionMap = BTreeMap<String, OptionValue>;

/// A loosely typed option value, as found in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// A string.
    Str(String),
    /// A list of values.
    List(Vec<OptionValue>),
    /// A table of values.
    Table(BTreeMap<String, OptionValue>),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Int(i) => write!(f, "{i}"),
            OptionValue::Float(x) => write!(f, "{x}"),
            OptionValue::Str(s) => write!(f, "{s}"),
            OptionValue::List(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    match item {
                        OptionValue::Str(s) => write!(f, "{s:?}")?,
                        other => write!(f, "{other}")?,
                    }
                }
                write!(f, "]")
            }
            OptionValue::Table(map) => {
                write!(f, "{{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    match v {
                        OptionValue::Str(s) => write!(f, "{k} = {s:?}")?,
                        other => write!(f, "{k} = {other}")?,
                    }
                }
                write!(f, "}}")
            }
        }
    }
}

/// A POSIX signal, named. Travels as its name (`"SIGTERM"`); numbers are accepted
/// when parsing (`"15"`), as are names without the `SIG` prefix and any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGHUP (1)
    Hup,
    /// SIGINT (2)
    Int,
    /// SIGQUIT (3)
    Quit,
    /// SIGABRT (6)
    Abrt,
    /// SIGKILL (9)
    Kill,
    /// SIGUSR1 (10)
    Usr1,
    /// SIGSEGV (11)
    Segv,
    /// SIGUSR2 (12)
    Usr2,
    /// SIGPIPE (13)
    Pipe,
    /// SIGALRM (14)
    Alrm,
    /// SIGTERM (15)
    Term,
    /// SIGCHLD (17)
    Chld,
    /// SIGCONT (18)
    Cont,
    /// SIGSTOP (19)
    Stop,
    /// SIGTSTP (20)
    Tstp,
    /// SIGTTIN (21)
    Ttin,
    /// SIGTTOU (22)
    Ttou,
    /// SIGWINCH (28)
    Winch,
}

const SIGNALS: &[(Signal, &str, i32)] = &[
    (Signal::Hup, "SIGHUP", 1),
    (Signal::Int, "SIGINT", 2),
    (Signal::Quit, "SIGQUIT", 3),
    (Signal::Abrt, "SIGABRT", 6),
    (Signal::Kill, "SIGKILL", 9),
    (Signal::Usr1, "SIGUSR1", 10),
    (Signal::Segv, "SIGSEGV", 11),
    (Signal::Usr2, "SIGUSR2", 12),
    (Signal::Pipe, "SIGPIPE", 13),
    (Signal::Alrm, "SIGALRM", 14),
    (Signal::Term, "SIGTERM", 15),
    (Signal::Chld, "SIGCHLD", 17),
    (Signal::Cont, "SIGCONT", 18),
    (Signal::Stop, "SIGSTOP", 19),
    (Signal::Tstp, "SIGTSTP", 20),
    (Signal::Ttin, "SIGTTIN", 21),
    (Signal::Ttou, "SIGTTOU", 22),
    (Signal::Winch, "SIGWINCH", 28),
];

impl Signal {
    /// The conventional name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        SIGNALS
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or("SIG?", |(_, name, _)| name)
    }

    /// The Linux signal number.
    pub fn number(self) -> i32 {
        SIGNALS
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or(0, |(_, _, n)| *n)
    }

    /// The signal with this Linux number, if Ringmaster knows it.
    pub fn from_number(number: i32) -> Option<Signal> {
        SIGNALS
            .iter()
            .find(|(_, _, n)| *n == number)
            .map(|(s, _, _)| *s)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A signal name or number that Ringmaster does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal '{0}' (use a name such as SIGTERM, TERM or HUP, or a number such as 15)")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(|| UnknownSignal(s.to_string()));
        }
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        SIGNALS
            .iter()
            .find(|(_, name, _)| *name == full)
            .map(|(s, _, _)| *s)
            .ok_or_else(|| UnknownSignal(s.to_string()))
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Every command the agent understands, with its arguments.
///
/// Commands that take an optional `name` apply to every watcher when it is absent
/// (`start` then only starts watchers with `autostart = true`, as in Circus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Command {
    /// Status of one watcher, or of all.
    Status {
        /// The watcher; all when absent.
        name: Option<String>,
    },
    /// Names of the watchers, or the processes of one watcher.
    List {
        /// The watcher whose processes to list; watcher names when absent.
        name: Option<String>,
    },
    /// Start a watcher (or every autostart watcher).
    Start {
        /// The watcher; every autostart watcher when absent.
        name: Option<String>,
    },
    /// Stop a watcher gracefully (or every watcher).
    Stop {
        /// The watcher; every watcher when absent.
        name: Option<String>,
    },
    /// Stop, then start.
    Restart {
        /// The watcher; every watcher when absent.
        name: Option<String>,
    },
    /// Graceful reload: start new processes, then stop the old ones.
    Reload {
        /// The watcher; every watcher when absent.
        name: Option<String>,
        /// Replace processes one at a time instead of all at once.
        #[serde(default)]
        sequential: bool,
    },
    /// Add processes to a watcher.
    Incr {
        /// The watcher.
        name: String,
        /// How many processes to add.
        nb: u32,
    },
    /// Remove processes from a watcher (the oldest go first).
    Decr {
        /// The watcher.
        name: String,
        /// How many processes to remove.
        nb: u32,
    },
    /// Add a watcher at run time.
    Add {
        /// Name of the new watcher.
        name: String,
        /// Its command line.
        cmd: String,
        /// Extra arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Any other watcher option, as in the config file.
        #[serde(default)]
        options: OptionMap,
        /// Start it at once.
        #[serde(default)]
        start: bool,
    },
    /// Remove a watcher (stopping its processes unless `nostop`).
    Rm {
        /// The watcher.
        name: String,
        /// Leave its processes running, unsupervised.
        #[serde(default)]
        nostop: bool,
    },
    /// Change options of a watcher.
    Set {
        /// The watcher.
        name: String,
        /// Options to change.
        options: OptionMap,
    },
    /// Read options of a watcher.
    Get {
        /// The watcher.
        name: String,
        /// Which options.
        keys: Vec<String>,
    },
    /// Every option of a watcher.
    Options {
        /// The watcher.
        name: String,
    },
    /// The agent's own options.
    GlobalOptions {
        /// One option; all when absent.
        key: Option<String>,
    },
    /// Send a signal to a watcher's processes, to one of them, or to their groups.
    Signal {
        /// The watcher.
        name: String,
        /// One process of the watcher; all when absent.
        pid: Option<u32>,
        /// The signal.
        signal: Signal,
        /// Send to the whole process group (the process and its children).
        #[serde(default)]
        children: bool,
    },
    /// Number of running processes of a watcher, or of all.
    NumProcesses {
        /// The watcher; all when absent.
        name: Option<String>,
    },
    /// Number of watchers.
    NumWatchers {},
    /// Re-read the config file and apply what changed.
    ReloadConfig {},
    /// Stop every watcher and exit.
    Quit {},
    /// Node name, labels, version, uptime and load: what placement needs.
    NodeInfo {},
    /// The latest statistics of every watcher's processes, or of one watcher's.
    Stats {
        /// The watcher; all when absent.
        name: Option<String>,
    },
    /// The agent's own resource use.
    DStats {},
    /// Run a shell command on the node (`sh -c`), only where the agent's config
    /// says `allow_exec = true`.
    Exec {
        /// The command line, run by `/bin/sh -c`.
        cmd: String,
        /// Seconds the command may run before its process group is killed.
        timeout: f64,
    },
    /// The listening sockets the agent holds for its watchers (`[sockets.NAME]`).
    ListSockets {},
    /// Recent output lines of a watcher's processes (those whose output goes
    /// through the agent), oldest first.
    Logs {
        /// The watcher.
        name: String,
        /// At most this many lines (the newest ones).
        lines: u32,
        /// Only this stream; both when absent.
        stream: Option<crate::logs::LogStream>,
    },
    /// Reopen every output file (after an external log rotation).
    Reopen {},
    /// Re-execute the agent in place (same pid), with `binary` or the binary it
    /// runs, handing over every process, output pipe and listening socket. The
    /// new binary is checked first; when the check fails nothing changes. The
    /// reply comes before the switch: wait for `nodeinfo`'s `upgrades` to grow.
    Upgrade {
        /// The new `nodeagent` binary (an absolute path on the node); the
        /// running one when absent.
        binary: Option<String>,
    },
}

impl Command {
    /// True for commands that change state: they may be run without waiting
    /// (`no_wait`), and a read key may not send them. Only `status`, `list`, `get`,
    /// `options`, `globaloptions`, `numprocesses`, `numwatchers`, `nodeinfo`,
    /// `stats` and `dstats` only read.
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Command::Status { .. }
                | Command::List { .. }
                | Command::Get { .. }
                | Command::Options { .. }
                | Command::GlobalOptions { .. }
                | Command::NumProcesses { .. }
                | Command::NumWatchers {}
                | Command::NodeInfo {}
                | Command::Stats { .. }
                | Command::DStats {}
                | Command::ListSockets {}
                | Command::Logs { .. }
        )
    }

    /// The command's name on the wire (`status`, `incr`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status { .. } => "status",
            Command::List { .. } => "list",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Restart { .. } => "restart",
            Command::Reload { .. } => "reload",
            Command::Incr { .. } => "incr",
            Command::Decr { .. } => "decr",
            Command::Add { .. } => "add",
            Command::Rm { .. } => "rm",
            Command::Set { .. } => "set",
            Command::Get { .. } => "get",
            Command::Options { .. } => "options",
            Command::GlobalOptions { .. } => "globaloptions",
            Command::Signal { .. } => "signal",
            Command::NumProcesses { .. } => "numprocesses",
            Command::NumWatchers {} => "numwatchers",
            Command::ReloadConfig {} => "reloadconfig",
            Command::Quit {} => "quit",
            Command::NodeInfo {} => "nodeinfo",
            Command::Stats { .. } => "stats",
            Command::DStats {} => "dstats",
            Command::Exec { .. } => "exec",
            Command::ListSockets {} => "listsockets",
            Command::Logs { .. } => "logs",
            Command::Reopen {} => "reopen",
            Command::Upgrade { .. } => "upgrade",
        }
    }

    /// Names of every command, as they appear on the wire.
    pub const NAMES: &'static [&'static str] = &[
        "status",
        "list",
        "start",
        "stop",
        "restart",
        "reload",
        "incr",
        "decr",
        "add",
        "rm",
        "set",
        "get",
        "options",
        "globaloptions",
        "signal",
        "numprocesses",
        "numwatchers",
        "reloadconfig",
        "quit",
        "nodeinfo",
        "stats",
        "dstats",
        "exec",
        "listsockets",
        "logs",
        "reopen",
        "upgrade",
    ];
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Protocol version of the agent.
    pub v: u16,
    /// The request's id (0 when the request could not be read at all).
    pub id: u64,
    /// What happened.
    pub result: Result<Response, ErrorReply>,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ErrorReply {
    /// The class of error, for programs.
    pub kind: ErrorKind,
    /// What went wrong and what to do, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

/// Classes of errors a command can end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The frame is not a request (not MessagePack, wrong shape, too large).
    BadFrame,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The command name is not one the agent knows.
    UnknownCommand,
    /// A known command with arguments of the wrong type or value.
    BadArguments,
    /// The watcher, process or option named does not exist.
    NotFound,
    /// A watcher of that name exists already.
    AlreadyExists,
    /// A config file or an option value is invalid.
    InvalidConfig,
    /// A process could not be started.
    SpawnFailed,
    /// The operating system refused something (signal, file, ...).
    Os,
    /// The agent is shutting down.
    ShuttingDown,
    /// The agent's config does not allow this (e.g. `exec` without `allow_exec`),
    /// or the client's key may only read.
    Forbidden,
    /// The frame was refused before it was read: no key, a key the agent does not
    /// know, a frame that fails authentication, an expired or replayed frame.
    Unauthorized,
    /// Something the agent did not expect; the message says what.
    Internal,
    /// A hook of the watcher failed, so the action was not done; the message
    /// names the hook, how it ended and the end of its output.
    HookFailed,
    /// An error kind this client does not know (sent by a newer agent).
    #[serde(other)]
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorKind::BadFrame => "bad frame",
            ErrorKind::VersionMismatch => "version mismatch",
            ErrorKind::UnknownCommand => "unknown command",
            ErrorKind::BadArguments => "bad arguments",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidConfig => "invalid config",
            ErrorKind::SpawnFailed => "spawn failed",
            ErrorKind::Os => "os error",
            ErrorKind::ShuttingDown => "shutting down",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Internal => "internal error",
            ErrorKind::HookFailed => "hook failed",
            ErrorKind::Other => "error",
        };
        f.write_str(text)
    }
}

/// The successful result of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// `status`: one entry per watcher asked about.
    Status(Vec<WatcherStatus>),
    /// `list` without a name: watcher names, sorted.
    Watchers(Vec<String>),
    /// `list NAME`: the watcher's processes, by wid.
    Processes(Vec<ProcessInfo>),
    /// A command that changes processes: what it started, stopped and kept.
    Changes(ChangeReport),
    /// `numprocesses`, `numwatchers`.
    Count(u64),
    /// `get`, `options`, `globaloptions`.
    Options(OptionMap),
    /// `nodeinfo`.
    NodeInfo(Box<NodeInfo>),
    /// `stats`: the latest sample.
    Stats(StatsReport),
    /// `dstats`: the agent's own process.
    DStats(crate::stats::ProcessStats),
    /// `exec`: how the command ended and what it wrote.
    Exec(ExecOutput),
    /// `listsockets`: the sockets, sorted by name.
    Sockets(Vec<SocketInfo>),
    /// `logs`: recent output lines.
    Logs(crate::logs::LogReport),
    /// `upgrade`: the new binary passed its checks; the agent re-executes it
    /// right after this reply.
    Upgrade(UpgradeReport),
}

/// What an `upgrade` is about to do, once its new binary passed the checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The version running now.
    pub from_version: String,
    /// The version the new binary reports (`nodeagent --version`).
    pub to_version: String,
    /// The binary about to be executed.
    pub binary: String,
    /// Processes handed over (they keep running, with their pids).
    pub processes: u32,
    /// Listening sockets handed over (`[sockets]` and the agent's endpoints).
    pub sockets: u32,
}

/// One listening socket the agent holds for its watchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// Its name (`[sockets.NAME]`).
    pub name: String,
    /// The descriptor number the agent holds it under.
    pub fd: i32,
    /// `tcp`, `tcp6` or `unix`.
    pub family: String,
    /// Where it listens: `host:port` (with the real port when 0 was asked for),
    /// `[v6]:port`, or the unix socket's path.
    pub address: String,
    /// The host, for TCP sockets.
    pub host: Option<String>,
    /// The bound port, for TCP sockets.
    pub port: Option<u16>,
    /// The path, for unix sockets.
    pub path: Option<String>,
    /// Listen backlog.
    pub backlog: u32,
    /// Watchers that use it (`use_sockets` or a `$(circus.sockets.NAME)`
    /// reference).
    #[serde(default)]
    pub watchers: Vec<String>,
}

/// The outcome of `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit code, when the command exited (rather than being killed).
    pub code: Option<i32>,
    /// The signal that ended it, when it was killed.
    pub signal: Option<i32>,
    /// True when it ran past its timeout and was killed.
    pub timed_out: bool,
    /// What it wrote on stdout (lossy UTF-8), at most [`ExecOutput::MAX_OUTPUT`]
    /// bytes.
    pub stdout: String,
    /// What it wrote on stderr, likewise bounded.
    pub stderr: String,
    /// True when stdout or stderr was cut at [`ExecOutput::MAX_OUTPUT`].
    pub truncated: bool,
    /// Seconds it ran.
    pub duration: f64,
}

impl ExecOutput {
    /// Most bytes of each stream kept in a reply.
    pub const MAX_OUTPUT: usize = 64 * 1024;

    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The latest statistics sample of some watchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// When the sample was taken, seconds since the Unix epoch (0: no sample yet,
    /// or statistics are off).
    pub time: f64,
    /// Totals per watcher.
    pub watchers: Vec<crate::stats::WatcherStats>,
    /// Every process of those watchers.
    pub processes: Vec<crate::stats::ProcessStats>,
}

/// State of a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WatcherState {
    /// Not running, by request or because it never started.
    Stopped,
    /// Its processes are being started.
    Starting,
    /// Running and supervised.
    Active,
    /// Its processes are being stopped.
    Stopping,
    /// Stopped because it was flapping; a retry is scheduled.
    Flapping,
    /// Started with `on_demand`: no process yet, waiting for a connection on one
    /// of its sockets to spawn them.
    Waiting,
    /// A state this client does not know.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for WatcherState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatcherState::Stopped => "stopped",
            WatcherState::Starting => "starting",
            WatcherState::Active => "active",
            WatcherState::Stopping => "stopping",
            WatcherState::Flapping => "flapping",
            WatcherState::Waiting => "waiting",
            WatcherState::Unknown => "unknown",
        })
    }
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatcherStatus {
    /// Watcher name.
    pub name: String,
    /// Its state.
    pub state: WatcherState,
    /// Processes alive now (running or stopping).
    pub processes: u32,
    /// Processes it should have.
    pub numprocesses: u32,
    /// The last error while starting or running it, if any.
    pub last_error: Option<String>,
    /// Processes the agent replaced after they exited by themselves.
    #[serde(default)]
    pub restarts: u64,
    /// The last time one of its processes ended by itself.
    #[serde(default)]
    pub last_exit: Option<LastExit>,
    /// Slots waiting out a backoff before their process is started again.
    #[serde(default)]
    pub backoff: Vec<SlotBackoff>,
    /// Slots whose process ended and that stay empty by the restart policy
    /// (`restart = "on-failure"` after a success code, or `"never"`).
    #[serde(default)]
    pub exited: Vec<LastExit>,
}

impl WatcherStatus {
    /// A line with no restart history.
    pub fn new(name: impl Into<String>, state: WatcherState) -> Self {
        WatcherStatus {
            name: name.into(),
            state,
            processes: 0,
            numprocesses: 0,
            last_error: None,
            restarts: 0,
            last_exit: None,
            backoff: Vec::new(),
            exited: Vec::new(),
        }
    }
}

/// How and when a process ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    /// Its pid.
    pub pid: u32,
    /// Its slot.
    pub wid: u32,
    /// Exit code or signal.
    pub exit: ExitInfo,
    /// When, seconds since the Unix epoch.
    pub time: f64,
    /// Seconds it ran.
    pub uptime: f64,
}

/// A slot that is backing off after quick crashes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SlotBackoff {
    /// The slot.
    pub wid: u32,
    /// Quick crashes in a row.
    pub crashes: u32,
    /// Seconds until its process is started again.
    pub remaining: f64,
}

/// One process of a watcher, or one of its slots that waits out a backoff
/// (`state` = `backoff`, `pid` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Operating-system process id (0 for a slot backing off).
    pub pid: u32,
    /// Worker id, 1..n, stable per slot.
    pub wid: u32,
    /// Start time, seconds since the Unix epoch.
    pub started: f64,
    /// `running`, `stopping` or `backoff`.
    pub state: String,
    /// Times the agent restarted this slot after its process exited by itself.
    #[serde(default)]
    pub restarts: u32,
    /// How the slot's previous process ended.
    #[serde(default)]
    pub last_exit: Option<LastExit>,
    /// For a slot backing off: seconds until it is started again.
    #[serde(default)]
    pub retry_in: Option<f64>,
}

impl ProcessInfo {
    /// Whether this entry is a live process (not a slot waiting out a backoff).
    pub fn is_process(&self) -> bool {
        self.pid != 0
    }
}

/// What a state-changing command did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// Pids started.
    pub started: Vec<u32>,
    /// Pids stopped.
    pub stopped: Vec<u32>,
    /// Pids left running.
    pub kept: Vec<u32>,
    /// Watchers affected, with what happened to each (e.g. `added`, `removed`,
    /// `reloaded`, `unchanged`), where the command touches several.
    pub watchers: BTreeMap<String, String>,
    /// The watcher's target process count after the command, where it applies.
    pub numprocesses: Option<u32>,
    /// False when the reply was sent before the action finished (`no_wait`).
    pub done: bool,
}

/// What a node says about itself; the pool layer places workers with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name (topic prefix).
    pub node: String,
    /// Free-form labels from the config (`zone = "eu-1"`).
    pub labels: BTreeMap<String, String>,
    /// Ringmaster version of the agent.
    pub version: String,
    /// The agent's pid (it stays the same across upgrades in place).
    #[serde(default)]
    pub pid: u32,
    /// The binary the agent runs.
    #[serde(default)]
    pub binary: String,
    /// Upgrades in place since the agent's process started.
    #[serde(default)]
    pub upgrades: u32,
    /// Protocol version of the agent.
    pub protocol: u16,
    /// Seconds since the agent started.
    pub uptime: f64,
    /// Logical CPUs of the host.
    pub cpus: u32,
    /// Host memory in bytes.
    pub memory_total: u64,
    /// Host memory available in bytes.
    pub memory_available: u64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Processes the agent supervises.
    pub processes: u32,
    /// Watchers the agent has.
    pub watchers: u32,
    /// Processes on the whole host.
    pub host_processes: u32,
    /// The agent's control endpoint.
    pub control: String,
    /// The agent's publish endpoint.
    pub pubsub: String,
    /// Messages the agent could not queue for publishing since it started.
    #[serde(default)]
    pub events_dropped: u64,
    /// The agent requires sealed frames (it has keys).
    #[serde(default)]
    pub sealed: bool,
    /// Frames the agent refused since it started, by reason.
    #[serde(default)]
    pub refused: crate::seal::RefusalCounts,
    /// Control frames that were not Ringmaster requests (answered with an error).
    #[serde(default)]
    pub malformed: u64,
    /// Connections to the control endpoint since the agent started.
    #[serde(default)]
    pub control_connections: ConnectionCounts,
    /// Connections to the publish endpoint since the agent started.
    #[serde(default)]
    pub pubsub_connections: ConnectionCounts,
}

/// The connections of one bound endpoint, since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionCounts {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed at once because the endpoint had its maximum open.
    pub refused: u64,
    /// Connections that ended (by the peer, a failed handshake, a message over
    /// the size limit, a missed heartbeat).
    pub closed: u64,
    /// Peers that did not speak ZeroMQ's protocol (a bad greeting or handshake).
    pub handshake_failed: u64,
    /// Connections the system could not accept (e.g. out of file descriptors).
    pub accept_failed: u64,
}
