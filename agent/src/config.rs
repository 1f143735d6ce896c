//! The agent's configuration file (TOML): typed, strict, with a default for every
//! option, and errors that name the file, the line and the key.
//!
//! ```toml
//! [agent]
//! node = "web-1"
//! labels = { zone = "eu-1" }
//!
//! [watchers.worker]
//! cmd = "python3 worker.py --wid $(wid)"
//! numprocesses = 2
//! ```
//!
//! Relative paths (`state_dir`, `working_dir`, output files) are relative to the
//! directory of the config file, so a config means the same wherever the agent is
//! started from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringmaster_protocol::seal::Key;
use ringmaster_protocol::{names, OptionMap, OptionValue, Signal};
use serde::{Deserialize, Serialize};

/// Most processes one watcher may have.
pub const MAX_PROCESSES: u32 = 100_000;

/// A config that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key (dotted path) at fault, when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(&file.display().to_string());
            if let Some(line) = self.line {
                out.push_str(&format!(":{line}"));
            }
            out.push_str(": ");
        }
        if let Some(key) = &self.key {
            out.push_str(&format!("'{key}': "));
        }
        out.push_str(&self.message);
        out
    }

    /// An error about `key` with no file position (runtime `set`/`add`).
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

/// Something in a config file that loads, but not quite as written (a Circus
/// option Ringmaster does differently or ignores), with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The option at issue, when there is one.
    pub key: Option<String>,
    /// What happens instead, and what to do.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let as_error = ConfigError {
            file: self.file.clone(),
            line: self.line,
            key: self.key.clone(),
            message: self.message.clone(),
        };
        f.write_str(&as_error.render())
    }
}

/// The whole file as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[agent]`
    #[serde(default)]
    pub agent: AgentSection,
    /// `[env]`: variables every watcher gets (a watcher's own `env` wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `[sockets.NAME]`: listening sockets the agent binds for its watchers.
    #[serde(default)]
    pub sockets: BTreeMap<String, SocketConfig>,
    /// `[watchers.NAME]`
    #[serde(default)]
    pub watchers: BTreeMap<String, WatcherConfig>,
}

/// `[sockets.NAME]`: a listening socket the agent binds once, at start, and hands
/// to the processes of the watchers that use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Host or address to bind a TCP socket on (IPv4 or IPv6). Default:
    /// `127.0.0.1` when `port` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TCP port (0: one the OS picks; `listsockets` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path of a unix socket (instead of `host`/`port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Listen backlog.
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// Set `SO_REUSEPORT`, so that other programs may bind the same port too.
    #[serde(default)]
    pub reuseport: bool,
    /// Mode mask of a unix socket file (octal).
    #[serde(default = "default_socket_umask")]
    pub umask: Umask,
    /// Remove an existing unix socket file at `path` instead of failing.
    #[serde(default)]
    pub replace: bool,
}

impl SocketConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.port, &self.path) {
            (Some(_), Some(_)) => Err(ConfigError::key(
                "path",
                "a socket is either TCP (host, port) or unix (path), not both",
            )),
            (None, None) => Err(ConfigError::key(
                "port",
                "is missing: give a TCP port (and host), or a unix socket path",
            )),
            (None, Some(_)) if self.host.is_some() => Err(ConfigError::key(
                "host",
                "is for TCP sockets; a unix socket has only a path",
            )),
            _ if self.backlog == 0 => Err(ConfigError::key("backlog", "must be at least 1")),
            _ => Ok(()),
        }
    }

    /// The host a TCP socket binds (`127.0.0.1` by default).
    pub fn host_or_default(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }
}

fn default_backlog() -> u32 {
    2048
}
fn default_socket_umask() -> Umask {
    Umask(0o010)
}

/// A user or a group: a name, or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdSpec {
    /// A numeric id.
    Id(u32),
    /// A name, looked up when a process is started.
    Name(String),
}

impl fmt::Display for IdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSpec::Id(id) => write!(f, "{id}"),
            IdSpec::Name(name) => f.write_str(name),
        }
    }
}

/// A file mode creation mask: an octal string (`"022"`) or an integer (`0o022`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl Serialize for Umask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:03o}", self.0))
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Int(i64),
            Text(String),
        }
        let value = match Form::deserialize(d)? {
            Form::Int(i) => u32::try_from(i).ok(),
            Form::Text(text) => {
                let digits = text.trim().trim_start_matches("0o");
                u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8).ok()
            }
        };
        match value {
            Some(mask) if mask <= 0o777 => Ok(Umask(mask)),
            _ => Err(serde::de::Error::custom(
                "a umask is an octal string from \"000\" to \"777\" (or an integer like 0o022)",
            )),
        }
    }
}

/// A resource limit: a number, or `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This many (bytes, files, processes or seconds, as the limit counts).
    Value(u64),
    /// No limit (`RLIM_INFINITY`).
    Unlimited,
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Value(v) => s.serialize_u64(*v),
            Limit::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Int(i64),
            Text(String),
        }
        let bad = || serde::de::Error::custom("a limit is a number >= 0 or \"unlimited\"");
        match Form::deserialize(d)? {
            Form::Int(i) => u64::try_from(i).map(Limit::Value).map_err(|_| bad()),
            Form::Text(text) => match text.trim() {
                "" | "unlimited" | "infinity" | "-1" => Ok(Limit::Unlimited),
                number => number.parse().map(Limit::Value).map_err(|_| bad()),
            },
        }
    }
}

/// A hook: a command line run with the watcher's environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hook {
    /// The command line (run by `/bin/sh -c`).
    pub cmd: String,
    /// Seconds it may run before it is killed (and counts as failed).
    pub timeout: f64,
    /// A failure is logged and published but never stops the action.
    pub ignore_errors: bool,
}

/// Default seconds a hook may run.
pub const DEFAULT_HOOK_TIMEOUT: f64 = 30.0;

impl<'de> Deserialize<'de> for Hook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            cmd: String,
            #[serde(default = "hook_timeout")]
            timeout: f64,
            #[serde(default)]
            ignore_errors: bool,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Line(String),
            Table(Table),
        }
        match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a hook is a command line, or a table { cmd = \"...\", timeout = 30, ignore_errors = false }",
            )
        })? {
            Form::Line(cmd) => Ok(Hook {
                cmd,
                timeout: DEFAULT_HOOK_TIMEOUT,
                ignore_errors: false,
            }),
            Form::Table(t) => Ok(Hook {
                cmd: t.cmd,
                timeout: t.timeout,
                ignore_errors: t.ignore_errors,
            }),
        }
    }
}

fn hook_timeout() -> f64 {
    DEFAULT_HOOK_TIMEOUT
}

/// `[watchers.NAME.hooks]`: commands run around a watcher's lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the watcher starts; failing aborts the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_start: Option<Hook>,
    /// After it started; failing stops it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_start: Option<Hook>,
    /// Before each process is spawned; failing skips that spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_spawn: Option<Hook>,
    /// After each process is spawned; failing stops that process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_spawn: Option<Hook>,
    /// Before the watcher stops; failing aborts the stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_stop: Option<Hook>,
    /// After it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_stop: Option<Hook>,
    /// Before a signal is sent to a process; failing means it is not sent
    /// (SIGKILL always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_signal: Option<Hook>,
    /// After a signal was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_signal: Option<Hook>,
    /// Before an exited process is reaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_reap: Option<Hook>,
    /// After an exited process was reaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_reap: Option<Hook>,
}

impl Hooks {
    /// Every hook that is set, with its name (`before_start`, ...).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Hook)> {
        [
            ("before_start", &self.before_start),
            ("after_start", &self.after_start),
            ("before_spawn", &self.before_spawn),
            ("after_spawn", &self.after_spawn),
            ("before_stop", &self.before_stop),
            ("after_stop", &self.after_stop),
            ("before_signal", &self.before_signal),
            ("after_signal", &self.after_signal),
            ("before_reap", &self.before_reap),
            ("after_reap", &self.after_reap),
        ]
        .into_iter()
        .filter_map(|(name, hook)| hook.as_ref().map(|h| (name, h)))
    }

    /// True when no hook is set.
    pub fn is_empty(&self) -> bool {
        self == &Hooks::default()
    }
}

/// `[agent]`: the node itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Node name, the second part of every topic. Default: the host name.
    pub node: Option<String>,
    /// Control endpoint (ROUTER). Default: `ipc://RUNTIME_DIR/control.sock`, which
    /// only the agent's user (and `control_group`) may open.
    pub control: Option<String>,
    /// Publish endpoint (PUB). Default: `ipc://RUNTIME_DIR/pubsub.sock`.
    pub pubsub: Option<String>,
    /// A group whose members may drive the agent through its `ipc://` endpoints
    /// (their socket files are then mode 0660, owned by that group).
    pub control_group: Option<String>,
    /// Peers each endpoint serves at once; a connection over this is closed at
    /// once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections from one address each TCP endpoint serves at once.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Where runtime changes are persisted. Default: `/var/lib/ringmaster` as root,
    /// else `$XDG_STATE_HOME/ringmaster` (or `~/.local/state/ringmaster`).
    pub state_dir: Option<PathBuf>,
    /// Free-form labels, used by the pool layer for placement.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds to wait between starting two watchers.
    #[serde(default)]
    pub warmup_delay: f64,
    /// Allow TCP endpoints without keys (on loopback, every local user can reach
    /// them; elsewhere, every host that can reach the port).
    #[serde(default)]
    pub insecure: bool,
    /// Key file whose holders may do everything (`nodectl keygen FILE` makes one).
    /// With a key, every request and published body is sealed.
    pub admin_key: Option<PathBuf>,
    /// Key file whose holders may only read (status, list, stats, nodeinfo, and the
    /// publish endpoint). Needs `admin_key`.
    pub read_key: Option<PathBuf>,
    /// Seconds a sealed frame's timestamp may be off this host's clock.
    #[serde(default = "default_replay_window")]
    pub replay_window: f64,
    /// Seconds between two statistics samples (0: no statistics).
    #[serde(default = "one_f")]
    pub stats_interval: f64,
    /// Allow the `exec` command, which runs any shell command line (`/bin/sh -c`)
    /// as the agent's user on behalf of whoever can reach the control endpoint.
    /// Off by default: `exec` is then refused with a `forbidden` error.
    #[serde(default)]
    pub allow_exec: bool,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            node: None,
            control: None,
            pubsub: None,
            control_group: None,
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            state_dir: None,
            labels: BTreeMap::new(),
            warmup_delay: 0.0,
            insecure: false,
            admin_key: None,
            read_key: None,
            replay_window: default_replay_window(),
            stats_interval: 1.0,
            allow_exec: false,
        }
    }
}

fn default_replay_window() -> f64 {
    ringmaster_protocol::seal::DEFAULT_REPLAY_WINDOW.as_secs_f64()
}

/// The agent's keys, read from its key files at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKeys {
    /// May do everything.
    pub admin: Key,
    /// May only read.
    pub read: Option<Key>,
    /// How far a frame's timestamp may be off this host's clock.
    pub replay_window: Duration,
}

fn default_max_connections() -> usize {
    ringmaster_protocol::transport::DEFAULT_MAX_CONNECTIONS
}
fn default_max_connections_per_peer() -> usize {
    ringmaster_protocol::transport::DEFAULT_MAX_CONNECTIONS_PER_PEER
}

pub use crate::output::spec::{RotateWhen, StreamConfig};

/// Where a process's output goes (the `to` of a [`StreamConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Straight to the agent's own stream (Circus's default): not seen by the
    /// agent, costs nothing.
    Inherit,
    /// Discarded.
    Null,
    /// Through the agent: kept for `logs`, published, and written to the
    /// agent's own stream.
    Capture,
    /// Through the agent, appended to a file (kept for `logs` and published too).
    File(PathBuf),
}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Output::Inherit => s.serialize_str("inherit"),
            Output::Null => s.serialize_str("null"),
            Output::Capture => s.serialize_str("capture"),
            Output::File(path) => s.serialize_str(&path.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "inherit" => Output::Inherit,
            "null" | "/dev/null" => Output::Null,
            "capture" => Output::Capture,
            "" => {
                return Err(serde::de::Error::custom(
                    "empty output: use \"inherit\", \"null\", \"capture\" or a file path",
                ))
            }
            path => Output::File(PathBuf::from(path)),
        })
    }
}

/// Arguments, as a list or as one shell-quoted string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Args(pub Vec<String>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Line(String),
        }
        match Form::deserialize(d)? {
            Form::List(list) => Ok(Args(list)),
            Form::Line(line) => shlex::split(&line).map(Args).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "cannot split arguments {line:?}: unbalanced quotes"
                ))
            }),
        }
    }
}

/// Which exits of a process are replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum RestartMode {
    /// Every exit the agent did not ask for.
    #[default]
    Always,
    /// Exits with a code not in `success_exit_codes`, and deaths by a signal.
    OnFailure,
    /// None: a slot whose process ended stays empty.
    Never,
}

impl TryFrom<String> for RestartMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "always" => Ok(RestartMode::Always),
            "on-failure" => Ok(RestartMode::OnFailure),
            "never" => Ok(RestartMode::Never),
            _ => Err(format!(
                "restart must be \"always\", \"on-failure\" or \"never\", not {text:?}"
            )),
        }
    }
}

impl std::fmt::Display for RestartMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartMode::Always => "always",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Never => "never",
        })
    }
}

/// `[watchers.NAME]`: a named group of identical processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatcherConfig {
    /// Program and arguments (shell-quoted; `$(wid)`, `$(env.NAME)` expanded).
    pub cmd: String,
    /// More arguments, appended to those of `cmd`.
    #[serde(default)]
    pub args: Args,
    /// How many processes.
    #[serde(default = "one")]
    pub numprocesses: u32,
    /// Working directory of the processes. Default: the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// Environment variables (values may use `$(env.NAME)`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from the agent's environment (else only `env`, as in Circus).
    #[serde(default)]
    pub copy_env: bool,
    /// Run `cmd` through `/bin/sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// Signal that asks a process to stop.
    #[serde(default = "sigterm")]
    pub stop_signal: Signal,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default = "thirty")]
    pub graceful_timeout: f64,
    /// Send the stop signal to the whole process group, not only the process.
    #[serde(default)]
    pub stop_children: bool,
    /// Replace processes that exit (Circus's option; `false` is `restart = "never"`).
    #[serde(default = "yes")]
    pub respawn: bool,
    /// Which exits are replaced: `always`, `on-failure` (not a success exit code)
    /// or `never`.
    #[serde(default)]
    pub restart: RestartMode,
    /// Exit codes that count as success, for `restart = "on-failure"` and for
    /// telling a normal exit from a crash.
    #[serde(default = "success_codes")]
    pub success_exit_codes: Vec<i32>,
    /// Start with the agent (and with a name-less `start`).
    #[serde(default = "yes")]
    pub autostart: bool,
    /// Seconds between two spawns of this watcher.
    #[serde(default)]
    pub warmup_delay: f64,
    /// Start order: higher first; shutdown goes the other way.
    #[serde(default)]
    pub priority: i64,
    /// At most one process.
    #[serde(default)]
    pub singleton: bool,
    /// Flapping: how many times the watcher is retried before the agent gives up
    /// (-1: forever). Setting it turns flapping detection on. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry: Option<i64>,
    /// Detect flapping at all (stop the watcher, retry, give up). Default: only
    /// when `max_retry` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_flapping: Option<bool>,
    /// Flapping: this many unexpected exits ...
    #[serde(default = "two")]
    pub flapping_attempts: u32,
    /// ... within this many seconds stop the watcher ...
    #[serde(default = "one_f")]
    pub flapping_window: f64,
    /// ... for this many seconds before it is started again.
    #[serde(default = "seven")]
    pub retry_in: f64,
    /// Backoff after the second quick crash of a process slot, in seconds; doubles
    /// with each further crash.
    #[serde(default = "tenth")]
    pub backoff_initial: f64,
    /// Cap on the backoff, in seconds.
    #[serde(default = "thirty")]
    pub backoff_max: f64,
    /// A process that ran this many seconds had a normal run: its exit is replaced
    /// at once and its slot's backoff resets. A failure before it is a quick crash.
    #[serde(default = "five_f", alias = "healthy_after")]
    pub min_uptime: f64,
    /// Give processes /dev/null as stdin.
    #[serde(default = "yes")]
    pub close_child_stdin: bool,
    /// Where stdout goes: `"inherit"`, `"null"`, `"capture"` or a file path
    /// (appended), or a table with rotation and timestamp options.
    #[serde(default)]
    pub stdout: StreamConfig,
    /// Where stderr goes, as `stdout`.
    #[serde(default)]
    pub stderr: StreamConfig,
    /// Run the processes as this user (name or uid; needs root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<IdSpec>,
    /// Run the processes with this group (name or gid). Default: the user's
    /// primary group when `uid` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<IdSpec>,
    /// File mode creation mask of the processes (octal). Default: the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<Umask>,
    /// Pass the agent's `PATH` even without `copy_env`.
    #[serde(default)]
    pub copy_path: bool,
    /// Hand the agent's sockets to the processes as systemd does (`LISTEN_FDS`,
    /// `LISTEN_PID`, `LISTEN_FDNAMES`, descriptors from 3).
    #[serde(default)]
    pub use_sockets: bool,
    /// Seconds after which a process is replaced (0: never).
    #[serde(default)]
    pub max_age: f64,
    /// Up to this many seconds are added at random to `max_age`, so that
    /// processes started together are not all replaced together.
    #[serde(default = "thirty")]
    pub max_age_variance: f64,
    /// Start no process until a connection arrives on one of the watcher's
    /// sockets.
    #[serde(default)]
    pub on_demand: bool,
    /// Commands run around the watcher's lifecycle.
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// `RLIMIT_AS`: address space, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_as: Option<Limit>,
    /// `RLIMIT_CORE`: core file size, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_core: Option<Limit>,
    /// `RLIMIT_CPU`: CPU time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_cpu: Option<Limit>,
    /// `RLIMIT_DATA`: data segment, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_data: Option<Limit>,
    /// `RLIMIT_FSIZE`: largest file written, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_fsize: Option<Limit>,
    /// `RLIMIT_LOCKS`: file locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_locks: Option<Limit>,
    /// `RLIMIT_MEMLOCK`: locked memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_memlock: Option<Limit>,
    /// `RLIMIT_MSGQUEUE`: POSIX message queues, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_msgqueue: Option<Limit>,
    /// `RLIMIT_NICE`: ceiling of the nice value (20 - limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_nice: Option<Limit>,
    /// `RLIMIT_NOFILE`: open files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_nofile: Option<Limit>,
    /// `RLIMIT_NPROC`: processes of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_nproc: Option<Limit>,
    /// `RLIMIT_RSS`: resident set, bytes (ignored by Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_rss: Option<Limit>,
    /// `RLIMIT_RTPRIO`: real-time priority ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_rtprio: Option<Limit>,
    /// `RLIMIT_RTTIME`: real-time CPU time, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_rttime: Option<Limit>,
    /// `RLIMIT_SIGPENDING`: queued signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_sigpending: Option<Limit>,
    /// `RLIMIT_STACK`: stack size, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_stack: Option<Limit>,
}

/// The resource limits a watcher may set, by the name after `rlimit_`.
pub const RLIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// True for an option that has no value until it is set (`working_dir`, `uid`,
/// `gid`, `umask`, `hooks`, `rlimit_*`): `options` leaves it out while unset.
pub fn is_optional_option(key: &str) -> bool {
    matches!(key, "working_dir" | "uid" | "gid" | "umask" | "hooks")
        || key
            .strip_prefix("rlimit_")
            .is_some_and(|name| RLIMIT_NAMES.contains(&name))
}

impl WatcherConfig {
    /// The resource limits this watcher sets, by name (`nofile`, ...).
    pub fn rlimits(&self) -> Vec<(&'static str, Limit)> {
        [
            ("as", self.rlimit_as),
            ("core", self.rlimit_core),
            ("cpu", self.rlimit_cpu),
            ("data", self.rlimit_data),
            ("fsize", self.rlimit_fsize),
            ("locks", self.rlimit_locks),
            ("memlock", self.rlimit_memlock),
            ("msgqueue", self.rlimit_msgqueue),
            ("nice", self.rlimit_nice),
            ("nofile", self.rlimit_nofile),
            ("nproc", self.rlimit_nproc),
            ("rss", self.rlimit_rss),
            ("rtprio", self.rlimit_rtprio),
            ("rttime", self.rlimit_rttime),
            ("sigpending", self.rlimit_sigpending),
            ("stack", self.rlimit_stack),
        ]
        .into_iter()
        .filter_map(|(name, limit)| limit.map(|l| (name, l)))
        .collect()
    }
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn one_f() -> f64 {
    1.0
}
fn seven() -> f64 {
    7.0
}
fn five_f() -> f64 {
    5.0
}
fn success_codes() -> Vec<i32> {
    vec![0]
}
fn tenth() -> f64 {
    0.1
}
fn thirty() -> f64 {
    30.0
}
fn yes() -> bool {
    true
}
fn sigterm() -> Signal {
    Signal::Term
}

/// Options that `set` applies without touching running processes; every other
/// option makes `set` reload the watcher gracefully.
pub const LIVE_OPTIONS: &[&str] = &[
    "numprocesses",
    "stop_signal",
    "graceful_timeout",
    "stop_children",
    "respawn",
    "restart",
    "success_exit_codes",
    "autostart",
    "warmup_delay",
    "priority",
    "singleton",
    "max_retry",
    "check_flapping",
    "flapping_attempts",
    "flapping_window",
    "retry_in",
    "backoff_initial",
    "backoff_max",
    "min_uptime",
    "max_age",
    "max_age_variance",
    "hooks",
];

impl WatcherConfig {
    /// A watcher running `cmd` with every other option at its default.
    pub fn with_cmd(cmd: impl Into<String>) -> Result<Self, ConfigError> {
        let mut map = OptionMap::new();
        map.insert("cmd".into(), OptionValue::Str(cmd.into()));
        WatcherConfig::from_options(&map)
    }

    /// Builds a watcher from wire options (`add`), with the same checks as a file.
    pub fn from_options(options: &OptionMap) -> Result<Self, ConfigError> {
        let table = options_to_toml(options);
        table.try_into::<WatcherConfig>().map_err(|e| ConfigError {
            file: None,
            line: None,
            key: None,
            message: e.message().trim().to_string(),
        })
    }

    /// Every option that is set, with its value: `from_options` gives this config
    /// back.
    pub fn to_options(&self) -> OptionMap {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(table)) => table
                .into_iter()
                .map(|(k, v)| (k, toml_to_option(v)))
                .collect(),
            _ => OptionMap::new(),
        }
    }

    /// Every option as `options` and `get` show them: the flapping settings with
    /// the values in effect when they are not set.
    pub fn shown_options(&self) -> OptionMap {
        let mut options = self.to_options();
        options.insert(
            "check_flapping".into(),
            OptionValue::Bool(self.flapping_enabled()),
        );
        options.insert("max_retry".into(), OptionValue::Int(self.max_retry()));
        options
    }

    /// This config with `changes` applied, checked as a whole.
    pub fn with_changes(&self, changes: &OptionMap) -> Result<Self, ConfigError> {
        let mut options = self.to_options();
        for (key, value) in changes {
            if key == "name" {
                return Err(ConfigError::key(key, "a watcher cannot be renamed"));
            }
            options.insert(key.clone(), value.clone());
        }
        WatcherConfig::from_options(&options)
    }

    /// Which exits are replaced, `respawn = false` included.
    pub fn restart_mode(&self) -> RestartMode {
        if self.respawn {
            self.restart
        } else {
            RestartMode::Never
        }
    }

    /// Whether flapping detection is on: when asked for, or when `max_retry` is set.
    pub fn flapping_enabled(&self) -> bool {
        self.check_flapping.unwrap_or(self.max_retry.is_some())
    }

    /// Flapping retries before the agent gives up (-1: forever).
    pub fn max_retry(&self) -> i64 {
        self.max_retry.unwrap_or(5)
    }

    /// Whether `code` is one of the success exit codes.
    pub fn is_success(&self, code: i32) -> bool {
        self.success_exit_codes.contains(&code)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| Err(ConfigError::key(key, message));
        if self.cmd.trim().is_empty() {
            return fail("cmd", "is empty; give the program to run".into());
        }
        if shlex::split(&self.cmd).is_none() {
            return fail("cmd", "has unbalanced quotes".into());
        }
        if self.singleton && self.numprocesses > 1 {
            return fail(
                "numprocesses",
                format!(
                    "is {} but the watcher is a singleton (at most 1)",
                    self.numprocesses
                ),
            );
        }
        for (key, value) in [
            ("graceful_timeout", self.graceful_timeout),
            ("warmup_delay", self.warmup_delay),
            ("flapping_window", self.flapping_window),
            ("retry_in", self.retry_in),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
            ("min_uptime", self.min_uptime),
            ("max_age", self.max_age),
            ("max_age_variance", self.max_age_variance),
        ] {
            if !value.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&value) {
                return fail(
                    key,
                    format!("must be a number of seconds >= 0, not {value}"),
                );
            }
        }
        if self.max_retry.is_some_and(|n| n < -1) {
            return fail("max_retry", "must be -1 (forever) or a count >= 0".into());
        }
        if let Some(code) = self
            .success_exit_codes
            .iter()
            .find(|c| !(0..=255).contains(*c))
        {
            return fail(
                "success_exit_codes",
                format!("has {code}; exit codes are 0 to 255"),
            );
        }
        if self.flapping_attempts == 0 {
            return fail(
                "flapping_attempts",
                "must be at least 1 (set check_flapping = false to turn flapping detection off)"
                    .into(),
            );
        }
        for (name, hook) in self.hooks.iter() {
            if hook.cmd.trim().is_empty() {
                return fail(&format!("hooks.{name}"), "has an empty cmd".into());
            }
            if !hook.timeout.is_finite() || hook.timeout <= 0.0 || hook.timeout > 86_400.0 {
                return fail(
                    &format!("hooks.{name}.timeout"),
                    format!("must be a number of seconds > 0, not {}", hook.timeout),
                );
            }
        }
        if self.numprocesses > MAX_PROCESSES {
            return fail("numprocesses", format!("is larger than {MAX_PROCESSES}"));
        }
        Ok(())
    }

    /// Resolves relative paths against `base` (the config file's directory).
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(dir) = &self.working_dir {
            if dir.is_relative() {
                self.working_dir = Some(base.join(dir));
            }
        }
        for output in [&mut self.stdout, &mut self.stderr] {
            output.resolve_path(base);
        }
    }
}

fn options_to_toml(options: &OptionMap) -> toml::Value {
    toml::Value::Table(
        options
            .iter()
            .map(|(k, v)| (k.clone(), option_to_toml(v)))
            .collect(),
    )
}

fn option_to_toml(value: &OptionValue) -> toml::Value {
    match value {
        OptionValue::Bool(b) => toml::Value::Boolean(*b),
        OptionValue::Int(i) => toml::Value::Integer(*i),
        OptionValue::Float(x) => toml::Value::Float(*x),
        OptionValue::Str(s) => toml::Value::String(s.clone()),
        OptionValue::List(items) => toml::Value::Array(items.iter().map(option_to_toml).collect()),
        OptionValue::Table(map) => options_to_toml(map),
    }
}

fn toml_to_option(value: toml::Value) -> OptionValue {
    match value {
        toml::Value::Boolean(b) => OptionValue::Bool(b),
        toml::Value::Integer(i) => OptionValue::Int(i),
        toml::Value::Float(x) => OptionValue::Float(x),
        toml::Value::String(s) => OptionValue::Str(s),
        toml::Value::Datetime(d) => OptionValue::Str(d.to_string()),
        toml::Value::Array(items) => {
            OptionValue::List(items.into_iter().map(toml_to_option).collect())
        }
        toml::Value::Table(table) => OptionValue::Table(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_option(v)))
                .collect(),
        ),
    }
}

/// The agent's settings once the file is read and defaults are filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Node name.
    pub node: String,
    /// Control endpoint.
    pub control: String,
    /// Publish endpoint.
    pub pubsub: String,
    /// Both endpoints are the defaults in the runtime directory, which the agent
    /// makes private to its user (and `control_group`).
    pub default_endpoints: bool,
    /// The group that may open the `ipc://` endpoints, with its id.
    pub control_group: Option<(String, u32)>,
    /// Peers each endpoint serves at once.
    pub max_connections: usize,
    /// Connections from one address each TCP endpoint serves at once.
    pub max_connections_per_peer: usize,
    /// State directory.
    pub state_dir: PathBuf,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Seconds between starting two watchers.
    pub warmup_delay: f64,
    /// TCP endpoints allowed without keys.
    pub insecure: bool,
    /// Keys, when requests and published bodies are sealed.
    pub keys: Option<AgentKeys>,
    /// Seconds between two statistics samples (0: off).
    pub stats_interval: f64,
    /// The `exec` command is allowed.
    pub allow_exec: bool,
}

/// A loaded, checked config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub path: Option<PathBuf>,
    /// `[agent]`, resolved.
    pub agent: AgentSettings,
    /// Listening sockets, by name.
    pub sockets: BTreeMap<String, SocketConfig>,
    /// Watchers, by name (each with `[env]` merged into its `env`).
    pub watchers: BTreeMap<String, WatcherConfig>,
    /// What loaded, but not quite as written (logged at start, printed by
    /// `--check-config`).
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Reads and checks `path`: TOML, or a Circus INI file (a `.ini` name or
    /// Circus section headers; see [`crate::circus_ini`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        if crate::circus_ini::is_circus_ini(path, &source) {
            return crate::circus_ini::load(path, &source);
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Config::parse(&source, Some(path), &base)
    }

    /// Parses a config from `source`; `base` resolves relative paths.
    pub fn parse(source: &str, file: Option<&Path>, base: &Path) -> Result<Config, ConfigError> {
        let parsed: ConfigFile = toml::from_str(source).map_err(|e| {
            let line = e.span().map(|span| line_of(source, span.start));
            ConfigError {
                file: file.map(Path::to_path_buf),
                line,
                key: None,
                message: e.message().trim().to_string(),
            }
        })?;
        let at = |table: &[&str], key: Option<&str>, err: ConfigError| ConfigError {
            file: file.map(Path::to_path_buf),
            line: locate(source, table, key),
            key: Some(match (key, &err.key) {
                (_, Some(k)) => format!("{}.{k}", table.join(".")),
                (Some(k), None) => format!("{}.{k}", table.join(".")),
                (None, None) => table.join("."),
            }),
            message: err.message,
        };

        let agent = parsed.agent;
        let node = match agent.node.clone() {
            Some(node) => node,
            None => default_node_name(),
        };
        names::validate("node", &node).map_err(|e| {
            at(
                &["agent"],
                Some("node"),
                ConfigError::key("node", e.to_string()),
            )
        })?;
        let keys = load_keys(&agent, base)
            .map_err(|(key, message)| at(&["agent"], Some(key), ConfigError::key(key, message)))?;
        let default_endpoints = agent.control.is_none() && agent.pubsub.is_none();
        let control = agent
            .control
            .clone()
            .unwrap_or_else(ringmaster_protocol::endpoint::default_control);
        let pubsub = agent
            .pubsub
            .clone()
            .unwrap_or_else(ringmaster_protocol::endpoint::default_pubsub);
        for (key, endpoint) in [("control", &control), ("pubsub", &pubsub)] {
            check_endpoint(endpoint, agent.insecure || keys.is_some())
                .map_err(|message| at(&["agent"], Some(key), ConfigError::key(key, message)))?;
        }
        if control == pubsub {
            return Err(at(
                &["agent"],
                Some("pubsub"),
                ConfigError::key("pubsub", "must differ from 'control'"),
            ));
        }
        if !agent.warmup_delay.is_finite() || agent.warmup_delay < 0.0 {
            return Err(at(
                &["agent"],
                Some("warmup_delay"),
                ConfigError::key("warmup_delay", "must be a number of seconds >= 0"),
            ));
        }
        if !agent.stats_interval.is_finite()
            || (agent.stats_interval != 0.0 && !(0.05..=3600.0).contains(&agent.stats_interval))
        {
            return Err(at(
                &["agent"],
                Some("stats_interval"),
                ConfigError::key(
                    "stats_interval",
                    "must be 0 (off) or a number of seconds from 0.05 to 3600",
                ),
            ));
        }
        for (key, value) in [
            ("max_connections", agent.max_connections),
            ("max_connections_per_peer", agent.max_connections_per_peer),
        ] {
            if !(1..=100_000).contains(&value) {
                return Err(at(
                    &["agent"],
                    Some(key),
                    ConfigError::key(key, "must be a number from 1 to 100000"),
                ));
            }
        }
        let control_group = match &agent.control_group {
            None => None,
            Some(name) => {
                let group = nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        at(
                            &["agent"],
                            Some("control_group"),
                            ConfigError::key(
                                "control_group",
                                format!("no group '{name}' on this host (see getent group)"),
                            ),
                        )
                    })?;
                Some((name.clone(), group.gid.as_raw()))
            }
        };
        let state_dir = match agent.state_dir {
            Some(dir) if dir.is_relative() => base.join(dir),
            Some(dir) => dir,
            None => default_state_dir(),
        };

        let mut sockets = BTreeMap::new();
        for (name, mut socket) in parsed.sockets {
            names::validate("socket", &name).map_err(|e| {
                at(
                    &["sockets", &name],
                    None,
                    ConfigError::key("", e.to_string()),
                )
            })?;
            if let Err(err) = socket.validate() {
                let key = err.key.clone();
                return Err(at(&["sockets", &name], key.as_deref(), err));
            }
            if let Some(path) = &socket.path {
                if path.is_relative() {
                    socket.path = Some(base.join(path));
                }
            }
            sockets.insert(name, socket);
        }

        let mut watchers = BTreeMap::new();
        for (name, mut watcher) in parsed.watchers {
            for (key, value) in &parsed.env {
                watcher
                    .env
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
            names::validate("watcher", &name).map_err(|e| {
                at(
                    &["watchers", &name],
                    None,
                    ConfigError::key("", e.to_string()),
                )
            })?;
            if let Err(err) = watcher.validate() {
                let key = err.key.clone();
                return Err(at(&["watchers", &name], key.as_deref(), err));
            }
            watcher.resolve_paths(base);
            watchers.insert(name, watcher);
        }
        Ok(Config {
            path: file.map(Path::to_path_buf),
            agent: AgentSettings {
                node,
                control,
                pubsub,
                default_endpoints,
                control_group,
                max_connections: agent.max_connections,
                max_connections_per_peer: agent.max_connections_per_peer,
                state_dir,
                labels: agent.labels,
                warmup_delay: agent.warmup_delay,
                insecure: agent.insecure,
                keys,
                stats_interval: agent.stats_interval,
                allow_exec: agent.allow_exec,
            },
            sockets,
            watchers,
            warnings: Vec::new(),
        })
    }
}

/// Reads `admin_key` and `read_key` (relative to `base`); on error, the key at
/// fault and what is wrong.
fn load_keys(
    agent: &AgentSection,
    base: &Path,
) -> Result<Option<AgentKeys>, (&'static str, String)> {
    let window = agent.replay_window;
    if !(window.is_finite() && (1.0..=3600.0).contains(&window)) {
        return Err((
            "replay_window",
            "must be a number of seconds from 1 to 3600".into(),
        ));
    }
    let load = |key: &'static str, file: &PathBuf| {
        Key::load(&base.join(file)).map_err(|e| (key, e.to_string()))
    };
    let admin = match (&agent.admin_key, &agent.read_key) {
        (Some(file), _) => load("admin_key", file)?,
        (None, Some(_)) => {
            return Err((
                "read_key",
                "needs an admin_key too: a read key alone would leave no one able to \
                 change anything (make one with: nodectl keygen FILE)"
                    .into(),
            ))
        }
        (None, None) => return Ok(None),
    };
    let read = match &agent.read_key {
        Some(file) => Some(load("read_key", file)?),
        None => None,
    };
    if read.as_ref().is_some_and(|r| r.id() == admin.id()) {
        return Err((
            "read_key",
            "is the same key as admin_key: make a second key with nodectl keygen".into(),
        ));
    }
    Ok(Some(AgentKeys {
        admin,
        read,
        replay_window: Duration::from_secs_f64(window),
    }))
}

/// Refuses endpoints that are not ZeroMQ transports we serve, and TCP endpoints
/// unless `allowed` (the agent has keys, or `insecure` was asked for): the control
/// endpoint changes what runs on the host, and every local user can reach a
/// loopback port, so without keys the agent belongs on its private `ipc://` socket.
pub fn check_endpoint(endpoint: &str, allowed: bool) -> Result<(), String> {
    let parsed =
        ringmaster_protocol::endpoint::Endpoint::parse(endpoint).map_err(|e| e.to_string())?;
    if parsed.is_tcp() && !allowed {
        let reach = if parsed.is_host_private() {
            "every local user"
        } else {
            "every host that can reach the port"
        };
        return Err(format!(
            "'{endpoint}' is a TCP endpoint and this agent has no keys: {reach} could run \
             commands as the agent's user. Leave `control` and `pubsub` unset (the agent's \
             own ipc:// sockets, open to its user and `control_group` only), name a key \
             file in `admin_key` in [agent] (make one with: nodectl keygen FILE), or, on a \
             host and network you trust, set `insecure = true` in [agent]"
        ));
    }
    Ok(())
}

fn default_node_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    // Host names may contain dots; keep the first label, which is what people call
    // the machine, and make it a valid topic part.
    let short = host.split('.').next().unwrap_or("localhost");
    let cleaned: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "localhost".into()
    } else {
        cleaned
    }
}

fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ringmaster");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ringmaster");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/ringmaster"),
        None => PathBuf::from("/tmp/ringmaster-state"),
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Finds the line of `key` inside the table `[a.b]` (or of the table header when
/// `key` is absent or not found). Good enough for the common layouts of a config
/// file; returns None when it cannot tell.
fn locate(source: &str, table: &[&str], key: Option<&str>) -> Option<usize> {
    let mut in_table = false;
    let mut header_line = None;
    for (index, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name: String = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .split('.')
                .map(|part| part.trim().trim_matches('"').trim_matches('\''))
                .collect::<Vec<_>>()
                .join(".");
            in_table = name == table.join(".");
            if in_table {
                header_line = Some(index + 1);
            }
            continue;
        }
        if in_table {
            if let Some(key) = key {
                let found = line
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"'))
                    .is_some_and(|k| k == key);
                if found {
                    return Some(index + 1);
                }
            }
        }
    }
    header_line
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Inherit => f.write_str("inherit"),
            Output::Null => f.write_str("null"),
            Output::Capture => f.write_str("capture"),
            Output::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<Config, ConfigError> {
        Config::parse(source, Some(Path::new("agent.toml")), Path::new("/srv"))
    }

    #[test]
    fn optional_options_are_known_by_name() {
        for key in [
            "working_dir",
            "uid",
            "gid",
            "umask",
            "hooks",
            "rlimit_nofile",
        ] {
            assert!(is_optional_option(key), "{key}");
        }
        for key in ["rlimit_nope", "numprocesses", "nope"] {
            assert!(!is_optional_option(key), "{key}");
        }
    }

    #[test]
    fn defaults_follow_circus() {
        let config = parse("[agent]\nnode = \"n1\"\n[watchers.w]\ncmd = \"sleep 10\"\n").unwrap();
        let w = &config.watchers["w"];
        assert_eq!(w.numprocesses, 1);
        assert_eq!(w.graceful_timeout, 30.0);
        assert_eq!(w.stop_signal, Signal::Term);
        assert!(w.respawn && w.autostart && w.close_child_stdin);
        assert!(!w.copy_env && !w.singleton && !w.stop_children);
        assert_eq!(
            (
                w.flapping_attempts,
                w.flapping_window,
                w.retry_in,
                w.max_retry()
            ),
            (2, 1.0, 7.0, 5)
        );
        assert_eq!(
            config.agent.control,
            ringmaster_protocol::endpoint::default_control()
        );
        assert!(config.agent.control.starts_with("ipc://"));
        assert_eq!(
            config.agent.pubsub,
            ringmaster_protocol::endpoint::default_pubsub()
        );
        assert!(config.agent.default_endpoints);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[agent]\nnode = \"n1\"\n\n[watchers.w]\ncmd = \"x\"\nnumprocess = 2\n")
            .unwrap_err();
        assert_eq!(err.line, Some(6));
        let text = err.to_string();
        assert!(text.starts_with("agent.toml:6:"), "{text}");
        assert!(text.contains("numprocess"), "{text}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("[agent]\nnode = \"n1\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn duplicate_watcher_is_refused() {
        let err = parse("[watchers.w]\ncmd = \"a\"\n[watchers.w]\ncmd = \"b\"\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key_and_line() {
        let err = parse("[agent]\nnode = \"n1\"\n[watchers.w]\ncmd = \"a\"\nsingleton = true\nnumprocesses = 3\n")
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("watchers.w.numprocesses"));
        assert_eq!(err.line, Some(6));
        let err = parse("[watchers.\"a.b\"]\ncmd = \"x\"\n").unwrap_err();
        assert!(
            err.to_string().contains("invalid watcher name 'a.b'"),
            "{err}"
        );
    }

    #[test]
    fn tcp_without_keys_needs_insecure_even_on_loopback() {
        let err = parse("[agent]\nnode = \"n\"\ncontrol = \"tcp://0.0.0.0:5555\"\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        let text = err.to_string();
        assert!(text.contains("insecure = true"), "{err}");
        assert!(text.contains("every host that can reach"), "{err}");
        parse("[agent]\nnode = \"n\"\ninsecure = true\ncontrol = \"tcp://0.0.0.0:5555\"\n")
            .unwrap();
        for loopback in ["tcp://[::1]:5555", "tcp://127.0.0.1:5555"] {
            let err = parse(&format!(
                "[agent]\nnode = \"n\"\ncontrol = \"{loopback}\"\n"
            ))
            .unwrap_err();
            assert!(err.to_string().contains("every local user"), "{err}");
        }
        let err = parse("[agent]\nnode = \"n\"\npubsub = \"tcp://127.0.0.1:5556\"\n").unwrap_err();
        assert!(
            err.to_string().contains("'pubsub'") || err.to_string().contains("pubsub"),
            "{err}"
        );
        let config =
            parse("[agent]\nnode = \"n\"\ninsecure = true\ncontrol = \"tcp://127.0.0.1:5555\"\n")
                .unwrap();
        assert!(!config.agent.default_endpoints);
    }

    #[test]
    fn control_group_and_max_connections_are_checked() {
        let err =
            parse("[agent]\nnode = \"n\"\ncontrol_group = \"no-such-group-here\"\n").unwrap_err();
        assert!(
            err.to_string().contains("no group 'no-such-group-here'"),
            "{err}"
        );
        let config = parse("[agent]\nnode = \"n\"\ncontrol_group = \"root\"\n").unwrap();
        assert_eq!(config.agent.control_group, Some(("root".to_string(), 0)));
        let err = parse("[agent]\nnode = \"n\"\nmax_connections = 0\n").unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let config = parse("[agent]\nnode = \"n\"\nstate_dir = \"state\"\n[watchers.w]\ncmd = \"x\"\nworking_dir = \"app\"\nstdout = \"logs/w.log\"\n").unwrap();
        assert_eq!(config.agent.state_dir, PathBuf::from("/srv/state"));
        assert_eq!(
            config.watchers["w"].working_dir,
            Some(PathBuf::from("/srv/app"))
        );
        assert_eq!(
            config.watchers["w"].stdout.to,
            Output::File(PathBuf::from("/srv/logs/w.log"))
        );
    }

    #[test]
    fn options_round_trip_and_changes_are_checked() {
        let w = WatcherConfig::with_cmd("sleep 5").unwrap();
        let back = WatcherConfig::from_options(&w.to_options()).unwrap();
        assert_eq!(back, w);
        let mut change = OptionMap::new();
        change.insert("numprocesses".into(), OptionValue::Str("3".into()));
        assert!(w.with_changes(&change).is_err());
        change.insert("numprocesses".into(), OptionValue::Int(3));
        assert_eq!(w.with_changes(&change).unwrap().numprocesses, 3);
        let mut bad = OptionMap::new();
        bad.insert("nope".into(), OptionValue::Int(1));
        assert!(w.with_changes(&bad).unwrap_err().message.contains("nope"));
    }

    #[test]
    fn args_accept_a_string() {
        let config = parse("[watchers.w]\ncmd = \"x\"\nargs = \"--a 'b c'\"\n").unwrap();
        assert_eq!(config.watchers["w"].args.0, vec!["--a", "b c"]);
    }

    #[test]
    fn process_options_sockets_and_global_env() {
        let config = parse(
            "[env]\nAPP = \"x\"\nLEVEL = \"info\"\n\
             [sockets.web]\nport = 0\n[sockets.admin]\npath = \"admin.sock\"\numask = \"077\"\n\
             [watchers.w]\ncmd = \"x\"\nuid = \"nobody\"\ngid = 65534\numask = 0o027\n\
             rlimit_nofile = 4096\nrlimit_core = \"unlimited\"\nuse_sockets = true\nmax_age = 60\n\
             env = { LEVEL = \"debug\" }\n\
             [watchers.w.hooks]\nbefore_start = \"true\"\nafter_stop = { cmd = \"true\", timeout = 5 }\n",
        )
        .unwrap();
        let w = &config.watchers["w"];
        assert_eq!(w.uid, Some(IdSpec::Name("nobody".into())));
        assert_eq!(w.gid, Some(IdSpec::Id(65534)));
        assert_eq!(w.umask, Some(Umask(0o027)));
        assert_eq!(
            w.rlimits(),
            vec![("core", Limit::Unlimited), ("nofile", Limit::Value(4096))]
        );
        assert_eq!(w.env["APP"], "x");
        assert_eq!(w.env["LEVEL"], "debug", "a watcher's own env wins");
        assert_eq!(w.hooks.iter().count(), 2);
        assert_eq!(w.max_age_variance, 30.0);
        let admin = &config.sockets["admin"];
        assert_eq!(admin.path, Some(PathBuf::from("/srv/admin.sock")));
        assert_eq!(admin.umask, Umask(0o077));
        assert_eq!(config.sockets["web"].backlog, 2048);
        let back = WatcherConfig::from_options(&w.to_options()).unwrap();
        assert_eq!(&back, w);

        let err = parse("[sockets.s]\nhost = \"::1\"\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = parse("[watchers.w]\ncmd = \"x\"\numask = \"999\"\n").unwrap_err();
        assert!(err.to_string().contains("octal"), "{err}");
        let err = parse("[watchers.w]\ncmd = \"x\"\nrlimit_nofile = -5\n").unwrap_err();
        assert!(err.to_string().contains("unlimited"), "{err}");
    }
}
