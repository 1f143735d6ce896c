//! How `nodectl` prints answers: aligned tables for people, JSON for scripts.

use std::time::{SystemTime, UNIX_EPOCH};

use ringmaster_protocol::message::{
    ChangeReport, ConnectionCounts, ExecOutput, LastExit, NodeInfo, ProcessInfo, SocketInfo,
    StatsReport, WatcherStatus,
};
use ringmaster_protocol::stats::ProcessStats;
use ringmaster_protocol::{Command, ExitInfo, OptionMap, OptionValue, Response, Signal};
use serde::Serialize;

/// Prints `response` to `command`.
pub fn print(command: &Command, response: &Response, json: bool) {
    if json {
        print_json(&json_of(response));
        return;
    }
    match response {
        Response::Status(list) => print_status(list),
        Response::Watchers(names) => {
            for name in names {
                println!("{name}");
            }
        }
        Response::Processes(list) => print_processes(list),
        Response::Changes(report) => print_changes(command, report),
        Response::Count(n) => println!("{n}"),
        Response::Options(options) => print_options(options),
        Response::NodeInfo(info) => print_node_info(info),
        Response::Stats(report) => print_stats(report),
        Response::DStats(own) => print_own_stats(own),
        Response::Exec(out) => print_exec(out),
        Response::Sockets(list) => {
            if list.is_empty() {
                println!("no sockets (add a [sockets.NAME] table to the agent's config)");
            } else {
                table(&SOCKET_COLUMNS, &socket_rows(list));
            }
        }
        Response::Upgrade(report) => println!(
            "upgrade checked: {} → {} ({}), {} process(es) and {} socket(s) to hand over",
            report.from_version, report.to_version, report.binary, report.processes, report.sockets
        ),
        other => println!("{other:?}"),
    }
}

/// Prints any value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("nodectl: cannot print JSON: {e}"),
    }
}

/// An answer as JSON.
pub fn json_of(response: &Response) -> serde_json::Value {
    let value = match response {
        Response::Status(list) => serde_json::to_value(list),
        Response::Watchers(names) => serde_json::to_value(names),
        Response::Processes(list) => serde_json::to_value(list),
        Response::Changes(report) => serde_json::to_value(report),
        Response::Count(n) => serde_json::to_value(n),
        Response::Options(options) => serde_json::to_value(options),
        Response::NodeInfo(info) => serde_json::to_value(info),
        Response::Stats(report) => serde_json::to_value(report),
        Response::DStats(own) => serde_json::to_value(own),
        Response::Exec(out) => serde_json::to_value(out),
        Response::Sockets(list) => serde_json::to_value(list),
        Response::Upgrade(report) => serde_json::to_value(report),
        other => serde_json::to_value(other),
    };
    value.unwrap_or(serde_json::Value::Null)
}

/// Prints rows as columns padded to their widest cell; the last column is not
/// padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The columns of `listsockets`.
pub const SOCKET_COLUMNS: [&str; 5] = ["NAME", "FD", "ADDRESS", "BACKLOG", "WATCHERS"];

/// `listsockets` rows, by descriptor (as circusctl lists them).
pub fn socket_rows(list: &[SocketInfo]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&SocketInfo> = list.iter().collect();
    sorted.sort_by_key(|s| (s.fd, s.name.clone()));
    sorted
        .into_iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.fd.to_string(),
                match s.family.as_str() {
                    "unix" => format!("unix:{}", s.address),
                    _ => s.address.clone(),
                },
                s.backlog.to_string(),
                if s.watchers.is_empty() {
                    "-".to_string()
                } else {
                    s.watchers.join(",")
                },
            ]
        })
        .collect()
}

fn print_status(list: &[WatcherStatus]) {
    let rows: Vec<Vec<String>> = list.iter().map(status_row).collect();
    table(&STATUS_COLUMNS, &rows);
}

/// The columns of `status`.
pub const STATUS_COLUMNS: [&str; 6] = [
    "WATCHER",
    "STATE",
    "PROCESSES",
    "RESTARTS",
    "LAST EXIT",
    "LAST ERROR",
];

/// One `status` row: alive/wanted with the slots that wait, restarts, the last exit.
pub fn status_row(w: &WatcherStatus) -> Vec<String> {
    let mut processes = format!("{}/{}", w.processes, w.numprocesses);
    let mut notes = Vec::new();
    if let Some(next) = w.backoff.first() {
        notes.push(format!(
            "{} backing off, next in {:.1} s",
            w.backoff.len(),
            next.remaining
        ));
    }
    if !w.exited.is_empty() {
        let mut codes: Vec<String> = w.exited.iter().map(|e| exit_word(&e.exit)).collect();
        codes.dedup();
        notes.push(format!("{} exited {}", w.exited.len(), codes.join(",")));
    }
    if !notes.is_empty() {
        processes = format!("{processes} ({})", notes.join("; "));
    }
    vec![
        w.name.clone(),
        w.state.to_string(),
        processes,
        w.restarts.to_string(),
        w.last_exit
            .as_ref()
            .map_or_else(|| "-".into(), last_exit_text),
        w.last_error.clone().unwrap_or_default(),
    ]
}

/// `exit 1, wid 3, 4.2s ago`, `SIGKILL, wid 1, 2m05s ago`.
fn last_exit_text(exit: &LastExit) -> String {
    let how = match exit.exit.code {
        Some(code) => format!("exit {code}"),
        None => exit_word(&exit.exit),
    };
    format!(
        "{how}, wid {}, {} ago",
        exit.wid,
        human_duration(now_secs() - exit.time)
    )
}

/// `0`, `1` for exit codes, `SIGKILL` for a signal.
fn exit_word(exit: &ExitInfo) -> String {
    match (exit.code, exit.signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => {
            Signal::from_number(sig).map_or_else(|| format!("signal {sig}"), |s| s.to_string())
        }
        (None, None) => "?".into(),
    }
}

/// The columns of `list NAME`.
pub const PROCESS_COLUMNS: [&str; 6] = ["WID", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT"];

/// One `list NAME` row; a slot backing off shows the time left, a slot without a
/// process (`exited`, `spawning`) shows no pid.
pub fn process_row(p: &ProcessInfo, now: f64) -> Vec<String> {
    let (pid, state, uptime) = match p.retry_in {
        Some(left) if p.pid == 0 => ("-".into(), format!("backoff {left:.1}s"), "-".into()),
        // A slot without a process: left empty by the policy, or spawning.
        None if p.pid == 0 => ("-".into(), p.state.clone(), "-".into()),
        _ => (
            p.pid.to_string(),
            p.state.clone(),
            human_duration(now - p.started),
        ),
    };
    vec![
        p.wid.to_string(),
        pid,
        state,
        uptime,
        p.restarts.to_string(),
        p.last_exit
            .as_ref()
            .map_or_else(|| "-".into(), last_exit_text),
    ]
}

fn print_processes(list: &[ProcessInfo]) {
    let now = now_secs();
    let rows: Vec<Vec<String>> = list.iter().map(|p| process_row(p, now)).collect();
    table(&PROCESS_COLUMNS, &rows);
}

fn print_changes(command: &Command, report: &ChangeReport) {
    if !report.done {
        println!("{}: accepted", command.name());
        return;
    }
    let pids = |list: &[u32]| {
        list.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut printed = false;
    if !report.watchers.is_empty() {
        let rows: Vec<Vec<String>> = report
            .watchers
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        table(&["WATCHER", "RESULT"], &rows);
        printed = true;
    }
    for (label, list) in [
        ("started", &report.started),
        ("stopped", &report.stopped),
        ("kept", &report.kept),
    ] {
        if !list.is_empty() {
            println!("{label}: {}", pids(list));
            printed = true;
        }
    }
    if let Some(n) = report.numprocesses {
        println!("numprocesses: {n}");
        printed = true;
    }
    if !printed {
        println!("{}: ok", command.name());
    }
}

fn print_options(options: &OptionMap) {
    let width = options.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    for (key, value) in options {
        let text = match value {
            OptionValue::Str(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{key:<width$} = {text}");
    }
}

fn print_node_info(info: &NodeInfo) {
    let labels = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut rows = vec![
        ("node", info.node.clone()),
        ("labels", labels),
        (
            "version",
            format!("{} (protocol {})", info.version, info.protocol),
        ),
        ("pid", info.pid.to_string()),
        ("binary", info.binary.clone()),
        ("upgrades", info.upgrades.to_string()),
        ("uptime", human_duration(info.uptime)),
        ("cpus", info.cpus.to_string()),
        (
            "memory",
            format!(
                "{} available of {}",
                human_bytes(info.memory_available),
                human_bytes(info.memory_total)
            ),
        ),
        (
            "load",
            format!(
                "{:.2} {:.2} {:.2}",
                info.load[0], info.load[1], info.load[2]
            ),
        ),
        ("watchers", info.watchers.to_string()),
        ("processes", info.processes.to_string()),
        ("host processes", info.host_processes.to_string()),
        ("control", info.control.clone()),
        ("pubsub", info.pubsub.clone()),
        ("events dropped", info.events_dropped.to_string()),
        (
            "keys",
            if info.sealed {
                "yes (frames sealed)"
            } else {
                "none (frames in clear)"
            }
            .to_string(),
        ),
    ];
    let refused = &info.refused;
    if refused.total() > 0 {
        rows.push((
            "refused",
            format!(
                "{} (unsealed {}, unknown key {}, tampered {}, expired {}, replayed {}, \
                 sealed before start {}, read-only {}, circus json {}, busy {})",
                refused.total(),
                refused.unsealed,
                refused.unknown_key,
                refused.tampered,
                refused.expired,
                refused.replayed,
                refused.before_start,
                refused.forbidden,
                refused.circus_json,
                refused.busy
            ),
        ));
    }
    if info.malformed > 0 {
        rows.push(("malformed", format!("{} control frame(s)", info.malformed)));
    }
    for (key, counts) in [
        ("control conns", &info.control_connections),
        ("pubsub conns", &info.pubsub_connections),
    ] {
        rows.push((key, connection_counts(counts)));
    }
    for (key, value) in rows {
        println!("{key:<14}  {value}");
    }
}

/// `3 open, 120 accepted, 7 refused (over the limit), ...`: what is not zero.
fn connection_counts(counts: &ConnectionCounts) -> String {
    let mut text = format!("{} open, {} accepted", counts.open, counts.accepted);
    for (n, what) in [
        (counts.refused, "refused (over the limit)"),
        (counts.handshake_failed, "failed the handshake"),
        (counts.accept_failed, "could not be accepted"),
    ] {
        if n > 0 {
            text.push_str(&format!(", {n} {what}"));
        }
    }
    text
}

fn print_stats(report: &StatsReport) {
    if report.time == 0.0 {
        println!("no statistics yet (stats_interval = 0 turns them off)");
        return;
    }
    let mut processes: Vec<&ProcessStats> = report.processes.iter().collect();
    processes.sort_by(|a, b| a.watcher.cmp(&b.watcher).then(a.wid.cmp(&b.wid)));
    let rows: Vec<Vec<String>> = processes
        .iter()
        .map(|p| {
            vec![
                p.watcher.clone(),
                p.pid.to_string(),
                p.wid.to_string(),
                format!("{:.1}", p.cpu),
                human_bytes(p.rss),
                format!("{:.1}", p.mem),
                p.threads.to_string(),
                human_duration(p.age),
            ]
        })
        .collect();
    table(
        &[
            "WATCHER", "PID", "WID", "CPU%", "RSS", "MEM%", "THREADS", "AGE",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = report
        .watchers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.processes.to_string(),
                format!("{:.1}", w.cpu),
                human_bytes(w.rss),
                format!("{:.1}", w.mem),
            ]
        })
        .collect();
    table(&["WATCHER", "PROCESSES", "CPU%", "RSS", "MEM%"], &rows);
}

/// `exec`: the command's output as it wrote it, then notes on stderr.
fn print_exec(out: &ExecOutput) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    if out.truncated {
        eprintln!(
            "nodectl: output truncated to {} bytes per stream",
            ExecOutput::MAX_OUTPUT
        );
    }
    if out.timed_out {
        eprintln!(
            "nodectl: timed out after {:.1}s: the command's process group was killed",
            out.duration
        );
    } else if let Some(signal) = out.signal {
        eprintln!("nodectl: the command was killed by signal {signal}");
    }
}

/// nodectl's exit code for an answer: for `exec`, the command's exit code (3 when
/// it did not exit by itself); else 0.
pub fn exit_code(response: &Response) -> std::process::ExitCode {
    match response {
        Response::Exec(out) => match out.code {
            Some(code) if !out.timed_out => {
                std::process::ExitCode::from(u8::try_from(code & 0xff).unwrap_or(3))
            }
            _ => std::process::ExitCode::from(3),
        },
        _ => std::process::ExitCode::SUCCESS,
    }
}

fn print_own_stats(own: &ProcessStats) {
    let rows = [
        ("pid", own.pid.to_string()),
        ("cpu", format!("{:.1}%", own.cpu)),
        ("rss", human_bytes(own.rss)),
        ("mem", format!("{:.2}%", own.mem)),
        ("threads", own.threads.to_string()),
        ("uptime", human_duration(own.age)),
        ("cpu time", format!("{:.2}s", own.cpu_time)),
    ];
    for (key, value) in rows {
        println!("{key:<8}  {value}");
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `3d4h`, `2h05m`, `4m07s`, `12.3s`.
pub fn human_duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    let whole = secs as u64;
    if whole >= 86_400 {
        format!("{}d{}h", whole / 86_400, (whole % 86_400) / 3600)
    } else if whole >= 3600 {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{secs:.1}s")
    }
}

/// `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(human_duration(5.25), "5.2s");
        assert_eq!(human_duration(125.0), "2m05s");
        assert_eq!(human_duration(7300.0), "2h01m");
        assert_eq!(human_duration(90_000.0), "1d1h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
