//! Upgrading agents in place (`nodectl upgrade`): one agent, or a pool N nodes
//! at a time, stopping at the first batch that fails.
//!
//! An agent answers `upgrade` once the new binary passed its checks, and then
//! re-executes itself; the upgrade is done when the agent answers again with its
//! `upgrades` count grown and the same pid. Requests sent meanwhile wait in the
//! agent's listening socket, so the wait is a plain poll of `nodeinfo`.

use std::time::{Duration, Instant};

use ringmaster_protocol::message::{NodeInfo, UpgradeReport};
use ringmaster_protocol::seal::Keyring;
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, Response};

use crate::fanout::{NodeError, NodeResult, Outcome, Timeouts};
use crate::pools::NodeSpec;

/// How long each `nodeinfo` of the wait may take; a request caught in the switch
/// is sent again after this.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// A finished upgrade.
#[derive(Debug, Clone, PartialEq)]
pub struct Upgraded {
    /// What the agent said it would do.
    pub report: UpgradeReport,
    /// The agent afterwards.
    pub info: NodeInfo,
    /// From the request to the first answer of the new image.
    pub took: Duration,
}

/// Upgrades the agent at `endpoint` in place with `binary` (or its running
/// binary) and waits, within `timeouts.answer`, until the new image answers.
pub async fn upgrade_agent(
    endpoint: &str,
    keys: Option<Keyring>,
    binary: Option<String>,
    timeouts: Timeouts,
) -> Result<Upgraded, NodeError> {
    let mut client = Client::new(endpoint, timeouts.reach).with_keys(keys.clone());
    let before = node_info(&mut client).await?;
    client.set_timeout(timeouts.answer);
    let started = Instant::now();
    let report = match client.call(Command::Upgrade { binary }).await? {
        Response::Upgrade(report) => report,
        other => {
            return Err(NodeError::Unhealthy(format!(
                "unexpected answer to upgrade: {other:?}"
            )))
        }
    };
    let deadline = started + timeouts.answer;
    loop {
        let mut client =
            Client::new(endpoint, POLL_TIMEOUT.min(timeouts.answer)).with_keys(keys.clone());
        if let Ok(info) = node_info(&mut client).await {
            if info.pid != before.pid {
                return Err(NodeError::Unhealthy(format!(
                    "the agent came back with another pid ({} → {}): it restarted instead of \
                     upgrading in place; see its log",
                    before.pid, info.pid
                )));
            }
            if info.upgrades > before.upgrades {
                return Ok(Upgraded {
                    report,
                    info,
                    took: started.elapsed(),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Unhealthy(format!(
                "the new image did not answer within {:.1}s; see the agent's log",
                timeouts.answer.as_secs_f64()
            )));
        }
        // Poll interval while the agent re-executes itself.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn node_info(client: &mut Client) -> Result<NodeInfo, NodeError> {
    match client.call(Command::NodeInfo {}).await? {
        Response::NodeInfo(info) => Ok(*info),
        other => Err(NodeError::Unhealthy(format!(
            "unexpected answer to nodeinfo: {other:?}"
        ))),
    }
}

/// Upgrades `nodes` `batch` at a time; results come back in the order of
/// `nodes`, `Done(Response::Upgrade)` for each node upgraded, and the nodes of
/// the batches after a failing one `NotAttempted`.
pub async fn rolling(
    nodes: &[NodeSpec],
    binary: Option<String>,
    batch: usize,
    timeouts: Timeouts,
) -> Vec<(NodeResult, Option<Upgraded>)> {
    let mut results = Vec::with_capacity(nodes.len());
    let mut failed_batch = None;
    for (index, chunk) in nodes.chunks(batch.max(1)).enumerate() {
        if let Some(failed) = failed_batch {
            results.extend(chunk.iter().map(|node| {
                let result = NodeResult {
                    node: node.name.clone(),
                    outcome: Outcome::NotAttempted(format!("batch {failed} failed")),
                    elapsed: Duration::ZERO,
                };
                (result, None)
            }));
            continue;
        }
        let done = futures_util::future::join_all(chunk.iter().map(|node| {
            let binary = binary.clone();
            async move {
                let started = Instant::now();
                let upgraded =
                    upgrade_agent(&node.control, node.keys.clone(), binary, timeouts).await;
                let (outcome, upgraded) = match upgraded {
                    Ok(u) => (Outcome::Done(Response::Upgrade(u.report.clone())), Some(u)),
                    Err(e) => (Outcome::Failed(e), None),
                };
                let result = NodeResult {
                    node: node.name.clone(),
                    outcome,
                    elapsed: started.elapsed(),
                };
                (result, upgraded)
            }
        }))
        .await;
        if done
            .iter()
            .any(|(r, _)| matches!(r.outcome, Outcome::Failed(_)))
        {
            failed_batch = Some(index + 1);
        }
        results.extend(done);
    }
    results
}
