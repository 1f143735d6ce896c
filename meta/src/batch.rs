//! Rolling `restart` / `reload` across a pool: N nodes at a time, the next batch
//! only once the previous one runs again, stopping at the first batch that fails.
//!
//! "Runs again" means: every watcher the command touched is `active` with all its
//! processes, and stays so, with the same pids, for a settle period (so that a
//! worker that crashes a moment after it started fails its batch instead of
//! spreading to the next one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, Response};

use crate::fanout::{ask, NodeError, NodeResult, Outcome};
use crate::pools::NodeSpec;

/// How a rolling command proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// Nodes per batch (at least 1).
    pub batch: usize,
    /// Time allowed for each node's command.
    pub command_timeout: crate::fanout::Timeouts,
    /// Time allowed for a batch to run again after its command returned.
    pub healthy_within: Duration,
    /// How long a batch must keep running, unchanged, before the next one starts.
    pub settle: Duration,
    /// Time allowed for each status request while checking.
    pub query_timeout: Duration,
}

/// Runs `command` (a `restart` or `reload`) on `nodes` batch by batch; results come
/// back in the order of `nodes`, with later batches `NotAttempted` after a failure.
pub async fn rolling(nodes: &[NodeSpec], command: &Command, how: Rolling) -> Vec<NodeResult> {
    let watcher = crate::fanout::watcher_of(command).map(str::to_string);
    let mut results = Vec::with_capacity(nodes.len());
    let mut failed_batch = None;
    for (index, batch) in nodes.chunks(how.batch.max(1)).enumerate() {
        if let Some(failed) = failed_batch {
            results.extend(batch.iter().map(|node| NodeResult {
                node: node.name.clone(),
                outcome: Outcome::NotAttempted(format!("batch {failed} failed")),
                elapsed: Duration::ZERO,
            }));
            continue;
        }
        let mut batch_results = futures_util::future::join_all(batch.iter().map(|node| {
            let command = command.clone();
            let watcher = watcher.clone();
            async move {
                let mut result = ask(node, command, how.command_timeout, false).await;
                if matches!(result.outcome, Outcome::Done(_)) {
                    let started = Instant::now();
                    if let Err(reason) = wait_running(node, watcher.as_deref(), how).await {
                        result.outcome = Outcome::Failed(NodeError::Unhealthy(reason));
                    }
                    result.elapsed += started.elapsed();
                }
                result
            }
        }))
        .await;
        if batch_results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed(_)))
        {
            failed_batch = Some(index + 1);
        }
        results.append(&mut batch_results);
    }
    results
}

/// Waits until the node's watchers (`watcher`, or every watcher that should run)
/// are active with all their processes, then checks they stay so for the settle
/// period with the same pids.
async fn wait_running(node: &NodeSpec, watcher: Option<&str>, how: Rolling) -> Result<(), String> {
    let mut client =
        Client::new(node.control.clone(), how.query_timeout).with_keys(node.keys.clone());
    let deadline = Instant::now() + how.healthy_within;
    let first = loop {
        match running_pids(&mut client, watcher).await {
            Ok(Some(pids)) => break pids,
            Ok(None) if Instant::now() < deadline => {}
            Ok(None) => {
                return Err(format!(
                    "not all processes running within {:.1}s",
                    how.healthy_within.as_secs_f64()
                ))
            }
            Err(reason) => return Err(reason),
        }
        // Poll interval while waiting for processes to come up.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The settle period: the whole point is to let time pass.
    tokio::time::sleep(how.settle).await;
    match running_pids(&mut client, watcher).await? {
        Some(pids) if pids == first => Ok(()),
        Some(_) => Err("processes were replaced during the settle period (crashing?)".into()),
        None => Err("processes stopped during the settle period (crashing?)".into()),
    }
}

/// Pids of the watchers that should run, when all of them are active and full;
/// None while some are not; an error for a flapping watcher or a lost node.
async fn running_pids(
    client: &mut Client,
    watcher: Option<&str>,
) -> Result<Option<BTreeMap<String, Vec<u32>>>, String> {
    let status = match client
        .call(Command::Status {
            name: watcher.map(str::to_string),
        })
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Status(list) => list,
        other => return Err(format!("unexpected answer to status: {other:?}")),
    };
    let mut pids = BTreeMap::new();
    for w in status {
        match w.state {
            WatcherState::Stopped if watcher.is_none() => continue,
            // An on_demand watcher waiting for its first connection runs as meant.
            WatcherState::Waiting => continue,
            WatcherState::Flapping => {
                return Err(format!(
                    "watcher '{}' is flapping{}",
                    w.name,
                    w.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ))
            }
            WatcherState::Active if w.processes >= w.numprocesses => {}
            _ => return Ok(None),
        }
        let list = match client
            .call(Command::List {
                name: Some(w.name.clone()),
            })
            .await
            .map_err(|e| e.to_string())?
        {
            Response::Processes(list) => list,
            other => return Err(format!("unexpected answer to list: {other:?}")),
        };
        let mut running: Vec<u32> = list
            .iter()
            .filter(|p| p.state == "running")
            .map(|p| p.pid)
            .collect();
        running.sort_unstable();
        pids.insert(w.name, running);
    }
    Ok(Some(pids))
}
