//! `nodectl listen`: print what an agent publishes, as it arrives.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ringmaster_protocol::seal::Keyring;
use ringmaster_protocol::stats::{NodeState, Stat, StatKind};
use ringmaster_protocol::transport::{Client, Published, Subscriber, TransportError};
use ringmaster_protocol::{Command, Event, EventKind, Response};
use tokio::sync::mpsc;

use crate::output::{human_bytes, human_duration};
use crate::runtime;

/// A publish endpoint to follow: a node's, or a nodemeta's.
#[derive(Debug, Clone)]
pub struct Source {
    /// What to call it in messages.
    pub name: String,
    /// Where it publishes.
    pub pubsub: String,
    /// The keys its bodies are sealed with (`None`: in clear).
    pub keys: Option<Keyring>,
}

/// Subscribes to the agent at `endpoint` and prints messages until interrupted (or
/// `count` messages).
pub fn run(
    endpoint: &str,
    keys: Option<Keyring>,
    timeout: Duration,
    prefixes: &[String],
    count: Option<u64>,
    json: bool,
) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let mut client = Client::new(endpoint, timeout).with_keys(keys.clone());
        let pubsub = match client.call(Command::NodeInfo {}).await {
            Ok(Response::NodeInfo(info)) => info.pubsub,
            Ok(other) => {
                eprintln!("nodectl: unexpected answer to nodeinfo: {other:?}");
                return ExitCode::from(3);
            }
            Err(e) => {
                eprintln!("nodectl: {e}");
                return ExitCode::from(1);
            }
        };
        let filter = topic_filter(prefixes);
        let subscriber = match Subscriber::connect(&pubsub, &filter, timeout).await {
            Ok(s) => s.with_keys(keys),
            Err(e) => {
                eprintln!("nodectl: {e}");
                return ExitCode::from(1);
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(forward(subscriber, tx));
        print_until(rx, count, json).await
    })
}

/// Subscribes to the publish endpoint of every source in `nodes` and prints what
/// any of them publishes. A node that cannot be reached is reported and retried in
/// the background; the others are followed meanwhile.
pub fn run_pool(
    nodes: Vec<Source>,
    timeout: Duration,
    prefixes: &[String],
    count: Option<u64>,
    json: bool,
) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let (tx, rx) = mpsc::channel(4096);
        for Source {
            name: node,
            pubsub: endpoint,
            keys,
        } in nodes
        {
            let filter: Vec<String> = topic_filter(prefixes)
                .into_iter()
                .map(str::to_string)
                .collect();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut warned = false;
                // Retry delay between connection attempts to a node that is down.
                let mut backoff = Duration::from_millis(200);
                loop {
                    let refs: Vec<&str> = filter.iter().map(String::as_str).collect();
                    match Subscriber::connect(&endpoint, &refs, timeout).await {
                        Ok(subscriber) => {
                            let subscriber = subscriber.with_keys(keys.clone());
                            if warned {
                                eprintln!("nodectl: {node}: connected");
                            }
                            warned = false;
                            backoff = Duration::from_millis(200);
                            if !forward(subscriber, tx.clone()).await {
                                return;
                            }
                        }
                        Err(e) if !warned => {
                            eprintln!("nodectl: {node}: {e}; retrying in the background");
                            warned = true;
                        }
                        Err(_) => {}
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            });
        }
        drop(tx);
        print_until(rx, count, json).await
    })
}

fn topic_filter(prefixes: &[String]) -> Vec<&str> {
    if prefixes.is_empty() {
        vec![""]
    } else {
        prefixes.iter().map(String::as_str).collect()
    }
}

/// Passes decoded messages on until the subscriber fails (then true: reconnect) or
/// the printer is gone (false).
/// A message that cannot be read is reported once, not once per message: a
/// subscriber without the right key would otherwise print a line per message.
async fn forward(mut subscriber: Subscriber, tx: mpsc::Sender<Published>) -> bool {
    let mut reported = std::collections::HashSet::new();
    loop {
        match subscriber.recv_published().await {
            Ok(message) => {
                if tx.send(message).await.is_err() {
                    return false;
                }
            }
            Err(e @ (TransportError::Codec(_) | TransportError::Refused { .. })) => {
                let why = match &e {
                    TransportError::Refused { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                if reported.len() < 100 && reported.insert(why) {
                    eprintln!("nodectl: {e}");
                }
            }
            Err(_) => return true,
        }
    }
}

async fn print_until(
    mut rx: mpsc::Receiver<Published>,
    count: Option<u64>,
    json: bool,
) -> ExitCode {
    let mut seen = 0u64;
    loop {
        let message = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        };
        let Some(message) = message else {
            return ExitCode::SUCCESS;
        };
        let lines = if json {
            json_lines(&message)
        } else {
            human_lines(&message)
        };
        let mut out = std::io::stdout().lock();
        for line in lines {
            // A closed pipe (`| head`) ends the listener quietly.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return ExitCode::SUCCESS;
            }
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// One JSON object per event, statistic or output line.
fn json_lines(message: &Published) -> Vec<String> {
    match message {
        Published::Event(e) => {
            vec![serde_json::json!({ "topic": e.topic(), "event": e }).to_string()]
        }
        Published::Stat(s) => {
            vec![serde_json::json!({ "topic": s.topic(), "stat": s }).to_string()]
        }
        Published::Log(batch) => {
            let topic = batch.topic();
            batch
                .lines
                .iter()
                .map(|line| {
                    serde_json::json!({
                        "topic": topic,
                        "node": batch.node,
                        "watcher": batch.watcher,
                        "line": line,
                    })
                    .to_string()
                })
                .collect()
        }
    }
}

/// One readable line per event, statistic or output line: the topic, then the
/// details.
pub fn human_lines(message: &Published) -> Vec<String> {
    match message {
        Published::Event(e) => vec![format!("{} {}", e.topic(), event_details(e))],
        Published::Stat(s) => vec![format!("{} {}", s.topic(), stat_details(s))],
        Published::Log(batch) => {
            let topic = batch.topic();
            batch
                .lines
                .iter()
                .map(|l| format!("{topic} pid={} wid={} {}", l.pid, l.wid, l.text))
                .collect()
        }
    }
}

fn event_details(event: &Event) -> String {
    match &event.kind {
        EventKind::Spawn { pid, wid } => format!("pid={pid} wid={wid}"),
        EventKind::SpawnFailed { error } => format!("error={error:?}"),
        EventKind::Reap {
            pid,
            wid,
            exit,
            expected,
            uptime,
        } => format!(
            "pid={pid} wid={wid} {exit} {} after {}",
            if *expected { "(asked)" } else { "(unexpected)" },
            human_duration(*uptime)
        ),
        EventKind::Kill { pid, signal, group } => {
            format!(
                "pid={pid} signal={signal}{}",
                if *group { " group" } else { "" }
            )
        }
        EventKind::Updated { keys } => format!("keys={}", keys.join(",")),
        EventKind::Flapping { attempt, retry_in } => match retry_in {
            Some(r) => format!("attempt={attempt} retry_in={r}s"),
            None => format!("attempt={attempt} gave up"),
        },
        EventKind::HookSuccess {
            hook,
            duration,
            pid,
        } => format!("hook={hook}{} took {duration:.3}s", pid_part(*pid)),
        EventKind::HookFailure {
            hook,
            pid,
            error,
            ignored,
            ..
        } => format!(
            "hook={hook}{} error={error:?}{}",
            pid_part(*pid),
            if *ignored { " (ignored)" } else { "" }
        ),
        _ => String::new(),
    }
}

fn pid_part(pid: Option<u32>) -> String {
    pid.map(|p| format!(" pid={p}")).unwrap_or_default()
}

fn stat_details(stat: &Stat) -> String {
    match &stat.kind {
        StatKind::Host(h) => format!(
            "cpu={:.1}% load={:.2} mem={}/{} processes={}",
            h.cpu,
            h.load[0],
            human_bytes(h.memory_used),
            human_bytes(h.memory_total),
            h.processes
        ),
        StatKind::Watcher(w) => format!(
            "processes={} cpu={:.1}% rss={}",
            w.processes,
            w.cpu,
            human_bytes(w.rss)
        ),
        StatKind::Process(p) => format!(
            "wid={} cpu={:.1}% rss={} threads={} age={}",
            p.wid,
            p.cpu,
            human_bytes(p.rss),
            p.threads,
            human_duration(p.age)
        ),
        StatKind::Pool(pool) => {
            let up = pool
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Up)
                .count();
            let others: Vec<String> = pool
                .nodes
                .iter()
                .filter(|n| n.state != NodeState::Up)
                .map(|n| format!("{}={}", n.name, n.state))
                .collect();
            format!(
                "pool={} up={up}/{} processes={} cpu={:.1}% mem={}/{}{}",
                stat.node,
                pool.nodes.len(),
                pool.processes,
                pool.cpu,
                human_bytes(pool.memory_used),
                human_bytes(pool.memory_total),
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" {}", others.join(" "))
                }
            )
        }
        _ => String::new(),
    }
}
