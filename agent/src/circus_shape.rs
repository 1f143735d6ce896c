//! What circusd shows, built from what the agent knows: a watcher's options as
//! Circus names and types them ([`watcher_options`]), and one process's
//! statistics as Circus's `stats` and `dstats` give them ([`process_info`]).
//!
//! [`crate::circus`] answers Circus's requests; this module only shapes values,
//! so that `circusctl options web` or `circusctl get web uid` print what they
//! print against circusd, and a script reading `stop_signal` gets the number it
//! got from circusd.

use std::collections::HashMap;
use std::path::Path;

use nix::unistd::{Group, Uid, User};
use ringmaster_protocol::stats::ProcessStats;
use ringmaster_protocol::{OptionMap, OptionValue, Signal};
use serde_json::{Map, Number, Value};

/// A watcher's options the way circusd shows them.
///
/// Every option of ours is there, under its name; those Circus spells or types
/// differently are given Circus's form:
///
/// - `args` is one shell-quoted string, `stop_signal` a number, `max_age` and
///   `max_age_variance` whole seconds, `warmup_delay` an integer when whole;
/// - `working_dir` is the directory the processes start in (the agent's own
///   when none is set), `uid` and `gid` numbers or `null`;
/// - `close_child_stdout`/`close_child_stderr` are true for a stream that goes
///   to `"null"`, and `stdout_stream_conf`/`stderr_stream_conf` describe a file
///   stream as circusd does (its `filename` and rotation options);
/// - `executable` and `shell_args` are `null` and `send_hup` is false, since
///   Ringmaster has none of them (a Circus config using them is told so when it
///   is read).
pub fn watcher_options(ours: &OptionMap, agent_dir: &Path) -> Map<String, Value> {
    let mut all: Map<String, Value> = ours
        .iter()
        .map(|(key, value)| (key.clone(), option_to_json(value)))
        .collect();
    let args = match ours.get("args") {
        Some(OptionValue::List(items)) => shell_join(items),
        Some(OptionValue::Str(text)) => text.clone(),
        _ => String::new(),
    };
    all.insert("args".into(), args.into());
    if let Some(OptionValue::Str(name)) = ours.get("stop_signal") {
        if let Ok(signal) = name.parse::<Signal>() {
            all.insert("stop_signal".into(), signal.number().into());
        }
    }
    for key in ["max_age", "max_age_variance"] {
        if let Some(seconds) = number(ours.get(key)) {
            all.insert(key.into(), (seconds.max(0.0) as u64).into());
        }
    }
    if let Some(seconds) = number(ours.get("warmup_delay")) {
        all.insert("warmup_delay".into(), whole_or_float(seconds));
    }
    let working_dir = match ours.get("working_dir") {
        Some(OptionValue::Str(dir)) => dir.clone(),
        _ => agent_dir.to_string_lossy().into_owned(),
    };
    all.insert("working_dir".into(), working_dir.into());
    let uid = numeric_id(ours.get("uid"), |name| {
        User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    });
    let gid = numeric_id(ours.get("gid"), |name| {
        Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    });
    all.insert("uid".into(), uid);
    all.insert("gid".into(), gid);
    for stream in ["stdout", "stderr"] {
        let (to, table) = match ours.get(stream) {
            Some(OptionValue::Str(to)) => (to.as_str(), None),
            Some(OptionValue::Table(table)) => match table.get("to") {
                Some(OptionValue::Str(to)) => (to.as_str(), Some(table)),
                _ => ("inherit", Some(table)),
            },
            _ => ("inherit", None),
        };
        all.insert(format!("close_child_{stream}"), (to == "null").into());
        all.insert(format!("{stream}_stream_conf"), stream_conf(to, table));
    }
    all.insert("executable".into(), Value::Null);
    all.insert("shell_args".into(), Value::Null);
    all.insert("send_hup".into(), false.into());
    all
}

/// A watcher option value as JSON.
pub fn option_to_json(value: &OptionValue) -> Value {
    match value {
        OptionValue::Bool(b) => Value::Bool(*b),
        OptionValue::Int(i) => Value::from(*i),
        OptionValue::Float(x) => float(*x),
        OptionValue::Str(s) => Value::String(s.clone()),
        OptionValue::List(items) => Value::Array(items.iter().map(option_to_json).collect()),
        OptionValue::Table(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), option_to_json(v)))
                .collect(),
        ),
    }
}

/// A JSON number, or `null` for what JSON cannot hold (NaN, infinities).
pub fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn number(value: Option<&OptionValue>) -> Option<f64> {
    match value {
        Some(OptionValue::Float(x)) => Some(*x),
        Some(OptionValue::Int(i)) => Some(*i as f64),
        _ => None,
    }
}

fn whole_or_float(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        float(x)
    }
}

/// Arguments as one string a shell splits back into them.
fn shell_join(items: &[OptionValue]) -> String {
    items
        .iter()
        .map(|item| {
            let text = match item {
                OptionValue::Str(s) => s.clone(),
                other => option_to_json(other).to_string(),
            };
            match shlex::try_quote(&text) {
                Ok(quoted) => quoted.into_owned(),
                Err(_) => text,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `uid` or `gid` as circusd keeps it: the number (a name is looked up with
/// `lookup`), `null` when unset, the name itself when this host does not know it.
fn numeric_id(value: Option<&OptionValue>, lookup: impl Fn(&str) -> Option<u32>) -> Value {
    match value {
        Some(OptionValue::Int(id)) => Value::from(*id),
        Some(OptionValue::Str(name)) => {
            lookup(name).map_or_else(|| name.clone().into(), Value::from)
        }
        _ => Value::Null,
    }
}

/// Circus's `*_stream_conf` for a stream going to `to`: empty unless it is a
/// file, then its `filename` and the options that differ from the defaults
/// (`max_bytes`, `backup_count`, `rotate_when`, ...). circusd shows no `class`
/// there (it takes it out to build the stream), so neither does this.
fn stream_conf(to: &str, table: Option<&OptionMap>) -> Value {
    let mut conf = Map::new();
    if !matches!(to, "inherit" | "null" | "capture") {
        conf.insert("filename".into(), to.into());
        for (key, value) in table.into_iter().flatten() {
            if key != "to" {
                conf.insert(key.clone(), option_to_json(value));
            }
        }
    }
    Value::Object(conf)
}

/// Bytes the way Circus shows memory: `"1.34M"`, `"512B"`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 8] = ["K", "M", "G", "T", "P", "E", "Z", "Y"];
    let mut unit: Option<(f64, &str)> = None;
    for (i, symbol) in UNITS.iter().enumerate() {
        let size = 2f64.powi(10 * (i as i32 + 1));
        if bytes as f64 >= size {
            unit = Some((size, symbol));
        }
    }
    match unit {
        Some((size, symbol)) => format!("{:.2}{symbol}", bytes as f64 / size),
        None => format!("{bytes}B"),
    }
}

/// CPU time the way Circus shows it: minutes, seconds and hundredths, `"1:05.42"`.
pub fn cpu_clock(seconds: f64) -> String {
    let hundredths = (seconds.max(0.0) * 100.0).round() as u64;
    format!(
        "{}:{:02}.{:02}",
        hundredths / 6000,
        hundredths / 100 % 60,
        hundredths % 100
    )
}

/// User names by uid, looked up once per answer however many processes share
/// a user.
#[derive(Debug, Default)]
pub struct UserNames {
    known: HashMap<u32, String>,
}

impl UserNames {
    /// The name of `uid`; its number when the user database has no such user
    /// (as psutil, and so Circus, shows it).
    pub fn name(&mut self, uid: u32) -> String {
        self.known
            .entry(uid)
            .or_insert_with(|| match User::from_uid(Uid::from_raw(uid)) {
                Ok(Some(user)) => user.name,
                _ => uid.to_string(),
            })
            .clone()
    }
}

/// One process's statistics in Circus's shape (`pid`, `cpu`, `mem`, `mem_info1`
/// (resident), `mem_info2` (virtual), `ctime`, `username`, `nice`, `cmdline`,
/// `create_time`, `age`, `children`), plus `wid` and `started`. What cannot be
/// read (a process that just exited) is `"N/A"`, as Circus writes it.
pub fn process_info(stats: &ProcessStats, now: f64, users: &mut UserNames) -> Value {
    let details = ProcDetails::read(stats.pid);
    let started = now - stats.age;
    let na = || Value::from("N/A");
    let mut info = Map::new();
    info.insert("pid".into(), stats.pid.into());
    info.insert("wid".into(), stats.wid.into());
    info.insert(
        "cpu".into(),
        float((f64::from(stats.cpu) * 10.0).round() / 10.0),
    );
    info.insert(
        "mem".into(),
        float((f64::from(stats.mem) * 1000.0).round() / 1000.0),
    );
    info.insert("mem_info1".into(), human_bytes(stats.rss).into());
    info.insert(
        "mem_info2".into(),
        details.vms.map_or_else(na, |vms| human_bytes(vms).into()),
    );
    info.insert("ctime".into(), cpu_clock(stats.cpu_time).into());
    info.insert(
        "username".into(),
        details.uid.map_or_else(na, |uid| users.name(uid).into()),
    );
    info.insert("nice".into(), details.nice.map_or_else(na, Value::from));
    info.insert(
        "cmdline".into(),
        details.program.map_or_else(na, Value::from),
    );
    info.insert("create_time".into(), float(started));
    info.insert("started".into(), float(started));
    info.insert("age".into(), float(stats.age));
    info.insert("children".into(), Value::Array(Vec::new()));
    Value::Object(info)
}

/// What `process_info` reads from `/proc` beyond the agent's own samples.
#[derive(Debug, Default, PartialEq)]
struct ProcDetails {
    nice: Option<i64>,
    program: Option<String>,
    uid: Option<u32>,
    vms: Option<u64>,
}

impl ProcDetails {
    fn read(pid: u32) -> ProcDetails {
        let nice = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the ")" closing the name: state is the 1st, nice the 17th.
                let rest = stat.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(16)?.parse::<i64>().ok()
            });
        let program = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|raw| {
                let argv0 = raw.split(|b| *b == 0).next()?;
                let text = String::from_utf8_lossy(argv0);
                let base = text.rsplit('/').next()?.to_string();
                (!base.is_empty()).then_some(base)
            });
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let (uid, vms) = parse_status(&status);
        ProcDetails {
            nice,
            program,
            uid,
            vms,
        }
    }
}

/// The real uid and the virtual memory size in bytes, from `/proc/PID/status`.
fn parse_status(status: &str) -> (Option<u32>, Option<u64>) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let uid = field("Uid:").and_then(|n| n.parse().ok());
    let vms = field("VmSize:")
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024);
    (uid, vms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(pairs: &[(&str, OptionValue)]) -> OptionMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(text: &str) -> OptionValue {
        OptionValue::Str(text.into())
    }

    #[test]
    fn options_take_circus_names_and_types() {
        let ours = options(&[
            ("cmd", s("sleep 600")),
            (
                "args",
                OptionValue::List(vec![s("--port"), s("80"), s("a b")]),
            ),
            ("stop_signal", s("SIGQUIT")),
            ("max_age", OptionValue::Float(3600.0)),
            ("max_age_variance", OptionValue::Float(30.0)),
            ("warmup_delay", OptionValue::Float(0.0)),
            ("graceful_timeout", OptionValue::Float(30.0)),
            ("uid", OptionValue::Int(0)),
            ("gid", s("no-such-group-on-this-host")),
            ("stdout", s("null")),
            ("autostart", OptionValue::Bool(true)),
        ]);
        let view = watcher_options(&ours, Path::new("/srv/app"));
        assert_eq!(view["cmd"], "sleep 600");
        assert_eq!(view["args"], "--port 80 'a b'");
        assert_eq!(view["stop_signal"], 3);
        assert_eq!(view["max_age"], json!(3600));
        assert_eq!(view["max_age_variance"], json!(30));
        assert_eq!(view["warmup_delay"], json!(0));
        assert_eq!(view["graceful_timeout"], json!(30.0));
        assert_eq!(view["working_dir"], "/srv/app");
        assert_eq!(view["uid"], 0);
        assert_eq!(view["gid"], "no-such-group-on-this-host");
        assert_eq!(view["close_child_stdout"], true);
        assert_eq!(view["close_child_stderr"], false);
        assert_eq!(view["stdout_stream_conf"], json!({}));
        assert_eq!(view["executable"], Value::Null);
        assert_eq!(view["shell_args"], Value::Null);
        assert_eq!(view["send_hup"], false);
        assert_eq!(view["autostart"], true, "our own options stay");
    }

    #[test]
    fn unset_user_and_fractional_warmup_read_like_circus() {
        let ours = options(&[
            ("warmup_delay", OptionValue::Float(0.5)),
            ("working_dir", s("/var/www")),
            ("args", OptionValue::List(Vec::new())),
        ]);
        let view = watcher_options(&ours, Path::new("/"));
        assert_eq!(view["uid"], Value::Null);
        assert_eq!(view["gid"], Value::Null);
        assert_eq!(view["warmup_delay"], json!(0.5));
        assert_eq!(view["working_dir"], "/var/www");
        assert_eq!(view["args"], "");
    }

    #[test]
    fn a_file_stream_reads_as_circus_stream_confs() {
        let plain = options(&[("stderr", s("/var/log/web.err"))]);
        assert_eq!(
            watcher_options(&plain, Path::new("/"))["stderr_stream_conf"],
            json!({"filename": "/var/log/web.err"})
        );
        let timed = options(&[(
            "stdout",
            OptionValue::Table(options(&[
                ("to", s("/var/log/web.log")),
                ("rotate_when", s("midnight")),
                ("backup_count", OptionValue::Int(7)),
            ])),
        )]);
        let view = watcher_options(&timed, Path::new("/"));
        assert_eq!(
            view["stdout_stream_conf"],
            json!({
                "filename": "/var/log/web.log",
                "rotate_when": "midnight",
                "backup_count": 7,
            })
        );
        assert_eq!(view["close_child_stdout"], false);
    }

    #[test]
    fn process_info_has_every_field_circusctl_prints() {
        let stats = ProcessStats {
            watcher: "w".into(),
            pid: std::process::id(),
            wid: 1,
            cpu: 12.345,
            rss: 3 * 1024 * 1024 + 512 * 1024,
            mem: 1.23456,
            age: 10.0,
            cpu_time: 65.42,
            threads: 1,
        };
        let info = process_info(&stats, 1000.0, &mut UserNames::default());
        for key in [
            "pid",
            "cmdline",
            "username",
            "nice",
            "mem_info1",
            "mem_info2",
            "cpu",
            "mem",
            "ctime",
            "create_time",
            "age",
            "children",
        ] {
            assert!(info.get(key).is_some(), "{key} missing from {info}");
        }
        assert_eq!(info["mem_info1"], "3.50M");
        assert_eq!(info["ctime"], "1:05.42");
        assert_eq!(info["cpu"], 12.3);
        assert_eq!(info["mem"], 1.235);
        assert_eq!(info["create_time"], 990.0);
        assert!(info["nice"].is_i64(), "{info}");
        assert_ne!(info["cmdline"], "N/A");
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(info["username"], UserNames::default().name(me));
        let vms = info["mem_info2"].as_str().unwrap_or_default();
        assert!(vms.ends_with('M') || vms.ends_with('G'), "{info}");
    }

    #[test]
    fn a_process_that_is_gone_reads_as_not_available() {
        let stats = ProcessStats {
            watcher: "w".into(),
            pid: u32::MAX - 1,
            wid: 1,
            cpu: 0.0,
            rss: 0,
            mem: 0.0,
            age: 1.0,
            cpu_time: 0.0,
            threads: 1,
        };
        let info = process_info(&stats, 10.0, &mut UserNames::default());
        for key in ["username", "mem_info2", "nice", "cmdline"] {
            assert_eq!(info[key], "N/A", "{key} in {info}");
        }
    }

    #[test]
    fn status_gives_the_real_uid_and_the_virtual_size() {
        let status = "Name:\tsleep\nUid:\t1000\t1001\t1001\t1001\nVmSize:\t    2500 kB\n";
        assert_eq!(parse_status(status), (Some(1000), Some(2500 * 1024)));
        assert_eq!(parse_status(""), (None, None));
    }

    #[test]
    fn names_of_unknown_users_are_their_numbers() {
        let mut users = UserNames::default();
        assert_eq!(users.name(0), "root");
        assert_eq!(users.name(4_000_000_000), "4000000000");
    }

    #[test]
    fn bytes_and_cpu_time_read_like_circus() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(2048), "2.00K");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.00G");
        assert_eq!(cpu_clock(0.0), "0:00.00");
        assert_eq!(cpu_clock(3725.5), "62:05.50");
    }
}
