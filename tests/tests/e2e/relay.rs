//! `nodemeta` against a pool of real agents: relayed stats and events (bodies
//! unchanged), `stat.pool` totals, a killed agent going stale and coming back, and a
//! node that is down when nodemeta starts, and a node whose silences make nodemeta
//! reconnect while it publishes.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use ringmaster_protocol::stats::{NodeState, PoolStats, Stat, StatKind, POOL_TOPIC};
use ringmaster_protocol::transport::Subscriber;
use ringmaster_protocol::{Codec, Command as Cmd, Event, EventKind};
use ringmaster_tests::{bin_path, NodeDef, NodeMeta, TestPool, DEADLINE};

const NODES: [NodeDef<'static>; 3] = [
    NodeDef {
        name: "r-a",
        labels: "zone = \"eu-1\"",
    },
    NodeDef {
        name: "r-b",
        labels: "zone = \"eu-1\"",
    },
    NodeDef {
        name: "r-c",
        labels: "zone = \"eu-2\"",
    },
];

const WATCHERS: &str = "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n";

fn start_pool() -> TestPool {
    TestPool::start("t", &NODES, "stats_interval = 0.2", WATCHERS)
}

/// Reads relayed messages until `pick` returns something; an error says why not
/// (timeout after [`DEADLINE`], or a broken subscription).
async fn next_where<T>(
    sub: &mut Subscriber,
    pick: impl FnMut(&str, &[u8]) -> Option<T>,
) -> Result<T, String> {
    next_within(sub, DEADLINE, pick).await
}

/// [`next_where`] with a timeout of its own.
async fn next_within<T>(
    sub: &mut Subscriber,
    timeout: Duration,
    mut pick: impl FnMut(&str, &[u8]) -> Option<T>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Ok((topic, body))) => {
                if let Some(found) = pick(&topic, &body) {
                    return Ok(found);
                }
            }
            Ok(Err(e)) => return Err(format!("the subscription to nodemeta failed: {e}")),
            Err(_) => return Err(format!("timed out after {timeout:?}")),
        }
    }
}

/// The pool totals in a `stat.pool` message (None for other topics).
fn pool_stats(topic: &str, body: &[u8]) -> Option<PoolStats> {
    if topic != POOL_TOPIC {
        return None;
    }
    let stat: Stat = Codec::default().decode(body).unwrap();
    assert_eq!(stat.node, "t", "stat.pool names the pool");
    assert!(stat.seq > 0 && stat.time > 0.0, "{stat:?}");
    match stat.kind {
        StatKind::Pool(pool) => {
            assert!((pool.interval - 0.2).abs() < 1e-9, "{pool:?}");
            Some(pool)
        }
        other => panic!("stat.pool carries {other:?}"),
    }
}

/// The node named in a relayed host stats message (`stat.<node>`), checking that the
/// body decodes and names the node of its topic.
fn host_node(topic: &str, body: &[u8]) -> Option<String> {
    let rest = topic.strip_prefix("stat.")?;
    if rest.contains('.') || topic == POOL_TOPIC {
        return None;
    }
    let stat: Stat = Codec::default().decode(body).unwrap();
    assert!(matches!(stat.kind, StatKind::Host(_)), "{topic}: {stat:?}");
    assert_eq!(stat.node, rest, "{topic} carries another node's stats");
    Some(stat.node)
}

fn state(pool: &PoolStats, node: &str) -> NodeState {
    pool.nodes
        .iter()
        .find(|n| n.name == node)
        .map_or_else(|| panic!("{node} missing from {pool:?}"), |n| n.state)
}

fn states(pool: &PoolStats) -> Vec<(String, NodeState)> {
    pool.nodes
        .iter()
        .map(|n| (n.name.clone(), n.state))
        .collect()
}

fn watcher_processes(pool: &PoolStats, name: &str) -> Option<u32> {
    pool.watchers
        .iter()
        .find(|w| w.name == name)
        .map(|w| w.processes)
}

/// Waits until the host stats of every node in `nodes` have been relayed.
async fn wait_hosts(sub: &mut Subscriber, nodes: &[&str], what: &str) {
    let mut seen = BTreeSet::new();
    next_where(sub, |topic, body| {
        let node = host_node(topic, body)?;
        if nodes.contains(&node.as_str()) {
            seen.insert(node);
        }
        (seen.len() == nodes.len()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e} waiting for {what}; host stats seen from {seen:?}"));
}

#[tokio::test]
async fn relays_a_pool_and_follows_a_node_that_dies_and_returns() {
    let mut pool = start_pool();
    for agent in &pool.agents {
        agent.wait_pids("w", 2).await;
    }
    // Straight from r-a, to compare bodies byte for byte with what nodemeta relays.
    let mut direct = pool.agent("r-a").subscribe("stat.r-a").await;
    let mut meta = NodeMeta::start(&pool);
    let mut sub = meta.subscribe(&["stat.", "event."]).await;
    let codec = Codec::default();

    // Host stats of every node arrive, relayed unchanged.
    let mut hosts = BTreeSet::new();
    let mut relayed_a = Vec::new();
    next_where(&mut sub, |topic, body| {
        let node = host_node(topic, body)?;
        if node == "r-a" {
            let stat: Stat = codec.decode(body).unwrap();
            relayed_a.push((stat.seq, body.to_vec()));
        }
        hosts.insert(node);
        (hosts.len() == 3).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e} waiting for the host stats of 3 nodes; saw {hosts:?}"));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (topic, body) = tokio::time::timeout_at(deadline, direct.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("none of the relayed stat.r-a bodies {relayed_a:?} was seen from r-a")
            })
            .unwrap();
        if topic != "stat.r-a" {
            continue;
        }
        let stat: Stat = codec.decode(&body).unwrap();
        if let Some((_, relayed)) = relayed_a.iter().find(|(seq, _)| *seq == stat.seq) {
            assert_eq!(&relayed[..], &body[..], "nodemeta changed the body");
            break;
        }
    }
    drop(direct);

    // Pool totals: 3 nodes up, 2 processes each, all in watcher w.
    let mut last = None;
    next_where(&mut sub, |topic, body| {
        let totals = pool_stats(topic, body)?;
        let done = totals.nodes.iter().all(|n| n.state == NodeState::Up)
            && totals.processes == 6
            && watcher_processes(&totals, "w") == Some(6)
            && totals.cpus > 0
            && totals.memory_total > 0;
        last = Some(totals);
        done.then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!("{e} waiting for 3 nodes up with 6 processes; last stat.pool: {last:#?}")
    });
    let last = last.unwrap();
    assert_eq!(
        last.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["r-a", "r-b", "r-c"]
    );
    assert!(last.nodes.iter().all(|n| n.silent_for.is_some()));

    // An event on one agent comes through nodemeta. On a loaded machine a node
    // can be silent long enough for nodemeta to be subscribing to it afresh just
    // then, and what the node publishes before its PUB registers the fresh
    // subscription is lost (PUB/SUB acknowledges nothing; the README says so).
    // So a try that sees nothing is undone and made again: r-b ends with 3.
    const TRIES: u32 = 4;
    let mut tries = 0;
    let event = loop {
        tries += 1;
        pool.agent("r-b")
            .call(Cmd::Incr {
                name: "w".into(),
                nb: 1,
            })
            .await;
        let seen = next_within(&mut sub, DEADLINE / TRIES, |topic, body| {
            (topic == "event.r-b.w.spawn").then(|| {
                let event: Event = codec.decode(body).unwrap();
                assert_eq!(event.topic(), topic);
                event
            })
        })
        .await;
        match seen {
            Ok(event) => break event,
            Err(e) if tries == TRIES => {
                panic!("{e} waiting for event.r-b.w.spawn through nodemeta, {TRIES} times")
            }
            Err(_) => {
                pool.agent("r-b")
                    .call(Cmd::Decr {
                        name: "w".into(),
                        nb: 1,
                    })
                    .await;
                pool.agent("r-b").wait_pids("w", 2).await;
            }
        }
    };
    assert_eq!(event.node, "r-b");
    assert!(matches!(event.kind, EventKind::Spawn { .. }), "{event:?}");

    // r-c dies without a word: stale within a few intervals, the others stay up.
    let orphans = pool.agent("r-c").pids("w").await;
    pool.agent_mut("r-c").kill9();
    for pid in orphans {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut last = None;
    let stale = next_where(&mut sub, |topic, body| {
        let totals = pool_stats(topic, body)?;
        let done = state(&totals, "r-c") == NodeState::Stale
            && state(&totals, "r-a") == NodeState::Up
            && state(&totals, "r-b") == NodeState::Up;
        last = Some(states(&totals));
        done.then_some(totals)
    })
    .await
    .unwrap_or_else(|e| panic!("{e} waiting for r-c stale and r-a, r-b up; last: {last:?}"));
    let silent = stale.nodes[2].silent_for.unwrap_or_default();
    assert!(silent >= 0.5, "r-c stale after only {silent}s of silence");
    assert_eq!(
        stale.processes, 5,
        "the totals count only the nodes that are up: {stale:?}"
    );
    wait_hosts(
        &mut sub,
        &["r-a", "r-b"],
        "r-a and r-b stats while r-c is stale",
    )
    .await;

    // r-c restarts: up again, and its stats flow through nodemeta again.
    pool.agent_mut("r-c").launch();
    let mut host_c = false;
    let mut up_c = false;
    next_where(&mut sub, |topic, body| {
        if host_node(topic, body).as_deref() == Some("r-c") {
            host_c = true;
        }
        if let Some(totals) = pool_stats(topic, body) {
            up_c = state(&totals, "r-c") == NodeState::Up;
        }
        (host_c && up_c).then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!("{e} waiting for r-c back: host stats relayed {host_c}, up in stat.pool {up_c}")
    });
}

#[tokio::test]
async fn a_node_down_at_start_is_reported_down_and_the_others_relayed() {
    let mut pool = start_pool();
    pool.agent_mut("r-c").stop();
    for name in ["r-a", "r-b"] {
        pool.agent(name).wait_pids("w", 2).await;
    }
    let mut meta = NodeMeta::start(&pool);
    let mut sub = meta.subscribe(&["stat."]).await;

    wait_hosts(&mut sub, &["r-a", "r-b"], "r-a and r-b stats with r-c down").await;
    let mut last = None;
    let totals = next_where(&mut sub, |topic, body| {
        let totals = pool_stats(topic, body)?;
        let done = state(&totals, "r-a") == NodeState::Up
            && state(&totals, "r-b") == NodeState::Up
            && totals.processes == 4
            && watcher_processes(&totals, "w") == Some(4);
        last = Some(totals.clone());
        done.then_some(totals)
    })
    .await
    .unwrap_or_else(|e| panic!("{e} waiting for r-a and r-b up with 4 processes; last: {last:#?}"));
    let c = &totals.nodes[2];
    assert_eq!(c.name, "r-c");
    assert_eq!(c.state, NodeState::Down, "{totals:?}");
    assert_eq!(c.silent_for, None, "never heard from");

    // Once its agent starts, the node is up and counted.
    pool.agent_mut("r-c").launch();
    let mut last = None;
    next_where(&mut sub, |topic, body| {
        let totals = pool_stats(topic, body)?;
        let done = totals.nodes.iter().all(|n| n.state == NodeState::Up)
            && totals.processes == 6
            && watcher_processes(&totals, "w") == Some(6);
        last = Some(states(&totals));
        done.then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e} waiting for r-c up and 6 processes; last: {last:?}"));
}

#[tokio::test]
async fn nodectl_listen_follows_nodemeta_and_prints_pool_totals() {
    let pool = start_pool();
    for name in ["r-a", "r-b", "r-c"] {
        pool.agent(name).wait_pids("w", 2).await;
    }
    let mut meta = NodeMeta::start(&pool);
    // Bound once a subscription works.
    drop(meta.subscribe(&["stat.pool"]).await);
    let endpoint = meta.endpoint.clone();
    // Poll until nodemeta reports all three nodes up with their 6 processes.
    ringmaster_tests::wait_for("a stat.pool line with 3/3 nodes up", DEADLINE, || {
        let endpoint = endpoint.clone();
        async move {
            let out = Command::new(bin_path("nodectl"))
                .args(["listen", "--pubsub", &endpoint, "stat.pool", "--count", "1"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.starts_with("stat.pool pool=t up=3/3 processes=6")
        }
    })
    .await;
    let out = Command::new(bin_path("nodectl"))
        .args([
            "listen",
            "--pubsub",
            &endpoint,
            "stat.r-b.w",
            "--count",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let topic = value["topic"].as_str().unwrap();
        assert!(topic.starts_with("stat.r-b.w"), "{line}");
        assert_eq!(value["stat"]["node"], "r-b", "{line}");
    }
}

/// How many times nodemeta's log says it reconnected to a silent node.
fn silences(log: &str) -> usize {
    log.matches("nothing received for").count()
}

#[tokio::test]
async fn reconnecting_to_a_silent_node_loses_and_repeats_no_event() {
    // Without stats the agent is silent between events, and after 0.2 s of silence
    // nodemeta connects afresh: every event below is published right as that starts.
    const ROUNDS: usize = 12;
    let pool = TestPool::start(
        "q",
        &[NodeDef {
            name: "q-a",
            labels: "",
        }],
        "stats_interval = 0",
        "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 0\n",
    );
    let mut meta = NodeMeta::start_with(&pool, &["--interval", "0.2", "--stale-after", "1"]);
    let mut sub = meta.subscribe(&["event.q-a."]).await;
    let codec = Codec::default();
    let mut seqs = Vec::new();
    let mut client = pool.agent("q-a").client();
    for round in 0..ROUNDS {
        let before = silences(&meta.log());
        ringmaster_tests::wait_for(
            &format!("round {round}: nodemeta to notice 0.2 s of silence"),
            DEADLINE,
            || async { silences(&meta.log()) > before },
        )
        .await;
        let command = if round % 2 == 0 {
            Cmd::Incr {
                name: "w".into(),
                nb: 1,
            }
        } else {
            Cmd::Decr {
                name: "w".into(),
                nb: 1,
            }
        };
        client
            .call(command)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // An incr publishes a spawn; a decr a kill and then a reap.
        let last = if round % 2 == 0 { "spawn" } else { "reap" };
        let event = next_where(&mut sub, |topic, body| {
            let event: Event = codec.decode(body).unwrap();
            seqs.push(event.seq);
            topic.ends_with(last).then_some(event)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "round {round}: {e} waiting for a {last} through nodemeta (seqs so far {seqs:?}):\n{}",
                meta.log()
            )
        });
        assert_eq!(event.node, "q-a");
    }
    let expected: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "every event relayed once and in order across {ROUNDS} reconnections"
    );
    assert!(silences(&meta.log()) >= ROUNDS);
}
