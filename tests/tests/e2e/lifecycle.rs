//! Spawning, crashes, respawn, flapping, graceful stop, shutdown.

use std::time::{Duration, Instant};

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::{Command, EventKind, Response};
use ringmaster_tests::{group_members, pid_alive, wait_for, TestAgent, DEADLINE};

const SLEEPER: &str = "\n[watchers.sleeper]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n";

#[tokio::test]
async fn spawns_watchers_in_their_own_process_groups() {
    let agent = TestAgent::start("spawn", SLEEPER);
    agent.wait_pids("sleeper", 2).await;
    for pid in agent.pids("sleeper").await {
        assert!(pid_alive(pid));
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(
            pgid.as_raw() as u32,
            pid,
            "each process leads its own group"
        );
    }
    assert_eq!(agent.state("sleeper").await, WatcherState::Active);
}

#[tokio::test]
async fn a_crash_is_reaped_once_and_respawned_at_once_in_the_same_slot() {
    let agent = TestAgent::start("crash", SLEEPER);
    agent.wait_pids("sleeper", 2).await;
    let mut events = agent.events("event.crash.sleeper.").await;
    let list = match agent
        .call(Command::List {
            name: Some("sleeper".into()),
        })
        .await
    {
        Response::Processes(list) => list,
        other => panic!("{other:?}"),
    };
    let victim = &list[0];
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let reap = events
        .wait(
            "reap of the victim",
            DEADLINE,
            |e| matches!(e.kind, EventKind::Reap { pid, .. } if pid == victim.pid),
        )
        .await;
    let EventKind::Reap {
        exit,
        expected,
        wid,
        ..
    } = reap.kind
    else {
        unreachable!()
    };
    assert_eq!(exit.signal, Some(9));
    assert!(!expected, "a crash is not an expected exit");
    assert_eq!(wid, victim.wid);
    let spawn = events
        .wait("respawn", DEADLINE, |e| {
            matches!(e.kind, EventKind::Spawn { .. })
        })
        .await;
    let respawn_latency = killed_at.elapsed();
    let EventKind::Spawn {
        pid: new_pid,
        wid: new_wid,
    } = spawn.kind
    else {
        unreachable!()
    };
    assert_eq!(new_wid, victim.wid, "the replacement takes the same slot");
    assert!(spawn.seq > reap.seq, "sequence numbers increase");
    assert_eq!(spawn.node, "crash");
    assert!(
        respawn_latency < Duration::from_secs(2),
        "respawned after {respawn_latency:?}"
    );
    let pids = agent.pids("sleeper").await;
    assert!(pids.contains(&new_pid) && !pids.contains(&victim.pid));
    let victim_reaps = events
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Reap { pid, .. } if pid == victim.pid))
        .count();
    assert_eq!(victim_reaps, 1, "exactly one reap per exit");
}

#[tokio::test]
async fn flapping_stops_the_watcher_retries_then_gives_up() {
    let agent = TestAgent::start(
        "flap",
        "\n[watchers.flappy]\ncmd = \"sh -c 'exit 1'\"\nretry_in = 0.3\nmax_retry = 1\nautostart = false\n",
    );
    let mut events = agent.events("event.flap.flappy.").await;
    // The first spawn may flap before `start` even replies.
    let _ = agent
        .client()
        .call(Command::Start {
            name: Some("flappy".into()),
        })
        .await;
    let first = events
        .wait("first flapping event", DEADLINE, |e| {
            matches!(e.kind, EventKind::Flapping { .. })
        })
        .await;
    assert!(
        matches!(first.kind, EventKind::Flapping { attempt: 1, retry_in: Some(r) } if (r - 0.3).abs() < 1e-9)
    );
    let second = events
        .wait("second flapping event", DEADLINE, |e| {
            matches!(e.kind, EventKind::Flapping { .. })
        })
        .await;
    assert!(
        matches!(
            second.kind,
            EventKind::Flapping {
                attempt: 2,
                retry_in: None
            }
        ),
        "{second:?}"
    );
    wait_for("the watcher to stay stopped", DEADLINE, || async {
        agent.state("flappy").await == WatcherState::Stopped
    })
    .await;
    let Response::Status(status) = agent
        .call(Command::Status {
            name: Some("flappy".into()),
        })
        .await
    else {
        panic!()
    };
    let error = status[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("gave up"), "{error}");
    let reaps = events
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Reap { .. }))
        .count();
    let spawns = events
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Spawn { .. }))
        .count();
    assert_eq!(reaps, spawns, "one reap per spawned process");
    // A user start resets the count and tries again.
    let _ = agent
        .client()
        .call(Command::Start {
            name: Some("flappy".into()),
        })
        .await;
    let again = events
        .wait("flapping after a user start", DEADLINE, |e| {
            matches!(e.kind, EventKind::Flapping { .. })
        })
        .await;
    assert!(
        matches!(again.kind, EventKind::Flapping { attempt: 1, .. }),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_commanded_stop_never_counts_as_flapping() {
    let agent = TestAgent::start(
        "noflap",
        "\n[watchers.many]\ncmd = \"sleep 1000\"\nnumprocesses = 4\n",
    );
    agent.wait_pids("many", 4).await;
    let mut events = agent.events("event.noflap.many.").await;
    for _ in 0..3 {
        agent
            .call(Command::Stop {
                name: Some("many".into()),
            })
            .await;
        agent
            .call(Command::Start {
                name: Some("many".into()),
            })
            .await;
    }
    agent
        .call(Command::Restart {
            name: Some("many".into()),
        })
        .await;
    events
        .wait("the last start", DEADLINE, |e| {
            matches!(e.kind, EventKind::Start {})
        })
        .await;
    assert!(
        !events
            .seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::Flapping { .. })),
        "stops were taken for flapping"
    );
    assert!(events
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Reap { .. }))
        .all(|e| matches!(e.kind, EventKind::Reap { expected: true, .. })));
    assert_eq!(agent.state("many").await, WatcherState::Active);
    assert_eq!(agent.pids("many").await.len(), 4);
}

#[tokio::test]
async fn graceful_stop_escalates_to_sigkill_after_the_timeout() {
    let agent = TestAgent::start(
        "graceful",
        "\n[watchers.stubborn]\ncmd = \"sh -c 'trap \\\"\\\" TERM; sleep 1000 & wait'\"\ngraceful_timeout = 0.5\n\n[watchers.polite]\ncmd = \"sleep 1000\"\n",
    );
    wait_for("both running", DEADLINE, || async {
        agent.pids("stubborn").await.len() == 1 && agent.pids("polite").await.len() == 1
    })
    .await;
    let pid = agent.pids("stubborn").await[0];
    let mut events = agent.events("event.graceful.").await;
    let started = Instant::now();
    let Response::Changes(report) = agent
        .call(Command::Stop {
            name: Some("stubborn".into()),
        })
        .await
    else {
        panic!()
    };
    let took = started.elapsed();
    assert_eq!(report.stopped, vec![pid]);
    assert!(
        took >= Duration::from_millis(500),
        "stopped after {took:?}, before graceful_timeout"
    );
    events
        .wait("reap", DEADLINE, |e| {
            matches!(e.kind, EventKind::Reap { .. })
        })
        .await;
    let kills: Vec<String> = events
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Kill { signal, .. } => Some(signal.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec!["SIGTERM", "SIGKILL"]);
    assert!(
        group_members(pid).is_empty(),
        "the sleep in its group was killed too"
    );
    // A polite process stops at the first signal.
    let started = Instant::now();
    agent
        .call(Command::Stop {
            name: Some("polite".into()),
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_slow_stop_never_blocks_other_commands() {
    let agent = TestAgent::start(
        "nolock",
        "\n[watchers.slow]\ncmd = \"sh -c 'trap \\\"\\\" TERM; sleep 1000 & wait'\"\ngraceful_timeout = 5\n\n[watchers.fast]\ncmd = \"sleep 1000\"\n",
    );
    wait_for("both running", DEADLINE, || async {
        agent.pids("slow").await.len() == 1 && agent.pids("fast").await.len() == 1
    })
    .await;
    let stopping = stop_in_background(agent.control.clone(), "slow");
    // While the slow stop is in progress, status and commands on another watcher answer at once.
    wait_for("slow to be stopping", DEADLINE, || async {
        agent.state("slow").await == WatcherState::Stopping
    })
    .await;
    let t = Instant::now();
    agent.call(Command::Status { name: None }).await;
    agent
        .call(Command::Incr {
            name: "fast".into(),
            nb: 1,
        })
        .await;
    agent
        .call(Command::Decr {
            name: "fast".into(),
            nb: 1,
        })
        .await;
    let took = t.elapsed();
    // Behind the stop they would have waited the whole graceful_timeout (5 s); the
    // margin below is for a loaded machine, and `slow` still stopping afterwards is
    // the proof that they did not wait.
    assert!(
        took < Duration::from_millis(2500),
        "commands waited {took:?} behind a graceful stop"
    );
    assert_eq!(agent.state("slow").await, WatcherState::Stopping);
    stopping.join().expect("the stop thread panicked");
    assert_eq!(agent.state("slow").await, WatcherState::Stopped);
}

/// Runs `stop NAME` on its own thread and runtime, so that the test can go on.
fn stop_in_background(control: String, name: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut client = ringmaster_protocol::transport::Client::new(control, DEADLINE);
            client
                .call(Command::Stop {
                    name: Some(name.into()),
                })
                .await
                .unwrap();
        });
    })
}

#[tokio::test]
async fn reload_starts_new_processes_before_stopping_old_ones() {
    let agent = TestAgent::start("reload", SLEEPER);
    agent.wait_pids("sleeper", 2).await;
    let old = agent.pids("sleeper").await;
    let mut events = agent.events("event.reload.sleeper.").await;
    let Response::Changes(report) = agent
        .call(Command::Reload {
            name: Some("sleeper".into()),
            sequential: false,
        })
        .await
    else {
        panic!()
    };
    assert_eq!(report.started.len(), 2);
    let mut stopped = report.stopped.clone();
    stopped.sort();
    assert_eq!(stopped, old);
    for _ in &old {
        events
            .wait(
                "reap of an old process",
                DEADLINE,
                |e| matches!(e.kind, EventKind::Reap { pid, .. } if old.contains(&pid)),
            )
            .await;
    }
    let first_kill = events
        .seen
        .iter()
        .position(|e| matches!(e.kind, EventKind::Kill { .. }))
        .unwrap();
    let last_spawn = events
        .seen
        .iter()
        .rposition(|e| matches!(e.kind, EventKind::Spawn { .. }))
        .unwrap();
    assert!(
        last_spawn < first_kill,
        "new processes were started before the old ones were signalled"
    );
    let new = agent.pids("sleeper").await;
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|p| report.started.contains(p)));
}

#[tokio::test]
async fn shutdown_stops_by_reverse_priority_and_leaves_no_process_behind() {
    let mut agent = TestAgent::start(
        "shutdown",
        "\n[watchers.first]\npriority = 10\ncmd = \"sh -c 'sleep 1000 & sleep 1000 & wait'\"\n\n[watchers.last]\npriority = 0\ncmd = \"sleep 1000\"\nnumprocesses = 3\n",
    );
    wait_for("everything running", DEADLINE, || async {
        agent.pids("first").await.len() == 1 && agent.pids("last").await.len() == 3
    })
    .await;
    let leader = agent.pids("first").await[0];
    wait_for("grandchildren", DEADLINE, || async {
        group_members(leader).len() == 3
    })
    .await;
    let mut all: Vec<u32> = group_members(leader);
    all.extend(agent.pids("last").await);
    let mut events = agent.events("event.shutdown.").await;
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let first_stop = events
        .wait("first stop", DEADLINE, |e| {
            matches!(e.kind, EventKind::Stop {})
        })
        .await;
    assert_eq!(
        first_stop.watcher, "last",
        "the lowest priority stops first"
    );
    events
        .wait("second stop", DEADLINE, |e| {
            matches!(e.kind, EventKind::Stop {}) && e.watcher == "first"
        })
        .await;
    let status = agent.wait_exit(DEADLINE);
    assert!(status.success(), "agent exited with {status}");
    let left: Vec<u32> = all.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[tokio::test]
async fn quit_stops_everything_and_exits() {
    let mut agent = TestAgent::start("quit", SLEEPER);
    agent.wait_pids("sleeper", 2).await;
    let pids = agent.pids("sleeper").await;
    let Response::Changes(report) = agent.call(Command::Quit {}).await else {
        panic!()
    };
    assert_eq!(report.stopped.len(), 2);
    assert!(agent.wait_exit(DEADLINE).success());
    assert!(pids.iter().all(|p| !pid_alive(*p)));
}

#[tokio::test]
async fn repeated_crashes_of_a_slot_back_off_exponentially() {
    let agent = TestAgent::start(
        "backoff",
        "\n[watchers.crashy]\ncmd = \"sh -c 'exit 3'\"\ncheck_flapping = false\nbackoff_initial = 0.1\nautostart = false\n",
    );
    let mut events = agent.events("event.backoff.crashy.").await;
    let _ = agent
        .client()
        .call(Command::Start {
            name: Some("crashy".into()),
        })
        .await;
    // The delay before each respawn, from the exit the agent reaped to the spawn
    // that replaced it, both as stamped by the agent: the time this test takes to
    // read the events, and the time `sh` takes to start, do not count.
    let mut reaped_at = None;
    let mut gaps = Vec::new();
    while gaps.len() < 5 {
        let event = events
            .wait("a reap or a respawn", DEADLINE, |e| {
                matches!(e.kind, EventKind::Spawn { .. } | EventKind::Reap { .. })
            })
            .await;
        match event.kind {
            EventKind::Reap { .. } => reaped_at = Some(event.time),
            EventKind::Spawn { .. } => {
                if let Some(reaped) = reaped_at.take() {
                    gaps.push(Duration::from_secs_f64((event.time - reaped).max(0.0)));
                }
            }
            _ => unreachable!(),
        }
    }
    // Delays: 0, then 0.1, 0.2, 0.4, 0.8 s, each less up to 20% jitter. The lower
    // bounds are exact (a timer never fires early); the upper ones leave room for a
    // loaded machine.
    assert!(
        gaps[0] < Duration::from_millis(80),
        "first respawn is immediate: {gaps:?}"
    );
    for (gap, nominal) in gaps[1..].iter().zip([0.1, 0.2, 0.4, 0.8]) {
        let low = Duration::from_secs_f64(nominal * 0.8 - 0.005);
        let high = Duration::from_secs_f64(nominal + 1.0);
        assert!(
            *gap >= low && *gap < high,
            "gap {gap:?} for a nominal {nominal}s backoff: {gaps:?}"
        );
    }
    let _ = agent
        .client()
        .call(Command::Stop {
            name: Some("crashy".into()),
        })
        .await;
}

/// A worker that forks children into its group and exits by itself: the children
/// are stopped before its slot is filled again, so respawns do not pile them up.
#[tokio::test]
async fn a_leader_that_exits_by_itself_takes_its_group_with_it() {
    let agent = TestAgent::start(
        "leftovers",
        r#"
[watchers.forker]
cmd = "sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 & done; sleep 0.5; exit 0'"
graceful_timeout = 2
"#,
    );
    let first = agent.wait_pids("forker", 1).await[0];
    wait_for("the first leader's ten children", DEADLINE, || async {
        group_members(first).len() >= 10
    })
    .await;
    let children: Vec<u32> = group_members(first)
        .into_iter()
        .filter(|pid| *pid != first)
        .collect();
    assert!(children.len() >= 10, "children of {first}: {children:?}");
    wait_for("a second leader", DEADLINE, || async {
        agent.pids("forker").await.iter().any(|pid| *pid != first)
    })
    .await;
    wait_for(
        "the first leader's children to be stopped",
        DEADLINE,
        || async { children.iter().all(|pid| !pid_alive(*pid)) },
    )
    .await;
    let Response::Status(status) = agent
        .call(Command::Status {
            name: Some("forker".into()),
        })
        .await
    else {
        panic!("status forker");
    };
    assert!(status[0].restarts >= 1, "{status:?}");
    let last = status[0].last_exit.expect("a leader's exit");
    assert_eq!(last.exit.code, Some(0), "{status:?}");
}
