//! `nodectl --pool`: fan-out, partial failure, selection, placement, rolling
//! restarts, exec templates, aggregated stats and listen, against real agents.

use std::process::Output;
use std::time::{Duration, Instant};

use ringmaster_protocol::{Command, Response};
use ringmaster_tests::{NodeDef, TestPool};

const NODES: [NodeDef<'static>; 3] = [
    NodeDef {
        name: "p-a",
        labels: "zone = \"eu-1\"",
    },
    NodeDef {
        name: "p-b",
        labels: "zone = \"eu-1\"",
    },
    NodeDef {
        name: "p-c",
        labels: "zone = \"eu-2\"",
    },
];

const SLEEPER: &str = "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

/// Table rows (after the header) whose first column is `node`.
fn rows_of<'a>(text: &'a str, node: &str) -> Vec<&'a str> {
    text.lines()
        .skip(1)
        .filter(|l| l.split_whitespace().next() == Some(node))
        .collect()
}

#[tokio::test]
async fn status_fans_out_and_a_dead_node_is_a_partial_failure() {
    let mut pool = TestPool::start("fan", &NODES, "", SLEEPER);
    for agent in &pool.agents {
        agent.wait_pids("w", 2).await;
    }
    let out = pool.nodectl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NODE"), "{text}");
    for node in ["p-a", "p-b", "p-c"] {
        let rows = rows_of(&text, node);
        assert_eq!(rows.len(), 1, "{text}");
        assert!(
            rows[0].contains("active") && rows[0].contains("2/2"),
            "{text}"
        );
    }

    pool.agent_mut("p-b").kill9();
    let started = Instant::now();
    let out = pool.nodectl(&["status"]);
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(4),
        "partial failure: {}",
        stderr(&out)
    );
    assert!(rows_of(&stdout(&out), "p-b").is_empty());
    assert_eq!(rows_of(&stdout(&out), "p-a").len(), 1);
    let err = stderr(&out);
    assert!(err.contains("p-b: unreachable"), "{err}");
    assert!(err.contains("1 of 3 nodes"), "{err}");
    // The pool timeout is 2 s: a dead node costs at most that, never a hang.
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let out = pool.nodectl(&["--json", "numprocesses"]);
    assert_eq!(out.status.code(), Some(4));
    let value = json(&out);
    let nodes = value["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let b = nodes.iter().find(|n| n["node"] == "p-b").unwrap();
    assert_eq!(b["ok"], false);
    assert_eq!(b["error"]["kind"], "unreachable");
    let a = nodes.iter().find(|n| n["node"] == "p-a").unwrap();
    assert_eq!(a["result"], 2);

    pool.agent_mut("p-a").kill9();
    pool.agent_mut("p-c").kill9();
    let out = pool.nodectl(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "all unreachable: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn commands_skip_nodes_without_the_watcher_and_select_by_node_and_label() {
    let pool = TestPool::start("sel", &NODES, "", SLEEPER);
    pool.agent("p-c")
        .call(Command::Add {
            name: "only-c".into(),
            cmd: "sleep 1000".into(),
            args: vec![],
            options: Default::default(),
            start: false,
        })
        .await;
    let out = pool.nodectl(&["start", "only-c"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(rows_of(&stdout(&out), "p-c").len(), 1, "{}", stdout(&out));
    assert!(stderr(&out).contains("p-a: skipped (no watcher 'only-c')"));
    pool.agent("p-c").wait_pids("only-c", 1).await;

    let out = pool.nodectl(&["stop", "nowhere"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no targeted node of pool 'sel' has watcher 'nowhere'"));

    let out = pool.nodectl(&["--where", "zone=eu-1", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert_eq!(rows_of(&text, "p-a").len(), 1);
    assert_eq!(rows_of(&text, "p-b").len(), 1);
    assert!(rows_of(&text, "p-c").is_empty(), "{text}");

    let out = pool.nodectl(&["--node", "p-b,p-c", "numwatchers"]);
    let text = stdout(&out);
    assert!(rows_of(&text, "p-a").is_empty(), "{text}");
    assert!(rows_of(&text, "p-c")[0].ends_with('2'), "{text}");

    let out = pool.nodectl(&["--node", "p-z", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no node 'p-z'") && stderr(&out).contains("p-a, p-b, p-c"));
    let out = pool.nodectl(&["--where", "zone=us-1", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("zone=us-1"));
    let out = pool.nodectl(&["--where", "zone", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(ringmaster_tests::bin_path("nodectl"))
        .args([
            "--pools",
            "/nonexistent/pools.toml",
            "--pool",
            "x",
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/pools.toml"),
        "{}",
        stderr(&out)
    );
}

/// Numbers of processes of `watcher` per node (0 where it does not exist).
async fn counts(pool: &TestPool, watcher: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for agent in &pool.agents {
        let n = match agent
            .client()
            .call(Command::List {
                name: Some(watcher.into()),
            })
            .await
        {
            Ok(Response::Processes(list)) => list.len(),
            _ => 0,
        };
        out.push((agent.node.clone(), n));
    }
    out
}

fn expect(list: &[(&str, usize)]) -> Vec<(String, usize)> {
    list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[tokio::test]
async fn placement_strategies_choose_the_right_nodes() {
    let pool = TestPool::start("place", &NODES, "", "");
    // Known process counts: p-a 3, p-b 0, p-c 1.
    for (node, n) in [("p-a", 3), ("p-c", 1)] {
        let out = pool.nodectl(&[
            "--node",
            node,
            "add",
            "base",
            "--start",
            "-n",
            &n.to_string(),
            "--cmd",
            "sleep 1000",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    // least-loaded: the three agents share this host, so their load per CPU is the
    // same (the kernel updates it every 5 s; the snapshots are taken within
    // milliseconds) and the tie goes to the fewest processes: p-b.
    let out = pool.nodectl(&[
        "--json",
        "add",
        "job",
        "-n",
        "1",
        "--strategy",
        "least-loaded",
        "--dry-run",
        "--cmd",
        "sleep 1000",
    ]);
    let plan = json(&out);
    assert_eq!(plan["placements"][0]["node"], "p-b", "{plan}");
    assert_eq!(plan["placements"].as_array().unwrap().len(), 1, "{plan}");

    // --dry-run changes nothing and says why.
    let out = pool.nodectl(&[
        "add",
        "job",
        "-n",
        "2",
        "--strategy",
        "fewest-processes",
        "--dry-run",
        "--cmd",
        "sleep 1000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("dry run"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("processes supervised"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        counts(&pool, "job").await,
        expect(&[("p-a", 0), ("p-b", 0), ("p-c", 0)])
    );

    // fewest-processes: p-b (0) and p-c (1) fill up before p-a (3) is used.
    let out = pool.nodectl(&[
        "add",
        "job",
        "-n",
        "3",
        "--strategy",
        "fewest-processes",
        "--start",
        "--cmd",
        "sleep 1000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed = counts(&pool, "job").await;
    assert_eq!(placed[0], ("p-a".to_string(), 0), "{placed:?}");
    assert_eq!(placed[1].1 + placed[2].1, 3, "{placed:?}");
    assert!(placed[1].1 >= 1 && placed[2].1 >= 1, "{placed:?}");

    // round-robin over the nodes that have the watcher (incr), by name, continuing
    // from the pool's count of it: one each.
    let out = pool.nodectl(&["incr", "job", "2", "--strategy", "round-robin"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = counts(&pool, "job").await;
    assert_eq!(after[0].1, 0, "p-a has no 'job': not a candidate for incr");
    assert_eq!(after[1].1 + after[2].1, 5, "{after:?}");
    assert_eq!(after[1].1, placed[1].1 + 1, "{after:?}");
    assert_eq!(after[2].1, placed[2].1 + 1, "{after:?}");

    // spread:zone balances eu-1 (p-a, p-b) against eu-2 (p-c).
    let out = pool.nodectl(&[
        "--json",
        "add",
        "web",
        "-n",
        "4",
        "--strategy",
        "spread:zone",
        "--dry-run",
        "--cmd",
        "sleep 1000",
    ]);
    let plan = json(&out);
    let placements = plan["placements"].as_array().unwrap();
    let per_node = |n: &str| {
        placements
            .iter()
            .find(|p| p["node"] == n)
            .map_or(0, |p| p["count"].as_u64().unwrap())
    };
    assert_eq!(per_node("p-c"), 2, "{plan}");
    assert_eq!(per_node("p-a") + per_node("p-b"), 2, "{plan}");

    // An explicit node takes everything.
    let out = pool.nodectl(&[
        "--node",
        "p-b",
        "add",
        "solo",
        "-n",
        "2",
        "--start",
        "--cmd",
        "sleep 1000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        counts(&pool, "solo").await,
        expect(&[("p-a", 0), ("p-b", 2), ("p-c", 0)])
    );

    // A strategy label no node has: a clear error, nothing changed.
    let out = pool.nodectl(&["add", "x", "--strategy", "spread:rack", "--cmd", "sleep 1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no label 'rack'"), "{}", stderr(&out));
    let out = pool.nodectl(&["add", "x", "--strategy", "busiest", "--cmd", "sleep 1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn rolling_restart_goes_batch_by_batch_and_stops_at_a_failing_batch() {
    let pool = TestPool::start(
        "roll",
        &NODES,
        "",
        "[watchers.w]\ncmd = \"sh -c 'test -e broken && exit 1; exec sleep 1000'\"\nnumprocesses = 2\nworking_dir = \".\"\n",
    );
    let mut before = Vec::new();
    for agent in &pool.agents {
        before.push(agent.wait_pids("w", 2).await);
    }
    let out = pool.nodectl(&["restart", "w", "--batch", "1", "--settle", "0.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut after = Vec::new();
    for (agent, old) in pool.agents.iter().zip(&before) {
        let pids = agent.wait_pids("w", 2).await;
        assert!(
            pids.iter().all(|p| !old.contains(p)),
            "{} restarted",
            agent.node
        );
        after.push(pids);
    }

    // p-b's processes now fail at start: its batch fails, p-c is not touched.
    std::fs::write(pool.agent("p-b").dir().join("broken"), b"").unwrap();
    let out = pool.nodectl(&["restart", "w", "--batch", "1", "--settle", "0.2"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("p-b: not healthy afterwards"), "{err}");
    assert!(err.contains("p-c: not attempted (batch 2 failed)"), "{err}");
    assert_eq!(pool.agent("p-c").pids("w").await, after[2], "p-c untouched");
}

#[tokio::test]
async fn exec_runs_templates_where_allowed() {
    let pool = TestPool::start("exec", &NODES, "allow_exec = true", "");
    let out = pool.nodectl(&["exec", "--", "echo {{node}} {{label.zone}} first={{first}}"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("p-a: p-a eu-1 first=p-a"), "{text}");
    assert!(text.contains("p-c: p-c eu-2 first=p-a"), "{text}");
    assert_eq!(rows_of(&text, "p-b").len(), 1, "summary row: {text}");

    let out = pool.nodectl(&["--json", "exec", "--", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "every node exited non-zero");
    let value = json(&out);
    assert_eq!(value["nodes"][0]["result"]["code"], 3);

    let out = pool.nodectl(&["exec", "--", "echo {{label.rack}}"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("node 'p-a' has no label 'rack'"),
        "{}",
        stderr(&out)
    );

    // One node without allow_exec: partial failure, named.
    let forbidding = TestPool::start("exec2", &NODES[..1], "", "");
    let out = forbidding.nodectl(&["exec", "--", "true"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("allow_exec"), "{}", stderr(&out));
}

#[tokio::test]
async fn stats_nodes_and_listen_aggregate_across_nodes() {
    let pool = TestPool::start("agg", &NODES, "stats_interval = 0.2", SLEEPER);
    for agent in &pool.agents {
        agent.wait_pids("w", 2).await;
    }
    let out = pool.nodectl(&["nodes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for node in ["p-a", "p-b", "p-c"] {
        let row = rows_of(&text, node);
        assert!(
            row[0].contains(" up ") && row[0].contains("zone="),
            "{text}"
        );
    }

    // Stats need one sample on every node: poll until the totals are complete.
    ringmaster_tests::wait_for(
        "pool stats totals of 6 processes",
        ringmaster_tests::DEADLINE,
        || async {
            let out = pool.nodectl(&["--json", "stats"]);
            let value = json(&out);
            value["totals"]
                .as_array()
                .and_then(|t| t.iter().find(|w| w["watcher"] == "w"))
                .is_some_and(|w| w["processes"] == 6 && w["nodes"] == 3)
        },
    )
    .await;
    let out = pool.nodectl(&["stats"]);
    assert!(
        stdout(&out).contains("pool 'agg' totals"),
        "{}",
        stdout(&out)
    );

    let out = pool.nodectl(&["listen", "stat.", "--count", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let seen: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.split('.').nth(1)).collect();
    assert!(
        seen.len() >= 2,
        "messages from several nodes: {seen:?}\n{text}"
    );
}

#[tokio::test]
async fn an_explicit_endpoint_wins_over_a_pool_from_the_environment() {
    let pool = TestPool::start("envpool", &NODES[..2], "", SLEEPER);
    let agent = pool.agent("p-a");
    let run = |args: &[&str]| {
        std::process::Command::new(ringmaster_tests::bin_path("nodectl"))
            .env("RINGMASTER_POOLS", pool.pools_file())
            .env("RINGMASTER_POOL", "envpool")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["numwatchers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("NODE"),
        "the pool from the environment: {}",
        stdout(&out)
    );
    let out = run(&["--endpoint", &agent.control, "numwatchers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1", "one agent, no NODE column");
}

#[tokio::test]
async fn upgrade_goes_batch_by_batch_keeps_every_pid_and_stops_at_a_failing_batch() {
    let pool = TestPool::start(
        "upgrade",
        &NODES,
        "",
        "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n",
    );
    let mut before = Vec::new();
    for agent in &pool.agents {
        before.push(agent.wait_pids("w", 2).await);
    }
    let out = pool.nodectl(&["upgrade", "--batch", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NODE"), "a table: {text}");
    for agent in &pool.agents {
        let row = rows_of(&text, &agent.node);
        assert_eq!(row.len(), 1, "one row for {}: {text}", agent.node);
        assert!(
            row[0].contains(&agent.pid().to_string()),
            "{} kept pid {}: {text}",
            agent.node,
            agent.pid()
        );
    }
    for (agent, old) in pool.agents.iter().zip(&before) {
        assert_eq!(
            &agent.pids("w").await,
            old,
            "{} kept its processes",
            agent.node
        );
        match agent.call(Command::NodeInfo {}).await {
            Response::NodeInfo(info) => assert_eq!(info.upgrades, 1, "{}", agent.node),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    // A binary the first batch refuses: the rollout stops there.
    let out = pool.nodectl(&["upgrade", "--batch", "1", "--binary", "/bin/true"]);
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("p-a:") && err.contains("not a nodeagent binary"),
        "{err}"
    );
    assert!(err.contains("p-b: not attempted (batch 1 failed)"), "{err}");
    assert!(err.contains("p-c: not attempted (batch 1 failed)"), "{err}");
    for agent in &pool.agents {
        match agent.call(Command::NodeInfo {}).await {
            Response::NodeInfo(info) => assert_eq!(info.upgrades, 1, "{}", agent.node),
            other => panic!("unexpected reply {other:?}"),
        }
    }
}
