//! Live statistics: topics, fields and node prefix, `nodectl stats/dstats/listen`.

use std::collections::BTreeSet;

use ringmaster_protocol::stats::StatKind;
use ringmaster_protocol::transport::{Published, Subscriber};
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::{TestAgent, DEADLINE};

const WATCHERS: &str = "stats_interval = 0.2\n\n[watchers.busy]\ncmd = \"sh -c 'while :; do :; done'\"\n\n[watchers.idle]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n";

#[tokio::test]
async fn stats_are_published_per_process_watcher_and_host() {
    let agent = TestAgent::start("stats", WATCHERS);
    let busy = agent.wait_pids("busy", 1).await[0];
    let idle: BTreeSet<u32> = agent.wait_pids("idle", 2).await.into_iter().collect();
    let mut sub = Subscriber::connect(&agent.pubsub, &["stat."], DEADLINE)
        .await
        .unwrap();
    let mut seen_processes = BTreeSet::new();
    let mut seen_watchers = BTreeSet::new();
    let mut host_seen = false;
    let mut busy_cpu: f32 = 0.0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !(host_seen && seen_watchers.len() == 2 && seen_processes.len() == 3 && busy_cpu > 20.0) {
        let message = tokio::time::timeout_at(deadline, sub.recv_published())
            .await
            .unwrap_or_else(|_| {
                panic!("stats incomplete: host {host_seen}, watchers {seen_watchers:?}, processes {seen_processes:?}, busy cpu {busy_cpu}")
            })
            .unwrap();
        let Published::Stat(stat) = message else {
            panic!("an event under stat.: {message:?}")
        };
        assert_eq!(stat.node, "stats");
        assert!(stat.time > 0.0 && stat.seq > 0);
        let topic = stat.topic();
        match &stat.kind {
            StatKind::Host(host) => {
                assert_eq!(topic, "stat.stats");
                assert_eq!(host.processes, 3);
                assert_eq!(host.watchers, 2);
                assert!(host.memory_total > 0 && host.cpus >= 1);
                assert!((host.interval - 0.2).abs() < 1e-9);
                host_seen = true;
            }
            StatKind::Watcher(w) => {
                assert_eq!(topic, format!("stat.stats.{}", w.name));
                let expected = if w.name == "busy" { 1 } else { 2 };
                assert_eq!(w.processes, expected, "{w:?}");
                assert!(w.rss > 0);
                seen_watchers.insert(w.name.clone());
            }
            StatKind::Process(p) => {
                assert_eq!(topic, format!("stat.stats.{}.{}", p.watcher, p.pid));
                assert!(p.pid == busy || idle.contains(&p.pid), "{p:?}");
                assert!(p.rss > 0 && p.threads >= 1 && p.wid >= 1);
                if p.pid == busy {
                    busy_cpu = p.cpu;
                }
                seen_processes.insert(p.pid);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The command answers from the latest sample.
    let Response::Stats(report) = agent
        .call(Command::Stats {
            name: Some("idle".into()),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(report.processes.len(), 2);
    assert!(report.processes.iter().all(|p| p.watcher == "idle"));
    assert_eq!(report.watchers.len(), 1);
    let Response::DStats(own) = agent.call(Command::DStats {}).await else {
        panic!()
    };
    assert_eq!(own.pid, agent.pid());
    assert!(own.rss > 0);
}

#[tokio::test]
async fn nodectl_stats_dstats_and_listen() {
    let agent = TestAgent::start("ctlstats", WATCHERS);
    agent.wait_pids("idle", 2).await;
    ringmaster_tests::wait_for("a first sample", DEADLINE, || async {
        matches!(agent.client().call(Command::Stats { name: None }).await, Ok(Response::Stats(r)) if r.processes.len() == 3)
    })
    .await;
    let out = agent.nodectl(&["stats"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("WATCHER") && header.contains("CPU%") && header.contains("RSS"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("idle ")).count(),
        3,
        "2 processes and a total: {text}"
    );
    let out = agent.nodectl(&["--json", "stats", "busy"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["processes"].as_array().map(Vec::len), Some(1));
    let out = agent.nodectl(&["dstats"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&agent.pid().to_string()));
    let out = agent.nodectl(&["listen", "--count", "3", "stat.ctlstats.idle."]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with("stat.ctlstats.idle.") && l.contains("rss=")),
        "{text}"
    );
    let out = agent.nodectl(&["--json", "listen", "--count", "1", "stat.ctlstats.busy"]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["topic"]
        .as_str()
        .unwrap()
        .starts_with("stat.ctlstats.busy"));
}
