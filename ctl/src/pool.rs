//! `nodectl --pool`: every command on many nodes at once, one table with a NODE
//! column, each failing node named with its reason.
//!
//! Exit codes: 0 when every targeted node succeeded (nodes without the watcher a
//! command names are skipped, not failed); 4 when some nodes succeeded and others
//! failed; when every node failed, 1 if any was unreachable, else 3; 3 too when no
//! targeted node has the watcher at all; 2 for bad usage (pools file, pool, node
//! or label filter).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ringmaster_meta::batch::{self, Rolling};
use ringmaster_meta::fanout::{self, NodeError, NodeResult, Outcome, Timeouts, Verdict};
use ringmaster_meta::placement::{self, Excluded, Plan, Request};
use ringmaster_meta::{template, NodeSpec, Pool, Strategy};
use ringmaster_protocol::message::{ChangeReport, ExecOutput, NodeInfo};
use ringmaster_protocol::stats::WatcherStats;
use ringmaster_protocol::{Command, ErrorKind, ErrorReply, OptionMap, OptionValue, Response};
use serde_json::json;

use crate::output::{self, human_bytes, human_duration, table};
use crate::runtime;

/// Exit code when some nodes succeeded and others failed.
pub const PARTIAL_FAILURE: u8 = 4;

/// Which nodes a pool command targets.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `--pools FILE`.
    pub pools_file: Option<PathBuf>,
    /// `--pool NAME`.
    pub pool: Option<String>,
    /// `--node a,b`.
    pub nodes: Vec<String>,
    /// `--where LABEL=VALUE`.
    pub filters: Vec<String>,
    /// `--key FILE`: replaces the pool's keys.
    pub keys: Vec<PathBuf>,
}

/// Options every pool command shares.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// `--json`.
    pub json: bool,
    /// `--no-wait`.
    pub no_wait: bool,
    /// `--timeout`, when given.
    pub timeout: Option<Duration>,
}

/// What to do on the pool.
#[derive(Debug, Clone)]
pub enum Job {
    /// Any agent command, on every targeted node at once. `long` when the command
    /// may take long (it starts or stops processes).
    Command {
        /// The command.
        command: Command,
        /// Starts or stops processes.
        long: bool,
    },
    /// `nodes`: reachability, version, labels, load, memory, processes, RTT.
    Nodes,
    /// `restart` / `reload` with `--batch N`.
    Rolling {
        /// The command.
        command: Command,
        /// Nodes per batch.
        batch: usize,
        /// Seconds a batch must keep running before the next.
        settle: Duration,
    },
    /// `add` / `incr` placed by a strategy.
    Place {
        /// What to place.
        watcher: String,
        /// How many processes in all.
        count: u32,
        /// `--strategy`, else the pool's default.
        strategy: Option<Strategy>,
        /// For `add`: the new watcher's command line, options and `--start`.
        add: Option<AddSpec>,
        /// Show the plan only.
        dry_run: bool,
    },
    /// `exec`, with per-node templates.
    Exec {
        /// The command line template.
        template: String,
        /// Seconds it may run on each node.
        timeout: f64,
    },
    /// `upgrade`, `batch` nodes at a time.
    Upgrade {
        /// The new binary (the running one when absent).
        binary: Option<String>,
        /// Nodes per batch.
        batch: usize,
    },
    /// `stats`, aggregated.
    Stats {
        /// Only this watcher.
        name: Option<String>,
    },
}

/// The watcher `add` creates where the plan puts processes on a node without it.
#[derive(Debug, Clone)]
pub struct AddSpec {
    /// Command line.
    pub cmd: String,
    /// Other options.
    pub options: OptionMap,
    /// Start it at once.
    pub start: bool,
}

/// The pool and its targeted nodes, or a usage error.
pub fn resolve(target: &Target) -> Result<(Pool, Vec<NodeSpec>), String> {
    ringmaster_meta::pools::resolve(
        target.pools_file.as_deref(),
        target.pool.as_deref(),
        &target.nodes,
        &target.filters,
        &target.keys,
    )
}

/// Runs `job` on the targeted nodes and prints the outcome.
pub fn run(target: &Target, job: Job, flags: Flags) -> ExitCode {
    let (pool, nodes) = match resolve(target) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("nodectl: {message}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let reach = flags.timeout.unwrap_or(pool.timeout);
    let long = Timeouts {
        reach,
        answer: flags.timeout.unwrap_or(crate::ACTION_TIMEOUT).max(reach),
    };
    runtime.block_on(async {
        match job {
            Job::Command {
                command,
                long: is_long,
            } => {
                let timeouts = if is_long { long } else { Timeouts::same(reach) };
                let results = fanout::run_on(&nodes, &command, timeouts, flags.no_wait).await;
                report(&pool, &command, &results, flags.json)
            }
            Job::Nodes => nodes_table(&nodes, reach, flags.json).await,
            Job::Rolling {
                command,
                batch,
                settle,
            } => {
                let how = Rolling {
                    batch,
                    command_timeout: long,
                    healthy_within: long.answer,
                    settle,
                    query_timeout: reach,
                };
                let results = batch::rolling(&nodes, &command, how).await;
                report(&pool, &command, &results, flags.json)
            }
            Job::Place {
                watcher,
                count,
                strategy,
                add,
                dry_run,
            } => {
                let request = Request {
                    watcher,
                    count,
                    strategy: strategy.unwrap_or_else(|| pool.placement.clone()),
                    existing_only: add.is_none(),
                };
                place(&pool, &nodes, request, add, dry_run, long, flags).await
            }
            Job::Exec { template, timeout } => {
                exec(&pool, &nodes, &template, timeout, reach, flags.json).await
            }
            Job::Upgrade { binary, batch } => {
                let timeouts = crate::upgrade::timeouts(flags.timeout);
                let done =
                    ringmaster_meta::upgrade::rolling(&nodes, binary.clone(), batch, timeouts)
                        .await;
                upgrades(&pool, &Command::Upgrade { binary }, done, flags.json)
            }
            Job::Stats { name } => {
                let command = Command::Stats { name };
                let results = fanout::run_on(&nodes, &command, Timeouts::same(reach), false).await;
                stats(&pool, &command, &results, flags.json)
            }
        }
    })
}

/// Prints, on stderr, why each node that did not succeed did not.
fn explain(results: &[NodeResult]) {
    for result in results {
        match &result.outcome {
            Outcome::Failed(error) => eprintln!("nodectl: {}: {error}", result.node),
            Outcome::NotAttempted(why) => {
                eprintln!("nodectl: {}: not attempted ({why})", result.node);
            }
            Outcome::Skipped(why) => eprintln!("nodectl: {}: skipped ({why})", result.node),
            Outcome::Done(_) => {}
        }
    }
}

/// The exit code for `results`, after printing why nodes failed.
fn conclude(pool: &Pool, command: &Command, results: &[NodeResult], json: bool) -> ExitCode {
    if !json {
        explain(results);
    }
    match fanout::verdict(results) {
        Verdict::AllSucceeded => ExitCode::SUCCESS,
        Verdict::NothingApplies => {
            if !json {
                let watcher = fanout::watcher_of(command).unwrap_or_default();
                eprintln!(
                    "nodectl: no targeted node of pool '{}' has watcher '{watcher}'",
                    pool.name
                );
            }
            ExitCode::from(3)
        }
        Verdict::Partial => {
            if !json {
                let failed = results
                    .iter()
                    .filter(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::NotAttempted(_)))
                    .count();
                eprintln!(
                    "nodectl: {failed} of {} nodes of pool '{}' failed",
                    results.len(),
                    pool.name
                );
            }
            ExitCode::from(PARTIAL_FAILURE)
        }
        Verdict::AllFailed { unreachable: true } => ExitCode::from(1),
        Verdict::AllFailed { unreachable: false } => ExitCode::from(3),
    }
}

/// One JSON object per node: `{node, ok, elapsed_ms, result | error | skipped}`.
fn json_results(pool: &Pool, results: &[NodeResult]) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let elapsed_ms = r.elapsed.as_secs_f64() * 1000.0;
            match &r.outcome {
                Outcome::Done(response) => json!({
                    "node": r.node, "ok": true, "elapsed_ms": elapsed_ms,
                    "result": output::json_of(response),
                }),
                Outcome::Skipped(why) => json!({
                    "node": r.node, "ok": true, "elapsed_ms": elapsed_ms, "skipped": why,
                }),
                Outcome::Failed(error) => json!({
                    "node": r.node, "ok": false, "elapsed_ms": elapsed_ms,
                    "error": error_json(error),
                }),
                Outcome::NotAttempted(why) => json!({
                    "node": r.node, "ok": false, "elapsed_ms": elapsed_ms,
                    "error": { "kind": "not_attempted", "message": why },
                }),
            }
        })
        .collect();
    json!({ "pool": pool.name, "nodes": nodes })
}

fn error_json(error: &NodeError) -> serde_json::Value {
    match error {
        NodeError::Unreachable(message) => json!({ "kind": "unreachable", "message": message }),
        NodeError::Remote(reply) => json!({ "kind": reply.kind, "message": reply.message }),
        NodeError::Unhealthy(message) => json!({ "kind": "unhealthy", "message": message }),
        other => json!({ "kind": "error", "message": other.to_string() }),
    }
}

/// Prints one table with a NODE column for every node that answered.
fn report(pool: &Pool, command: &Command, results: &[NodeResult], json: bool) -> ExitCode {
    if json {
        output::print_json(&json_results(pool, results));
        return conclude(pool, command, results, json);
    }
    let mut header: Vec<&str> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for result in results {
        let Outcome::Done(response) = &result.outcome else {
            continue;
        };
        let (head, node_rows) = rows_of(command, response);
        if header.is_empty() {
            header = head;
        }
        for row in node_rows {
            let mut full = vec![result.node.clone()];
            full.extend(row);
            rows.push(full);
        }
    }
    if !header.is_empty() {
        let mut full_header = vec!["NODE"];
        full_header.extend(header);
        table(&full_header, &rows);
    }
    conclude(pool, command, results, json)
}

/// The outcome of a pool upgrade: one row per node upgraded (versions, pid,
/// processes kept, time), then the nodes that failed or were not tried.
fn upgrades(
    pool: &Pool,
    command: &Command,
    done: Vec<(NodeResult, Option<ringmaster_meta::upgrade::Upgraded>)>,
    json: bool,
) -> ExitCode {
    let (results, upgraded): (Vec<NodeResult>, Vec<_>) = done.into_iter().unzip();
    if json {
        let mut value = json_results(pool, &results);
        if let Some(nodes) = value.get_mut("nodes").and_then(|n| n.as_array_mut()) {
            for (node, upgraded) in nodes.iter_mut().zip(&upgraded) {
                if let (Some(object), Some(u)) = (node.as_object_mut(), upgraded) {
                    object.insert("result".into(), crate::upgrade::json_of(u));
                }
            }
        }
        output::print_json(&value);
        return conclude(pool, command, &results, json);
    }
    let rows: Vec<Vec<String>> = upgraded
        .iter()
        .flatten()
        .map(|u| {
            vec![
                u.info.node.clone(),
                u.report.from_version.clone(),
                u.info.version.clone(),
                u.info.pid.to_string(),
                u.report.processes.to_string(),
                format!("{:.0} ms", u.took.as_secs_f64() * 1000.0),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(&["NODE", "FROM", "TO", "PID", "PROCESSES", "TOOK"], &rows);
    }
    conclude(pool, command, &results, json)
}

/// Table rows of one node's answer, without the NODE column.
fn rows_of(command: &Command, response: &Response) -> (Vec<&'static str>, Vec<Vec<String>>) {
    match response {
        Response::Status(list) => (
            output::STATUS_COLUMNS.to_vec(),
            list.iter().map(output::status_row).collect(),
        ),
        Response::Watchers(names) => (
            vec!["WATCHER"],
            names.iter().map(|n| vec![n.clone()]).collect(),
        ),
        Response::Processes(list) => {
            let now = output::now_secs();
            (
                output::PROCESS_COLUMNS.to_vec(),
                list.iter().map(|p| output::process_row(p, now)).collect(),
            )
        }
        Response::Changes(report) => (
            vec!["RESULT", "STARTED", "STOPPED", "KEPT"],
            vec![change_row(command, report)],
        ),
        Response::Count(n) => (vec!["COUNT"], vec![vec![n.to_string()]]),
        Response::Options(options) => (
            vec!["OPTION", "VALUE"],
            options
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        OptionValue::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    vec![k.clone(), text]
                })
                .collect(),
        ),
        Response::NodeInfo(info) => (NODE_COLUMNS.to_vec(), vec![node_row(info, None)]),
        Response::DStats(own) => (
            vec!["PID", "CPU%", "RSS", "THREADS", "UPTIME"],
            vec![vec![
                own.pid.to_string(),
                format!("{:.1}", own.cpu),
                human_bytes(own.rss),
                own.threads.to_string(),
                human_duration(own.age),
            ]],
        ),
        Response::Exec(out) => (
            vec!["EXIT", "TIME"],
            vec![vec![exit_text(out), format!("{:.2}s", out.duration)]],
        ),
        Response::Sockets(list) => (output::SOCKET_COLUMNS.to_vec(), output::socket_rows(list)),
        other => (vec!["RESULT"], vec![vec![format!("{other:?}")]]),
    }
}

fn change_row(command: &Command, report: &ChangeReport) -> Vec<String> {
    let result = if !report.done {
        "accepted".to_string()
    } else if !report.watchers.is_empty() {
        report
            .watchers
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        match report.numprocesses {
            Some(n) => format!("{} ok, numprocesses {n}", command.name()),
            None => format!("{} ok", command.name()),
        }
    };
    vec![
        result,
        report.started.len().to_string(),
        report.stopped.len().to_string(),
        report.kept.len().to_string(),
    ]
}

const NODE_COLUMNS: [&str; 8] = [
    "STATUS",
    "VERSION",
    "LABELS",
    "LOAD",
    "MEMORY",
    "PROCESSES",
    "WATCHERS",
    "RTT",
];

fn node_row(info: &NodeInfo, rtt: Option<Duration>) -> Vec<String> {
    let labels = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "up".into(),
        info.version.clone(),
        labels,
        format!("{:.2}/{}", info.load[0], info.cpus),
        format!(
            "{} free of {}",
            human_bytes(info.memory_available),
            human_bytes(info.memory_total)
        ),
        info.processes.to_string(),
        info.watchers.to_string(),
        rtt.map_or(String::new(), |d| {
            format!("{:.1}ms", d.as_secs_f64() * 1000.0)
        }),
    ]
}

async fn nodes_table(nodes: &[NodeSpec], timeout: Duration, json: bool) -> ExitCode {
    let results: Vec<NodeResult> =
        fanout::run_on(nodes, &Command::NodeInfo {}, Timeouts::same(timeout), false).await;
    if json {
        let list: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match &r.outcome {
                Outcome::Done(Response::NodeInfo(info)) => json!({
                    "node": r.node, "reachable": true,
                    "rtt_ms": r.elapsed.as_secs_f64() * 1000.0, "info": info,
                }),
                Outcome::Failed(e) => json!({
                    "node": r.node, "reachable": false, "error": error_json(e),
                }),
                other => {
                    json!({ "node": r.node, "reachable": false, "error": format!("{other:?}") })
                }
            })
            .collect();
        output::print_json(&list);
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                let mut row = vec![r.node.clone()];
                match &r.outcome {
                    Outcome::Done(Response::NodeInfo(info)) => {
                        row.extend(node_row(info, Some(r.elapsed)));
                    }
                    _ => {
                        row.push("unreachable".into());
                        row.extend(std::iter::repeat_n(String::new(), NODE_COLUMNS.len() - 1));
                    }
                }
                row
            })
            .collect();
        let mut header = vec!["NODE"];
        header.extend(NODE_COLUMNS);
        table(&header, &rows);
        for r in &results {
            if let Outcome::Failed(e) = &r.outcome {
                eprintln!("nodectl: {}: {e}", r.node);
            }
        }
    }
    match fanout::verdict(&results) {
        Verdict::AllSucceeded | Verdict::NothingApplies => ExitCode::SUCCESS,
        Verdict::Partial => ExitCode::from(PARTIAL_FAILURE),
        Verdict::AllFailed { .. } => ExitCode::from(1),
    }
}

async fn place(
    pool: &Pool,
    nodes: &[NodeSpec],
    request: Request,
    add: Option<AddSpec>,
    dry_run: bool,
    timeouts: Timeouts,
    flags: Flags,
) -> ExitCode {
    let mut snapshots = Vec::new();
    let mut excluded = Vec::new();
    for (spec, snap) in placement::snapshots(nodes, timeouts.reach).await {
        match snap {
            Ok(snap) => snapshots.push(snap),
            Err(e) => excluded.push(Excluded {
                node: spec.name,
                reason: e.to_string(),
            }),
        }
    }
    let plan = match placement::plan(&snapshots, excluded, &request) {
        Ok(plan) => plan,
        Err(e) => {
            if flags.json {
                output::print_json(&json!({
                    "error": { "kind": "no_candidate", "message": e.message },
                    "excluded": excluded_json(&e.excluded),
                }));
            } else {
                eprintln!("nodectl: {}", e.message);
                for x in &e.excluded {
                    eprintln!("nodectl: {}: not a candidate: {}", x.node, x.reason);
                }
            }
            return ExitCode::from(3);
        }
    };
    if dry_run {
        print_plan(&plan, &request, add.is_some(), flags.json);
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<NodeSpec> = plan
        .placements
        .iter()
        .filter_map(|p| nodes.iter().find(|n| n.name == p.node).cloned())
        .collect();
    let results = fanout::run_each(&chosen, timeouts, flags.no_wait, |node| {
        let placement = plan
            .placements
            .iter()
            .find(|p| p.node == node.name)
            .ok_or_else(|| ErrorReply::new(ErrorKind::Internal, "node not in the plan"))?;
        Ok(match (&add, placement.has_watcher) {
            (Some(spec), false) => {
                let mut options = spec.options.clone();
                options.insert(
                    "numprocesses".into(),
                    OptionValue::Int(i64::from(placement.count)),
                );
                Command::Add {
                    name: request.watcher.clone(),
                    cmd: spec.cmd.clone(),
                    args: Vec::new(),
                    options,
                    start: spec.start,
                }
            }
            _ => Command::Incr {
                name: request.watcher.clone(),
                nb: placement.count,
            },
        })
    })
    .await;
    if flags.json {
        output::print_json(&json!({
            "plan": plan_json(&plan),
            "results": json_results(pool, &results),
        }));
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter_map(|r| {
                let p = plan.placements.iter().find(|p| p.node == r.node)?;
                let action = if p.has_watcher || add.is_none() {
                    format!("incr {}", p.count)
                } else {
                    format!("add with {}", p.count)
                };
                let outcome = match &r.outcome {
                    Outcome::Done(Response::Changes(c)) if c.done => {
                        format!("ok, {} started", c.started.len())
                    }
                    Outcome::Done(_) => "accepted".into(),
                    _ => "failed".into(),
                };
                Some(vec![r.node.clone(), action, outcome, p.why.clone()])
            })
            .collect();
        table(&["NODE", "ACTION", "RESULT", "WHY"], &rows);
        for x in &plan.excluded {
            eprintln!("nodectl: {}: not a candidate: {}", x.node, x.reason);
        }
    }
    let command = Command::Incr {
        name: request.watcher.clone(),
        nb: request.count,
    };
    conclude(pool, &command, &results, flags.json)
}

fn print_plan(plan: &Plan, request: &Request, adding: bool, json: bool) {
    if json {
        output::print_json(&plan_json(plan));
        return;
    }
    println!(
        "plan: {} process(es) of '{}' by {} (dry run, nothing changed)",
        request.count, request.watcher, plan.strategy
    );
    let rows: Vec<Vec<String>> = plan
        .placements
        .iter()
        .map(|p| {
            let action = if p.has_watcher || !adding {
                format!("incr {}", p.count)
            } else {
                format!("add with {}", p.count)
            };
            vec![p.node.clone(), action, p.why.clone()]
        })
        .collect();
    table(&["NODE", "ACTION", "WHY"], &rows);
    for x in &plan.excluded {
        println!("not a candidate: {}: {}", x.node, x.reason);
    }
}

fn plan_json(plan: &Plan) -> serde_json::Value {
    let placements: Vec<serde_json::Value> = plan
        .placements
        .iter()
        .map(|p| {
            json!({ "node": p.node, "count": p.count, "has_watcher": p.has_watcher, "why": p.why })
        })
        .collect();
    json!({
        "strategy": plan.strategy.to_string(),
        "placements": placements,
        "excluded": excluded_json(&plan.excluded),
    })
}

fn excluded_json(excluded: &[Excluded]) -> serde_json::Value {
    excluded
        .iter()
        .map(|x| json!({ "node": x.node, "reason": x.reason }))
        .collect()
}

fn exit_text(out: &ExecOutput) -> String {
    match (out.code, out.signal) {
        _ if out.timed_out => "timed out".into(),
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "?".into(),
    }
}

async fn exec(
    pool: &Pool,
    nodes: &[NodeSpec],
    template_text: &str,
    exec_timeout: f64,
    reach: Duration,
    json: bool,
) -> ExitCode {
    let first = nodes.first().map_or("", |n| n.name.as_str()).to_string();
    let timeouts = Timeouts {
        reach,
        answer: Duration::try_from_secs_f64(exec_timeout.max(0.0) + 5.0)
            .unwrap_or(crate::ACTION_TIMEOUT),
    };
    let results = fanout::run_each(nodes, timeouts, false, |node| {
        let cmd = template::render(template_text, node, &first)
            .map_err(|e| ErrorReply::new(ErrorKind::BadArguments, e))?;
        Ok(Command::Exec {
            cmd,
            timeout: exec_timeout,
        })
    })
    .await;
    let command = Command::Exec {
        cmd: template_text.to_string(),
        timeout: exec_timeout,
    };
    // A command that ran but exited non-zero is a failure of that node.
    let judged: Vec<NodeResult> = results
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Done(Response::Exec(out)) if !out.success() => NodeResult {
                outcome: Outcome::Failed(NodeError::Remote(ErrorReply::new(
                    ErrorKind::Other,
                    format!("command exited {}", exit_text(out)),
                ))),
                ..r.clone()
            },
            _ => r.clone(),
        })
        .collect();
    if json {
        output::print_json(&json_results(pool, &results));
        return conclude(pool, &command, &judged, json);
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for r in &results {
        if let Outcome::Done(Response::Exec(out)) = &r.outcome {
            for line in out.stdout.lines() {
                let _ = writeln!(stdout, "{}: {line}", r.node);
            }
            for line in out.stderr.lines() {
                let _ = writeln!(stderr, "{}: {line}", r.node);
            }
            if out.truncated {
                let _ = writeln!(stderr, "{}: (output cut at 64 KiB)", r.node);
            }
        }
    }
    let _ = stdout.flush();
    drop(stdout);
    drop(stderr);
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let (exit, time) = match &r.outcome {
                Outcome::Done(Response::Exec(out)) => {
                    (exit_text(out), format!("{:.2}s", out.duration))
                }
                Outcome::Failed(_) => ("error".into(), String::new()),
                _ => ("-".into(), String::new()),
            };
            vec![r.node.clone(), exit, time]
        })
        .collect();
    println!();
    table(&["NODE", "EXIT", "TIME"], &rows);
    explain(&results);
    exit_of(&judged)
}

fn exit_of(results: &[NodeResult]) -> ExitCode {
    match fanout::verdict(results) {
        Verdict::AllSucceeded => ExitCode::SUCCESS,
        Verdict::NothingApplies | Verdict::AllFailed { unreachable: false } => ExitCode::from(3),
        Verdict::Partial => ExitCode::from(PARTIAL_FAILURE),
        Verdict::AllFailed { unreachable: true } => ExitCode::from(1),
    }
}

fn stats(pool: &Pool, command: &Command, results: &[NodeResult], json: bool) -> ExitCode {
    let mut totals: std::collections::BTreeMap<String, (u32, WatcherStats)> =
        std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for r in results {
        let Outcome::Done(Response::Stats(report)) = &r.outcome else {
            continue;
        };
        for w in &report.watchers {
            rows.push(vec![
                r.node.clone(),
                w.name.clone(),
                w.processes.to_string(),
                format!("{:.1}", w.cpu),
                human_bytes(w.rss),
                format!("{:.1}", w.mem),
            ]);
            let entry = totals.entry(w.name.clone()).or_insert_with(|| {
                (
                    0,
                    WatcherStats {
                        name: w.name.clone(),
                        processes: 0,
                        cpu: 0.0,
                        rss: 0,
                        mem: 0.0,
                        max_age: 0.0,
                    },
                )
            });
            entry.0 += 1;
            entry.1.processes += w.processes;
            entry.1.cpu += w.cpu;
            entry.1.rss += w.rss;
            entry.1.max_age = entry.1.max_age.max(w.max_age);
        }
    }
    if json {
        let total_list: Vec<serde_json::Value> = totals
            .values()
            .map(|(nodes, w)| {
                json!({ "watcher": w.name, "nodes": nodes, "processes": w.processes, "cpu": w.cpu, "rss": w.rss })
            })
            .collect();
        let mut value = json_results(pool, results);
        value["totals"] = serde_json::Value::Array(total_list);
        output::print_json(&value);
        return conclude(pool, command, results, json);
    }
    table(
        &["NODE", "WATCHER", "PROCESSES", "CPU%", "RSS", "MEM%"],
        &rows,
    );
    println!();
    let total_rows: Vec<Vec<String>> = totals
        .values()
        .map(|(nodes, w)| {
            vec![
                w.name.clone(),
                nodes.to_string(),
                w.processes.to_string(),
                format!("{:.1}", w.cpu),
                human_bytes(w.rss),
            ]
        })
        .collect();
    println!("pool '{}' totals:", pool.name);
    table(
        &["WATCHER", "NODES", "PROCESSES", "CPU%", "RSS"],
        &total_rows,
    );
    conclude(pool, command, results, json)
}
