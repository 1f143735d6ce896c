//! Running one command on many nodes at once, and saying per node what happened.
//!
//! Every node gets its own DEALER and its own deadline, and all of them run
//! concurrently on the caller's (current-thread) runtime, so a dead node costs at
//! most the timeout and never delays the answers of the others. Nothing is kept
//! between calls.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ringmaster_protocol::transport::{Client, ClientError};
use ringmaster_protocol::{Command, ErrorKind, ErrorReply, Response};

use crate::pools::NodeSpec;

/// Why a node did not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No answer: the agent is down, the address is wrong or the network is cut.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Remote(ErrorReply),
    /// The command succeeded but the node did not come back healthy (rolling
    /// restarts).
    #[error("not healthy afterwards: {0}")]
    Unhealthy(String),
}

impl From<ClientError> for NodeError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Remote(reply) => NodeError::Remote(reply),
            ClientError::Transport(t) => NodeError::Unreachable(t.to_string()),
        }
    }
}

/// What happened on one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The node answered.
    Done(Response),
    /// The command does not apply to this node (it has no such watcher).
    Skipped(String),
    /// The node failed.
    Failed(NodeError),
    /// Not tried, because an earlier batch failed.
    NotAttempted(String),
}

/// One node's part of a pool command.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResult {
    /// Node name.
    pub node: String,
    /// What happened.
    pub outcome: Outcome,
    /// Wall time from sending to the answer (or to giving up).
    pub elapsed: Duration,
}

/// How a pool command went as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every targeted node that applies succeeded.
    AllSucceeded,
    /// No targeted node applies (none has the watcher).
    NothingApplies,
    /// Some nodes succeeded, some failed.
    Partial,
    /// Every node that applies failed; `unreachable` when any of them could not be
    /// reached at all.
    AllFailed {
        /// At least one failure was a node that did not answer.
        unreachable: bool,
    },
}

/// The verdict over `results`.
pub fn verdict(results: &[NodeResult]) -> Verdict {
    let ok = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Done(_)))
        .count();
    let failed: Vec<&NodeResult> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::NotAttempted(_)))
        .collect();
    match (ok, failed.len()) {
        (0, 0) => Verdict::NothingApplies,
        (_, 0) => Verdict::AllSucceeded,
        (0, _) => Verdict::AllFailed {
            unreachable: failed
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Failed(NodeError::Unreachable(_)))),
        },
        _ => Verdict::Partial,
    }
}

/// The watcher a command is about, when it names one: a node without that
/// watcher is skipped rather than failed.
pub fn watcher_of(command: &Command) -> Option<&str> {
    match command {
        Command::Status { name }
        | Command::List { name }
        | Command::Start { name }
        | Command::Stop { name }
        | Command::Restart { name }
        | Command::Reload { name, .. }
        | Command::NumProcesses { name }
        | Command::Stats { name } => name.as_deref(),
        Command::Incr { name, .. }
        | Command::Decr { name, .. }
        | Command::Rm { name, .. }
        | Command::Set { name, .. }
        | Command::Get { name, .. }
        | Command::Options { name }
        | Command::Signal { name, .. } => Some(name),
        _ => None,
    }
}

/// How long a node may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To show it is there at all (connect and answer a trivial request): the
    /// pool's `timeout`. A dead node costs at most this.
    pub reach: Duration,
    /// To answer the command itself, once it is known to be there (a graceful
    /// restart may legitimately take much longer than `reach`).
    pub answer: Duration,
}

impl Timeouts {
    /// The same limit for both.
    pub fn same(timeout: Duration) -> Self {
        Timeouts {
            reach: timeout,
            answer: timeout,
        }
    }
}

/// Sends `command` to one node and classifies the answer. When the command may
/// take longer than `timeouts.reach`, the node is first asked a trivial question
/// within `reach`, so that an unreachable node is told apart quickly from a slow
/// command.
pub async fn ask(
    node: &NodeSpec,
    command: Command,
    timeouts: Timeouts,
    no_wait: bool,
) -> NodeResult {
    let started = Instant::now();
    let watcher = watcher_of(&command).map(str::to_string);
    let mut client = Client::new(node.control.clone(), timeouts.reach).with_keys(node.keys.clone());
    if timeouts.answer > timeouts.reach {
        if let Err(e) = client.call(Command::NumWatchers {}).await {
            return NodeResult {
                node: node.name.clone(),
                outcome: Outcome::Failed(e.into()),
                elapsed: started.elapsed(),
            };
        }
        client.set_timeout(timeouts.answer);
    }
    let outcome = match client.call_with(command, no_wait).await {
        Ok(response) => Outcome::Done(response),
        Err(ClientError::Remote(reply))
            if reply.kind == ErrorKind::NotFound
                && watcher
                    .as_deref()
                    .is_some_and(|w| reply.message.contains(&format!("'{w}'"))) =>
        {
            Outcome::Skipped(format!(
                "no watcher '{}'",
                watcher.as_deref().unwrap_or_default()
            ))
        }
        Err(e) => Outcome::Failed(e.into()),
    };
    NodeResult {
        node: node.name.clone(),
        outcome,
        elapsed: started.elapsed(),
    }
}

/// Sends `command` to every node in `nodes` concurrently; results come back in the
/// order of `nodes`.
pub async fn run_on(
    nodes: &[NodeSpec],
    command: &Command,
    timeouts: Timeouts,
    no_wait: bool,
) -> Vec<NodeResult> {
    run_each(nodes, timeouts, no_wait, |_| Ok(command.clone())).await
}

/// Sends each node the command `make` builds for it (a node for which `make` fails
/// is reported failed with that reason, and not contacted).
pub async fn run_each<F>(
    nodes: &[NodeSpec],
    timeouts: Timeouts,
    no_wait: bool,
    make: F,
) -> Vec<NodeResult>
where
    F: Fn(&NodeSpec) -> Result<Command, ErrorReply>,
{
    join_all(nodes.iter().map(|node| {
        let command = make(node);
        async move {
            match command {
                Ok(command) => ask(node, command, timeouts, no_wait).await,
                Err(reply) => NodeResult {
                    node: node.name.clone(),
                    outcome: Outcome::Failed(NodeError::Remote(reply)),
                    elapsed: Duration::ZERO,
                },
            }
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> NodeResult {
        NodeResult {
            node: "n".into(),
            outcome,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn verdicts() {
        let ok = || result(Outcome::Done(Response::Count(1)));
        let skipped = || result(Outcome::Skipped("no watcher".into()));
        let down = || result(Outcome::Failed(NodeError::Unreachable("x".into())));
        let refused = || {
            result(Outcome::Failed(NodeError::Remote(ErrorReply::new(
                ErrorKind::BadArguments,
                "x",
            ))))
        };
        assert_eq!(verdict(&[ok(), skipped()]), Verdict::AllSucceeded);
        assert_eq!(verdict(&[skipped(), skipped()]), Verdict::NothingApplies);
        assert_eq!(verdict(&[ok(), down()]), Verdict::Partial);
        assert_eq!(
            verdict(&[refused(), down()]),
            Verdict::AllFailed { unreachable: true }
        );
        assert_eq!(
            verdict(&[refused(), skipped()]),
            Verdict::AllFailed { unreachable: false }
        );
    }
}
