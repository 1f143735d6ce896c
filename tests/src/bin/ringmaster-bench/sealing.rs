//! Phase 8: what keys cost. Two agents with the same 100 processes, one with keys
//! (every request, reply and published body sealed) and one without, answer the
//! same `status` requests, in alternating blocks so that the machine's noise falls
//! on both alike. Reports p50/p99 of each and their ratio (target: sealed p99 ≤ 1.5×
//! the plain p99, and sealed p50 ≤ 150 µs as for the plain agent).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::TestAgent;

use crate::{format_duration, progress, sleep_watcher, time_status, Report, Stats};

/// Processes each agent supervises (the size of the `status` reply).
const PROCESSES: u32 = 100;
/// Requests per block before switching to the other agent.
const BLOCK: u32 = 100;

/// Runs phase 8 with `requests` requests to each agent.
pub async fn sealing_phase(requests: u32, report: &mut Report) -> Result<()> {
    progress(&format!(
        "keys: {requests} status requests to an agent with keys and to one without, {PROCESSES} processes each"
    ));
    let watcher = sleep_watcher("sleeper", PROCESSES);
    let plain = TestAgent::start("bench-plain", &watcher);
    let (sealed, _keys) = TestAgent::start_keyed("bench-sealed", &watcher);
    let mut plain_client = plain.client();
    let mut sealed_client = sealed.client();
    for client in [&mut plain_client, &mut sealed_client] {
        wait_processes(client).await?;
        for _ in 0..requests / 100 {
            time_status(client).await?;
        }
    }
    let mut plain_samples = Vec::with_capacity(requests as usize);
    let mut sealed_samples = Vec::with_capacity(requests as usize);
    let mut done = 0;
    while done < requests {
        let block = BLOCK.min(requests - done);
        for _ in 0..block {
            plain_samples.push(time_status(&mut plain_client).await?);
        }
        for _ in 0..block {
            sealed_samples.push(time_status(&mut sealed_client).await?);
        }
        done += block;
    }
    let plain = Stats::of(plain_samples);
    let sealed = Stats::of(sealed_samples);
    report.row(
        "status round trip without keys p50 / p99",
        format!(
            "{} / {}",
            format_duration(plain.p50),
            format_duration(plain.p99)
        ),
    );
    report.check(
        "status round trip with keys p50",
        format_duration(sealed.p50),
        "≤ 150 µs",
        sealed.p50 <= Duration::from_micros(150),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    report.row(
        "with keys / without, p50",
        format!("{:.2}×", ratio(sealed.p50, plain.p50)),
    );
    let p99_ratio = ratio(sealed.p99, plain.p99);
    report.check(
        "with keys / without, p99",
        format!(
            "{p99_ratio:.2}× ({} against {})",
            format_duration(sealed.p99),
            format_duration(plain.p99)
        ),
        "≤ 1.5×",
        p99_ratio <= 1.5,
    );
    Ok(())
}

/// Waits (with a deadline) until the agent runs all of its processes.
async fn wait_processes(client: &mut Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Response::Status(watchers) = client.call(Command::Status { name: None }).await? {
            let running: u32 = watchers.iter().map(|w| w.processes).sum();
            if running == PROCESSES {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the agent at {} did not start {PROCESSES} processes within 60 s",
                client.endpoint()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    }
}
