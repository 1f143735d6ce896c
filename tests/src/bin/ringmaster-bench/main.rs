//! `ringmaster-bench`: measures the real `nodeagent` (and `nodectl`) against
//! Ringmaster's performance targets, and prints a report.
//!
//! Build everything in release first, so that the numbers mean something:
//!
//! ```text
//! cargo build --release --workspace && target/release/ringmaster-bench
//! ```
//!
//! The binaries are found next to this one (or in `$RINGMASTER_BIN_DIR`), as the
//! end-to-end tests find them. Every number is measured in the same run:
//!
//! 1. spawn rate: `incr` of 1000 `sleep` processes, against a plain Rust loop
//!    spawning as many (target: the agent at 70% of the loop or better);
//! 2. crash-to-respawn latency: SIGKILL each of 100 processes once and wait for the
//!    `spawn` event of its slot (target: p50 ≤ 5 ms);
//! 3. control round trip: 10 000 `status` requests through one client while the
//!    agent supervises the 1000 processes (targets: p50 ≤ 150 µs, p99 ≤ 500 µs),
//!    against the same requests from a blocking libzmq DEALER and against a plain
//!    libzmq DEALER/ROUTER pair, in alternating blocks (see [`direct`]);
//! 4. wall time of one `nodectl status` run (target: median ≤ 20 ms);
//! 5. the agent's resident memory, idle and with 1000 processes (target: ≤ 10 MiB
//!    with 1000);
//! 6. what live statistics cost: the agent's CPU averaged over 30 s and its memory
//!    with 1000 processes sampled every second (targets: ≤ 3% of a core, ≤ 30 MB),
//!    against the same agent with statistics off;
//! 7. a pool of 50 agents with 100 processes each (see [`pool`]): `nodectl --pool`
//!    status fan-out wall time (target: p50 ≤ 50 ms), and `nodemeta` relaying all
//!    of their statistics: its CPU (target: ≤ 10% of a core) and the delay to its
//!    subscribers (target: p99 ≤ 20 ms), against a direct subscriber;
//! 8. what keys cost (see [`sealing`]): `status` round trips to an agent with keys
//!    against one without, in alternating blocks (target: p99 ratio ≤ 1.5×);
//! 9. process output (see [`output`]): `status` round trips while two `yes` flood
//!    the agent, one to a rotated file and one captured, against the idle agent
//!    (target: p99 ≤ 5 ms), with the bytes per second read and what was dropped;
//! 10. the restart policy on its defaults (see [`restart`]), only with `--phase 10`
//! 11. upgrade in place with 1000 processes, `status` asked meanwhile (see
//!     [`upgrade`])
//!     (it takes some 40 s): respawn latency of 100 processes killed once each after
//!     `min_uptime` (target: p50 ≤ 2 ms), the share of time a slot killed every 2 s
//!     runs (20 s, or `--kill-window SECS`), and replacements per second of 100
//!     workers exiting 0 after 0.1 s (target: ≥ 500/s, and ≥ 70% of a plain loop).
//!
//! `--quick` scales the counts down for a smoke run; `--phase N` runs only phase
//! N (phases 1, 3, 4 and 5 run together, on one agent; phase 10 runs only so).
//! The exit code is 0 when every phase ran, whether or not the targets were met
//! (this is a report), and 1 when a phase could not run.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod direct;
mod output;
mod pool;
mod restart;
mod sealing;
mod upgrade;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringmaster_protocol::transport::{Client, Subscriber};
use ringmaster_protocol::{Command, EventKind, Response};
use ringmaster_tests::{pid_alive, TestAgent};

const USAGE: &str = "\
ringmaster-bench: measure nodeagent and nodectl against Ringmaster's performance targets

Usage: ringmaster-bench [--quick] [--phase N] [--kill-window SECS]

Options:
  --quick             scale counts down for a smoke run (100 spawns, 20 kills, 1000 requests,
                      a pool of 10 agents, 2 s of output flood)
  --phase N           run only phase N (1-11; phases 1, 3, 4 and 5 run together; phase 10,
                      the restart policy, runs only when asked for, as it takes some 40 s)
  --kill-window SECS  how long phase 10 kills one slot every 2 s (default 20, quick 6)
  -h, --help          print this help

Build in release first: cargo build --release --workspace && target/release/ringmaster-bench
The nodeagent, nodectl and nodemeta binaries are taken from this binary's directory, or from
$RINGMASTER_BIN_DIR. The agents log at RUST_LOG=info unless RUST_LOG is set.
Exit code: 0 when every phase ran (targets met or not), 1 when a phase failed, 2 on bad usage.";

/// Timeout of ordinary requests and waits.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of the `incr` that spawns every process at once.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the agent may take to stop its processes and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Node of the agent that runs the spawn, round-trip, nodectl and memory phases.
const LOAD_NODE: &str = "bench";
/// Node of the agent that runs the crash phase.
const CRASH_NODE: &str = "bench-crash";
/// The watcher that is scaled up and down.
const SLEEP_WATCHER: &str = "sleep";
/// The watcher whose processes are killed.
const CRASH_WATCHER: &str = "crash";
/// The target for resident memory, in bytes.
const RSS_TARGET: u64 = 10 * 1024 * 1024;

/// How many of each thing a run does.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// Processes spawned by the agent and by the plain loop.
    spawns: u32,
    /// Processes killed in the crash phase (one kill each).
    kills: u32,
    /// `status` requests timed.
    requests: u32,
    /// `nodectl status` runs timed.
    nodectl_runs: u32,
    /// The pool phase.
    pool: pool::PoolScale,
    /// The restart-policy phase.
    restart: restart::RestartScale,
    /// The upgrade-in-place phase.
    upgrade: upgrade::UpgradeScale,
    /// Whether this is a `--quick` run.
    quick: bool,
    /// Run only this phase (`--phase N`).
    only: Option<u32>,
}

impl Scale {
    const FULL: Scale = Scale {
        spawns: 1000,
        kills: 100,
        requests: 10_000,
        nodectl_runs: 20,
        pool: pool::PoolScale {
            nodes: 50,
            processes: 100,
            fanout_runs: 30,
            window: Duration::from_secs(30),
        },
        restart: restart::RestartScale {
            kills: 100,
            kill_window: Duration::from_secs(20),
            replace_window: Duration::from_secs(5),
        },
        upgrade: upgrade::UpgradeScale::FULL,
        quick: false,
        only: None,
    };
    const QUICK: Scale = Scale {
        spawns: 100,
        kills: 20,
        requests: 1000,
        nodectl_runs: 20,
        pool: pool::PoolScale {
            nodes: 10,
            processes: 10,
            fanout_runs: 10,
            window: Duration::from_secs(5),
        },
        restart: restart::RestartScale {
            kills: 20,
            kill_window: Duration::from_secs(6),
            replace_window: Duration::from_secs(2),
        },
        upgrade: upgrade::UpgradeScale::QUICK,
        quick: true,
        only: None,
    };

    /// Whether the phase that measures any of `phases` is to run.
    fn runs(&self, phases: &[u32]) -> bool {
        self.only.is_none_or(|only| phases.contains(&only))
    }
}

fn main() -> ExitCode {
    let scale = match parse_args(std::env::args().skip(1)) {
        Ok(Some(scale)) => scale,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ringmaster-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The harness starts agents with -v; debug logging of every spawn would be
    // measured too, so log as a production agent does unless asked otherwise.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "info");
    }
    match run(scale) {
        Ok(report) => {
            report.print();
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ringmaster-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The scale asked for, or `None` for `--help`.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Scale>> {
    let mut scale = Scale::FULL;
    let mut only = None;
    let mut kill_window = None;
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => scale = Scale::QUICK,
            "--phase" => {
                let value = args.next().unwrap_or_default();
                match value.parse::<u32>() {
                    Ok(n) if (1..=11).contains(&n) => only = Some(n),
                    _ => bail!("--phase takes a phase number from 1 to 11, not '{value}'"),
                }
            }
            "--kill-window" => {
                let value = args.next().unwrap_or_default();
                match value.parse::<u64>() {
                    Ok(n) if (2..=3600).contains(&n) => kill_window = Some(n),
                    _ => bail!("--kill-window takes seconds from 2 to 3600, not '{value}'"),
                }
            }
            "-h" | "--help" => return Ok(None),
            other => bail!("unexpected argument '{other}'"),
        }
    }
    scale.only = only;
    if let Some(secs) = kill_window {
        scale.restart.kill_window = Duration::from_secs(secs);
    }
    Ok(Some(scale))
}

/// Prints the header, runs every phase and returns what they measured.
fn run(scale: Scale) -> Result<Report> {
    let agent_bin = binary("nodeagent").ok_or_else(|| {
        anyhow!(
            "nodeagent not found in {}: build it first (cargo build --release --workspace) \
             or set RINGMASTER_BIN_DIR",
            bin_dir().map_or_else(|| "?".into(), |d| d.display().to_string())
        )
    })?;
    print_header(scale, &agent_bin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut report = Report::new(scale);
    runtime.block_on(async {
        if scale.runs(&[1, 3, 4, 5]) {
            if let Err(e) = load_phases(scale, &mut report).await {
                report.fail("spawn / round trip / nodectl / memory phases", &e);
            }
        }
        if scale.runs(&[2]) {
            if let Err(e) = crash_phase(scale, &mut report).await {
                report.fail("crash-to-respawn phase", &e);
            }
        }
        if scale.runs(&[6]) {
            if let Err(e) = stats_phase(scale, &mut report).await {
                report.fail("statistics cost phase", &e);
            }
        }
        if scale.runs(&[7]) {
            if let Err(e) = pool::pool_phase(scale.pool, &mut report).await {
                report.fail("pool phase", &e);
            }
        }
        if scale.runs(&[8]) {
            if let Err(e) = sealing::sealing_phase(scale.requests, &mut report).await {
                report.fail("keys phase", &e);
            }
        }
        if scale.runs(&[9]) {
            if let Err(e) = output::output_phase(scale.quick, &mut report).await {
                report.fail("output phase", &e);
            }
        }
        // Not in the default run: it takes some 40 s.
        if scale.only == Some(10) {
            if let Err(e) = restart::restart_phase(scale.restart, &mut report).await {
                report.fail("restart policy phase", &e);
            }
        }
        if scale.runs(&[11]) {
            if let Err(e) = upgrade::upgrade_phase(scale.upgrade, &mut report).await {
                report.fail("upgrade phase", &e);
            }
        }
    });
    Ok(report)
}

// ----- machine and binaries ------------------------------------------------------

/// Where the Ringmaster binaries are, as `ringmaster_tests::bin_path` looks.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RINGMASTER_BIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    Some(std::env::current_exe().ok()?.parent()?.to_path_buf())
}

/// Path of binary `name`, if it has been built.
fn binary(name: &str) -> Option<PathBuf> {
    let path = bin_dir()?.join(name);
    path.is_file().then_some(path)
}

fn print_header(scale: Scale, agent_bin: &std::path::Path) {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mode = if scale.quick { "quick run" } else { "full run" };
    println!("ringmaster-bench: nodeagent and nodectl against their performance targets ({mode})");
    println!(
        "measures: 1. spawn rate: incr of {} processes, against a plain Rust spawn loop",
        scale.spawns
    );
    println!(
        "          2. crash-to-respawn latency over {} SIGKILLs, one per process slot",
        scale.kills
    );
    println!(
        "          3. status round trip: {} requests on one client, {} processes supervised",
        scale.requests, scale.spawns
    );
    println!(
        "          4. wall time of `nodectl status`, {} runs",
        scale.nodectl_runs
    );
    println!(
        "          5. agent resident memory, idle and with {} processes",
        scale.spawns
    );
    println!(
        "          6. agent CPU and memory with {} processes, stats every 1 s vs off",
        scale.spawns
    );
    println!(
        "          7. a pool of {} agents x {} processes: nodectl --pool fan-out, nodemeta relay",
        scale.pool.nodes, scale.pool.processes
    );
    println!(
        "          8. keys: {} status requests each to an agent with keys and one without",
        scale.requests
    );
    println!(
        "          9. output: status round trips while two `yes` flood the agent ({} s), vs idle",
        if scale.quick { 2 } else { 10 }
    );
    println!(
        "         10. restart policy, defaults: respawn latency over {} kills, a slot killed every 2 s for {} s,",
        scale.restart.kills,
        scale.restart.kill_window.as_secs()
    );
    println!(
        "             replacements/s of 100 workers exiting 0 after 0.1 s vs a plain loop (--phase 10 only)"
    );
    println!(
        "         11. upgrade in place: {} upgrades of an agent with {} processes and of one with none,",
        scale.upgrade.upgrades, scale.upgrade.processes
    );
    println!("             status asked back to back meanwhile");
    if let Some(only) = scale.only {
        println!("only:     phase {only}");
    }
    println!("machine:  {cpus} CPUs ({model}), Linux {kernel}");
    println!(
        "agents:   log level RUST_LOG={}",
        std::env::var("RUST_LOG").unwrap_or_default()
    );
    println!(
        "binaries: {}",
        agent_bin.parent().unwrap_or(agent_bin).display()
    );
    if cfg!(debug_assertions) {
        println!("warning:  this is a debug build: build with --release for meaningful numbers");
    }
    if scale.quick {
        println!("note:     quick run: counts are scaled down, numbers are indicative only");
    }
}

// ----- the report ----------------------------------------------------------------

/// How a target fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Miss,
    Skip,
    Fail,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Miss => "MISS",
            Outcome::Skip => "SKIP",
            Outcome::Fail => "FAIL",
        }
    }
}

/// One line of the results table.
struct Row {
    measurement: String,
    value: String,
    target: String,
}

/// One verdict line.
struct Verdict {
    outcome: Outcome,
    text: String,
}

/// Everything measured, in the order it should be read.
struct Report {
    scale: Scale,
    rows: Vec<Row>,
    verdicts: Vec<Verdict>,
}

impl Report {
    fn new(scale: Scale) -> Self {
        Report {
            scale,
            rows: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    /// Adds a table row without a target.
    fn row(&mut self, measurement: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            measurement: measurement.into(),
            value: value.into(),
            target: String::new(),
        });
    }

    /// Adds a table row checked against `target`, and its verdict.
    fn check(&mut self, measurement: &str, value: String, target: &str, met: bool) {
        let outcome = if met { Outcome::Pass } else { Outcome::Miss };
        self.verdicts.push(Verdict {
            outcome,
            text: format!("{measurement}: {value} (target {target})"),
        });
        self.rows.push(Row {
            measurement: measurement.into(),
            value,
            target: target.into(),
        });
    }

    /// Records a target that could not be measured, and why.
    fn skip(&mut self, measurement: &str, target: &str, why: &str) {
        self.verdicts.push(Verdict {
            outcome: Outcome::Skip,
            text: format!("{measurement} (target {target}): skipped: {why}"),
        });
        self.rows.push(Row {
            measurement: measurement.into(),
            value: format!("skipped: {why}"),
            target: target.into(),
        });
    }

    /// Records a phase that could not run.
    fn fail(&mut self, phase: &str, error: &anyhow::Error) {
        self.verdicts.push(Verdict {
            outcome: Outcome::Fail,
            text: format!("{phase} did not run to the end: {error:#}"),
        });
    }

    fn failed(&self) -> bool {
        self.verdicts.iter().any(|v| v.outcome == Outcome::Fail)
    }

    fn print(&self) {
        let header = Row {
            measurement: "measurement".into(),
            value: "value".into(),
            target: "target".into(),
        };
        let all = || std::iter::once(&header).chain(&self.rows);
        let width =
            |column: fn(&Row) -> &str| all().map(|r| column(r).chars().count()).max().unwrap_or(0);
        let (w_measurement, w_value) = (width(|r| &r.measurement), width(|r| &r.value));
        let w_target = width(|r| &r.target);
        println!();
        for (i, row) in all().enumerate() {
            let line = format!(
                "{:<w_measurement$}  {:>w_value$}  {}",
                row.measurement, row.value, row.target
            );
            println!("{}", line.trim_end());
            if i == 0 {
                println!("{}", "-".repeat(w_measurement + w_value + w_target + 4));
            }
        }
        println!();
        for verdict in &self.verdicts {
            println!("{}  {}", verdict.outcome.label(), verdict.text);
        }
        if self.scale.quick {
            println!("(quick run: the full run, without --quick, is the one that counts)");
        }
    }
}

// ----- phases 1, 3, 4, 5: one agent, scaled to N processes ---------------------

/// Config body of a watcher of `sleep 3600` processes.
fn sleep_watcher(name: &str, numprocesses: u32) -> String {
    format!(
        "\n[watchers.{name}]\ncmd = \"sleep 3600\"\nnumprocesses = {numprocesses}\n\
         stdout = \"null\"\nstderr = \"null\"\ncheck_flapping = false\n"
    )
}

/// Memory idle, spawn rate, round trips, nodectl and memory under load, all on one
/// agent; then stops it and checks that its processes went with it.
async fn load_phases(scale: Scale, report: &mut Report) -> Result<()> {
    progress(&format!(
        "starting agent '{LOAD_NODE}' with an empty watcher"
    ));
    let mut agent = TestAgent::start(LOAD_NODE, &sleep_watcher(SLEEP_WATCHER, 0));
    let mut pids = Vec::new();
    let measured = measure_under_load(scale, report, &agent, &mut pids).await;

    progress(&format!("stopping agent '{LOAD_NODE}'"));
    let stopped = stop_agent(&mut agent);
    drop(agent);
    let leftovers = kill_leftovers(&pids);
    measured?;
    let took = stopped?;
    report.row(
        format!("agent stop (SIGTERM), {} processes", pids.len()),
        format_duration(took),
    );
    if leftovers > 0 {
        bail!(
            "{leftovers} processes of the agent were still running after it stopped (killed them)"
        );
    }
    Ok(())
}

/// Phases 5 (idle), 1, 3, 4 and 5 (loaded) on `agent`; `pids` receives the pids
/// the agent started.
async fn measure_under_load(
    scale: Scale,
    report: &mut Report,
    agent: &TestAgent,
    pids: &mut Vec<u32>,
) -> Result<()> {
    let mut client = Client::new(agent.control.clone(), TIMEOUT);
    status(&mut client).await?;
    let idle = Rss::of(agent.pid())?;
    report.row("agent RSS, idle", format_mib(idle.total));
    idle.report_breakdown(report);

    progress(&format!("spawn: plain loop of {} processes", scale.spawns));
    let plain = plain_spawn(scale.spawns)?;
    progress(&format!("spawn: incr {SLEEP_WATCHER} {}", scale.spawns));
    let incr = agent_spawn(&agent.control, scale.spawns, pids).await?;
    report_spawn_rates(scale, report, plain, incr);

    round_trip_phase(scale, report, &mut client, &agent.control).await?;
    nodectl_phase(scale, report, &agent.control)?;

    let loaded = Rss::of(agent.pid())?;
    report.check(
        &format!("agent RSS, {} processes", scale.spawns),
        format_mib(loaded.total),
        &format!("≤ {} MiB", RSS_TARGET / (1024 * 1024)),
        loaded.total <= RSS_TARGET,
    );
    loaded.report_breakdown(report);
    Ok(())
}

fn report_spawn_rates(scale: Scale, report: &mut Report, plain: Duration, agent: Duration) {
    let n = f64::from(scale.spawns);
    let plain_rate = n / plain.as_secs_f64();
    let agent_rate = n / agent.as_secs_f64();
    report.row(
        format!("spawn rate, plain loop ({} processes)", scale.spawns),
        format!("{plain_rate:.0} proc/s"),
    );
    report.row(
        format!("spawn rate, agent incr ({} processes)", scale.spawns),
        format!("{agent_rate:.0} proc/s"),
    );
    let ratio = agent_rate / plain_rate;
    report.check(
        "spawn rate, agent / plain loop",
        format!("{:.0}%", ratio * 100.0),
        "≥ 70%",
        ratio >= 0.70,
    );
}

/// Processes started by a plain loop, killed and reaped when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// How long a plain loop of `std::process::Command` takes to spawn `n` sleeps.
fn plain_spawn(n: u32) -> Result<Duration> {
    let mut children = Children(Vec::with_capacity(n as usize));
    let started = Instant::now();
    for _ in 0..n {
        let child = std::process::Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("plain loop: cannot spawn 'sleep 3600'")?;
        children.0.push(child);
    }
    Ok(started.elapsed())
}

/// Times `incr sleep N`, whose reply comes when every process is spawned; the
/// pids started go to `pids`.
async fn agent_spawn(control: &str, n: u32, pids: &mut Vec<u32>) -> Result<Duration> {
    let mut client = Client::new(control, SPAWN_TIMEOUT);
    status(&mut client).await?;
    let started = Instant::now();
    let reply = client
        .call(Command::Incr {
            name: SLEEP_WATCHER.into(),
            nb: n,
        })
        .await
        .with_context(|| format!("incr {SLEEP_WATCHER} {n}"))?;
    let took = started.elapsed();
    let Response::Changes(changes) = reply else {
        bail!("unexpected reply to incr: {reply:?}");
    };
    *pids = changes.started;
    if pids.len() != n as usize {
        bail!(
            "incr {SLEEP_WATCHER} {n} started {} processes, not {n}",
            pids.len()
        );
    }
    Ok(took)
}

/// Times `status` requests through one client (phase 3), against the same requests
/// from a blocking libzmq DEALER to the agent and to a plain libzmq ROUTER, in the
/// same run (see [`direct`]).
async fn round_trip_phase(
    scale: Scale,
    report: &mut Report,
    client: &mut Client,
    control: &str,
) -> Result<()> {
    progress(&format!(
        "round trip: {} status requests with {} processes supervised, on each of three paths",
        scale.requests, scale.spawns
    ));
    let direct = direct::measure(client, control, scale.requests).await?;
    let stats = &direct.client;
    report.check(
        "status round trip p50",
        format_duration(stats.p50),
        "≤ 150 µs",
        stats.p50 <= Duration::from_micros(150),
    );
    report.check(
        "status round trip p99",
        format_duration(stats.p99),
        "≤ 500 µs",
        stats.p99 <= Duration::from_micros(500),
    );
    report.row("status round trip max", format_duration(stats.max));
    let p50_p99 = |s: &Stats| format!("{} / {}", format_duration(s.p50), format_duration(s.p99));
    report.row(
        "  same, blocking libzmq DEALER to the agent, p50 / p99",
        p50_p99(&direct.blocking),
    );
    report.row(
        format!(
            "  plain libzmq DEALER/ROUTER, {} B reply, p50 / p99",
            direct.reply_bytes
        ),
        p50_p99(&direct.floor),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    report.row(
        "  client / plain libzmq, p50 / p99",
        format!(
            "{:.2}× / {:.2}×",
            ratio(stats.p50, direct.floor.p50),
            ratio(stats.p99, direct.floor.p99)
        ),
    );
    report.row(
        "  above plain libzmq at p50: agent / client side",
        format!(
            "{} / {}",
            format_signed(direct.blocking.p50, direct.floor.p50),
            format_signed(stats.p50, direct.blocking.p50)
        ),
    );
    Ok(())
}

/// `a - b`, signed, in microseconds.
fn format_signed(a: Duration, b: Duration) -> String {
    let micros = (a.as_secs_f64() - b.as_secs_f64()) * 1e6;
    format!("{micros:+.0} µs")
}

/// Times `nodectl --endpoint CONTROL status` runs (phase 4).
fn nodectl_phase(scale: Scale, report: &mut Report, control: &str) -> Result<()> {
    const TARGET: &str = "≤ 20 ms";
    let Some(nodectl) = binary("nodectl") else {
        report.skip(
            "nodectl status wall time, median",
            TARGET,
            "nodectl not built",
        );
        return Ok(());
    };
    progress(&format!(
        "nodectl: {} runs of nodectl status",
        scale.nodectl_runs
    ));
    // One untimed run: fail clearly if it does not work, and warm the page cache.
    nodectl_status(&nodectl, control)?;
    let mut samples = Vec::with_capacity(scale.nodectl_runs as usize);
    for _ in 0..scale.nodectl_runs {
        samples.push(nodectl_status(&nodectl, control)?);
    }
    let stats = Stats::of(samples);
    report.check(
        "nodectl status wall time, median",
        format_duration(stats.p50),
        TARGET,
        stats.p50 <= Duration::from_millis(20),
    );
    report.row("nodectl status wall time, max", format_duration(stats.max));
    Ok(())
}

/// Runs `nodectl status` once and returns its wall time.
fn nodectl_status(nodectl: &std::path::Path, control: &str) -> Result<Duration> {
    let started = Instant::now();
    let output = std::process::Command::new(nodectl)
        .arg("--endpoint")
        .arg(control)
        .arg("status")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", nodectl.display()))?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!(
            "nodectl status failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(took)
}

/// SIGTERM, then waits for the agent to exit; returns how long it took.
fn stop_agent(agent: &mut TestAgent) -> Result<Duration> {
    let started = Instant::now();
    agent.signal(Signal::SIGTERM);
    while agent.try_wait().is_none() {
        if started.elapsed() > STOP_TIMEOUT {
            bail!("the agent did not exit within {STOP_TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(2)); // poll interval
    }
    Ok(started.elapsed())
}

/// Kills whichever of the agent's `sleep` processes outlived it; returns how many.
fn kill_leftovers(pids: &[u32]) -> usize {
    let mut left = 0;
    for &pid in pids {
        let still_ours = pid_alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.starts_with(b"sleep\0"));
        if still_ours {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
            left += 1;
        }
    }
    left
}

// ----- phase 2: crash-to-respawn latency ----------------------------------------

/// Kills each process of a watcher once and times until its slot is respawned.
async fn crash_phase(scale: Scale, report: &mut Report) -> Result<()> {
    progress(&format!(
        "crash: starting agent '{CRASH_NODE}' with {} processes",
        scale.kills
    ));
    let agent = TestAgent::start(CRASH_NODE, &sleep_watcher(CRASH_WATCHER, scale.kills));
    let mut client = Client::new(agent.control.clone(), TIMEOUT);
    let victims = wait_running(&mut client, CRASH_WATCHER, scale.kills as usize).await?;
    let topic = format!("event.{CRASH_NODE}.{CRASH_WATCHER}.spawn");
    let mut events = Subscriber::connect(&agent.pubsub, &[&topic], TIMEOUT)
        .await
        .context("cannot subscribe to the agent's events")?;
    prime_subscription(&mut client, &mut events).await?;

    progress(&format!(
        "crash: killing {} processes, one at a time",
        victims.len()
    ));
    let mut samples = Vec::with_capacity(victims.len());
    for (pid, wid) in victims {
        let pid_raw = i32::try_from(pid).context("pid out of range")?;
        let killed_at = Instant::now();
        kill(Pid::from_raw(pid_raw), Signal::SIGKILL)
            .with_context(|| format!("cannot kill process {pid}"))?;
        let respawned_at = next_spawn_of(&mut events, wid).await?;
        samples.push(respawned_at.duration_since(killed_at));
    }
    let stats = Stats::of(samples);
    report.check(
        "crash-to-respawn p50",
        format_duration(stats.p50),
        "≤ 5 ms",
        stats.p50 <= Duration::from_millis(5),
    );
    report.row("crash-to-respawn p99", format_duration(stats.p99));
    report.row("crash-to-respawn max", format_duration(stats.max));
    Ok(())
}

/// Waits until `watcher` runs `n` processes; returns their pids and wids.
async fn wait_running(client: &mut Client, watcher: &str, n: usize) -> Result<Vec<(u32, u32)>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let reply = client
            .call(Command::List {
                name: Some(watcher.into()),
            })
            .await
            .with_context(|| format!("list {watcher}"))?;
        let Response::Processes(list) = reply else {
            bail!("unexpected reply to list: {reply:?}");
        };
        let running: Vec<(u32, u32)> = list
            .into_iter()
            .filter(|p| p.state == "running")
            .map(|p| (p.pid, p.wid))
            .collect();
        if running.len() >= n {
            return Ok(running);
        }
        if Instant::now() > deadline {
            bail!(
                "watcher '{watcher}' runs {} processes, not {n}, after {TIMEOUT:?}",
                running.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    }
}

/// Makes sure the subscription is live before anything is measured: adds one
/// process at a time (in new slots, never killed) until its `spawn` event arrives.
async fn prime_subscription(client: &mut Client, events: &mut Subscriber) -> Result<()> {
    for _ in 0..50 {
        client
            .call(Command::Incr {
                name: CRASH_WATCHER.into(),
                nb: 1,
            })
            .await
            .with_context(|| format!("incr {CRASH_WATCHER} 1"))?;
        if let Ok(event) =
            tokio::time::timeout(Duration::from_millis(200), events.recv_event()).await
        {
            event.context("cannot read events")?;
            return Ok(());
        }
    }
    bail!("no event came through the subscription after 50 spawns")
}

/// Waits for the `spawn` event of slot `wid` of the crash watcher; returns when it
/// was received.
async fn next_spawn_of(events: &mut Subscriber, wid: u32) -> Result<Instant> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(remaining, events.recv_event())
            .await
            .map_err(|_| anyhow!("slot {wid} was not respawned within {TIMEOUT:?}"))?
            .context("cannot read events")?;
        let received = Instant::now();
        if event.watcher != CRASH_WATCHER {
            continue;
        }
        match event.kind {
            EventKind::Spawn { wid: spawned, .. } if spawned == wid => return Ok(received),
            EventKind::SpawnFailed { error } => bail!("respawn failed: {error}"),
            _ => {}
        }
    }
}

// ----- helpers -------------------------------------------------------------------

/// Sends one `status` and checks that it succeeded.
async fn status(client: &mut Client) -> Result<()> {
    client
        .call(Command::Status { name: None })
        .await
        .with_context(|| format!("status request to {}", client.endpoint()))?;
    Ok(())
}

// ----- phase 6: what statistics cost ---------------------------------------------

/// Target for the agent's CPU with statistics on, in % of one core.
const STATS_CPU_TARGET: f64 = 3.0;
/// Target for the agent's resident memory with statistics on, in bytes (30 MB).
const STATS_RSS_TARGET: u64 = 30_000_000;

/// CPU and memory of an idle agent supervising N processes.
struct AgentCost {
    /// CPU over the window, in % of one core.
    cpu: f64,
    /// Resident memory at the end of the window.
    rss: u64,
}

/// The agent's own CPU and memory with N processes, statistics every second
/// against statistics off, each averaged over 30 s (5 s with --quick).
async fn stats_phase(scale: Scale, report: &mut Report) -> Result<()> {
    let window = if scale.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    };
    let n = scale.spawns;
    let on = agent_cost(n, 1.0, window).await?;
    let off = agent_cost(n, 0.0, window).await?;
    let secs = window.as_secs();
    report.check(
        &format!("agent CPU, stats every 1 s, {n} processes, {secs} s"),
        format!("{:.2}%", on.cpu),
        &format!("≤ {STATS_CPU_TARGET}% of a core"),
        on.cpu <= STATS_CPU_TARGET,
    );
    report.row(
        format!("agent CPU, stats off, {n} processes, {secs} s"),
        format!("{:.2}%", off.cpu),
    );
    report.row(
        "agent CPU, stats on / off",
        if off.cpu > 0.0 {
            format!("{:.1}x", on.cpu / off.cpu)
        } else {
            "n/a (off used no CPU tick)".into()
        },
    );
    report.check(
        &format!("agent RSS, stats on, {n} processes"),
        format_mib(on.rss),
        "≤ 30 MB",
        on.rss <= STATS_RSS_TARGET,
    );
    report.row(
        format!("agent RSS, stats off, {n} processes"),
        format_mib(off.rss),
    );
    Ok(())
}

async fn agent_cost(n: u32, interval: f64, window: Duration) -> Result<AgentCost> {
    let node = if interval > 0.0 {
        "bench-stats-on"
    } else {
        "bench-stats-off"
    };
    progress(&format!(
        "stats: agent '{node}' with {n} processes, stats_interval = {interval}, for {} s",
        window.as_secs()
    ));
    let body = format!(
        "stats_interval = {interval}\n{}",
        sleep_watcher(SLEEP_WATCHER, n)
    );
    let mut agent = TestAgent::start(node, &body);
    let mut client = Client::new(agent.control.clone(), SPAWN_TIMEOUT);
    let running = wait_running(&mut client, SLEEP_WATCHER, n as usize).await?;
    // Let the start-up burst settle before the window opens (a measurement
    // window, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = agent.pid();
    let before = cpu_seconds(pid)?;
    let opened = Instant::now();
    tokio::time::sleep(window).await; // the measurement window itself
    let used = cpu_seconds(pid)? - before;
    let cpu = used / opened.elapsed().as_secs_f64() * 100.0;
    let rss = Rss::of(pid)?.total;
    stop_agent(&mut agent)?;
    drop(agent);
    let pids: Vec<u32> = running.iter().map(|(pid, _)| *pid).collect();
    let leftovers = kill_leftovers(&pids);
    if leftovers > 0 {
        bail!("{leftovers} processes outlived agent '{node}'");
    }
    Ok(AgentCost { cpu, rss })
}

/// CPU time (user + system) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Field N of stat(5) is at index N - 3 after the command name.
    let ticks = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("unexpected {path}"))
    };
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    Ok((ticks(14)? + ticks(15)?) / per_second)
}

/// Resident memory of a process, in bytes.
struct Rss {
    /// `VmRSS`: everything resident.
    total: u64,
    /// `RssAnon`: heap, stacks and other private memory.
    anon: u64,
    /// `RssFile`: resident pages of the binary and of shared libraries.
    file: u64,
}

impl Rss {
    /// Reads `/proc/<pid>/status`.
    fn of(pid: u32) -> Result<Rss> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| anyhow!("no {name} line in {path}"))
        };
        Ok(Rss {
            total: field("VmRSS")?,
            anon: field("RssAnon")?,
            file: field("RssFile")?,
        })
    }

    /// Adds the breakdown row under the row of the total.
    fn report_breakdown(&self, report: &mut Report) {
        report.row(
            "  of which anonymous / file-backed",
            format!("{} / {}", format_mib(self.anon), format_mib(self.file)),
        );
    }
}

/// Percentiles of a set of samples (nearest rank).
struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.clamp(1, samples.len().max(1)) - 1)
                .copied()
                .unwrap_or_default()
        };
        Stats {
            p50: at(50.0),
            p99: at(99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

fn format_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

fn format_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A progress line, on stderr so that stdout is the report alone.
fn progress(what: &str) {
    eprintln!("... {what}");
}

/// Times one `status` round trip (phases 8 and 9).
pub(crate) async fn time_status(client: &mut Client) -> Result<Duration> {
    let started = Instant::now();
    let reply = client
        .call(Command::Status { name: None })
        .await
        .with_context(|| format!("status request to {}", client.endpoint()))?;
    let took = started.elapsed();
    if !matches!(reply, Response::Status(_)) {
        bail!("unexpected reply to status: {reply:?}");
    }
    Ok(took)
}
