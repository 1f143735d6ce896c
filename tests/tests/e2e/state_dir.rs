//! The agent's state directory can be trusted: one agent per state (a lock), one
//! state per config, changes that cannot be saved are refused, a bad state file
//! does not stop the agent, and what a killed agent left running is stopped by
//! the next one.
//!
//! The read-only and full-disk tests mount a small tmpfs, so they need root: they
//! are skipped (saying so) without it, except under CI (`$CI` set), where that is
//! a failure.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use ringmaster_protocol::message::WatcherStatus;
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Command, OptionMap, OptionValue, Response};
use ringmaster_tests::{
    bin_path, free_tcp_endpoint, group_members, pid_alive, wait_for, TestAgent, DEADLINE,
};

/// The files in `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

async fn status(agent: &TestAgent, name: &str) -> WatcherStatus {
    match agent
        .call(Command::Status {
            name: Some(name.into()),
        })
        .await
    {
        Response::Status(mut list) => list.remove(0),
        other => panic!("unexpected status reply {other:?}"),
    }
}

async fn watcher_names(agent: &TestAgent) -> Vec<String> {
    match agent.call(Command::List { name: None }).await {
        Response::Watchers(names) => names,
        other => panic!("unexpected list reply {other:?}"),
    }
}

/// The error message of `command`, which must fail.
async fn refused(agent: &TestAgent, command: Command) -> String {
    let name = command.name();
    match agent.client().call(command).await {
        Ok(reply) => panic!("{name} should have failed, got {reply:?}\n{}", agent.log()),
        Err(e) => e.to_string(),
    }
}

fn add(name: &str) -> Command {
    Command::Add {
        name: name.into(),
        cmd: "sleep 1000".into(),
        args: vec![],
        options: OptionMap::new(),
        start: true,
    }
}

/// True when this test may mount file systems; false (after saying why) when it
/// is to be skipped. Under CI a missing privilege fails the test.
fn can_mount(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !root {
        assert!(
            !ci,
            "{test} needs root to mount a tmpfs (CI is set, so it may not be skipped)"
        );
        eprintln!("skipping {test}: it needs root to mount a tmpfs");
        return false;
    }
    true
}

/// A tmpfs mounted at a dir, unmounted on drop.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            at,
        );
        Tmpfs {
            at: at.to_path_buf(),
        }
    }

    fn read_only(&self, ro: bool) {
        let opts = if ro { "remount,ro" } else { "remount,rw" };
        mount(&["-o", opts], &self.at);
    }
}

fn mount(args: &[&str], at: &Path) {
    let out = Process::new("mount")
        .args(args)
        .arg(at)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
    assert!(
        out.status.success(),
        "mount {args:?} {} failed: {}",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[tokio::test]
async fn a_second_agent_on_the_same_state_refuses_to_start() {
    let agent = TestAgent::start("locked", "\n[watchers.w]\ncmd = \"sleep 1000\"\n");
    let pids = agent.wait_pids("w", 1).await;
    let locks = files_ending(&agent.dir().join("state"), ".lock");
    assert_eq!(locks.len(), 1, "{locks:?}");
    let out = Process::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(agent.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second agent started: {stderr}");
    assert!(
        stderr.contains(&locks[0].display().to_string())
            && stderr.contains(&format!("pid {}", agent.pid())),
        "the refusal names neither the lock file nor the holder: {stderr}"
    );
    // It spawned nothing, and the first agent is as it was.
    assert_eq!(agent.pids("w").await, pids);
    // Checking the config takes no lock.
    let check = Process::new(bin_path("nodeagent"))
        .arg("--check-config")
        .arg(agent.config_path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A config for `agent` (already prepared) with its state in `state_dir`.
fn config_with_state(agent: &TestAgent, file: &Path, state_dir: &Path, body: &str) {
    std::fs::write(
        file,
        format!(
            "[agent]\nnode = \"{}\"\ncontrol = \"{}\"\npubsub = \"{}\"\nstate_dir = \"{}\"\n{body}\n",
            agent.node,
            agent.control,
            agent.pubsub,
            state_dir.display()
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn two_configs_on_one_host_do_not_share_a_state_file() {
    let shared = tempfile::tempdir().unwrap();
    let body = "\n[watchers.w]\ncmd = \"sleep 1000\"\n";
    let mut agents = Vec::new();
    for _ in 0..2 {
        let mut agent = TestAgent::prepare("same-node", "", &[]);
        let file = agent.dir().join("other.toml");
        config_with_state(&agent, &file, shared.path(), body);
        let node = agent.node.clone();
        agent.use_config_file(file, &node, &[]);
        agent.launch();
        agents.push(agent);
    }
    for (i, agent) in agents.iter().enumerate() {
        agent.wait_pids("w", 1).await;
        agent
            .call(Command::Incr {
                name: "w".into(),
                nb: i as u32 + 1,
            })
            .await;
    }
    let snapshots = files_ending(shared.path(), ".state.json");
    assert_eq!(
        snapshots.len(),
        2,
        "one state file per config: {snapshots:?}"
    );
    for agent in &mut agents {
        assert!(agent.stop().success());
        agent.launch();
    }
    for (i, agent) in agents.iter().enumerate() {
        agent.wait_pids("w", i + 2).await;
        assert_eq!(status(agent, "w").await.numprocesses, i as u32 + 2);
    }
}

#[tokio::test]
async fn a_read_only_state_dir_refuses_changes() {
    if !can_mount("a_read_only_state_dir_refuses_changes") {
        return;
    }
    let mut agent = TestAgent::prepare(
        "readonly",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\ngraceful_timeout = 3\n",
        &[],
    );
    let fs = Tmpfs::mount(&agent.dir().join("state"), "1m");
    agent.launch();
    agent.wait_pids("w", 1).await;
    agent
        .call(Command::Incr {
            name: "w".into(),
            nb: 1,
        })
        .await;
    assert!(agent.stop().success());
    // The agent's own files are open for writing while it runs: a file system
    // cannot become read-only under it, so it starts on one.
    fs.read_only(true);
    agent.launch();
    let pids = agent.wait_pids("w", 2).await;

    let err = refused(
        &agent,
        Command::Incr {
            name: "w".into(),
            nb: 1,
        },
    )
    .await;
    assert!(
        err.contains("cannot be saved")
            && err.contains("state/readonly-")
            && err.contains("Read-only file system"),
        "{err}"
    );
    let err = refused(&agent, add("extra")).await;
    assert!(err.contains("Read-only file system"), "{err}");
    let mut options = OptionMap::new();
    options.insert("graceful_timeout".into(), OptionValue::Float(7.0));
    let err = refused(
        &agent,
        Command::Set {
            name: "w".into(),
            options,
        },
    )
    .await;
    assert!(err.contains("Read-only file system"), "{err}");
    let err = refused(
        &agent,
        Command::Rm {
            name: "w".into(),
            nostop: false,
        },
    )
    .await;
    assert!(err.contains("Read-only file system"), "{err}");

    // Nothing changed, and the agent still answers.
    assert_eq!(status(&agent, "w").await.numprocesses, 2);
    assert_eq!(agent.pids("w").await, pids);
    assert_eq!(watcher_names(&agent).await, vec!["w".to_string()]);
    let Response::Options(got) = agent
        .call(Command::Get {
            name: "w".into(),
            keys: vec!["graceful_timeout".into()],
        })
        .await
    else {
        panic!()
    };
    assert_eq!(got.get("graceful_timeout"), Some(&OptionValue::Float(3.0)));

    assert!(agent.stop().success());
    fs.read_only(false);
    agent.launch();
    agent.wait_pids("w", 2).await;
    assert_eq!(watcher_names(&agent).await, vec!["w".to_string()]);
    assert!(agent.stop().success());
    drop(fs);
}

#[tokio::test]
async fn a_full_state_dir_refuses_changes() {
    if !can_mount("a_full_state_dir_refuses_changes") {
        return;
    }
    let mut agent = TestAgent::prepare("fulldisk", "\n[watchers.w]\ncmd = \"sleep 1000\"\n", &[]);
    let fs = Tmpfs::mount(&agent.dir().join("state"), "64k");
    agent.launch();
    agent.wait_pids("w", 1).await;
    // Fill the file system.
    let filler = agent.dir().join("state/filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
    }
    // The journal's last page may have room for a few changes; the first that
    // does not fit is refused.
    let mut count = 1;
    let err = loop {
        match agent
            .client()
            .call(Command::Incr {
                name: "w".into(),
                nb: 1,
            })
            .await
        {
            Ok(_) => {
                count += 1;
                assert!(count < 20, "the state never filled up\n{}", agent.log());
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        err.contains("cannot be saved") && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(status(&agent, "w").await.numprocesses, count);
    agent.wait_pids("w", count as usize).await;
    let err = refused(&agent, add("extra")).await;
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(watcher_names(&agent).await, vec!["w".to_string()]);

    // After a restart, the state is what the replies said.
    assert!(agent.stop().success());
    std::fs::remove_file(&filler).unwrap();
    agent.launch();
    agent.wait_pids("w", count as usize).await;
    assert_eq!(status(&agent, "w").await.numprocesses, count);
    assert_eq!(watcher_names(&agent).await, vec!["w".to_string()]);
    assert!(agent.stop().success());
    drop(fs);
}

#[tokio::test]
async fn an_invalid_state_entry_gives_way_to_the_config() {
    let mut agent = TestAgent::start(
        "badstate",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\ngraceful_timeout = 2\n",
    );
    agent.wait_pids("w", 1).await;
    assert!(agent.stop().success());
    let snapshots = files_ending(&agent.dir().join("state"), ".state.json");
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshots[0]).unwrap()).unwrap();
    state["watchers"]["w"]["graceful_timeout"] = serde_json::json!(-1.0);
    let mut extra = state["watchers"]["w"].clone();
    extra["cmd"] = serde_json::json!("");
    state["watchers"]["extra"] = extra;
    std::fs::write(&snapshots[0], serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    agent.launch();
    agent.wait_pids("w", 1).await;
    let log = agent.log();
    let file = snapshots[0].display().to_string();
    assert!(
        log.contains(&file) && log.contains("watcher 'w'") && log.contains("graceful_timeout"),
        "no warning naming the file, the watcher and the key:\n{log}"
    );
    assert!(
        log.contains("watcher 'extra'") && log.contains("'cmd'"),
        "{log}"
    );
    assert_eq!(watcher_names(&agent).await, vec!["w".to_string()]);
    agent
        .call(Command::Stop {
            name: Some("w".into()),
        })
        .await;
    assert!(agent.pids("w").await.is_empty());
    assert!(
        agent.try_wait().is_none(),
        "the agent died:\n{}",
        agent.log()
    );
}

#[tokio::test]
async fn a_killed_agent_leaves_no_orphans_behind() {
    let endpoint = free_tcp_endpoint();
    let port = endpoint.rsplit(':').next().unwrap().to_string();
    let mut agent = TestAgent::start(
        "crashy",
        &format!(
            "\n[sockets.web]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
             [watchers.a]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n\n\
             [watchers.b]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n\n\
             [watchers.web]\ncmd = \"sleep 1000\"\nnumprocesses = 2\nuse_sockets = true\n"
        ),
    );
    let mut old = Vec::new();
    for (name, n) in [("a", 2), ("b", 1), ("web", 2)] {
        old.extend(agent.wait_pids(name, n).await);
    }
    agent.kill9();
    assert!(
        old.iter().all(|pid| pid_alive(*pid)),
        "the workers should outlive a kill -9"
    );

    let started = Instant::now();
    agent.launch();
    let mut new = Vec::new();
    for (name, n) in [("a", 2), ("b", 1), ("web", 2)] {
        new.extend(agent.wait_pids(name, n).await);
    }
    eprintln!(
        "restart after kill -9, survivors stopped: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    for pid in &old {
        assert!(!pid_alive(*pid), "old worker {pid} still runs");
        assert!(
            group_members(*pid).is_empty(),
            "the group of old worker {pid} still has members"
        );
        assert!(!new.contains(pid));
    }
    let log = agent.log();
    assert!(
        log.contains("stopped 2 process(es) left by a previous agent")
            && log.contains("stopped 1 process(es) left by a previous agent"),
        "{log}"
    );
    // Exactly numprocesses each, for a while.
    tokio::time::sleep(Duration::from_millis(300)).await; // let a double start show
    assert_eq!(agent.pids("a").await.len(), 2);
    assert_eq!(agent.pids("b").await.len(), 1);
    assert_eq!(agent.pids("web").await.len(), 2);
}

#[tokio::test]
async fn two_thousand_watchers_come_and_go_in_o_of_change() {
    const N: usize = 2000;
    let mut agent = TestAgent::start("many", "");
    // Not started, then or after the restart: this measures the state, not spawns.
    let mut options = OptionMap::new();
    options.insert("autostart".into(), OptionValue::Bool(false));
    let mut client = Client::new(agent.control.clone(), DEADLINE);
    let mut marks = Vec::new();
    let started = Instant::now();
    for i in 0..N {
        client
            .call(Command::Add {
                name: format!("w{i}"),
                cmd: "sleep 1000".into(),
                args: vec![],
                options: options.clone(),
                start: false,
            })
            .await
            .unwrap_or_else(|e| panic!("add w{i}: {e}\n{}", agent.log()));
        if i == 99 || i == N - 101 {
            marks.push(started.elapsed());
        }
    }
    let added = started.elapsed();
    marks.push(added);
    assert!(agent.stop().success());
    agent.launch();
    let Response::Count(count) = agent.call(Command::NumWatchers {}).await else {
        panic!()
    };
    assert_eq!(count, N as u64);
    let mut client = Client::new(agent.control.clone(), DEADLINE);
    let started = Instant::now();
    for i in 0..N {
        client
            .call(Command::Rm {
                name: format!("w{i}"),
                nostop: false,
            })
            .await
            .unwrap_or_else(|e| panic!("rm w{i}: {e}\n{}", agent.log()));
        if i == 99 || i == N - 101 {
            marks.push(started.elapsed());
        }
    }
    let removed = started.elapsed();
    marks.push(removed);
    let ms = |a: Duration, b: Duration| (b - a).as_secs_f64() * 1000.0 / 100.0;
    eprintln!(
        "per change: add {:.2} ms (first 100) / {:.2} ms (last 100); rm {:.2} ms / {:.2} ms",
        ms(Duration::ZERO, marks[0]),
        ms(marks[1], marks[2]),
        ms(Duration::ZERO, marks[3]),
        ms(marks[4], marks[5]),
    );
    eprintln!(
        "{N} watchers: added one by one in {:.2}s, removed one by one in {:.2}s",
        added.as_secs_f64(),
        removed.as_secs_f64()
    );
    // Only a guard against a regression to O(watchers) per change (28 s before).
    let guard = Duration::from_secs(30);
    assert!(added < guard && removed < guard);
    assert!(agent.stop().success());
    agent.launch();
    assert!(watcher_names(&agent).await.is_empty());
    wait_for("the agent to answer", DEADLINE, || async {
        agent.client().call(Command::NumWatchers {}).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn an_incr_whose_spawns_fail_changes_nothing() {
    let mut agent = TestAgent::prepare(
        "incrfail",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\nworking_dir = \"app\"\n",
        &[],
    );
    let app = agent.dir().join("app");
    std::fs::create_dir(&app).unwrap();
    agent.launch();
    let pids = agent.wait_pids("w", 1).await;
    // Its next spawns fail: the working directory is gone.
    std::fs::remove_dir(&app).unwrap();
    let err = refused(
        &agent,
        Command::Incr {
            name: "w".into(),
            nb: 3,
        },
    )
    .await;
    assert!(err.contains("numprocesses stays at 1"), "{err}");
    assert_eq!(status(&agent, "w").await.numprocesses, 1);
    assert_eq!(agent.pids("w").await, pids);
    assert!(agent.stop().success());
    std::fs::create_dir(&app).unwrap();
    agent.launch();
    agent.wait_pids("w", 1).await;
    assert_eq!(
        status(&agent, "w").await.numprocesses,
        1,
        "the saved count went back too"
    );
}
