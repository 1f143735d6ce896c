//! incr/decr/add/rm/set/get/signal/nodeinfo, reloadconfig, and the churn guard.

use std::time::Duration;

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{
    Command, ErrorKind, EventKind, OptionMap, OptionValue, Response, Signal,
};
use ringmaster_tests::{pid_alive, wait_for, TestAgent, DEADLINE};

fn changes(response: Response) -> ringmaster_protocol::message::ChangeReport {
    match response {
        Response::Changes(report) => report,
        other => panic!("expected a change report, got {other:?}"),
    }
}

#[tokio::test]
async fn incr_and_decr_scale_and_report_pids() {
    let agent = TestAgent::start("scale", "\n[watchers.w]\ncmd = \"sleep 1000\"\n");
    agent.wait_pids("w", 1).await;
    let first = agent.pids("w").await;
    let report = changes(
        agent
            .call(Command::Incr {
                name: "w".into(),
                nb: 3,
            })
            .await,
    );
    assert_eq!(report.started.len(), 3);
    assert_eq!(report.kept, first);
    assert_eq!(report.numprocesses, Some(4));
    assert_eq!(agent.pids("w").await.len(), 4);
    let report = changes(
        agent
            .call(Command::Decr {
                name: "w".into(),
                nb: 2,
            })
            .await,
    );
    assert_eq!(report.stopped.len(), 2);
    assert!(report.stopped.contains(&first[0]), "the oldest goes first");
    assert!(report.stopped.iter().all(|p| !pid_alive(*p)));
    assert_eq!(agent.pids("w").await.len(), 2);
    match agent
        .call(Command::NumProcesses {
            name: Some("w".into()),
        })
        .await
    {
        Response::Count(n) => assert_eq!(n, 2),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn add_set_get_options_and_rm_at_run_time() {
    let agent = TestAgent::start("addrm", "");
    let mut options = OptionMap::new();
    options.insert("numprocesses".into(), OptionValue::Int(2));
    options.insert(
        "env".into(),
        OptionValue::Table([("GREETING".to_string(), OptionValue::Str("hi".into()))].into()),
    );
    let report = changes(
        agent
            .call(Command::Add {
                name: "web".into(),
                cmd: "sleep 1000".into(),
                args: vec![],
                options,
                start: true,
            })
            .await,
    );
    assert_eq!(report.started.len(), 2);
    let Response::Options(got) = agent
        .call(Command::Get {
            name: "web".into(),
            keys: vec!["numprocesses".into(), "cmd".into()],
        })
        .await
    else {
        panic!()
    };
    assert_eq!(got["numprocesses"], OptionValue::Int(2));
    assert_eq!(got["cmd"], OptionValue::Str("sleep 1000".into()));
    let Response::Options(all) = agent.call(Command::Options { name: "web".into() }).await else {
        panic!()
    };
    assert_eq!(all["graceful_timeout"], OptionValue::Float(30.0));

    // A live option changes nothing running; a start option reloads gracefully.
    let before = agent.pids("web").await;
    let mut live = OptionMap::new();
    live.insert("graceful_timeout".into(), OptionValue::Float(5.0));
    changes(
        agent
            .call(Command::Set {
                name: "web".into(),
                options: live,
            })
            .await,
    );
    assert_eq!(agent.pids("web").await, before);
    let mut restart = OptionMap::new();
    restart.insert("cmd".into(), OptionValue::Str("sleep 999".into()));
    let report = changes(
        agent
            .call(Command::Set {
                name: "web".into(),
                options: restart,
            })
            .await,
    );
    assert_eq!(report.started.len(), 2);
    let mut stopped = report.stopped.clone();
    stopped.sort();
    assert_eq!(stopped, before);

    let report = changes(
        agent
            .call(Command::Rm {
                name: "web".into(),
                nostop: false,
            })
            .await,
    );
    assert_eq!(report.stopped.len(), 2);
    let Response::Watchers(names) = agent.call(Command::List { name: None }).await else {
        panic!()
    };
    assert!(!names.contains(&"web".to_string()));
}

#[tokio::test]
async fn signal_reaches_one_process_or_all() {
    let agent = TestAgent::start(
        "signal",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n",
    );
    agent.wait_pids("w", 2).await;
    let pids = agent.pids("w").await;
    let mut events = agent.events("event.signal.w.").await;
    agent
        .call(Command::Signal {
            name: "w".into(),
            pid: Some(pids[0]),
            signal: Signal::Term,
            children: false,
        })
        .await;
    let reap = events
        .wait("reap", DEADLINE, |e| {
            matches!(e.kind, EventKind::Reap { .. })
        })
        .await;
    assert!(
        matches!(reap.kind, EventKind::Reap { pid, exit, .. } if pid == pids[0] && exit.signal == Some(15))
    );
    assert!(pid_alive(pids[1]), "only the named process got the signal");
    let err = agent
        .client()
        .call(Command::Signal {
            name: "w".into(),
            pid: Some(1),
            signal: Signal::Term,
            children: false,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not one of watcher 'w'"), "{err}");
}

#[tokio::test]
async fn nodeinfo_describes_the_node() {
    let agent = TestAgent::start(
        "info",
        "labels = { zone = \"eu-1\", disk = \"ssd\" }\n[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 3\n",
    );
    agent.wait_pids("w", 3).await;
    let Response::NodeInfo(info) = agent.call(Command::NodeInfo {}).await else {
        panic!()
    };
    assert_eq!(info.node, "info");
    assert_eq!(info.labels["zone"], "eu-1");
    assert_eq!(info.processes, 3);
    assert_eq!(info.watchers, 1);
    assert!(info.cpus >= 1 && info.memory_total > 0 && info.host_processes >= 3);
    assert_eq!(info.control, agent.control);
}

#[tokio::test]
async fn reloadconfig_touches_only_what_changed() {
    let agent = TestAgent::start(
        "reloadcfg",
        "\n[watchers.same]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n\n[watchers.changed]\ncmd = \"sleep 1000\"\n\n[watchers.scaled]\ncmd = \"sleep 1000\"\n\n[watchers.removed]\ncmd = \"sleep 1000\"\n",
    );
    wait_for("everything running", DEADLINE, || async {
        agent.pids("same").await.len() == 2 && agent.pids("removed").await.len() == 1
    })
    .await;
    let same = agent.pids("same").await;
    let changed = agent.pids("changed").await;
    let scaled = agent.pids("scaled").await;
    let removed = agent.pids("removed").await;

    // A bad file is refused and the running config stays.
    agent.rewrite_config("\n[watchers.same]\ncmd = \"sleep 1000\"\nnumprocesses = 2\nbogus = 1\n");
    let err = agent
        .client()
        .call(Command::ReloadConfig {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("agent.toml:10:") && text.contains("bogus"),
        "{text}"
    );
    assert_eq!(agent.pids("removed").await, removed);

    agent.rewrite_config(
        "\n[watchers.same]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n\n[watchers.changed]\ncmd = \"sleep 1001\"\n\n[watchers.scaled]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n\n[watchers.added]\ncmd = \"sleep 1000\"\n",
    );
    let report = changes(agent.call(Command::ReloadConfig {}).await);
    assert_eq!(
        report.watchers.get("changed").map(String::as_str),
        Some("changed")
    );
    assert_eq!(
        report.watchers.get("added").map(String::as_str),
        Some("added")
    );
    assert_eq!(
        report.watchers.get("removed").map(String::as_str),
        Some("removed")
    );
    assert!(!report.watchers.contains_key("same"));
    assert_eq!(
        agent.pids("same").await,
        same,
        "an unchanged watcher keeps its pids"
    );
    let now_changed = agent.pids("changed").await;
    assert_eq!(now_changed.len(), 1);
    assert_ne!(now_changed, changed);
    let now_scaled = agent.pids("scaled").await;
    assert_eq!(now_scaled.len(), 2);
    assert!(
        now_scaled.contains(&scaled[0]),
        "a scaled watcher keeps its running processes"
    );
    assert_eq!(agent.pids("added").await.len(), 1);
    assert!(!pid_alive(removed[0]));
    let err = agent
        .client()
        .call(Command::Status {
            name: Some("removed".into()),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no watcher named 'removed'"));
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let agent = TestAgent::start("hup", "\n[watchers.a]\ncmd = \"sleep 1000\"\n");
    agent.wait_pids("a", 1).await;
    agent.rewrite_config(
        "\n[watchers.a]\ncmd = \"sleep 1000\"\n\n[watchers.b]\ncmd = \"sleep 1000\"\n",
    );
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("b to start after SIGHUP", DEADLINE, || async {
        matches!(agent.client().call(Command::List { name: Some("b".into()) }).await, Ok(Response::Processes(l)) if l.len() == 1)
    })
    .await;
}

#[tokio::test]
async fn no_wait_replies_before_the_action_is_done() {
    let agent = TestAgent::start("nowait", "\n[watchers.w]\ncmd = \"sleep 1000\"\n");
    agent.wait_pids("w", 1).await;
    let mut client = agent.client();
    let report = changes(
        client
            .call_with(
                Command::Incr {
                    name: "w".into(),
                    nb: 2,
                },
                true,
            )
            .await
            .unwrap(),
    );
    assert!(!report.done);
    agent.wait_pids("w", 3).await;
}

/// zmq.rs deadlocks on a multi-thread runtime when clients connect and disconnect
/// concurrently; the agent runs its sockets on one thread. Guard it: 8 parallel
/// clients, 20 000 connect/request/disconnect cycles in all, while events flow.
#[test]
fn churn_of_parallel_clients_is_answered() {
    let agent = TestAgent::start(
        "churn",
        "\n[watchers.blinker]\ncmd = \"sleep 0.05\"\nnumprocesses = 4\ncheck_flapping = false\nhealthy_after = 0\n",
    );
    const THREADS: usize = 8;
    const CYCLES: usize = 2_500;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let control = agent.control.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    for i in 0..CYCLES {
                        let mut client = Client::new(control.clone(), Duration::from_secs(10));
                        match client.call(Command::NumWatchers {}).await {
                            Ok(Response::Count(1)) => {}
                            other => panic!("thread {t} cycle {i}: {other:?}"),
                        }
                    }
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a churn client failed");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Response::Status(status) = agent.call(Command::Status { name: None }).await else {
            panic!()
        };
        assert_eq!(status[0].state, WatcherState::Active);
        let mut events = agent.events("event.churn.blinker.spawn").await;
        events
            .wait("a spawn after the churn", DEADLINE, |_| true)
            .await;
    });
}

#[tokio::test]
async fn errors_name_what_is_wrong() {
    let agent = TestAgent::start(
        "errors",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\nsingleton = true\n",
    );
    let mut client = agent.client();
    let kind = |r: Result<Response, ringmaster_protocol::transport::ClientError>| match r {
        Err(ringmaster_protocol::transport::ClientError::Remote(e)) => (e.kind, e.message),
        other => panic!("expected an error reply, got {other:?}"),
    };
    let (k, m) = kind(
        client
            .call(Command::Stop {
                name: Some("nope".into()),
            })
            .await,
    );
    assert_eq!(k, ErrorKind::NotFound);
    assert!(m.contains("'nope'"), "{m}");
    let (k, m) = kind(
        client
            .call(Command::Decr {
                name: "w".into(),
                nb: 5,
            })
            .await,
    );
    assert_eq!(k, ErrorKind::BadArguments);
    assert!(m.contains("numprocesses = 1"), "{m}");
    let (k, _) = kind(
        client
            .call(Command::Incr {
                name: "w".into(),
                nb: 1,
            })
            .await,
    );
    assert_eq!(k, ErrorKind::BadArguments);
    let add = |name: &str, cmd: &str| Command::Add {
        name: name.into(),
        cmd: cmd.into(),
        args: vec![],
        options: OptionMap::new(),
        start: true,
    };
    let (k, _) = kind(client.call(add("w", "sleep 1")).await);
    assert_eq!(k, ErrorKind::AlreadyExists);
    let (k, m) = kind(client.call(add("ghost", "/no/such/program --x")).await);
    assert_eq!(k, ErrorKind::SpawnFailed);
    assert!(
        m.contains("/no/such/program") && m.contains("not found"),
        "{m}"
    );
    let script = agent.dir().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 100\n").unwrap();
    let (k, m) = kind(client.call(add("noexec", script.to_str().unwrap())).await);
    assert_eq!(k, ErrorKind::SpawnFailed);
    assert!(m.contains("not executable"), "{m}");
    let (k, m) = kind(client.call(add("bad.name", "sleep 1")).await);
    assert_eq!(k, ErrorKind::BadArguments);
    assert!(m.contains("bad.name"), "{m}");
    let mut bad = OptionMap::new();
    bad.insert("numprocesses".into(), OptionValue::Str("three".into()));
    let (k, m) = kind(
        client
            .call(Command::Set {
                name: "w".into(),
                options: bad,
            })
            .await,
    );
    assert_eq!(k, ErrorKind::InvalidConfig);
    assert!(
        m.contains("numprocesses") || m.contains("invalid type"),
        "{m}"
    );
    // Failed adds left nothing behind, and the agent still answers.
    let Response::Watchers(names) = agent.call(Command::List { name: None }).await else {
        panic!()
    };
    assert_eq!(names, vec!["w".to_string()]);
}

#[tokio::test]
async fn a_missing_program_in_the_config_is_reported_not_fatal() {
    let agent = TestAgent::start(
        "missing",
        "\n[watchers.ghost]\ncmd = \"/no/such/binary\"\n\n[watchers.ok]\ncmd = \"sleep 1000\"\n",
    );
    agent.wait_pids("ok", 1).await;
    let Response::Status(status) = agent
        .call(Command::Status {
            name: Some("ghost".into()),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(status[0].state, WatcherState::Stopped);
    let error = status[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("/no/such/binary"), "{error}");
}
