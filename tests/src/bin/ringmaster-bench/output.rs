//! Phase 9: a process writing as fast as it can never delays a command. One agent
//! runs two `yes` watchers: one writing to a file with size rotation (50 MB, two
//! backups), one `capture`d (kept for `logs`, published, copied to the agent's
//! stdout). `status` round trips are timed on the idle agent, then for 10 s (2 s
//! with `--quick`, and at least 1000 requests) while both floods run. Reports p50
//! and p99 of each and their ratio (target: p99 under the flood ≤ 5 ms), the
//! bytes per second the agent read from each flood, what it dropped (publishing
//! is bounded; files get everything), and the agent's CPU during the flood.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringmaster_protocol::logs::LogReport;
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::TestAgent;

use crate::{cpu_seconds, format_duration, progress, time_status, Report, Stats};

/// The flood written to a rotated file.
const FILE_FLOOD: &str = "flood-file";
/// The flood captured by the agent.
const CAPTURE_FLOOD: &str = "flood-capture";
/// Fewest `status` requests timed in each condition.
const MIN_REQUESTS: u32 = 1000;
/// The target for the p99 round trip under the flood.
const P99_TARGET: Duration = Duration::from_millis(5);

fn config() -> String {
    format!(
        "\n[watchers.{FILE_FLOOD}]\ncmd = \"yes\"\nautostart = false\n\
         stdout = {{ to = \"flood.log\", max_bytes = 50_000_000, backup_count = 2 }}\n\
         \n[watchers.{CAPTURE_FLOOD}]\ncmd = \"yes\"\nautostart = false\nstdout = \"capture\"\n"
    )
}

/// Runs phase 9: `quick` floods for 2 s instead of 10.
pub async fn output_phase(quick: bool, report: &mut Report) -> Result<()> {
    let window = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    progress(&format!(
        "output: status round trips on an idle agent, then for {} s while two `yes` flood it",
        window.as_secs()
    ));
    let agent = TestAgent::start("bench-output", &config());
    let mut client = agent.client();
    for _ in 0..MIN_REQUESTS / 10 {
        time_status(&mut client).await?;
    }
    let mut idle = Vec::with_capacity(MIN_REQUESTS as usize);
    for _ in 0..MIN_REQUESTS {
        idle.push(time_status(&mut client).await?);
    }

    for name in [FILE_FLOOD, CAPTURE_FLOOD] {
        client
            .call(Command::Start {
                name: Some(name.into()),
            })
            .await
            .with_context(|| format!("start {name}"))?;
    }
    let before = [
        lines_read(&mut client, FILE_FLOOD).await?,
        lines_read(&mut client, CAPTURE_FLOOD).await?,
    ];
    let cpu_before = cpu_seconds(agent.pid())?;
    let opened = Instant::now();
    let mut flooded = Vec::with_capacity(MIN_REQUESTS as usize * 4);
    while opened.elapsed() < window || flooded.len() < MIN_REQUESTS as usize {
        flooded.push(time_status(&mut client).await?);
    }
    let elapsed = opened.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(agent.pid())? - cpu_before) / elapsed * 100.0;
    let file = logs(&mut client, FILE_FLOOD).await?;
    let capture = logs(&mut client, CAPTURE_FLOOD).await?;
    for name in [FILE_FLOOD, CAPTURE_FLOOD] {
        client
            .call(Command::Stop {
                name: Some(name.into()),
            })
            .await
            .with_context(|| format!("stop {name}"))?;
    }

    let idle = Stats::of(idle);
    let requests = flooded.len();
    let flooded = Stats::of(flooded);
    report.row(
        "status round trip, idle agent, p50 / p99",
        format!(
            "{} / {}",
            format_duration(idle.p50),
            format_duration(idle.p99)
        ),
    );
    report.row(
        format!("status round trip, two yes floods, p50 ({requests} requests)"),
        format_duration(flooded.p50),
    );
    report.check(
        "status round trip, two yes floods, p99",
        format_duration(flooded.p99),
        "≤ 5 ms",
        flooded.p99 <= P99_TARGET,
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    report.row(
        "  flood / idle, p50 / p99",
        format!(
            "{:.1}× / {:.1}×",
            ratio(flooded.p50, idle.p50),
            ratio(flooded.p99, idle.p99)
        ),
    );
    report.row(
        "status round trip, two yes floods, max",
        format_duration(flooded.max),
    );
    // `yes` writes "y\n": two bytes a line.
    let rate = |after: &LogReport, before: u64| {
        after.next.stdout.saturating_sub(before) as f64 * 2.0 / elapsed
    };
    report.row(
        "output read, yes to a rotated file",
        format!("{}/s", format_rate(rate(&file, before[0]))),
    );
    report.row(
        "output read, yes captured",
        format!("{}/s", format_rate(rate(&capture, before[1]))),
    );
    report.row(
        "output dropped (publishing / copy; files get all)",
        format!(
            "{} file, {} captured",
            format_rate(file.dropped_bytes as f64),
            format_rate(capture.dropped_bytes as f64)
        ),
    );
    report.row(
        "agent CPU during the floods (all threads)",
        format!("{cpu:.0}% of a core"),
    );
    Ok(())
}

fn format_rate(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.1} kB", bytes / 1e3)
    }
}

async fn logs(client: &mut Client, name: &str) -> Result<LogReport> {
    match client
        .call(Command::Logs {
            name: name.into(),
            lines: 0,
            stream: None,
        })
        .await
        .with_context(|| format!("logs {name}"))?
    {
        Response::Logs(report) => Ok(report),
        other => bail!("unexpected reply to logs: {other:?}"),
    }
}

/// Lines the agent has read from `name`'s stdout so far.
async fn lines_read(client: &mut Client, name: &str) -> Result<u64> {
    Ok(logs(client, name).await?.next.stdout)
}
