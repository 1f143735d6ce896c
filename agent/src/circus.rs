//! Circus compatibility: the control endpoint also answers Circus's JSON requests,
//! so that an unmodified `circusctl` (or a Circus plugin) can drive `nodeagent`.
//!
//! A Circus client sends one JSON frame per request,
//! `{"id": ..., "command": "...", "properties": {...}, "msg_type": "cast"?}`, from a
//! DEALER; the agent tells it from a MessagePack request by its first byte (`{`).
//! This module reads such a request ([`parse_request`]), runs it through the agent
//! as the matching [`Command`]s (exactly as MessagePack requests are run), and
//! answers in Circus's shape: `{"status": "ok", "time": ..., "id": ..., payload}` or
//! `{"status": "error", "reason": ..., "errno": N, "tb": null, "time": ..., "id": ...}`
//! ([`encode_ok`], [`encode_error`]).
//!
//! What Circus does, and so what this module does:
//!
//! - Command names are case-insensitive; a watcher name matches case-insensitively
//!   when that is unambiguous ([`resolve_name`]); `start`, `stop` and `restart`
//!   take a glob (`match = "glob"`, the default) or an exact name
//!   (`match = "simple"`).
//! - A command that changes state replies `ok` at once unless `waiting` is true;
//!   then it replies when the work is done, with what it did (`info`,
//!   `numprocesses`). An error found before the work has to wait (a watcher that
//!   does not exist, a bad option) is still reported; a later one is only logged.
//! - `msg_type: "cast"` runs the command and sends no reply at all.
//! - Errors carry Circus's `errno` ([`Errno`]).
//!
//! Where Ringmaster differs it says so in the reply or in the README: watcher
//! states map to Circus's four (`flapping` shows as `stopped`, since Circus's
//! flapping plugin stops the watcher until its retry), `restart` without a name
//! restarts every active watcher instead of rebuilding the agent, `match =
//! "regex"` is refused, and there is no global command lock (so no "arbiter is
//! already running" conflicts). An agent with keys never gets here: it refuses
//! Circus frames in the gate, since they cannot be sealed.

use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use ringmaster_protocol::message::{
    ChangeReport, ProcessInfo, SocketInfo, WatcherState, WatcherStatus,
};
use ringmaster_protocol::stats::ProcessStats;
use ringmaster_protocol::transport::{Incoming, Replier};
use ringmaster_protocol::{
    Command, ErrorKind, ErrorReply, OptionMap, OptionValue, Response, Signal, MAX_FRAME_BYTES,
};
use serde_json::{Map, Value};
use tracing::{debug, warn};

use crate::circus_shape::{self, float, option_to_json, process_info, UserNames};
use crate::fnmatch::fnmatch;
use crate::supervisor::Agent;

/// The body of a successful reply, besides `status`, `time` and `id`.
pub type Payload = Map<String, Value>;

/// Circus's error numbers (`errno` of an error reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// 0: no particular class.
    NotSpecified = 0,
    /// 1: the frame is not a JSON request.
    InvalidJson = 1,
    /// 2: the command name is unknown.
    UnknownCommand = 2,
    /// 3: a missing or bad property, or a watcher, process or option not found.
    MessageError = 3,
    /// 4: the operating system refused (a signal, a spawn, a file).
    OsError = 4,
    /// 5: the command itself failed.
    CommandError = 5,
    /// 6: the command failed after it was accepted.
    BadMsgData = 6,
}

/// An error reply in Circus's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircusError {
    /// Its class.
    pub errno: Errno,
    /// What went wrong, for people.
    pub reason: String,
}

impl CircusError {
    /// An error of class `errno`.
    pub fn new(errno: Errno, reason: impl Into<String>) -> Self {
        CircusError {
            errno,
            reason: reason.into(),
        }
    }

    /// A bad or missing property (errno 3).
    pub fn message(reason: impl Into<String>) -> Self {
        Self::new(Errno::MessageError, reason)
    }

    fn missing(key: &str) -> Self {
        Self::message(format!("message invalid '{key}' is missing"))
    }

    fn not_found(name: &str) -> Self {
        Self::message(format!("program {name} not found"))
    }
}

impl From<ErrorReply> for CircusError {
    fn from(e: ErrorReply) -> Self {
        CircusError::new(errno_of(e.kind), e.message)
    }
}

/// The Circus errno of one of the agent's error kinds.
pub fn errno_of(kind: ErrorKind) -> Errno {
    match kind {
        ErrorKind::BadFrame | ErrorKind::VersionMismatch => Errno::InvalidJson,
        ErrorKind::UnknownCommand => Errno::UnknownCommand,
        ErrorKind::BadArguments
        | ErrorKind::NotFound
        | ErrorKind::InvalidConfig
        | ErrorKind::Forbidden
        | ErrorKind::Unauthorized => Errno::MessageError,
        ErrorKind::SpawnFailed | ErrorKind::Os => Errno::OsError,
        _ => Errno::CommandError,
    }
}

/// How `start`, `stop` and `restart` match their `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// One watcher, by name (case-insensitive when unambiguous).
    Simple,
    /// Every watcher whose name matches the glob (`*`, `?`, `[...]`),
    /// case-insensitively.
    Glob,
}

/// One Circus command with its properties read and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `status [name]`
    Status {
        /// The watcher; all when absent.
        name: Option<String>,
    },
    /// `list [name]`
    List {
        /// The watcher whose pids to list; watcher names when absent.
        name: Option<String>,
    },
    /// `numprocesses [name]`
    NumProcesses {
        /// The watcher; the sum over all when absent.
        name: Option<String>,
    },
    /// `numwatchers`
    NumWatchers,
    /// `options name`
    Options {
        /// The watcher.
        name: String,
    },
    /// `get name keys...`
    Get {
        /// The watcher.
        name: String,
        /// The options to read.
        keys: Vec<String>,
    },
    /// `globaloptions [option]`
    GlobalOptions {
        /// One option; all when absent.
        option: Option<String>,
    },
    /// `listsockets`
    ListSockets,
    /// `stats [name [pid]]`
    Stats {
        /// The watcher; all when absent.
        name: Option<String>,
        /// One of its processes.
        process: Option<u32>,
    },
    /// `dstats`
    DStats,
    /// `start [name]`
    Start {
        /// The watcher(s); every autostart watcher when absent.
        name: Option<String>,
        /// How `name` matches.
        matching: Match,
    },
    /// `stop [name]`
    Stop {
        /// The watcher(s); every watcher when absent.
        name: Option<String>,
        /// How `name` matches.
        matching: Match,
    },
    /// `restart [name]`
    Restart {
        /// The watcher(s); every active watcher when absent.
        name: Option<String>,
        /// How `name` matches.
        matching: Match,
    },
    /// `reload [name]`
    Reload {
        /// The watcher; every active watcher when absent.
        name: Option<String>,
        /// False (`--terminate`): restart instead of a graceful reload.
        graceful: bool,
        /// Replace the processes one at a time.
        sequential: bool,
    },
    /// `incr name [nb]`
    Incr {
        /// The watcher.
        name: String,
        /// How many processes to add.
        nb: u32,
    },
    /// `decr name [nb]`
    Decr {
        /// The watcher.
        name: String,
        /// How many processes to remove.
        nb: u32,
    },
    /// `add name cmd`
    Add {
        /// The new watcher's name.
        name: String,
        /// Its command line.
        cmd: String,
        /// Extra arguments.
        args: Vec<String>,
        /// Other options.
        options: OptionMap,
        /// Start it at once.
        start: bool,
    },
    /// `rm name`
    Rm {
        /// The watcher.
        name: String,
        /// Leave its processes running.
        nostop: bool,
    },
    /// `set name key value...`
    Set {
        /// The watcher.
        name: String,
        /// The new values, as sent (typed or strings; see [`coerce_set_options`]).
        options: Map<String, Value>,
    },
    /// `signal name [pid] signum`
    Signal {
        /// The watcher.
        name: String,
        /// One of its processes; all when absent.
        pid: Option<u32>,
        /// One child of `pid`.
        childpid: Option<u32>,
        /// The signal.
        signal: Signal,
        /// Only the direct children of the process(es), not the processes.
        children: bool,
        /// The process(es) and their children (their process group).
        recursive: bool,
    },
    /// `reloadconfig`
    ReloadConfig,
    /// `quit`
    Quit,
}

/// A Circus request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct CircusRequest {
    /// The client's id, echoed in the reply (any JSON value).
    pub id: Value,
    /// `msg_type: "cast"`: no reply.
    pub cast: bool,
    /// `waiting: true`: reply when the work is done.
    pub waiting: bool,
    /// What to do.
    pub call: Call,
}

/// A frame that is not a request the agent can run, with what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The request's id, when it could be read (else `null`).
    pub id: Value,
    /// A cast gets no reply, not even an error.
    pub cast: bool,
    /// Why.
    pub error: CircusError,
}

/// Reads one Circus request frame.
pub fn parse_request(frame: &[u8]) -> Result<CircusRequest, Rejected> {
    let reject = |id: Value, cast: bool, error: CircusError| Rejected { id, cast, error };
    if frame.len() > MAX_FRAME_BYTES {
        return Err(reject(
            Value::Null,
            false,
            CircusError::message(format!(
                "request of {} bytes is larger than the {MAX_FRAME_BYTES}-byte limit",
                frame.len()
            )),
        ));
    }
    let invalid = || {
        reject(
            Value::Null,
            false,
            CircusError::new(Errno::InvalidJson, "json invalid"),
        )
    };
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(frame) else {
        return Err(invalid());
    };
    let id = message.remove("id").unwrap_or(Value::Null);
    let cast = message.get("msg_type").and_then(Value::as_str) == Some("cast");
    let command = match message.get("command") {
        Some(Value::String(command)) => command.clone(),
        _ => return Err(reject(id, cast, CircusError::missing("command"))),
    };
    let properties = match message.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties,
        Some(_) => {
            return Err(reject(
                id,
                cast,
                CircusError::message("'properties' should be an object"),
            ))
        }
    };
    let props = Props(&properties);
    let parsed = props
        .flag("waiting", false)
        .and_then(|waiting| parse_call(&command, &props).map(|call| (waiting, call)));
    match parsed {
        Ok((waiting, call)) => Ok(CircusRequest {
            id,
            cast,
            waiting,
            call,
        }),
        Err(error) => Err(reject(id, cast, error)),
    }
}

fn parse_call(command: &str, props: &Props<'_>) -> Result<Call, CircusError> {
    let call = match command.to_ascii_lowercase().as_str() {
        "status" => Call::Status {
            name: props.opt_str("name")?,
        },
        "list" => Call::List {
            name: props.opt_str("name")?,
        },
        "numprocesses" => Call::NumProcesses {
            name: props.opt_str("name")?,
        },
        "numwatchers" => Call::NumWatchers,
        "options" => Call::Options {
            name: props.req_str("name")?,
        },
        "get" => Call::Get {
            name: props.req_str("name")?,
            keys: props.keys()?,
        },
        "globaloptions" => Call::GlobalOptions {
            option: props.opt_str("option")?,
        },
        "listsockets" => Call::ListSockets,
        "stats" => Call::Stats {
            name: props.opt_str("name")?,
            process: props.opt_u32("process")?,
        },
        "dstats" => Call::DStats,
        "start" => Call::Start {
            name: props.opt_str("name")?,
            matching: props.matching()?,
        },
        "stop" => Call::Stop {
            name: props.opt_str("name")?,
            matching: props.matching()?,
        },
        "restart" => Call::Restart {
            name: props.opt_str("name")?,
            matching: props.matching()?,
        },
        "reload" => Call::Reload {
            name: props.opt_str("name")?,
            graceful: props.flag("graceful", true)?,
            sequential: props.flag("sequential", false)?,
        },
        "incr" => Call::Incr {
            name: props.req_str("name")?,
            nb: props.opt_u32("nb")?.unwrap_or(1),
        },
        "decr" => Call::Decr {
            name: props.req_str("name")?,
            nb: props.opt_u32("nb")?.unwrap_or(1),
        },
        "add" => Call::Add {
            name: props.req_str("name")?,
            cmd: props.req_str("cmd")?,
            args: props.args()?,
            options: props.options_map()?,
            start: props.flag("start", false)?,
        },
        "rm" => Call::Rm {
            name: props.req_str("name")?,
            nostop: props.flag("nostop", false)?,
        },
        "set" => Call::Set {
            name: props.req_str("name")?,
            options: match props.get("options") {
                Some(Value::Object(options)) => options
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect(),
                Some(_) => {
                    return Err(CircusError::message(
                        "'options' property should be an object",
                    ))
                }
                None => return Err(CircusError::missing("options")),
            },
        },
        "signal" => {
            let pid = props.opt_u32("pid")?;
            let childpid = props.opt_u32("childpid")?;
            if childpid.is_some() && pid.is_none() {
                return Err(CircusError::message("cannot specify childpid without pid"));
            }
            Call::Signal {
                name: props.req_str("name")?,
                pid,
                childpid,
                signal: props.signal()?,
                children: props.flag("children", false)?,
                recursive: props.flag("recursive", false)?,
            }
        }
        "reloadconfig" => Call::ReloadConfig,
        "quit" => Call::Quit,
        "kill" => {
            return Err(CircusError::new(
                Errno::UnknownCommand,
                "unknown command: 'kill' (nodeagent has no kill command: use `signal`, \
                 or `restart` to replace the processes gracefully)",
            ))
        }
        _ => {
            return Err(CircusError::new(
                Errno::UnknownCommand,
                format!("unknown command: {}", py_repr(command)),
            ))
        }
    };
    Ok(call)
}

/// The properties of a request, with typed accessors that fail in Circus's words.
struct Props<'a>(&'a Map<String, Value>);

impl Props<'_> {
    /// A property, `null` counting as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, CircusError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(CircusError::message(format!("'{key}' should be a string"))),
        }
    }

    fn req_str(&self, key: &str) -> Result<String, CircusError> {
        self.opt_str(key)?.ok_or_else(|| CircusError::missing(key))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, CircusError> {
        match self.get(key) {
            None => Ok(default),
            Some(value) => to_bool(value)
                .ok_or_else(|| CircusError::message(format!("'{key}' isn't a valid boolean"))),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, CircusError> {
        let bad = || CircusError::message(format!("'{key}' should be a whole number >= 0"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(bad),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    fn matching(&self) -> Result<Match, CircusError> {
        match self.opt_str("match")?.as_deref() {
            None | Some("glob") => Ok(Match::Glob),
            Some("simple") => Ok(Match::Simple),
            Some("regex") => Err(CircusError::message(
                "match method regex is not supported by nodeagent: use glob (the default) or simple",
            )),
            Some(other) => Err(CircusError::message(format!(
                "unknown match method {other} (use glob or simple)"
            ))),
        }
    }

    fn keys(&self) -> Result<Vec<String>, CircusError> {
        let bad = || CircusError::message("'keys' should be a list of option names");
        match self.get("keys") {
            None => Err(CircusError::missing("keys")),
            Some(Value::String(key)) => Ok(vec![key.clone()]),
            Some(Value::Array(keys)) => keys
                .iter()
                .map(|k| k.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    fn args(&self) -> Result<Vec<String>, CircusError> {
        let bad = || CircusError::message("'args' should be a string or a list of strings");
        match self.get("args") {
            None => Ok(Vec::new()),
            Some(Value::String(line)) => shlex::split(line).ok_or_else(|| {
                CircusError::message(format!("cannot split 'args' {line:?}: unbalanced quotes"))
            }),
            Some(Value::Array(items)) => items
                .iter()
                .map(|a| match a {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(bad()),
                })
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    fn options_map(&self) -> Result<OptionMap, CircusError> {
        match self.get("options") {
            None => Ok(OptionMap::new()),
            Some(Value::Object(options)) => Ok(options
                .iter()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), json_to_option(v)?)))
                .collect()),
            Some(_) => Err(CircusError::message(
                "'options' property should be an object",
            )),
        }
    }

    fn signal(&self) -> Result<Signal, CircusError> {
        let text = match self.get("signum") {
            None => return Err(CircusError::missing("signum")),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(CircusError::message("signal invalid")),
        };
        text.parse()
            .map_err(|e| CircusError::message(format!("signal invalid: {e}")))
    }
}

/// A JSON value as a boolean, the way Circus reads one: `true`/`false`, 0/1, or
/// a string such as `"true"`, `"no"`, `"1"`.
pub fn to_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" => Some(true),
            "false" | "0" | "no" | "n" | "off" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A string as Python's `repr` writes it (Circus quotes names that way in its
/// messages): `'nope'`, or `"it's"` when it holds a single quote.
pub fn py_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

// ----- names --------------------------------------------------------------------

/// The watcher `given` names among `names`: itself when it exists, else the one
/// name equal to it but for case (Circus's names are case-insensitive).
pub fn resolve_name(names: &[String], given: &str) -> Result<String, CircusError> {
    if names.iter().any(|n| n == given) {
        return Ok(given.to_string());
    }
    let candidates: Vec<&String> = names
        .iter()
        .filter(|n| n.eq_ignore_ascii_case(given))
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CircusError::not_found(given)),
        several => Err(CircusError::message(format!(
            "watcher name {given} is ambiguous: {} differ only in case; use the exact name",
            several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// True when `name` matches the shell glob `pattern`, ignoring case, as Circus's
/// `fnmatch` matching of watcher names does.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fnmatch(&pattern.to_lowercase(), &name.to_lowercase())
}

/// Which watchers a `start`, `stop` or `restart` applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// No name: the command's own notion of "all".
    All,
    /// Exactly one watcher.
    One(String),
    /// Several watchers, matched by a glob.
    Several(Vec<String>),
}

/// The watchers `name` selects among `names`.
pub fn select_watchers(
    names: &[String],
    name: Option<&str>,
    matching: Match,
) -> Result<Selection, CircusError> {
    let Some(name) = name else {
        return Ok(Selection::All);
    };
    if matching == Match::Simple {
        return resolve_name(names, name).map(Selection::One);
    }
    let mut found: Vec<String> = names
        .iter()
        .filter(|n| glob_match(name, n))
        .cloned()
        .collect();
    match found.len() {
        0 => Err(CircusError::not_found(name)),
        1 => Ok(Selection::One(found.remove(0))),
        _ => Ok(Selection::Several(found)),
    }
}

// ----- values -------------------------------------------------------------------

/// A JSON value as a watcher option value (`None` for `null`, which means "the
/// default").
pub fn json_to_option(value: &Value) -> Option<OptionValue> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => OptionValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OptionValue::Int(i),
            None => OptionValue::Float(n.as_f64().unwrap_or(f64::MAX)),
        },
        Value::String(s) => OptionValue::Str(s.clone()),
        Value::Array(items) => OptionValue::List(items.iter().filter_map(json_to_option).collect()),
        Value::Object(map) => OptionValue::Table(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_option(v)?)))
                .collect(),
        ),
    })
}

/// The values of a Circus `set`, typed like the watcher's `current` options:
/// `"3"` and `3` both set an integer option, `"true"` a boolean one, a signal
/// number (circusctl sends `stop_signal` as a number) becomes its name.
pub fn coerce_set_options(
    given: &Map<String, Value>,
    current: &OptionMap,
) -> Result<OptionMap, CircusError> {
    let mut out = OptionMap::new();
    for (key, value) in given {
        let key = key.to_ascii_lowercase();
        let value = match (value, key.starts_with("rlimit_")) {
            (Value::Null, true) => OptionValue::Str("unlimited".into()),
            (Value::Null, false) => {
                return Err(CircusError::message(format!("'{key}' cannot be null")))
            }
            (value, _) => coerce_one(&key, value, current.get(&key))?,
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn coerce_one(
    key: &str,
    value: &Value,
    current: Option<&OptionValue>,
) -> Result<OptionValue, CircusError> {
    let text = match value {
        Value::String(s) => Some(s.trim()),
        _ => None,
    };
    if key == "stop_signal" {
        let spelled = match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(CircusError::message("'stop_signal' isn't a signal")),
        };
        let signal: Signal = spelled
            .parse()
            .map_err(|e| CircusError::message(format!("'stop_signal': {e}")))?;
        return Ok(OptionValue::Str(signal.name().to_string()));
    }
    if key.starts_with("rlimit_") {
        if let Some(n) = text.and_then(|t| t.parse::<i64>().ok()) {
            return Ok(OptionValue::Int(n));
        }
        if text == Some("") {
            return Ok(OptionValue::Str("unlimited".into()));
        }
    }
    let coerced = match (current, value) {
        (Some(OptionValue::Int(_)), Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64))
            .map(OptionValue::Int),
        (Some(OptionValue::Int(_)), Value::String(_)) => {
            text.and_then(|t| t.parse().ok()).map(OptionValue::Int)
        }
        (Some(OptionValue::Int(_)), _) => None,
        (Some(OptionValue::Float(_)), Value::Number(n)) => n.as_f64().map(OptionValue::Float),
        (Some(OptionValue::Float(_)), Value::String(_)) => {
            text.and_then(|t| t.parse().ok()).map(OptionValue::Float)
        }
        (Some(OptionValue::Float(_)), _) => None,
        (Some(OptionValue::Bool(_)), value) => to_bool(value).map(OptionValue::Bool),
        (Some(OptionValue::Str(_)), Value::Number(n)) => Some(OptionValue::Str(n.to_string())),
        (Some(OptionValue::Str(_)), Value::Bool(b)) => Some(OptionValue::Str(b.to_string())),
        (_, value) => json_to_option(value),
    };
    coerced.ok_or_else(|| {
        let what = match current {
            Some(OptionValue::Int(_)) => "an integer",
            Some(OptionValue::Float(_)) => "a number",
            Some(OptionValue::Bool(_)) => "a valid boolean",
            _ => "a valid value",
        };
        CircusError::message(format!("'{key}' isn't {what}"))
    })
}

// ----- payloads -----------------------------------------------------------------

/// Circus's name for one of our watcher states. Circus knows four; a flapping
/// watcher is stopped until its retry, as Circus's flapping plugin leaves it.
pub fn circus_status(state: WatcherState) -> &'static str {
    match state {
        WatcherState::Active => "active",
        WatcherState::Starting => "starting",
        WatcherState::Stopping => "stopping",
        _ => "stopped",
    }
}

/// `status`: `{"status": "active"}` for one watcher, else `{"statuses": {...}}`.
pub fn status_payload(list: &[WatcherStatus], named: bool) -> Payload {
    let mut payload = Payload::new();
    if named {
        if let Some(one) = list.first() {
            payload.insert("status".into(), circus_status(one.state).into());
            return payload;
        }
    }
    let statuses: Map<String, Value> = list
        .iter()
        .map(|w| (w.name.clone(), circus_status(w.state).into()))
        .collect();
    payload.insert("statuses".into(), Value::Object(statuses));
    payload
}

/// `listsockets`: `{"sockets": [{fd, name, backlog, host, port} or {fd, name,
/// backlog, path}]}`, sorted by fd.
pub fn sockets_payload(sockets: &[SocketInfo]) -> Payload {
    let mut sorted: Vec<&SocketInfo> = sockets.iter().collect();
    sorted.sort_by_key(|s| (s.fd, s.name.clone()));
    let list = sorted
        .into_iter()
        .map(|s| {
            let mut sock = Map::new();
            sock.insert("fd".into(), s.fd.into());
            sock.insert("name".into(), s.name.clone().into());
            sock.insert("backlog".into(), s.backlog.into());
            match (&s.host, &s.path) {
                (Some(host), _) => {
                    sock.insert("host".into(), host.clone().into());
                    sock.insert("port".into(), s.port.unwrap_or(0).into());
                }
                (None, Some(path)) => {
                    sock.insert("path".into(), path.clone().into());
                }
                (None, None) => {
                    sock.insert("path".into(), s.address.clone().into());
                }
            }
            Value::Object(sock)
        })
        .collect();
    one("sockets", Value::Array(list))
}

/// The `info` of a waiting `start` (`{started, kept}`), `restart` or `reload`
/// (`{stopped, started, kept}`).
pub fn change_info(report: &ChangeReport, with_stopped: bool) -> Value {
    let mut info = Map::new();
    if with_stopped {
        info.insert("stopped".into(), report.stopped.clone().into());
    }
    info.insert("started".into(), report.started.clone().into());
    info.insert("kept".into(), report.kept.clone().into());
    Value::Object(info)
}

/// `globaloptions`: Circus's five (`endpoint`, `pubsub_endpoint`,
/// `stats_endpoint`, `check_delay`, `multicast_endpoint`) from ours, then ours.
/// Statistics go out on the publish endpoint (`stat.*`), exits are noticed at
/// once (`check_delay` 0) and there is no multicast discovery (`null`).
pub fn global_options_payload(
    ours: &OptionMap,
    option: Option<&str>,
) -> Result<Payload, CircusError> {
    let mut all: Map<String, Value> = ours
        .iter()
        .map(|(k, v)| (k.clone(), option_to_json(v)))
        .collect();
    let control = all.get("control").cloned().unwrap_or(Value::Null);
    let pubsub = all.get("pubsub").cloned().unwrap_or(Value::Null);
    all.insert("endpoint".into(), control);
    all.insert("pubsub_endpoint".into(), pubsub.clone());
    all.insert("stats_endpoint".into(), pubsub);
    all.insert("check_delay".into(), float(0.0));
    all.insert("multicast_endpoint".into(), Value::Null);
    let options = match option {
        None => all,
        Some(key) => match all.remove(key) {
            Some(value) => Map::from_iter([(key.to_string(), value)]),
            None => {
                return Err(CircusError::message(format!(
                    "{} not an existing option",
                    py_repr(key)
                )))
            }
        },
    };
    Ok(one("options", Value::Object(options)))
}

fn one(key: &str, value: Value) -> Payload {
    Payload::from_iter([(key.to_string(), value)])
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A success reply: `{"status": "ok", "time": ..., payload..., "id": id}` (a
/// payload's own `status`, as `status NAME` has, takes the place of `ok`).
pub fn encode_ok(id: &Value, payload: Payload) -> Vec<u8> {
    let mut reply = Map::new();
    reply.insert("status".into(), "ok".into());
    reply.insert("time".into(), float(now()));
    reply.extend(payload);
    reply.insert("id".into(), id.clone());
    encode(reply)
}

/// An error reply: `{"status": "error", "reason", "tb": null, "time", "errno",
/// "id"}`.
pub fn encode_error(id: &Value, error: &CircusError) -> Vec<u8> {
    let mut reply = Map::new();
    reply.insert("status".into(), "error".into());
    reply.insert("reason".into(), error.reason.clone().into());
    reply.insert("tb".into(), Value::Null);
    reply.insert("time".into(), float(now()));
    reply.insert("errno".into(), (error.errno as i64).into());
    reply.insert("id".into(), id.clone());
    encode(reply)
}

fn encode(reply: Map<String, Value>) -> Vec<u8> {
    // Serialising a map of JSON values cannot fail; fall back to a fixed error.
    serde_json::to_vec(&Value::Object(reply)).unwrap_or_else(|_| {
        br#"{"status": "error", "reason": "cannot encode the reply", "errno": 5, "id": null}"#
            .to_vec()
    })
}

// ----- running requests ---------------------------------------------------------

/// Answers one Circus request frame from its own task, so that a slow command
/// never holds back the next request.
pub fn spawn(agent: Rc<Agent>, incoming: Incoming, mut replier: Replier) {
    tokio::task::spawn_local(async move {
        let Some(reply) = answer(&agent, &incoming.body).await else {
            return;
        };
        if let Err(e) = replier.send(incoming.envelope(), reply).await {
            debug!("circus reply not delivered: {e}");
        }
    });
}

/// Runs one Circus request frame and returns the reply frame (`None` for a cast,
/// which gets none).
pub async fn answer(agent: &Rc<Agent>, frame: &[u8]) -> Option<Vec<u8>> {
    let request = match parse_request(frame) {
        Ok(request) => request,
        Err(rejected) => {
            debug!("refused a circus request: {}", rejected.error.reason);
            return (!rejected.cast).then(|| encode_error(&rejected.id, &rejected.error));
        }
    };
    let detached = request.cast || !request.waiting;
    let result = run(agent, request.call, detached).await;
    if request.cast {
        if let Err(e) = &result {
            warn!("circus cast failed: {}", e.reason);
        }
        return None;
    }
    Some(match result {
        Ok(payload) => encode_ok(&request.id, payload),
        Err(error) => encode_error(&request.id, &error),
    })
}

/// Runs a command through the agent.
async fn ask(agent: &Rc<Agent>, command: Command) -> Result<Response, CircusError> {
    agent.handle(command).await.map_err(CircusError::from)
}

fn unexpected(command: &str, response: &Response) -> CircusError {
    CircusError::new(
        Errno::CommandError,
        format!("unexpected answer from the agent to {command}: {response:?}"),
    )
}

async fn watcher_names(agent: &Rc<Agent>) -> Result<Vec<String>, CircusError> {
    match ask(agent, Command::List { name: None }).await? {
        Response::Watchers(names) => Ok(names),
        other => Err(unexpected("list", &other)),
    }
}

async fn resolve(agent: &Rc<Agent>, given: &str) -> Result<String, CircusError> {
    resolve_name(&watcher_names(agent).await?, given)
}

async fn resolve_opt(
    agent: &Rc<Agent>,
    given: Option<String>,
) -> Result<Option<String>, CircusError> {
    match given {
        Some(given) => resolve(agent, &given).await.map(Some),
        None => Ok(None),
    }
}

async fn watcher_options(agent: &Rc<Agent>, name: &str) -> Result<OptionMap, CircusError> {
    match ask(
        agent,
        Command::Options {
            name: name.to_string(),
        },
    )
    .await?
    {
        Response::Options(options) => Ok(options),
        other => Err(unexpected("options", &other)),
    }
}

/// Runs `work` to completion when `detached` is false. Otherwise polls it once:
/// when it is done at once (an error found before anything had to wait, or a
/// command with nothing to wait for) its result counts, else it goes on in its
/// own task and the answer is `None` (Circus's immediate `ok`).
async fn finish<T: 'static>(
    what: &'static str,
    work: impl Future<Output = Result<T, CircusError>> + 'static,
    detached: bool,
) -> Result<Option<T>, CircusError> {
    let mut work = Box::pin(work);
    if !detached {
        return work.await.map(Some);
    }
    match std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        Poll::Ready(result) => result.map(|_| None),
        Poll::Pending => {
            tokio::task::spawn_local(async move {
                if let Err(e) = work.await {
                    warn!("circus {what} failed after its reply: {}", e.reason);
                }
            });
            Ok(None)
        }
    }
}

/// Runs `command` as a state change (see [`finish`]).
async fn change(
    agent: &Rc<Agent>,
    command: Command,
    detached: bool,
) -> Result<Option<Response>, CircusError> {
    let what = command.name();
    let agent = Rc::clone(agent);
    finish(what, async move { ask(&agent, command).await }, detached).await
}

fn changes(what: &str, response: Option<Response>) -> Result<Option<ChangeReport>, CircusError> {
    match response {
        None => Ok(None),
        Some(Response::Changes(report)) => Ok(Some(report)),
        Some(other) => Err(unexpected(what, &other)),
    }
}

/// The three commands that take a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Start,
    Stop,
    Restart,
}

impl Lifecycle {
    fn command(self, name: Option<String>) -> Command {
        match self {
            Lifecycle::Start => Command::Start { name },
            Lifecycle::Stop => Command::Stop { name },
            Lifecycle::Restart => Command::Restart { name },
        }
    }

    fn info(self, report: &ChangeReport) -> Value {
        match self {
            Lifecycle::Start => change_info(report, false),
            Lifecycle::Stop => Value::Null,
            Lifecycle::Restart => change_info(report, true),
        }
    }
}

async fn lifecycle(
    agent: &Rc<Agent>,
    kind: Lifecycle,
    name: Option<String>,
    matching: Match,
    detached: bool,
) -> Result<Payload, CircusError> {
    let names = watcher_names(agent).await?;
    match select_watchers(&names, name.as_deref(), matching)? {
        Selection::All => {
            change(agent, kind.command(None), detached).await?;
            Ok(Payload::new())
        }
        Selection::One(name) => {
            let command = kind.command(Some(name));
            let what = command.name();
            let report = changes(what, change(agent, command, detached).await?)?;
            Ok(report.map_or_else(Payload::new, |r| one("info", kind.info(&r))))
        }
        Selection::Several(names) => {
            // Circus's order: start highest priority first, stop lowest first.
            let mut ordered = Vec::with_capacity(names.len());
            for name in names {
                let priority = match watcher_options(agent, &name).await?.get("priority") {
                    Some(OptionValue::Int(p)) => *p,
                    _ => 0,
                };
                ordered.push((priority, name));
            }
            ordered.sort();
            if kind != Lifecycle::Stop {
                ordered.reverse();
            }
            let agent = Rc::clone(agent);
            let work = async move {
                for (_, name) in ordered {
                    ask(&agent, kind.command(Some(name))).await?;
                }
                Ok(())
            };
            finish(kind.command(None).name(), work, detached).await?;
            Ok(Payload::new())
        }
    }
}

async fn scale(
    agent: &Rc<Agent>,
    name: String,
    nb: u32,
    up: bool,
    detached: bool,
) -> Result<Payload, CircusError> {
    let name = resolve(agent, &name).await?;
    let options = watcher_options(agent, &name).await?;
    let current = match options.get("numprocesses") {
        Some(OptionValue::Int(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    if options.get("singleton") == Some(&OptionValue::Bool(true)) {
        // As in Circus: a singleton is never scaled, and says so.
        let mut payload = one("numprocesses", current.into());
        payload.insert("singleton".into(), true.into());
        return Ok(payload);
    }
    let command = if up {
        Command::Incr { name, nb }
    } else {
        // Circus never goes below zero processes; neither do we.
        Command::Decr {
            name,
            nb: nb.min(current),
        }
    };
    let what = command.name();
    let report = changes(what, change(agent, command, detached).await?)?;
    Ok(match report {
        Some(report) => one(
            "numprocesses",
            report.numprocesses.unwrap_or(current).into(),
        ),
        None => Payload::new(),
    })
}

async fn get(agent: &Rc<Agent>, name: String, keys: Vec<String>) -> Result<Payload, CircusError> {
    let mut all = circus_options(agent, &name).await?;
    let mut picked = Map::new();
    for key in keys {
        match all.remove(&key) {
            Some(value) => {
                picked.insert(key, value);
            }
            None => {
                return Err(CircusError::message(format!(
                    "{} option not found",
                    py_repr(&key)
                )))
            }
        }
    }
    Ok(one("options", Value::Object(picked)))
}

/// The options of the watcher `given` names, as circusd shows them.
async fn circus_options(agent: &Rc<Agent>, given: &str) -> Result<Map<String, Value>, CircusError> {
    let name = resolve(agent, given).await?;
    let ours = watcher_options(agent, &name).await?;
    let agent_dir = std::env::current_dir().unwrap_or_else(|_| "/".into());
    Ok(circus_shape::watcher_options(&ours, &agent_dir))
}

async fn stats(
    agent: &Rc<Agent>,
    name: Option<String>,
    process: Option<u32>,
) -> Result<Payload, CircusError> {
    let resolved = resolve_opt(agent, name.clone()).await?;
    let report = match ask(
        agent,
        Command::Stats {
            name: resolved.clone(),
        },
    )
    .await?
    {
        Response::Stats(report) => report,
        other => return Err(unexpected("stats", &other)),
    };
    let now = now();
    let mut users = UserNames::default();
    let mut info_of = |processes: &mut dyn Iterator<Item = &ProcessStats>| -> Map<String, Value> {
        processes
            .map(|p| (p.pid.to_string(), process_info(p, now, &mut users)))
            .collect()
    };
    match (resolved, name, process) {
        (Some(resolved), Some(given), Some(pid)) => {
            let Some(found) = report
                .processes
                .iter()
                .find(|p| p.pid == pid && p.watcher == resolved)
            else {
                return Err(CircusError::message(format!(
                    "process {pid} not found in {}",
                    py_repr(&given)
                )));
            };
            let mut payload = one("process", pid.into());
            payload.insert(
                "info".into(),
                process_info(found, now, &mut UserNames::default()),
            );
            Ok(payload)
        }
        (Some(_), Some(given), None) => {
            let mut payload = one("name", given.into());
            payload.insert(
                "info".into(),
                Value::Object(info_of(&mut report.processes.iter())),
            );
            Ok(payload)
        }
        _ => {
            let mut infos = Map::new();
            for watcher in watcher_names(agent).await? {
                let info = info_of(&mut report.processes.iter().filter(|p| p.watcher == watcher));
                infos.insert(watcher, Value::Object(info));
            }
            Ok(one("infos", Value::Object(infos)))
        }
    }
}

/// `signal` with `children` or `childpid`: the direct children of the
/// watcher's processes (or one of them), which the agent's own `signal` (the
/// process, or its whole process group) does not single out.
async fn signal_children(
    agent: &Rc<Agent>,
    name: &str,
    pid: Option<u32>,
    childpid: Option<u32>,
    signal: Signal,
) -> Result<Payload, CircusError> {
    let pids: Vec<u32> = match ask(
        agent,
        Command::List {
            name: Some(name.to_string()),
        },
    )
    .await?
    {
        Response::Processes(list) => list
            .into_iter()
            .filter(ProcessInfo::is_process)
            .map(|p| p.pid)
            .collect(),
        other => return Err(unexpected("list", &other)),
    };
    let targets = match pid {
        Some(pid) if pids.contains(&pid) => vec![pid],
        Some(pid) => {
            return Err(CircusError::message(format!(
                "process {pid} is not one of watcher {name}"
            )))
        }
        None => pids,
    };
    let Ok(sig) = nix::sys::signal::Signal::try_from(signal.number()) else {
        return Err(CircusError::message(format!("signal invalid: {signal}")));
    };
    for parent in targets {
        let children = children_of(parent);
        let chosen: Vec<u32> = match childpid {
            Some(child) if children.contains(&child) => vec![child],
            Some(child) => {
                return Err(CircusError::message(format!(
                    "process {child} is not a child of {parent}"
                )))
            }
            None => children,
        };
        for child in chosen {
            let Ok(raw) = i32::try_from(child) else {
                continue;
            };
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => {
                    return Err(CircusError::new(
                        Errno::OsError,
                        format!("cannot send {signal} to {child}: {e}"),
                    ))
                }
            }
        }
    }
    Ok(Payload::new())
}

/// The direct children of `pid`, from `/proc/PID/task/*/children`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Runs one call; `detached` state changes reply before their work is done.
async fn run(agent: &Rc<Agent>, call: Call, detached: bool) -> Result<Payload, CircusError> {
    match call {
        Call::Status { name } => {
            let name = resolve_opt(agent, name).await?;
            let named = name.is_some();
            match ask(agent, Command::Status { name }).await? {
                Response::Status(list) => Ok(status_payload(&list, named)),
                other => Err(unexpected("status", &other)),
            }
        }
        Call::List { name: None } => {
            let mut names = watcher_names(agent).await?;
            names.sort();
            Ok(one("watchers", names.into()))
        }
        Call::List { name: Some(name) } => {
            let name = resolve(agent, &name).await?;
            match ask(agent, Command::List { name: Some(name) }).await? {
                Response::Processes(list) => Ok(one(
                    "pids",
                    list.iter()
                        .filter(|p| p.is_process())
                        .map(|p| p.pid)
                        .collect::<Vec<_>>()
                        .into(),
                )),
                other => Err(unexpected("list", &other)),
            }
        }
        Call::NumProcesses { name } => {
            let resolved = resolve_opt(agent, name.clone()).await?;
            let count = match ask(agent, Command::NumProcesses { name: resolved }).await? {
                Response::Count(n) => n,
                other => return Err(unexpected("numprocesses", &other)),
            };
            let mut payload = one("numprocesses", count.into());
            if let Some(given) = name {
                payload.insert("watcher_name".into(), given.into());
            }
            Ok(payload)
        }
        Call::NumWatchers => match ask(agent, Command::NumWatchers {}).await? {
            Response::Count(n) => Ok(one("numwatchers", n.into())),
            other => Err(unexpected("numwatchers", &other)),
        },
        Call::Options { name } => Ok(one(
            "options",
            Value::Object(circus_options(agent, &name).await?),
        )),
        Call::Get { name, keys } => get(agent, name, keys).await,
        Call::GlobalOptions { option } => {
            match ask(agent, Command::GlobalOptions { key: None }).await? {
                Response::Options(ours) => global_options_payload(&ours, option.as_deref()),
                other => Err(unexpected("globaloptions", &other)),
            }
        }
        Call::ListSockets => match ask(agent, Command::ListSockets {}).await? {
            Response::Sockets(sockets) => Ok(sockets_payload(&sockets)),
            other => Err(unexpected("listsockets", &other)),
        },
        Call::Stats { name, process } => stats(agent, name, process).await,
        Call::DStats => match ask(agent, Command::DStats {}).await? {
            Response::DStats(own) => Ok(one(
                "info",
                process_info(&own, now(), &mut UserNames::default()),
            )),
            other => Err(unexpected("dstats", &other)),
        },
        Call::Start { name, matching } => {
            lifecycle(agent, Lifecycle::Start, name, matching, detached).await
        }
        Call::Stop { name, matching } => {
            lifecycle(agent, Lifecycle::Stop, name, matching, detached).await
        }
        Call::Restart { name, matching } => {
            lifecycle(agent, Lifecycle::Restart, name, matching, detached).await
        }
        Call::Reload {
            name,
            graceful,
            sequential,
        } => {
            let name = resolve_opt(agent, name).await?;
            let named = name.is_some();
            let command = if graceful {
                Command::Reload { name, sequential }
            } else {
                Command::Restart { name }
            };
            let report = changes("reload", change(agent, command, detached).await?)?;
            Ok(match report {
                Some(report) if named => one("info", change_info(&report, true)),
                _ => Payload::new(),
            })
        }
        Call::Incr { name, nb } => scale(agent, name, nb, true, detached).await,
        Call::Decr { name, nb } => scale(agent, name, nb, false, detached).await,
        Call::Add {
            name,
            cmd,
            args,
            options,
            start,
        } => {
            let command = Command::Add {
                name,
                cmd,
                args,
                options,
                start,
            };
            change(agent, command, detached).await?;
            Ok(Payload::new())
        }
        Call::Rm { name, nostop } => {
            let name = resolve(agent, &name).await?;
            change(agent, Command::Rm { name, nostop }, detached).await?;
            Ok(Payload::new())
        }
        Call::Set { name, options } => {
            let name = resolve(agent, &name).await?;
            let current = watcher_options(agent, &name).await?;
            let options = coerce_set_options(&options, &current)?;
            change(agent, Command::Set { name, options }, detached).await?;
            Ok(Payload::new())
        }
        Call::Signal {
            name,
            pid,
            childpid,
            signal,
            children,
            recursive,
        } => {
            let name = resolve(agent, &name).await?;
            if children || childpid.is_some() {
                return signal_children(agent, &name, pid, childpid, signal).await;
            }
            let command = Command::Signal {
                name,
                pid,
                signal,
                children: recursive,
            };
            ask(agent, command).await?;
            Ok(Payload::new())
        }
        Call::ReloadConfig => {
            change(agent, Command::ReloadConfig {}, detached).await?;
            Ok(Payload::new())
        }
        Call::Quit => {
            change(agent, Command::Quit {}, detached).await?;
            Ok(Payload::new())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<CircusRequest, Rejected> {
        parse_request(&serde_json::to_vec(&value).unwrap())
    }

    fn reply(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn reads_a_request_with_any_case_and_echoes_any_id() {
        let request = parse(json!({
            "id": "abc", "command": "STATUS", "properties": {"name": "web"}
        }))
        .unwrap();
        assert_eq!(request.id, json!("abc"));
        assert!(!request.cast && !request.waiting);
        assert_eq!(
            request.call,
            Call::Status {
                name: Some("web".into())
            }
        );
        let request = parse(json!({"id": 7, "command": "numwatchers"})).unwrap();
        assert_eq!(request.id, json!(7));
        assert_eq!(request.call, Call::NumWatchers);
    }

    #[test]
    fn invalid_json_is_errno_1_with_a_null_id() {
        for frame in [&b"{not json"[..], b"{\"id\": 1,", b"{}}", b"{\"a\": \xff}"] {
            let rejected = parse_request(frame).unwrap_err();
            assert_eq!(rejected.id, Value::Null);
            assert_eq!(rejected.error.errno, Errno::InvalidJson);
            assert_eq!(rejected.error.reason, "json invalid");
        }
        // Deep nesting is refused, not a stack overflow.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse_request(deep.as_bytes()).unwrap_err().error.errno,
            Errno::InvalidJson
        );
        let huge = vec![b' '; MAX_FRAME_BYTES + 1];
        let rejected = parse_request(&huge).unwrap_err();
        assert_eq!(rejected.error.errno, Errno::MessageError);
        assert!(
            rejected.error.reason.contains("larger than"),
            "{rejected:?}"
        );
    }

    #[test]
    fn unknown_commands_are_errno_2_in_circus_words() {
        let rejected = parse(json!({"id": 42, "command": "nope"})).unwrap_err();
        assert_eq!(rejected.id, json!(42));
        assert_eq!(rejected.error.errno, Errno::UnknownCommand);
        assert_eq!(rejected.error.reason, "unknown command: 'nope'");
        let rejected = parse(json!({"id": 1, "command": "it's"})).unwrap_err();
        assert_eq!(rejected.error.reason, "unknown command: \"it's\"");
        let rejected =
            parse(json!({"id": 1, "command": "kill", "properties": {"name": "w"}})).unwrap_err();
        assert_eq!(rejected.error.errno, Errno::UnknownCommand);
    }

    #[test]
    fn missing_and_bad_properties_are_errno_3() {
        let cases = [
            (
                json!({"command": "incr"}),
                "message invalid 'name' is missing",
            ),
            (
                json!({"command": "get", "properties": {"name": "w"}}),
                "message invalid 'keys' is missing",
            ),
            (
                json!({"command": "set", "properties": {"name": "w"}}),
                "message invalid 'options' is missing",
            ),
            (
                json!({"command": "signal", "properties": {"name": "w"}}),
                "message invalid 'signum' is missing",
            ),
            (
                json!({"command": "status", "properties": []}),
                "'properties' should be an object",
            ),
            (
                json!({"command": "incr", "properties": {"name": "w", "nb": -1}}),
                "'nb' should be a whole number >= 0",
            ),
            (
                json!({"properties": {}}),
                "message invalid 'command' is missing",
            ),
        ];
        for (request, reason) in cases {
            let rejected = parse(request.clone()).unwrap_err();
            assert_eq!(rejected.error.errno, Errno::MessageError, "{request}");
            assert_eq!(rejected.error.reason, reason, "{request}");
        }
        let rejected =
            parse(json!({"command": "signal", "properties": {"name": "w", "signum": "SIGNOPE"}}))
                .unwrap_err();
        assert!(
            rejected.error.reason.starts_with("signal invalid"),
            "{rejected:?}"
        );
        let rejected =
            parse(json!({"command": "start", "properties": {"name": "w", "match": "regex"}}))
                .unwrap_err();
        assert!(rejected.error.reason.contains("regex"), "{rejected:?}");
    }

    #[test]
    fn reads_every_command_with_circusctl_properties() {
        let cases = [
            (
                json!({"command": "incr", "properties": {"name": "web", "nb": 2, "waiting": true}}),
                Call::Incr {
                    name: "web".into(),
                    nb: 2,
                },
            ),
            (
                json!({"command": "decr", "properties": {"name": "web", "nb": "3"}}),
                Call::Decr {
                    name: "web".into(),
                    nb: 3,
                },
            ),
            (
                json!({"command": "get", "properties": {"name": "web", "keys": ["numprocesses", "cmd"]}}),
                Call::Get {
                    name: "web".into(),
                    keys: vec!["numprocesses".into(), "cmd".into()],
                },
            ),
            (
                json!({"command": "reload", "properties": {"name": "web", "graceful": false, "sequential": true, "waiting": false}}),
                Call::Reload {
                    name: Some("web".into()),
                    graceful: false,
                    sequential: true,
                },
            ),
            (
                json!({"command": "restart", "properties": {"waiting": false, "match": "glob"}}),
                Call::Restart {
                    name: None,
                    matching: Match::Glob,
                },
            ),
            (
                json!({"command": "stop", "properties": {"name": "w*", "match": "simple"}}),
                Call::Stop {
                    name: Some("w*".into()),
                    matching: Match::Simple,
                },
            ),
            (
                json!({"command": "signal", "properties": {"name": "web", "signum": 15, "pid": 12, "children": false, "recursive": true}}),
                Call::Signal {
                    name: "web".into(),
                    pid: Some(12),
                    childpid: None,
                    signal: Signal::Term,
                    children: false,
                    recursive: true,
                },
            ),
            (
                json!({"command": "signal", "properties": {"name": "web", "signum": "hup"}}),
                Call::Signal {
                    name: "web".into(),
                    pid: None,
                    childpid: None,
                    signal: Signal::Hup,
                    children: false,
                    recursive: false,
                },
            ),
            (
                json!({"command": "add", "properties": {"name": "x", "cmd": "sleep 9", "args": "-a 'b c'", "start": true, "options": {"NumProcesses": 2, "env": null}}}),
                Call::Add {
                    name: "x".into(),
                    cmd: "sleep 9".into(),
                    args: vec!["-a".into(), "b c".into()],
                    options: OptionMap::from([("numprocesses".into(), OptionValue::Int(2))]),
                    start: true,
                },
            ),
            (
                json!({"command": "rm", "properties": {"name": "x", "nostop": "true"}}),
                Call::Rm {
                    name: "x".into(),
                    nostop: true,
                },
            ),
            (
                json!({"command": "stats", "properties": {"name": "web", "process": 77, "extended": false}}),
                Call::Stats {
                    name: Some("web".into()),
                    process: Some(77),
                },
            ),
            (
                json!({"command": "globaloptions", "properties": {"option": "endpoint"}}),
                Call::GlobalOptions {
                    option: Some("endpoint".into()),
                },
            ),
            (json!({"command": "listsockets"}), Call::ListSockets),
            (json!({"command": "dstats"}), Call::DStats),
            (
                json!({"command": "reloadconfig", "properties": {"waiting": false}}),
                Call::ReloadConfig,
            ),
            (
                json!({"command": "quit", "properties": {"waiting": false}}),
                Call::Quit,
            ),
        ];
        for (request, call) in cases {
            assert_eq!(parse(request.clone()).unwrap().call, call, "{request}");
        }
        let cast =
            parse(json!({"command": "incr", "msg_type": "cast", "properties": {"name": "w"}}))
                .unwrap();
        assert!(cast.cast);
        let waiting =
            parse(json!({"command": "start", "properties": {"name": "w", "waiting": true}}))
                .unwrap();
        assert!(waiting.waiting);
        let set = parse(json!({"command": "set", "properties": {"name": "w", "options": {"NumProcesses": "3"}}}))
            .unwrap();
        assert_eq!(
            set.call,
            Call::Set {
                name: "w".into(),
                options: Map::from_iter([("numprocesses".to_string(), json!("3"))])
            }
        );
    }

    #[test]
    fn a_cast_is_never_answered_even_when_refused() {
        let rejected = parse(json!({"command": "nope", "msg_type": "cast"})).unwrap_err();
        assert!(rejected.cast);
    }

    #[test]
    fn names_resolve_case_insensitively_when_unambiguous() {
        let names = vec![
            "web".to_string(),
            "Worker".to_string(),
            "a".to_string(),
            "A".to_string(),
        ];
        assert_eq!(resolve_name(&names, "web").unwrap(), "web");
        assert_eq!(resolve_name(&names, "WEB").unwrap(), "web");
        assert_eq!(resolve_name(&names, "worker").unwrap(), "Worker");
        assert_eq!(resolve_name(&names, "A").unwrap(), "A");
        let ambiguous = resolve_name(&names, "b").unwrap_err();
        assert_eq!(ambiguous.reason, "program b not found");
        let names = vec!["Ab".to_string(), "aB".to_string()];
        let ambiguous = resolve_name(&names, "ab").unwrap_err();
        assert_eq!(ambiguous.errno, Errno::MessageError);
        assert!(ambiguous.reason.contains("ambiguous"), "{ambiguous:?}");
    }

    #[test]
    fn globs_match_like_fnmatch_ignoring_case() {
        assert!(glob_match("web", "WEB"));
        assert!(!glob_match("web", "webapp"));
        assert!(glob_match("web*", "webapp"));
        assert!(glob_match("*", ""));
        assert!(glob_match("w?b", "wab"));
        assert!(!glob_match("w?b", "wb"));
        assert!(glob_match("worker-[0-9]", "worker-7"));
        assert!(!glob_match("worker-[!0-9]", "worker-7"));
        assert!(glob_match("worker-[!0-9]", "worker-x"));
        assert!(glob_match("a[]]b", "a]b"));
        assert!(glob_match("a[b", "a[b"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(glob_match("a**b", "ab"));
        assert!(!glob_match("*a", "ab"));
        // A hostile pattern takes no time.
        let hostile = format!("{}b", "*a".repeat(50_000));
        assert!(!glob_match(&hostile, &"a".repeat(64)));
    }

    #[test]
    fn selects_watchers_by_glob_or_exact_name() {
        let names = vec!["web-1".to_string(), "web-2".to_string(), "db".to_string()];
        assert_eq!(
            select_watchers(&names, None, Match::Glob).unwrap(),
            Selection::All
        );
        assert_eq!(
            select_watchers(&names, Some("DB"), Match::Glob).unwrap(),
            Selection::One("db".into())
        );
        assert_eq!(
            select_watchers(&names, Some("web-*"), Match::Glob).unwrap(),
            Selection::Several(vec!["web-1".into(), "web-2".into()])
        );
        let err = select_watchers(&names, Some("web-*"), Match::Simple).unwrap_err();
        assert_eq!(err.reason, "program web-* not found");
        let err = select_watchers(&names, Some("x*"), Match::Glob).unwrap_err();
        assert_eq!(err.errno, Errno::MessageError);
    }

    #[test]
    fn set_values_take_the_type_of_the_option() {
        let current = OptionMap::from([
            ("numprocesses".to_string(), OptionValue::Int(1)),
            ("graceful_timeout".to_string(), OptionValue::Float(30.0)),
            ("respawn".to_string(), OptionValue::Bool(true)),
            (
                "stop_signal".to_string(),
                OptionValue::Str("SIGTERM".into()),
            ),
            ("cmd".to_string(), OptionValue::Str("sleep 1".into())),
        ]);
        let given = Map::from_iter([
            ("numprocesses".to_string(), json!("3")),
            ("graceful_timeout".to_string(), json!(5)),
            ("respawn".to_string(), json!("false")),
            ("stop_signal".to_string(), json!(2)),
            ("cmd".to_string(), json!("sleep 2")),
            ("rlimit_nofile".to_string(), json!("1024")),
        ]);
        let out = coerce_set_options(&given, &current).unwrap();
        assert_eq!(out["numprocesses"], OptionValue::Int(3));
        assert_eq!(out["graceful_timeout"], OptionValue::Float(5.0));
        assert_eq!(out["respawn"], OptionValue::Bool(false));
        assert_eq!(out["stop_signal"], OptionValue::Str("SIGINT".into()));
        assert_eq!(out["cmd"], OptionValue::Str("sleep 2".into()));
        assert_eq!(out["rlimit_nofile"], OptionValue::Int(1024));

        let typed = Map::from_iter([
            ("numprocesses".to_string(), json!(4)),
            ("respawn".to_string(), json!(true)),
            ("stop_signal".to_string(), json!("hup")),
        ]);
        let out = coerce_set_options(&typed, &current).unwrap();
        assert_eq!(out["numprocesses"], OptionValue::Int(4));
        assert_eq!(out["respawn"], OptionValue::Bool(true));
        assert_eq!(out["stop_signal"], OptionValue::Str("SIGHUP".into()));

        for (key, value, reason) in [
            (
                "numprocesses",
                json!("three"),
                "'numprocesses' isn't an integer",
            ),
            (
                "graceful_timeout",
                json!("soon"),
                "'graceful_timeout' isn't a number",
            ),
            ("respawn", json!("maybe"), "'respawn' isn't a valid boolean"),
        ] {
            let err = coerce_set_options(&Map::from_iter([(key.to_string(), value)]), &current)
                .unwrap_err();
            assert_eq!(err.errno, Errno::MessageError);
            assert_eq!(err.reason, reason);
        }
        let err = coerce_set_options(
            &Map::from_iter([("stop_signal".to_string(), json!(99))]),
            &current,
        )
        .unwrap_err();
        assert!(err.reason.contains("unknown signal"), "{err:?}");
    }

    #[test]
    fn replies_have_circus_envelopes() {
        let ok = reply(&encode_ok(&json!("abc"), one("numwatchers", 2.into())));
        assert_eq!(ok["status"], "ok");
        assert_eq!(ok["id"], "abc");
        assert_eq!(ok["numwatchers"], 2);
        assert!(ok["time"].as_f64().unwrap() > 1.0e9);

        let status = reply(&encode_ok(&json!(1), one("status", "active".into())));
        assert_eq!(status["status"], "active");

        let err = reply(&encode_error(
            &Value::Null,
            &CircusError::new(Errno::InvalidJson, "json invalid"),
        ));
        assert_eq!(err["status"], "error");
        assert_eq!(err["errno"], 1);
        assert_eq!(err["id"], Value::Null);
        assert_eq!(err["tb"], Value::Null);
        assert_eq!(err["reason"], "json invalid");
    }

    #[test]
    fn agent_errors_map_to_circus_errnos() {
        let cases = [
            (ErrorKind::UnknownCommand, Errno::UnknownCommand),
            (ErrorKind::BadArguments, Errno::MessageError),
            (ErrorKind::NotFound, Errno::MessageError),
            (ErrorKind::InvalidConfig, Errno::MessageError),
            (ErrorKind::Os, Errno::OsError),
            (ErrorKind::SpawnFailed, Errno::OsError),
            (ErrorKind::AlreadyExists, Errno::CommandError),
            (ErrorKind::ShuttingDown, Errno::CommandError),
            (ErrorKind::Internal, Errno::CommandError),
        ];
        for (kind, errno) in cases {
            let error = CircusError::from(ErrorReply::new(kind, "x"));
            assert_eq!(error.errno, errno, "{kind:?}");
        }
    }

    fn watcher(name: &str, state: WatcherState) -> WatcherStatus {
        WatcherStatus {
            processes: 1,
            numprocesses: 1,
            ..WatcherStatus::new(name, state)
        }
    }

    #[test]
    fn statuses_use_circus_states() {
        let list = vec![
            watcher("a", WatcherState::Active),
            watcher("b", WatcherState::Flapping),
            watcher("c", WatcherState::Stopping),
            watcher("d", WatcherState::Starting),
            watcher("e", WatcherState::Stopped),
        ];
        let all = status_payload(&list, false);
        assert_eq!(
            Value::Object(all),
            json!({"statuses": {"a": "active", "b": "stopped", "c": "stopping", "d": "starting", "e": "stopped"}})
        );
        let named = status_payload(&list[1..2], true);
        assert_eq!(Value::Object(named), json!({"status": "stopped"}));
    }

    #[test]
    fn sockets_are_listed_by_fd_in_circus_shape() {
        let tcp = SocketInfo {
            name: "web".into(),
            fd: 7,
            family: "tcp".into(),
            address: "127.0.0.1:8080".into(),
            host: Some("127.0.0.1".into()),
            port: Some(8080),
            path: None,
            backlog: 2048,
            watchers: vec![],
        };
        let unix = SocketInfo {
            name: "local".into(),
            fd: 5,
            family: "unix".into(),
            address: "/run/x.sock".into(),
            host: None,
            port: None,
            path: Some("/run/x.sock".into()),
            backlog: 16,
            watchers: vec![],
        };
        assert_eq!(Value::Object(sockets_payload(&[])), json!({"sockets": []}));
        assert_eq!(
            Value::Object(sockets_payload(&[tcp, unix])),
            json!({"sockets": [
                {"fd": 5, "name": "local", "backlog": 16, "path": "/run/x.sock"},
                {"fd": 7, "name": "web", "backlog": 2048, "host": "127.0.0.1", "port": 8080},
            ]})
        );
    }

    #[test]
    fn global_options_have_circus_names_too() {
        let ours = OptionMap::from([
            ("control".to_string(), OptionValue::Str("ipc:///c".into())),
            ("pubsub".to_string(), OptionValue::Str("ipc:///p".into())),
            ("node".to_string(), OptionValue::Str("n1".into())),
        ]);
        let all = Value::Object(global_options_payload(&ours, None).unwrap());
        assert_eq!(all["options"]["endpoint"], "ipc:///c");
        assert_eq!(all["options"]["pubsub_endpoint"], "ipc:///p");
        assert_eq!(all["options"]["stats_endpoint"], "ipc:///p");
        assert_eq!(all["options"]["check_delay"], 0.0);
        assert_eq!(all["options"]["multicast_endpoint"], Value::Null);
        assert_eq!(all["options"]["node"], "n1");
        let one = Value::Object(global_options_payload(&ours, Some("endpoint")).unwrap());
        assert_eq!(one, json!({"options": {"endpoint": "ipc:///c"}}));
        let err = global_options_payload(&ours, Some("nope")).unwrap_err();
        assert_eq!(err.reason, "'nope' not an existing option");
    }

    #[test]
    fn change_infos_name_the_pids() {
        let report = ChangeReport {
            started: vec![3],
            stopped: vec![1],
            kept: vec![2],
            ..ChangeReport::default()
        };
        assert_eq!(
            change_info(&report, false),
            json!({"started": [3], "kept": [2]})
        );
        assert_eq!(
            change_info(&report, true),
            json!({"stopped": [1], "started": [3], "kept": [2]})
        );
    }

    #[test]
    fn options_convert_both_ways() {
        let value =
            json!({"a": 1, "b": 2.5, "c": "x", "d": [true, null], "e": {"f": "g"}, "n": null});
        let option = json_to_option(&value).unwrap();
        assert_eq!(
            option_to_json(&option),
            json!({"a": 1, "b": 2.5, "c": "x", "d": [true], "e": {"f": "g"}})
        );
    }

    #[test]
    fn python_repr_quotes_like_python() {
        assert_eq!(py_repr("nope"), "'nope'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr("a\nb"), "'a\\nb'");
    }

    #[test]
    fn booleans_read_like_circus() {
        for (value, expected) in [
            (json!(true), Some(true)),
            (json!("False"), Some(false)),
            (json!("yes"), Some(true)),
            (json!(0), Some(false)),
            (json!(2), None),
            (json!("maybe"), None),
        ] {
            assert_eq!(to_bool(&value), expected, "{value}");
        }
    }
}
