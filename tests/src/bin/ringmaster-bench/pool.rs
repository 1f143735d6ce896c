//! Phase 7: a pool of agents on this machine (ipc endpoints).
//!
//! - `nodectl --pool` status fan-out wall time over every node, against one
//!   `nodectl status` of a single node in the same run;
//! - `nodemeta` relaying every agent's statistics (each agent with its processes,
//!   stats every second): its CPU share over the window, and the delay from an
//!   agent's sample to a subscriber of nodemeta, against the same delay for a
//!   subscriber connected to the agents directly.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use ringmaster_protocol::transport::{Published, Subscriber};
use ringmaster_tests::{NodeDef, TestPool};
use tokio::sync::mpsc;

use crate::{binary, cpu_seconds, format_duration, progress, sleep_watcher, Report, Stats};

/// How big a pool the phase builds.
#[derive(Debug, Clone, Copy)]
pub struct PoolScale {
    /// Agents.
    pub nodes: usize,
    /// Processes per agent.
    pub processes: u32,
    /// `nodectl --pool status` runs timed.
    pub fanout_runs: u32,
    /// How long nodemeta is watched.
    pub window: Duration,
}

const FANOUT_TARGET: Duration = Duration::from_millis(50);
const RELAY_TARGET: Duration = Duration::from_millis(20);
const META_CPU_TARGET: f64 = 10.0;

/// Kills nodemeta when the phase ends, however it ends.
struct Meta(Child);

impl Drop for Meta {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the pool phase and adds its rows and verdicts to `report`.
pub async fn pool_phase(scale: PoolScale, report: &mut Report) -> Result<()> {
    let (Some(nodectl), Some(nodemeta)) = (binary("nodectl"), binary("nodemeta")) else {
        report.skip(
            "pool phase",
            "fan-out and relay targets",
            "nodectl or nodemeta not built",
        );
        return Ok(());
    };
    progress(&format!(
        "pool: starting {} agents with {} processes each",
        scale.nodes, scale.processes
    ));
    let names: Vec<String> = (0..scale.nodes).map(|i| format!("bench-{i:02}")).collect();
    let labels: Vec<String> = (0..scale.nodes)
        .map(|i| format!("zone = \"z{}\"", i % 3))
        .collect();
    let defs: Vec<NodeDef<'_>> = names
        .iter()
        .zip(&labels)
        .map(|(name, labels)| NodeDef { name, labels })
        .collect();
    let pool = TestPool::start(
        "bench",
        &defs,
        "stats_interval = 1.0",
        &sleep_watcher("sleep", scale.processes),
    );
    pool.write_pools_file(&defs, 5.0);
    wait_all_running(&pool, scale).await?;

    fanout(&pool, &nodectl, scale, report)?;
    relay(&pool, &nodemeta, scale, report).await?;
    progress("pool: stopping the agents");
    drop(pool);
    Ok(())
}

/// Waits until every agent runs all its processes.
async fn wait_all_running(pool: &TestPool, scale: PoolScale) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    for agent in &pool.agents {
        let mut client = agent.client();
        loop {
            let n = match client
                .call(ringmaster_protocol::Command::NumProcesses { name: None })
                .await
            {
                Ok(ringmaster_protocol::Response::Count(n)) => n,
                _ => 0,
            };
            if n >= u64::from(scale.processes) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} runs {n} of {} processes after 300 s",
                    agent.node,
                    scale.processes
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
    }
    Ok(())
}

fn fanout(pool: &TestPool, nodectl: &Path, scale: PoolScale, report: &mut Report) -> Result<()> {
    progress(&format!(
        "pool: {} runs of nodectl --pool status over {} nodes",
        scale.fanout_runs, scale.nodes
    ));
    let pool_run = || -> Result<Duration> {
        let started = Instant::now();
        let out = std::process::Command::new(nodectl)
            .arg("--pools")
            .arg(pool.pools_file())
            .args(["--pool", "bench", "status"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run nodectl")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "nodectl --pool status failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let rows = String::from_utf8_lossy(&out.stdout).lines().count();
        if rows != scale.nodes + 1 {
            bail!(
                "nodectl --pool status printed {rows} lines for {} nodes",
                scale.nodes
            );
        }
        Ok(took)
    };
    let first = pool.agents.first().ok_or_else(|| anyhow!("empty pool"))?;
    let single_run = || crate::nodectl_status(nodectl, &first.control);
    pool_run()?; // untimed: warms the page cache and checks it works
    let mut pooled = Vec::new();
    let mut single = Vec::new();
    for _ in 0..scale.fanout_runs {
        pooled.push(pool_run()?);
        single.push(single_run()?);
    }
    let pooled = Stats::of(pooled);
    let single = Stats::of(single);
    let n = scale.nodes;
    report.check(
        &format!("nodectl --pool status, {n} nodes, p50"),
        format_duration(pooled.p50),
        "≤ 50 ms",
        pooled.p50 <= FANOUT_TARGET,
    );
    report.row(
        format!("nodectl --pool status, {n} nodes, p99"),
        format_duration(pooled.p99),
    );
    report.row(
        "nodectl status, 1 node, p50 (same run)",
        format_duration(single.p50),
    );
    report.row(
        format!("  {n} nodes / 1 node"),
        format!(
            "{:.1}x",
            pooled.p50.as_secs_f64() / single.p50.as_secs_f64().max(1e-9)
        ),
    );
    Ok(())
}

/// One statistics message seen by the bench, with its delay since the agent
/// sampled it.
struct Seen {
    via_meta: bool,
    node: String,
    delay: Duration,
}

async fn relay(
    pool: &TestPool,
    nodemeta: &Path,
    scale: PoolScale,
    report: &mut Report,
) -> Result<()> {
    let endpoint = format!("ipc://{}/meta.sock", pool.dir().display());
    progress(&format!(
        "pool: nodemeta relaying {} agents x {} processes for {} s",
        scale.nodes,
        scale.processes,
        scale.window.as_secs()
    ));
    let log = std::fs::File::create(pool.dir().join("nodemeta.log"))?;
    let meta = Meta(
        std::process::Command::new(nodemeta)
            .arg("--pools")
            .arg(pool.pools_file())
            .args(["--pool", "bench", "--pubsub", &endpoint])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start nodemeta")?,
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let meta_sub = connect_until(&endpoint, Duration::from_secs(10)).await?;
    tokio::spawn(follow(meta_sub, true, tx.clone()));
    for agent in &pool.agents {
        let sub = connect_until(&agent.pubsub, Duration::from_secs(10)).await?;
        tokio::spawn(follow(sub, false, tx.clone()));
    }
    drop(tx);
    // Wait until nodemeta relays every node, then open the window.
    let mut heard = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while heard.len() < scale.nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(seen)) if seen.via_meta => {
                heard.insert(seen.node);
            }
            Ok(Some(_)) => {}
            _ => bail!(
                "nodemeta relayed {} of {} nodes within 30 s (see {})",
                heard.len(),
                scale.nodes,
                pool.dir().join("nodemeta.log").display()
            ),
        }
    }
    let pid = meta.0.id();
    let cpu_before = cpu_seconds(pid)?;
    let opened = Instant::now();
    let mut via_meta = Vec::new();
    let mut direct = Vec::new();
    // The measurement window itself.
    while opened.elapsed() < scale.window {
        let left = scale.window.saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(seen)) if seen.via_meta => via_meta.push(seen.delay),
            Ok(Some(seen)) => direct.push(seen.delay),
            Ok(None) => bail!("the subscriptions ended"),
            Err(_) => break,
        }
    }
    let cpu = (cpu_seconds(pid)? - cpu_before) / opened.elapsed().as_secs_f64() * 100.0;
    let expected =
        scale.nodes as f64 * (f64::from(scale.processes) + 2.0) * scale.window.as_secs_f64();
    let (relayed, straight) = (via_meta.len(), direct.len());
    let via = Stats::of(via_meta);
    let direct = Stats::of(direct);
    let n = scale.nodes;
    let p = scale.processes;
    report.check(
        &format!("nodemeta CPU, {n} agents x {p} processes, stats 1 s"),
        format!("{cpu:.2}%"),
        "≤ 10% of a core",
        cpu <= META_CPU_TARGET,
    );
    report.row(
        "  messages relayed / published in the window",
        format!("{relayed} / ~{expected:.0} ({straight} direct)"),
    );
    report.check(
        "delay sample -> nodemeta subscriber, p99",
        format_duration(via.p99),
        "≤ 20 ms",
        via.p99 <= RELAY_TARGET,
    );
    report.row(
        "delay sample -> nodemeta subscriber, p50",
        format_duration(via.p50),
    );
    report.row(
        "delay sample -> direct subscriber, p99 (same run)",
        format_duration(direct.p99),
    );
    report.row(
        "  added by the relay at p99",
        format_duration(via.p99.saturating_sub(direct.p99)),
    );
    Ok(())
}

async fn connect_until(endpoint: &str, within: Duration) -> Result<Subscriber> {
    let deadline = Instant::now() + within;
    loop {
        match Subscriber::connect(endpoint, &["stat."], Duration::from_secs(1)).await {
            Ok(sub) => return Ok(sub),
            Err(e) if Instant::now() > deadline => bail!("cannot subscribe to {endpoint}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await, // retry interval
        }
    }
}

async fn follow(mut sub: Subscriber, via_meta: bool, tx: mpsc::UnboundedSender<Seen>) {
    while let Ok(message) = sub.recv_published().await {
        let Published::Stat(stat) = message else {
            continue;
        };
        if matches!(stat.kind, ringmaster_protocol::stats::StatKind::Pool(_)) {
            continue;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let delay = Duration::from_secs_f64((now - stat.time).max(0.0));
        if tx
            .send(Seen {
                via_meta,
                node: stat.node,
                delay,
            })
            .is_err()
        {
            return;
        }
    }
}
