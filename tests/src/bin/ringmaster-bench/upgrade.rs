//! Phase 11: upgrade in place (issue 14). An agent with 1000 processes is
//! upgraded to its own binary several times; each time is measured from the
//! `upgrade` request to the first `nodeinfo` answered by the new program image
//! (target: ≤ 200 ms). Meanwhile a client asks `status` back to back on one
//! connection: every request must be answered (a refused or failed one is a
//! missed target), and the slowest answer is reported. The same is measured in
//! the same run on an agent with no process, so that the share of the 1000
//! processes is seen apart from the `exec` and the start of the binary; the
//! processes must keep their pids through every upgrade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::TestAgent;

use crate::{format_duration, progress, Report, Stats, TIMEOUT};

/// Processes of the full agent.
const PROCESSES: u32 = 1000;
/// The upgrade time target.
const TARGET: Duration = Duration::from_millis(200);

/// How much phase 11 does.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeScale {
    /// Processes of the full agent.
    pub processes: u32,
    /// Upgrades measured on each agent.
    pub upgrades: u32,
}

impl UpgradeScale {
    /// The full run.
    pub const FULL: UpgradeScale = UpgradeScale {
        processes: PROCESSES,
        upgrades: 7,
    };
    /// `--quick`.
    pub const QUICK: UpgradeScale = UpgradeScale {
        processes: 100,
        upgrades: 3,
    };
}

/// What the status client saw while the upgrades ran.
#[derive(Debug, Default)]
struct Seen {
    answered: u64,
    failed: Vec<String>,
    slowest: Duration,
}

/// Runs phase 11.
pub async fn upgrade_phase(scale: UpgradeScale, report: &mut Report) -> Result<()> {
    progress("upgrade in place: an agent with no process");
    let empty = TestAgent::start("bench-upgrade-empty", "");
    let (bare, _) = upgrades(&empty, scale.upgrades, None).await?;

    progress(&format!(
        "upgrade in place: an agent with {} processes",
        scale.processes
    ));
    let full = TestAgent::start(
        "bench-upgrade",
        &format!(
            "\n[watchers.many]\ncmd = \"sleep 3600\"\nnumprocesses = {}\n\
             stdout = \"null\"\nstderr = \"null\"\n",
            scale.processes
        ),
    );
    let mut before = pids(&full).await?;
    let deadline = Instant::now() + TIMEOUT * 4;
    while before.len() < scale.processes as usize {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} processes started",
                before.len(),
                scale.processes
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        before = pids(&full).await?;
    }
    let (loaded, seen) = upgrades(&full, scale.upgrades, Some(())).await?;
    let after = pids(&full).await?;

    let label = format!("upgrade time, {} processes, p50", scale.processes);
    report.check(
        &label,
        format_duration(loaded.p50),
        "≤ 200 ms",
        loaded.p50 <= TARGET,
    );
    report.row(
        format!("upgrade time, {} processes, max", scale.processes),
        format_duration(loaded.max),
    );
    report.row(
        "upgrade time, no process, p50 (same run)",
        format_duration(bare.p50),
    );
    report.row(
        format!("upgrade time with {} processes vs none", scale.processes),
        format!("{:.2}×", ratio(loaded.p50, bare.p50)),
    );
    let seen = seen.unwrap_or_default();
    report.check(
        "status during the upgrades: refused or failed",
        format!(
            "{} of {}",
            seen.failed.len(),
            seen.answered + seen.failed.len() as u64
        ),
        "0",
        seen.failed.is_empty(),
    );
    if let Some(first) = seen.failed.first() {
        report.row("status during the upgrades: first failure", first.clone());
    }
    report.row(
        "status during the upgrades: slowest answer",
        format_duration(seen.slowest),
    );
    report.check(
        "processes that kept their pid through every upgrade",
        format!("{} of {}", kept(&before, &after), before.len()),
        "all",
        before == after,
    );
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn kept(before: &[u32], after: &[u32]) -> usize {
    before.iter().filter(|p| after.contains(p)).count()
}

async fn pids(agent: &TestAgent) -> Result<Vec<u32>> {
    let mut client = Client::new(agent.control.clone(), TIMEOUT);
    match client
        .call(Command::List {
            name: Some("many".into()),
        })
        .await
        .context("list")?
    {
        Response::Processes(list) => {
            let mut pids: Vec<u32> = list
                .iter()
                .filter(|p| p.is_process())
                .map(|p| p.pid)
                .collect();
            pids.sort_unstable();
            Ok(pids)
        }
        other => bail!("unexpected reply to list: {other:?}"),
    }
}

async fn upgrades_so_far(client: &mut Client) -> Result<(u32, u32)> {
    match client.call(Command::NodeInfo {}).await? {
        Response::NodeInfo(info) => Ok((info.upgrades, info.pid)),
        other => bail!("unexpected reply to nodeinfo: {other:?}"),
    }
}

/// Upgrades `agent` `count` times and returns the times; with `watch`, a client
/// asks `status` back to back meanwhile.
async fn upgrades(
    agent: &TestAgent,
    count: u32,
    watch: Option<()>,
) -> Result<(Stats, Option<Seen>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch.map(|()| {
        let stop = Arc::clone(&stop);
        let mut client = Client::new(agent.control.clone(), TIMEOUT);
        tokio::spawn(async move {
            let mut seen = Seen::default();
            while !stop.load(Ordering::SeqCst) {
                let asked = Instant::now();
                match client.call(Command::Status { name: None }).await {
                    Ok(_) => seen.answered += 1,
                    Err(e) => seen.failed.push(e.to_string()),
                }
                seen.slowest = seen.slowest.max(asked.elapsed());
            }
            seen
        })
    });
    let mut times = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut client = Client::new(agent.control.clone(), TIMEOUT * 2);
        let (before, pid) = upgrades_so_far(&mut client).await?;
        let asked = Instant::now();
        match client
            .call(Command::Upgrade { binary: None })
            .await
            .context("upgrade")?
        {
            Response::Upgrade(_) => {}
            other => bail!("unexpected reply to upgrade: {other:?}"),
        }
        let deadline = asked + TIMEOUT;
        loop {
            let mut poll = Client::new(agent.control.clone(), Duration::from_secs(2));
            if let Ok((now, now_pid)) = upgrades_so_far(&mut poll).await {
                if now_pid != pid {
                    bail!("the agent came back with another pid ({pid} → {now_pid})");
                }
                if now > before {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the new image did not answer within {TIMEOUT:?}");
            }
        }
        times.push(asked.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    let seen = match watcher {
        Some(task) => Some(task.await.context("status client")?),
        None => None,
    };
    Ok((Stats::of(times), seen))
}
