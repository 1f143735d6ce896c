//! The lifecycle options: `max_age`, `respawn = false`, `copy_path`, `[env]` and
//! `$(...)` expansion, `close_child_stdin`, `stop_children`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::{Command, EventKind, OptionMap, OptionValue, Response};
use ringmaster_tests::{
    bin_path, pid_alive, terminate, wait_for, wait_for_blocking, TestAgent, DEADLINE,
};

/// Pids of the processes of `name` that are running (not being stopped).
async fn running(agent: &TestAgent, name: &str) -> Vec<u32> {
    match agent
        .call(Command::List {
            name: Some(name.into()),
        })
        .await
    {
        Response::Processes(list) => list
            .into_iter()
            .filter(|p| p.state == "running")
            .map(|p| p.pid)
            .collect(),
        other => panic!("unexpected list reply {other:?}"),
    }
}

/// The environment of process `pid`, from `/proc`, without the mark every
/// worker gets (`RINGMASTER_LINEAGE`, see [`marked`]).
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| !v.starts_with("RINGMASTER_LINEAGE="))
        .collect()
}

/// Whether process `pid` carries the agent's mark for a process of `watcher`.
fn marked(pid: u32, watcher: &str) -> bool {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0).any(|v| {
        String::from_utf8_lossy(v)
            .strip_prefix("RINGMASTER_LINEAGE=")
            .is_some_and(|mark| mark.ends_with(&format!(":1:{watcher}")))
    })
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test]
async fn max_age_replaces_processes_without_dropping_below_numprocesses() {
    let agent = TestAgent::start(
        "aging",
        "\n[watchers.web]\ncmd = \"sleep 1000\"\nnumprocesses = 2\nmax_age = 1\nmax_age_variance = 0\n\
         autostart = false\n",
    );
    let mut events = agent.events("event.aging.web.").await;
    let Response::Changes(report) = agent
        .call(Command::Start {
            name: Some("web".into()),
        })
        .await
    else {
        panic!()
    };
    let originals: BTreeSet<u32> = report.started.into_iter().collect();
    assert_eq!(originals.len(), 2);
    let mut reaped = BTreeSet::new();
    while reaped.len() < 2 {
        let reap = events
            .wait(
                "reaps of the old processes",
                DEADLINE,
                |e| matches!(e.kind, EventKind::Reap { pid, .. } if originals.contains(&pid)),
            )
            .await;
        let EventKind::Reap {
            pid,
            expected,
            uptime,
            ..
        } = reap.kind
        else {
            unreachable!()
        };
        assert!(expected, "stopped by the agent, not a crash");
        assert!(uptime >= 1.0, "replaced after {uptime}s, before max_age");
        reaped.insert(pid);
    }
    // Replay the events: a replacement is spawned before the old process is
    // asked to stop, so the watcher never runs fewer than numprocesses.
    let mut running = BTreeSet::new();
    let mut fewest = usize::MAX;
    for event in &events.seen {
        match event.kind {
            EventKind::Spawn { pid, .. } => {
                running.insert(pid);
            }
            EventKind::Kill { pid, .. } | EventKind::Reap { pid, .. } => {
                running.remove(&pid);
            }
            _ => continue,
        }
        if running.len() >= 2 || fewest != usize::MAX {
            fewest = fewest.min(running.len());
        }
    }
    assert_eq!(
        fewest, 2,
        "the watcher ran {fewest} process(es) during a replacement: {:#?}",
        events.seen
    );
    wait_for("two new processes", DEADLINE, || async {
        let now = agent.pids("web").await;
        now.len() >= 2 && now.iter().all(|pid| !originals.contains(pid))
    })
    .await;
    assert_eq!(agent.state("web").await, WatcherState::Active);
}

#[tokio::test]
async fn set_max_age_applies_to_running_processes() {
    let agent = TestAgent::start(
        "setage",
        "\n[watchers.web]\ncmd = \"sleep 1000\"\nmax_age_variance = 0\n",
    );
    let old = agent.wait_pids("web", 1).await[0];
    let mut options = OptionMap::new();
    options.insert("max_age".into(), OptionValue::Float(0.5));
    let Response::Changes(report) = agent
        .call(Command::Set {
            name: "web".into(),
            options,
        })
        .await
    else {
        panic!()
    };
    assert!(
        report.stopped.is_empty() && report.started.is_empty(),
        "max_age is a live option: {report:?}"
    );
    wait_for("the old process replaced", DEADLINE, || async {
        let now = running(&agent, "web").await;
        now.len() == 1 && now[0] != old
    })
    .await;
    wait_for("the old process gone", DEADLINE, || async {
        !pid_alive(old)
    })
    .await;
}

#[tokio::test]
async fn without_respawn_the_watcher_stops_when_its_last_process_is_gone() {
    let agent = TestAgent::start(
        "norespawn",
        "\n[watchers.once]\ncmd = \"sleep 1000\"\nnumprocesses = 2\nrespawn = false\n",
    );
    let pids = agent.wait_pids("once", 2).await;
    let mut events = agent.events("event.norespawn.once.").await;
    kill9(pids[0]);
    events
        .wait(
            "reap of the first",
            DEADLINE,
            |e| matches!(e.kind, EventKind::Reap { pid, .. } if pid == pids[0]),
        )
        .await;
    assert_eq!(agent.pids("once").await, vec![pids[1]], "not replaced");
    assert_eq!(agent.state("once").await, WatcherState::Active);
    kill9(pids[1]);
    events
        .wait("stop", DEADLINE, |e| matches!(e.kind, EventKind::Stop {}))
        .await;
    assert_eq!(agent.state("once").await, WatcherState::Stopped);
    assert!(agent.pids("once").await.is_empty());
    assert!(
        !events
            .seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::Spawn { .. })),
        "nothing respawned"
    );
    // A start brings it back.
    agent
        .call(Command::Start {
            name: Some("once".into()),
        })
        .await;
    agent.wait_pids("once", 2).await;
}

#[tokio::test]
async fn copy_path_passes_only_the_agents_path() {
    let path = "/usr/local/bin:/usr/bin:/bin:/opt/ringmaster-marker";
    let agent = TestAgent::start_with_env(
        "copypath",
        "\n[watchers.withpath]\ncmd = \"sleep 1000\"\ncopy_path = true\n\
         \n[watchers.bare]\ncmd = \"sleep 1000\"\n\
         \n[watchers.own]\ncmd = \"sleep 1000\"\ncopy_path = true\nenv = { PATH = \"/bin:/usr/bin\" }\n",
        &[("PATH", path), ("SECRET_OF_THE_AGENT", "x")],
    );
    let with = agent.wait_pids("withpath", 1).await[0];
    let bare = agent.wait_pids("bare", 1).await[0];
    let own = agent.wait_pids("own", 1).await[0];
    assert_eq!(environ(with), vec![format!("PATH={path}")]);
    assert_eq!(
        environ(bare),
        Vec::<String>::new(),
        "without copy_env, nothing but the agent's mark"
    );
    for (pid, watcher) in [(with, "withpath"), (bare, "bare"), (own, "own")] {
        assert!(
            marked(pid, watcher),
            "{watcher}'s process {pid} has no mark"
        );
    }
    assert_eq!(
        environ(own),
        vec!["PATH=/bin:/usr/bin"],
        "the watcher's env wins"
    );
}

#[tokio::test]
async fn env_section_and_variables_expand_in_cmd_args_and_env() {
    let agent = TestAgent::start_with_env(
        "expand",
        r#"
[env]
FOO = "foo"
GREETING = "hi-$(circus.env.FOO)-$(wid)"

[watchers.exp]
cmd = '''sh -c 'echo "$0|$1|$2|$3|$4|$5|$GREETING|$LOCAL|$FROMAGENT" > out.tmp-$3; mv out.tmp-$3 out-$3.txt; exec sleep 1000' $(circus.env.FOO) $(env.FOO) $(circus.wid) $(wid) $WID'''
args = ["$(circus.env.GREETING)"]
numprocesses = 2
working_dir = "."
env = { LOCAL = "$(env.FOO)/$(circus.wid)/$WID", FROMAGENT = "$(circus.env.AGENT_VAR)" }
"#,
        &[("AGENT_VAR", "agentval")],
    );
    for wid in [1, 2] {
        let file = agent.dir().join(format!("out-{wid}.txt"));
        wait_for(&format!("{}", file.display()), DEADLINE, || async {
            file.exists()
        })
        .await;
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text.trim(),
            format!("foo|foo|{wid}|{wid}|{wid}|hi-foo-{wid}|hi-foo-{wid}|foo/{wid}/{wid}|agentval"),
            "wid {wid}"
        );
    }
}

/// A `nodeagent` started by the test itself (to give it a stdin), killed on drop.
struct OwnAgent(Child);

impl Drop for OwnAgent {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(10));
    }
}

/// Starts the agent of `prepared` with `stdin` as its standard input and waits
/// until it answers.
fn launch_with_stdin(prepared: &TestAgent, stdin: &Path) -> OwnAgent {
    let log = std::fs::File::create(prepared.dir().join("agent.log")).unwrap();
    let child = std::process::Command::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(prepared.config_path())
        .arg("-v")
        .stdin(std::fs::File::open(stdin).unwrap())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let own = OwnAgent(child);
    let socket = prepared.control.trim_start_matches("ipc://").to_string();
    wait_for_blocking("the agent's control endpoint", DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    own
}

#[tokio::test]
async fn close_child_stdin_false_gives_the_agents_stdin() {
    let agent = TestAgent::prepare(
        "stdin",
        "\n[watchers.reader]\ncmd = \"sh -c 'head -c 11 > in.tmp; mv in.tmp in.txt; exec sleep 1000'\"\n\
         close_child_stdin = false\nworking_dir = \".\"\n\
         \n[watchers.closed]\ncmd = \"sh -c 'cat > closed.tmp; mv closed.tmp closed.txt; exec sleep 1000'\"\n\
         working_dir = \".\"\n",
        &[],
    );
    let input = agent.dir().join("input.txt");
    std::fs::write(&input, "hello-stdin and more").unwrap();
    let _running = launch_with_stdin(&agent, &input);
    let read = agent.dir().join("in.txt");
    let closed = agent.dir().join("closed.txt");
    wait_for("both readers done", DEADLINE, || async {
        read.exists() && closed.exists()
    })
    .await;
    assert_eq!(std::fs::read_to_string(&read).unwrap(), "hello-stdin");
    assert_eq!(
        std::fs::read_to_string(&closed).unwrap(),
        "",
        "by default stdin is /dev/null"
    );
}

const PARENT: &str = "sh ./child.sh &\nchild=$!\necho $child > child.pid\n\
                      trap 'wait $child; exit 0' TERM\nwait $child\n";
const CHILD: &str = "trap 'echo term > child-got-term; exit 0' TERM\n\
                     while :; do sleep 0.1; done\n";

#[tokio::test]
async fn stop_children_sends_the_stop_signal_to_the_process_children_too() {
    let mut agent = TestAgent::prepare(
        "children",
        "\n[watchers.with]\ncmd = \"sh ./parent.sh\"\nworking_dir = \"with\"\nstop_children = true\ngraceful_timeout = 2\n\
         \n[watchers.without]\ncmd = \"sh ./parent.sh\"\nworking_dir = \"without\"\ngraceful_timeout = 2\n",
        &[],
    );
    for dir in ["with", "without"] {
        let dir = agent.dir().join(dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("parent.sh"), PARENT).unwrap();
        std::fs::write(dir.join("child.sh"), CHILD).unwrap();
    }
    agent.launch();
    let mut children = Vec::new();
    for dir in ["with", "without"] {
        let file = agent.dir().join(dir).join("child.pid");
        let mut pid = 0u32;
        wait_for(&format!("{dir}/child.pid"), DEADLINE, || {
            pid = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            async move { pid != 0 }
        })
        .await;
        children.push(pid);
    }
    for (dir, child) in ["with", "without"].into_iter().zip(children) {
        assert!(pid_alive(child));
        agent
            .call(Command::Stop {
                name: Some(dir.into()),
            })
            .await;
        let marker = agent.dir().join(dir).join("child-got-term");
        if dir == "with" {
            assert!(marker.exists(), "with stop_children the child got SIGTERM");
        } else {
            assert!(
                !marker.exists(),
                "without stop_children only the process gets SIGTERM"
            );
        }
        wait_for(&format!("the child of '{dir}' gone"), DEADLINE, || async {
            !pid_alive(child)
        })
        .await;
    }
}

/// The TCP port of socket `name`, by `listsockets`.
async fn port_of(agent: &TestAgent, name: &str) -> u16 {
    match agent.call(Command::ListSockets {}).await {
        Response::Sockets(list) => list
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.port)
            .unwrap_or_else(|| panic!("no TCP socket '{name}' in listsockets")),
        other => panic!("unexpected listsockets reply {other:?}"),
    }
}

#[tokio::test]
async fn on_demand_spawns_on_the_first_connection() {
    let agent = TestAgent::start(
        "demand",
        "\n[sockets.web]\nport = 0\n\
         \n[watchers.lazy]\ncmd = \"sleep 1000\"\nnumprocesses = 2\non_demand = true\nuse_sockets = true\n",
    );
    wait_for("the watcher waiting", DEADLINE, || async {
        agent.state("lazy").await == WatcherState::Waiting
    })
    .await;
    assert!(
        agent.pids("lazy").await.is_empty(),
        "no process before a connection"
    );
    let status = agent.nodectl(&["status", "lazy"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("waiting"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let mut events = agent.events("event.demand.lazy.").await;
    let port = port_of(&agent, "web").await;
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    agent.wait_pids("lazy", 2).await;
    events
        .wait("start", DEADLINE, |e| matches!(e.kind, EventKind::Start {}))
        .await;
    assert_eq!(agent.state("lazy").await, WatcherState::Active);
    // A stop ends it; the socket stays with the agent.
    agent
        .call(Command::Stop {
            name: Some("lazy".into()),
        })
        .await;
    assert_eq!(agent.state("lazy").await, WatcherState::Stopped);
    assert_eq!(port_of(&agent, "web").await, port);
}

#[tokio::test]
async fn on_demand_without_a_socket_is_refused_with_what_to_do() {
    let agent = TestAgent::start(
        "demand2",
        "\n[watchers.lazy]\ncmd = \"sleep 1000\"\non_demand = true\nautostart = false\n",
    );
    let error = match agent
        .client()
        .call(Command::Start {
            name: Some("lazy".into()),
        })
        .await
    {
        Err(ringmaster_protocol::transport::ClientError::Remote(reply)) => reply,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(
        error.message.contains("on_demand but uses no socket")
            && error.message.contains("use_sockets"),
        "{}",
        error.message
    );
    assert_eq!(agent.state("lazy").await, WatcherState::Stopped);
}

#[tokio::test]
async fn a_waiting_watcher_follows_its_socket_through_reloadconfig() {
    let body = |port: u16| {
        format!(
            "\n[sockets.web]\nport = {port}\n\
             \n[watchers.lazy]\ncmd = \"sleep 1000\"\non_demand = true\nuse_sockets = true\n"
        )
    };
    let agent = TestAgent::start("demand3", &body(0));
    wait_for("the watcher waiting", DEADLINE, || async {
        agent.state("lazy").await == WatcherState::Waiting
    })
    .await;
    let old = port_of(&agent, "web").await;
    let new = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    agent.rewrite_config(&body(new));
    agent.call(Command::ReloadConfig {}).await;
    assert_eq!(port_of(&agent, "web").await, new);
    assert_eq!(agent.state("lazy").await, WatcherState::Waiting);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", old)).is_err(),
        "the old socket is closed: no duplicate kept it listening"
    );
    let _client = std::net::TcpStream::connect(("127.0.0.1", new)).unwrap();
    agent.wait_pids("lazy", 1).await;
    assert_eq!(agent.state("lazy").await, WatcherState::Active);
}
