//! Hooks: each point runs with its environment and in lifecycle order, each
//! failing `before_*` stops its action with the documented reply, `ignore_errors`,
//! timeouts, and the `hook_success`/`hook_failure` events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::transport::ClientError;
use ringmaster_protocol::{Command, ErrorKind, ErrorReply, Event, EventKind, Response, Signal};
use ringmaster_tests::{pid_alive, wait_for, EventStream, TestAgent, DEADLINE};

/// Every hook point, in the order a start, a spawn and a stop run them.
const ORDER: [&str; 10] = [
    "before_start",
    "before_spawn",
    "after_spawn",
    "after_start",
    "before_stop",
    "before_signal",
    "after_signal",
    "before_reap",
    "after_reap",
    "after_stop",
];

/// A hook that appends its name and environment to `hooks.log` (in the
/// watcher's working directory, the agent's temp dir).
const LOG_LINE: &str = r#"echo "$RINGMASTER_HOOK pid=$RINGMASTER_PID wid=$RINGMASTER_WID signal=$RINGMASTER_SIGNAL code=$RINGMASTER_EXIT_CODE exitsig=$RINGMASTER_EXIT_SIGNAL expected=$RINGMASTER_EXPECTED watcher=$RINGMASTER_WATCHER node=$RINGMASTER_NODE my=$MYVAR" >> hooks.log"#;

/// A watcher `web` (one `sleep`, in the agent's dir; not autostarted and with a
/// 5 s graceful_timeout unless `extra` says otherwise) with `extra` options and
/// `hooks` lines in its hooks table.
fn web(extra: &str, hooks: &str) -> String {
    let mut options = extra.to_string();
    if !extra.contains("autostart") {
        options.push_str("\nautostart = false");
    }
    if !extra.contains("graceful_timeout") {
        options.push_str("\ngraceful_timeout = 5");
    }
    format!(
        "\n[watchers.web]\ncmd = \"sleep 1000\"\nworking_dir = \".\"\n{options}\n\
         \n[watchers.web.hooks]\n{hooks}\n"
    )
}

/// Sends `command` and returns the error reply it must get.
async fn refused(agent: &TestAgent, command: Command) -> ErrorReply {
    match agent.client().call(command).await {
        Err(ClientError::Remote(reply)) => reply,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn start(name: &str) -> Command {
    Command::Start {
        name: Some(name.into()),
    }
}

fn stop(name: &str) -> Command {
    Command::Stop {
        name: Some(name.into()),
    }
}

/// Waits for the `hook_failure` event of `hook`.
async fn hook_failure(events: &mut EventStream, hook: &str) -> Event {
    events
        .wait(
            &format!("hook_failure of {hook}"),
            DEADLINE,
            |e| matches!(&e.kind, EventKind::HookFailure { hook: h, .. } if h == hook),
        )
        .await
}

/// The lines of `hooks.log`: each hook's name and its `key=value` fields.
fn hook_log(agent: &TestAgent) -> Vec<(String, BTreeMap<String, String>)> {
    std::fs::read_to_string(agent.dir().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            let name = words.next().unwrap_or_default().to_string();
            let fields = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (name, fields)
        })
        .collect()
}

#[tokio::test]
async fn every_hook_point_runs_in_order_with_its_environment() {
    let hooks: String = ORDER
        .iter()
        .map(|name| format!("{name} = '{LOG_LINE}'\n"))
        .collect();
    let agent = TestAgent::start("hooked", &web("env = { MYVAR = \"v-$(wid)\" }", &hooks));
    let mut events = agent.events("event.hooked.web.").await;
    let Response::Changes(started) = agent.call(start("web")).await else {
        panic!()
    };
    assert_eq!(started.started.len(), 1);
    let pid = started.started[0].to_string();
    assert_eq!(agent.state("web").await, WatcherState::Active);
    agent.call(stop("web")).await;

    let log = hook_log(&agent);
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names, ORDER,
        "hooks in lifecycle order; the stop reply waits for them all"
    );
    for (name, fields) in &log {
        assert_eq!(fields["watcher"], "web", "{name}");
        assert_eq!(fields["node"], "hooked", "{name}");
        let process_hook = !matches!(
            name.as_str(),
            "before_start" | "after_start" | "before_stop" | "after_stop"
        );
        // The watcher's env, expanded as for its processes (wid 0 outside a slot).
        let my = if process_hook { "v-1" } else { "v-0" };
        assert_eq!(fields["my"], my, "{name}");
        let want_pid = process_hook && name != "before_spawn";
        assert_eq!(
            fields["pid"],
            if want_pid { pid.as_str() } else { "" },
            "RINGMASTER_PID of {name}"
        );
        assert_eq!(
            fields["wid"],
            if process_hook { "1" } else { "" },
            "RINGMASTER_WID of {name}"
        );
        let signal = if name.contains("signal") {
            "SIGTERM"
        } else {
            ""
        };
        assert_eq!(fields["signal"], signal, "RINGMASTER_SIGNAL of {name}");
        let reap = name.contains("reap");
        assert_eq!(
            fields["exitsig"],
            if reap { "SIGTERM" } else { "" },
            "{name}"
        );
        assert_eq!(fields["expected"], if reap { "1" } else { "" }, "{name}");
        assert_eq!(fields["code"], "", "{name}");
    }

    // One hook_success per hook, in the same order.
    let mut published = Vec::new();
    while published.len() < ORDER.len() {
        let event = events
            .wait("hook_success events", DEADLINE, |e| {
                matches!(e.kind, EventKind::HookSuccess { .. })
            })
            .await;
        if let EventKind::HookSuccess { hook, duration, .. } = event.kind.clone() {
            assert!((0.0..10.0).contains(&duration), "{duration}");
            assert_eq!(
                event.topic(),
                "event.hooked.web.hook_success",
                "topic of {hook}"
            );
            published.push(hook);
        }
    }
    assert_eq!(published, ORDER);
}

#[tokio::test]
async fn a_failing_before_start_aborts_the_start_with_the_hook_output() {
    let agent = TestAgent::start(
        "bstart",
        &web("", "before_start = 'echo \"database not ready\"; exit 3'"),
    );
    let mut events = agent.events("event.bstart.web.").await;
    let error = refused(&agent, start("web")).await;
    assert_eq!(error.kind, ErrorKind::HookFailed);
    for part in [
        "watcher 'web'",
        "before_start hook failed",
        "exit code 3",
        "database not ready",
        "stays stopped",
    ] {
        assert!(
            error.message.contains(part),
            "{part:?} in {}",
            error.message
        );
    }
    assert_eq!(agent.state("web").await, WatcherState::Stopped);
    assert!(agent.pids("web").await.is_empty());
    let event = hook_failure(&mut events, "before_start").await;
    let EventKind::HookFailure {
        exit,
        output,
        timed_out,
        ignored,
        ..
    } = event.kind
    else {
        unreachable!()
    };
    assert_eq!(exit.and_then(|e| e.code), Some(3));
    assert_eq!(output, "database not ready");
    assert!(!timed_out && !ignored);
    assert!(
        !events
            .seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::Spawn { .. } | EventKind::Start {})),
        "nothing was spawned"
    );
    let Response::Status(status) = agent
        .call(Command::Status {
            name: Some("web".into()),
        })
        .await
    else {
        panic!()
    };
    let last = status[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("before_start"), "status shows why: {last}");
}

#[tokio::test]
async fn a_failing_after_start_stops_the_watcher_again() {
    let agent = TestAgent::start(
        "astart",
        &web(
            "",
            "after_start = 'echo \"health check failed\" >&2; exit 2'",
        ),
    );
    let mut events = agent.events("event.astart.web.").await;
    let error = refused(&agent, start("web")).await;
    assert_eq!(error.kind, ErrorKind::HookFailed);
    for part in [
        "after_start hook failed",
        "exit code 2",
        "health check failed",
        "stopped again",
    ] {
        assert!(
            error.message.contains(part),
            "{part:?} in {}",
            error.message
        );
    }
    let spawned = events
        .wait("spawn", DEADLINE, |e| {
            matches!(e.kind, EventKind::Spawn { .. })
        })
        .await;
    let EventKind::Spawn { pid, .. } = spawned.kind else {
        unreachable!()
    };
    assert_eq!(agent.state("web").await, WatcherState::Stopped);
    assert!(agent.pids("web").await.is_empty());
    assert!(!pid_alive(pid), "the process it started was stopped");
}

#[tokio::test]
async fn a_failing_before_spawn_skips_that_spawn_and_the_policy_retries() {
    // Refuses the first spawn only.
    let agent = TestAgent::start(
        "bspawn",
        &web(
            "",
            "before_spawn = 'test -e spawn-ok || { touch spawn-ok; echo \"not yet\"; exit 1; }'",
        ),
    );
    let mut events = agent.events("event.bspawn.web.").await;
    // The start goes on (Circus would stop the whole watcher here).
    agent.call(start("web")).await;
    let event = hook_failure(&mut events, "before_spawn").await;
    let EventKind::HookFailure { output, .. } = &event.kind else {
        unreachable!()
    };
    assert_eq!(output, "not yet");
    events
        .wait("spawn_failed", DEADLINE, |e| {
            matches!(&e.kind, EventKind::SpawnFailed { error } if error.contains("before_spawn"))
        })
        .await;
    agent.wait_pids("web", 1).await;
    assert_eq!(agent.state("web").await, WatcherState::Active);
}

#[tokio::test]
async fn a_before_spawn_that_always_fails_ends_in_flapping_when_flapping_is_on() {
    let agent = TestAgent::start(
        "bspawn2",
        &web(
            "numprocesses = 2\nretry_in = 60\ncheck_flapping = true",
            "before_spawn = 'exit 1'",
        ),
    );
    let mut events = agent.events("event.bspawn2.web.").await;
    agent.call(start("web")).await;
    events
        .wait("flapping", DEADLINE, |e| {
            matches!(e.kind, EventKind::Flapping { .. })
        })
        .await;
    wait_for("the watcher flapping", DEADLINE, || async {
        agent.state("web").await == WatcherState::Flapping
    })
    .await;
    assert!(agent.pids("web").await.is_empty());
}

#[tokio::test]
async fn a_failing_after_spawn_stops_that_process_and_it_is_replaced() {
    // Refuses the first process only.
    let agent = TestAgent::start(
        "aspawn",
        &web(
            "",
            "after_spawn = 'test -e spawn-ok || { touch spawn-ok; exit 1; }'",
        ),
    );
    let mut events = agent.events("event.aspawn.web.").await;
    agent.call(start("web")).await;
    let first = events
        .wait("first spawn", DEADLINE, |e| {
            matches!(e.kind, EventKind::Spawn { .. })
        })
        .await;
    let EventKind::Spawn { pid: first, .. } = first.kind else {
        unreachable!()
    };
    let failure = hook_failure(&mut events, "after_spawn").await;
    let EventKind::HookFailure { pid, .. } = failure.kind else {
        unreachable!()
    };
    assert_eq!(pid, Some(first));
    events
        .wait(
            "the refused process reaped",
            DEADLINE,
            |e| matches!(e.kind, EventKind::Reap { pid, expected: true, .. } if pid == first),
        )
        .await;
    let pids = agent.wait_pids("web", 1).await;
    assert_ne!(pids[0], first, "a new process took its place");
    assert_eq!(agent.state("web").await, WatcherState::Active);
}

#[tokio::test]
async fn a_failing_before_stop_aborts_the_stop_but_not_a_shutdown() {
    let mut agent = TestAgent::start(
        "bstop",
        &web(
            "autostart = true",
            "before_stop = 'echo \"draining not finished\"; exit 4'",
        ),
    );
    let pid = agent.wait_pids("web", 1).await[0];
    let error = refused(&agent, stop("web")).await;
    assert_eq!(error.kind, ErrorKind::HookFailed);
    for part in [
        "before_stop hook failed",
        "exit code 4",
        "draining not finished",
        "keeps running",
    ] {
        assert!(
            error.message.contains(part),
            "{part:?} in {}",
            error.message
        );
    }
    assert_eq!(agent.state("web").await, WatcherState::Active);
    assert_eq!(agent.pids("web").await, vec![pid]);
    // The agent's shutdown always stops.
    let status = agent.stop();
    assert!(status.success(), "{status}");
    assert!(!pid_alive(pid), "shutdown stopped the process");
}

#[tokio::test]
async fn a_failing_before_signal_keeps_the_signal_but_never_sigkill() {
    let agent = TestAgent::start(
        "bsignal",
        &web(
            "autostart = true\ngraceful_timeout = 0.5",
            "before_signal = 'test \"$RINGMASTER_SIGNAL\" = SIGKILL'",
        ),
    );
    let pid = agent.wait_pids("web", 1).await[0];
    let mut events = agent.events("event.bsignal.web.").await;
    let error = refused(
        &agent,
        Command::Signal {
            name: "web".into(),
            pid: None,
            signal: Signal::Hup,
            children: false,
        },
    )
    .await;
    assert_eq!(error.kind, ErrorKind::HookFailed);
    assert!(
        error.message.contains(&format!("SIGHUP not sent to {pid}"))
            && error.message.contains("before_signal hook failed"),
        "{}",
        error.message
    );
    assert!(pid_alive(pid), "SIGHUP would have ended sleep");
    // The stop signal is kept too; SIGKILL comes after graceful_timeout anyway.
    agent.call(stop("web")).await;
    let reap = events
        .wait("reap", DEADLINE, |e| {
            matches!(e.kind, EventKind::Reap { .. })
        })
        .await;
    let EventKind::Reap { exit, .. } = reap.kind else {
        unreachable!()
    };
    assert_eq!(exit.signal, Some(9), "killed by SIGKILL");
    let kills: Vec<String> = events
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Kill { signal, .. } => Some(signal.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec!["SIGKILL"], "SIGTERM was never sent");
}

#[tokio::test]
async fn ignore_errors_never_changes_the_action() {
    let agent = TestAgent::start(
        "ignore",
        &web(
            "",
            "before_start = { cmd = 'echo nope; exit 1', ignore_errors = true }",
        ),
    );
    let mut events = agent.events("event.ignore.web.").await;
    let Response::Changes(report) = agent.call(start("web")).await else {
        panic!()
    };
    assert_eq!(report.started.len(), 1);
    assert_eq!(agent.state("web").await, WatcherState::Active);
    let event = hook_failure(&mut events, "before_start").await;
    let EventKind::HookFailure {
        ignored, output, ..
    } = event.kind
    else {
        unreachable!()
    };
    assert!(ignored, "the event says the action went on");
    assert_eq!(output, "nope");
}

#[tokio::test]
async fn a_hung_hook_is_killed_at_its_timeout_while_the_agent_answers() {
    let agent = TestAgent::start(
        "hung",
        &web(
            "",
            "before_start = { cmd = 'echo $$ > hook.pid; exec sleep 60', timeout = 1.5 }",
        ),
    );
    let mut events = agent.events("event.hung.web.").await;
    let started = Instant::now();
    let mut client = agent.client();
    let starting = tokio::spawn(async move { client.call(start("web")).await });
    let pid_file = agent.dir().join("hook.pid");
    wait_for("the hook to run", DEADLINE, || async { pid_file.exists() }).await;
    let hook_pid: u32 = wait_for_pid(&pid_file).await;
    // The agent answers while the hook runs: had the status waited for the hook, it
    // would find the start failed and the watcher stopped.
    assert_eq!(agent.state("web").await, WatcherState::Starting);
    let error = match starting.await.unwrap() {
        Err(ClientError::Remote(reply)) => reply,
        other => panic!("expected an error reply, got {other:?}"),
    };
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "start failed after {took:?}"
    );
    assert_eq!(error.kind, ErrorKind::HookFailed);
    assert!(
        error
            .message
            .contains("before_start hook failed (timed out after 1.5s and was killed)"),
        "{}",
        error.message
    );
    assert!(!pid_alive(hook_pid), "the hook was killed");
    let event = hook_failure(&mut events, "before_start").await;
    let EventKind::HookFailure {
        timed_out, exit, ..
    } = event.kind
    else {
        unreachable!()
    };
    assert!(timed_out);
    assert_eq!(exit, None);
    assert_eq!(agent.state("web").await, WatcherState::Stopped);
}

/// Reads a pid the hook wrote (it may still be writing it).
async fn wait_for_pid(file: &std::path::Path) -> u32 {
    let mut pid = 0;
    wait_for("a pid in the hook's file", DEADLINE, || {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        pid = text.trim().parse().unwrap_or(0);
        async move { pid != 0 }
    })
    .await;
    pid
}
