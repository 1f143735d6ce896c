//! Phase 10: the restart policy (issue 14), every watcher on the default policy
//! (no `check_flapping`, `min_uptime`, `backoff_*` or `restart` set), on one agent,
//! one part after the other:
//!
//! 1. respawn latency: 100 `sleep` processes, each killed once with SIGKILL after it
//!    ran longer than `min_uptime` (read from the agent: 5 s by default), timed from
//!    the kill to the `spawn` event of its slot (target: p50 ≤ 2 ms);
//! 2. one slot killed every 2 s for 20 s (`--kill-window 60` for 60 s): the share
//!    of the time its process was running, from the `spawn` and `reap` events (a
//!    report, no target: the kills are quick crashes, so its backoff grows);
//! 3. replacements per second of 100 workers that each run `sleep 0.1` and exit 0,
//!    counted from `spawn` events over 5 s (target: ≥ 500/s), against the same
//!    number of spawns by a plain loop in this process (`std::process::Command`
//!    spawn and wait of `sleep 0.1`, 100 at a time) (target: ≥ 70% of the loop).
//!
//! A watcher the agent declares flapping (or stops) is reported as a missed target
//! with what happened, and the next part runs.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::transport::{Client, Subscriber};
use ringmaster_protocol::{Command, Event, EventKind, OptionMap, OptionValue, Response};
use ringmaster_tests::TestAgent;

use crate::{format_duration, progress, Report, Stats, TIMEOUT};

const NODE: &str = "bench-restart";
/// The watcher of part 1.
const LATENCY: &str = "latency";
/// The watcher of part 2.
const SLOT: &str = "slot";
/// The watcher of part 3.
const BATCH: &str = "batch";
/// Processes of parts 1 and 3.
const PROCESSES: u32 = 100;
/// Time between two kills of part 2.
const KILL_EVERY: Duration = Duration::from_secs(2);
/// How long a killed slot may take to come back in part 1 before it counts as
/// not respawned.
const RESPAWN_WAIT: Duration = Duration::from_secs(5);

/// How much phase 10 does.
#[derive(Debug, Clone, Copy)]
pub struct RestartScale {
    /// Processes killed in part 1 (one kill each).
    pub kills: u32,
    /// How long part 2 kills its slot every 2 s.
    pub kill_window: Duration,
    /// How long part 3 counts replacements.
    pub replace_window: Duration,
}

fn config() -> String {
    format!(
        "\n[watchers.{LATENCY}]\ncmd = \"sleep 3600\"\nnumprocesses = {PROCESSES}\n\
         stdout = \"null\"\nstderr = \"null\"\nautostart = false\n\
         \n[watchers.{SLOT}]\ncmd = \"sleep 3600\"\nstdout = \"null\"\nstderr = \"null\"\n\
         autostart = false\n\
         \n[watchers.{BATCH}]\ncmd = \"sleep 0.1\"\nnumprocesses = {PROCESSES}\n\
         stdout = \"null\"\nstderr = \"null\"\nautostart = false\n"
    )
}

/// Runs phase 10; each part reports on its own, and an error in one does not stop
/// the others.
pub async fn restart_phase(scale: RestartScale, report: &mut Report) -> Result<()> {
    progress(&format!("restart policy: starting agent '{NODE}'"));
    let agent = TestAgent::start(NODE, &config());
    let mut client = Client::new(agent.control.clone(), TIMEOUT);
    let mut events = subscribe(&agent, &mut client).await?;
    if let Err(e) = latency_part(scale, report, &mut client, &mut events).await {
        report.fail("restart policy: respawn latency", &e);
    }
    if let Err(e) = kill_loop_part(scale, report, &mut client, &mut events).await {
        report.fail("restart policy: slot killed every 2 s", &e);
    }
    if let Err(e) = replacement_part(scale, report, &mut client, &mut events).await {
        report.fail("restart policy: replacements per second", &e);
    }
    Ok(())
}

// ----- events ---------------------------------------------------------------------

/// Subscribes to every event of the agent and makes sure the subscription is live:
/// a probe watcher is added until its `add` event arrives, then removed.
async fn subscribe(agent: &TestAgent, client: &mut Client) -> Result<Subscriber> {
    let prefix = format!("event.{NODE}.");
    let mut events = Subscriber::connect(&agent.pubsub, &[&prefix], TIMEOUT)
        .await
        .context("cannot subscribe to the agent's events")?;
    for _ in 0..50 {
        client
            .call(Command::Add {
                name: "probe".into(),
                cmd: "true".into(),
                args: vec![],
                options: OptionMap::new(),
                start: false,
            })
            .await
            .context("add probe")?;
        let got = tokio::time::timeout(Duration::from_millis(200), events.recv_event()).await;
        client
            .call(Command::Rm {
                name: "probe".into(),
                nostop: false,
            })
            .await
            .context("rm probe")?;
        if let Ok(event) = got {
            event.context("cannot read events")?;
            // Drain what the probe published.
            while let Ok(event) =
                tokio::time::timeout(Duration::from_millis(50), events.recv_event()).await
            {
                event.context("cannot read events")?;
            }
            return Ok(events);
        }
    }
    bail!("no event came through the subscription after 50 tries")
}

/// The next event of `watcher` within `wait`, with when it was received; `None`
/// when none came.
async fn next_event(
    events: &mut Subscriber,
    watcher: &str,
    wait: Duration,
) -> Result<Option<(Event, Instant)>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.recv_event()).await {
            Err(_) => return Ok(None),
            Ok(event) => {
                let event = event.context("cannot read events")?;
                if event.watcher == watcher {
                    return Ok(Some((event, Instant::now())));
                }
            }
        }
    }
}

// ----- helpers --------------------------------------------------------------------

async fn start(client: &mut Client, name: &str) -> Result<()> {
    client
        .call(Command::Start {
            name: Some(name.into()),
        })
        .await
        .with_context(|| format!("start {name}"))?;
    Ok(())
}

async fn stop(client: &mut Client, name: &str) -> Result<()> {
    client
        .call(Command::Stop {
            name: Some(name.into()),
        })
        .await
        .with_context(|| format!("stop {name}"))?;
    Ok(())
}

/// The watcher's state and its `restarts` count.
async fn watcher_status(client: &mut Client, name: &str) -> Result<(WatcherState, u64)> {
    match client
        .call(Command::Status {
            name: Some(name.into()),
        })
        .await
        .with_context(|| format!("status {name}"))?
    {
        Response::Status(list) => list
            .first()
            .map(|s| (s.state, s.restarts))
            .ok_or_else(|| anyhow!("status {name}: empty reply")),
        other => bail!("unexpected reply to status: {other:?}"),
    }
}

/// Running processes of `name`: pid, wid and start time (seconds since the epoch).
async fn running(client: &mut Client, name: &str) -> Result<Vec<(u32, u32, f64)>> {
    match client
        .call(Command::List {
            name: Some(name.into()),
        })
        .await
        .with_context(|| format!("list {name}"))?
    {
        Response::Processes(list) => Ok(list
            .into_iter()
            .filter(|p| p.state == "running")
            .map(|p| (p.pid, p.wid, p.started))
            .collect()),
        other => bail!("unexpected reply to list: {other:?}"),
    }
}

/// The watcher's `min_uptime` (or `healthy_after`, its old name), in seconds.
async fn min_uptime(client: &mut Client, name: &str) -> Result<f64> {
    let Response::Options(options) = client
        .call(Command::Options { name: name.into() })
        .await
        .with_context(|| format!("options {name}"))?
    else {
        bail!("unexpected reply to options");
    };
    ["min_uptime", "healthy_after"]
        .iter()
        .find_map(|key| match options.get(*key) {
            Some(OptionValue::Float(x)) => Some(*x),
            Some(OptionValue::Int(n)) => Some(*n as f64),
            _ => None,
        })
        .ok_or_else(|| anyhow!("watcher '{name}' has neither min_uptime nor healthy_after"))
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sigkill(pid: u32) -> Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(raw), Signal::SIGKILL).with_context(|| format!("cannot kill process {pid}"))
}

// ----- part 1: respawn latency ----------------------------------------------------

async fn latency_part(
    scale: RestartScale,
    report: &mut Report,
    client: &mut Client,
    events: &mut Subscriber,
) -> Result<()> {
    const TARGET: &str = "≤ 2 ms";
    const LABEL: &str = "respawn latency, default policy, p50";
    start(client, LATENCY).await?;
    let uptime = min_uptime(client, LATENCY).await?;
    progress(&format!(
        "restart policy: {PROCESSES} processes, waiting until they ran min_uptime ({uptime} s)"
    ));
    let deadline = Instant::now() + TIMEOUT + Duration::from_secs_f64(uptime);
    let victims = loop {
        let procs = running(client, LATENCY).await?;
        let now = epoch_now();
        if procs.len() >= PROCESSES as usize && procs.iter().all(|p| now - p.2 > uptime + 0.25) {
            break procs;
        }
        if Instant::now() > deadline {
            bail!(
                "watcher '{LATENCY}' did not run {PROCESSES} processes for {uptime} s in time ({} running)",
                procs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    };
    // Forget the spawn events of the first processes.
    while next_event(events, LATENCY, Duration::from_millis(100))
        .await?
        .is_some()
    {}
    progress(&format!(
        "restart policy: killing {} processes, one at a time",
        scale.kills
    ));
    let mut samples = Vec::new();
    let mut trouble = None;
    'victims: for &(pid, wid, _) in victims.iter().take(scale.kills as usize) {
        let killed_at = Instant::now();
        sigkill(pid)?;
        // A spawn in its slot counts once the victim's reap has come.
        let mut reaped = false;
        loop {
            let Some((event, at)) = next_event(events, LATENCY, RESPAWN_WAIT).await? else {
                trouble = Some(format!(
                    "slot {wid} not respawned within {RESPAWN_WAIT:?} (after {} kills)",
                    samples.len() + 1
                ));
                break 'victims;
            };
            match event.kind {
                EventKind::Reap { pid: p, .. } if p == pid => reaped = true,
                EventKind::Spawn { wid: w, .. } if reaped && w == wid => {
                    samples.push(at.duration_since(killed_at));
                    break;
                }
                EventKind::Flapping { .. } => {
                    trouble = Some(format!(
                        "the watcher flapped after {} of {} kills",
                        samples.len() + 1,
                        scale.kills
                    ));
                    break 'victims;
                }
                EventKind::SpawnFailed { error } => bail!("respawn failed: {error}"),
                _ => {}
            }
        }
    }
    stop(client, LATENCY).await?;
    if let Some(what) = trouble {
        report.check(LABEL, what, TARGET, false);
        return Ok(());
    }
    let stats = Stats::of(samples);
    report.check(
        LABEL,
        format_duration(stats.p50),
        TARGET,
        stats.p50 <= Duration::from_millis(2),
    );
    report.row(
        "respawn latency, default policy, p99 / max",
        format!(
            "{} / {}",
            format_duration(stats.p99),
            format_duration(stats.max)
        ),
    );
    Ok(())
}

// ----- part 2: one slot killed every 2 s --------------------------------------------

async fn kill_loop_part(
    scale: RestartScale,
    report: &mut Report,
    client: &mut Client,
    events: &mut Subscriber,
) -> Result<()> {
    let window = scale.kill_window;
    progress(&format!(
        "restart policy: killing one slot every {} s for {} s",
        KILL_EVERY.as_secs(),
        window.as_secs()
    ));
    start(client, SLOT).await?;
    let first = {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(p) = running(client, SLOT).await?.first() {
                break p.0;
            }
            if Instant::now() > deadline {
                bail!("watcher '{SLOT}' did not start its process");
            }
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    };
    // Forget the spawn event of its first process.
    while next_event(events, SLOT, Duration::from_millis(50))
        .await?
        .is_some()
    {}
    let started = Instant::now();
    let end = started + window;
    let mut current: Option<u32> = Some(first);
    let mut up_since: Option<Instant> = Some(started);
    let mut running_for = Duration::ZERO;
    let (mut kills, mut found_down, mut flapped) = (0u32, 0u32, false);
    let mut next_kill = started;
    while Instant::now() < end {
        if Instant::now() >= next_kill {
            match current {
                Some(p) => {
                    sigkill(p)?;
                    kills += 1;
                }
                None => found_down += 1,
            }
            next_kill += KILL_EVERY;
        }
        let until = next_kill.min(end);
        let wait = until.saturating_duration_since(Instant::now());
        let Some((event, at)) = next_event(events, SLOT, wait).await? else {
            continue;
        };
        match event.kind {
            EventKind::Spawn { pid: p, .. } => {
                current = Some(p);
                up_since.get_or_insert(at);
            }
            EventKind::Reap { pid: p, .. } if Some(p) == current => {
                current = None;
                if let Some(since) = up_since.take() {
                    running_for += at.duration_since(since);
                }
            }
            EventKind::Flapping { .. } => flapped = true,
            _ => {}
        }
    }
    if let Some(since) = up_since {
        running_for += end.saturating_duration_since(since);
    }
    let (state, _) = watcher_status(client, SLOT).await?;
    stop(client, SLOT).await?;
    let share = running_for.as_secs_f64() / window.as_secs_f64() * 100.0;
    report.row(
        format!(
            "slot killed every {} s for {} s: time running",
            KILL_EVERY.as_secs(),
            window.as_secs()
        ),
        format!("{share:.0}%"),
    );
    report.row(
        "  kills / ticks that found it down",
        format!("{kills} / {found_down}"),
    );
    if flapped || state != WatcherState::Active {
        report.row(
            "  the watcher at the end",
            format!("{state} (flapped: {flapped})"),
        );
    }
    Ok(())
}

// ----- part 3: replacements per second ----------------------------------------------

async fn replacement_part(
    scale: RestartScale,
    report: &mut Report,
    client: &mut Client,
    events: &mut Subscriber,
) -> Result<()> {
    const LABEL: &str = "replacements/s, 100 workers running 0.1 s";
    const TARGET: &str = "≥ 500/s";
    let window = scale.replace_window;
    progress(&format!(
        "restart policy: {PROCESSES} workers of `sleep 0.1`, replacements counted for {} s",
        window.as_secs()
    ));
    start(client, BATCH).await?;
    // Warm up for a second: every slot has been replaced a few times by then.
    let warm = Instant::now() + Duration::from_secs(1);
    let mut flapped = false;
    while let Some((event, _)) = next_event(
        events,
        BATCH,
        warm.saturating_duration_since(Instant::now()),
    )
    .await?
    {
        flapped |= matches!(event.kind, EventKind::Flapping { .. });
    }
    let (_, restarts_before) = watcher_status(client, BATCH).await?;
    let opened = Instant::now();
    let end = opened + window;
    let mut spawns = 0u64;
    while let Some((event, _)) =
        next_event(events, BATCH, end.saturating_duration_since(Instant::now())).await?
    {
        match event.kind {
            EventKind::Spawn { .. } => spawns += 1,
            EventKind::Flapping { .. } => flapped = true,
            _ => {}
        }
    }
    let elapsed = opened.elapsed().as_secs_f64();
    let (state, restarts_after) = watcher_status(client, BATCH).await?;
    stop(client, BATCH).await?;
    let rate = spawns as f64 / elapsed;
    if flapped || state != WatcherState::Active {
        report.check(
            LABEL,
            format!("{rate:.0}/s (the watcher flapped; {state} at the end)"),
            TARGET,
            false,
        );
        return Ok(());
    }
    report.check(LABEL, format!("{rate:.0}/s"), TARGET, rate >= 500.0);
    report.row(
        "  restarts counted by the agent in the window",
        format!(
            "{} ({spawns} spawn events)",
            restarts_after.saturating_sub(restarts_before)
        ),
    );

    // The same number of spawns by a plain loop, 100 at a time.
    let count = spawns.max(u64::from(PROCESSES));
    progress(&format!(
        "restart policy: plain loop of {count} `sleep 0.1`, {PROCESSES} at a time"
    ));
    let plain = tokio::task::spawn_blocking(move || plain_batches(count))
        .await
        .context("the plain loop panicked")??;
    let plain_rate = count as f64 / plain.as_secs_f64();
    report.row(
        "  plain loop, spawn + wait 100 at a time",
        format!("{plain_rate:.0}/s"),
    );
    let ratio = rate / plain_rate;
    report.check(
        "replacements/s, agent / plain loop",
        format!("{:.0}%", ratio * 100.0),
        "≥ 70%",
        ratio >= 0.70,
    );
    Ok(())
}

/// How long a plain loop takes to run `count` `sleep 0.1`, spawning 100, waiting
/// for them, and so on.
fn plain_batches(count: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(u64::from(PROCESSES));
        let mut children = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            let child = std::process::Command::new("sleep")
                .arg("0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .context("plain loop: cannot spawn 'sleep 0.1'")?;
            children.push(child);
        }
        for mut child in children {
            child.wait().context("plain loop: wait")?;
        }
        done += batch;
    }
    Ok(started.elapsed())
}
