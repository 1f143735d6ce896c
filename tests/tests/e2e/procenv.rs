//! The environment a process starts in: umask, resource limits, user and group
//! (by name and by number), and the errors of preparing a child (unknown user or
//! group, a limit the kernel refuses, a missing working directory), which become a
//! `spawn_failed` event and an error reply while the agent stays responsive.

use std::path::Path;

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::transport::ClientError;
use ringmaster_protocol::{Command, ErrorKind, ErrorReply, EventKind, Response};
use ringmaster_tests::{wait_for_blocking, TestAgent, DEADLINE};

/// An agent with `body` whose config may name its own dir as `{dir}`.
fn start_in_own_dir(node: &str, body: &str) -> TestAgent {
    let mut agent = TestAgent::prepare(node, "", &[]);
    let dir = agent.dir().display().to_string();
    agent.rewrite_config(&body.replace("{dir}", &dir));
    agent.launch();
    agent
}

fn read_when_written(path: &Path) -> String {
    wait_for_blocking(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')),
    );
    std::fs::read_to_string(path).unwrap()
}

/// The values of `field` (`Uid`, `Gid`, `Groups`) in /proc/PID/status.
fn status_field(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Soft and hard value of a limit in /proc/PID/limits (`Max open files`).
fn proc_limit(pid: u32, label: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' in /proc/{pid}/limits:\n{limits}"));
    let mut words = line[label.len()..].split_whitespace();
    (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn umask_and_limits_apply_to_the_process() {
    let agent = start_in_own_dir(
        "procenv-limits",
        "[watchers.masked]\ncmd = \"sh -c 'umask > {dir}/umask.txt; exec sleep 1000'\"\numask = \"027\"\n\n\
         [watchers.limited]\ncmd = \"sh -c 'ulimit -n > {dir}/limits.txt; ulimit -c >> {dir}/limits.txt; exec sleep 1000'\"\n\
         rlimit_nofile = 256\nrlimit_core = 0\nrlimit_fsize = \"unlimited\"\n",
    );
    let text = read_when_written(&agent.dir().join("umask.txt"));
    assert_eq!(text.trim(), "0027");

    let pid = agent.wait_pids("limited", 1).await[0];
    wait_for_blocking("the second limit line", DEADLINE, || {
        std::fs::read_to_string(agent.dir().join("limits.txt"))
            .is_ok_and(|t| t.lines().count() == 2)
    });
    let text = std::fs::read_to_string(agent.dir().join("limits.txt")).unwrap();
    assert_eq!(text, "256\n0\n");
    // Soft and hard alike.
    assert_eq!(
        proc_limit(pid, "Max open files"),
        ("256".into(), "256".into())
    );
    assert_eq!(
        proc_limit(pid, "Max core file size"),
        ("0".into(), "0".into())
    );
    assert_eq!(
        proc_limit(pid, "Max file size"),
        ("unlimited".into(), "unlimited".into())
    );
}

#[tokio::test]
async fn processes_run_as_the_configured_user_and_group() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running processes as another user needs root");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: this host has no user 'nobody'");
        return;
    };
    let Ok(Some(daemon)) = nix::unistd::Group::from_name("daemon") else {
        eprintln!("skipped: this host has no group 'daemon'");
        return;
    };
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let agent = TestAgent::start(
        "procenv-ids",
        &format!(
            "[watchers.by_name]\ncmd = \"sleep 1000\"\nuid = \"nobody\"\n\n\
             [watchers.by_number]\ncmd = \"sleep 1000\"\nuid = {uid}\ngid = \"daemon\"\n\n\
             [watchers.group_only]\ncmd = \"sleep 1000\"\ngid = {}\n",
            daemon.gid.as_raw()
        ),
    );
    let pid = agent.wait_pids("by_name", 1).await[0];
    assert_eq!(status_field(pid, "Uid"), vec![uid; 4]);
    assert_eq!(
        status_field(pid, "Gid"),
        vec![gid; 4],
        "the user's primary group"
    );
    let groups = status_field(pid, "Groups");
    assert!(
        !groups.contains(&0),
        "root's groups are dropped: {groups:?}"
    );

    let pid = agent.wait_pids("by_number", 1).await[0];
    assert_eq!(status_field(pid, "Uid"), vec![uid; 4]);
    assert_eq!(status_field(pid, "Gid"), vec![daemon.gid.as_raw(); 4]);

    let pid = agent.wait_pids("group_only", 1).await[0];
    assert_eq!(status_field(pid, "Uid"), vec![0; 4]);
    assert_eq!(status_field(pid, "Gid"), vec![daemon.gid.as_raw(); 4]);
    assert_eq!(status_field(pid, "Groups"), vec![daemon.gid.as_raw()]);
}

/// Starts watcher `name`, which must fail: the error reply, after the
/// `spawn_failed` event naming `needle` was published.
async fn start_fails(agent: &TestAgent, name: &str, needle: &str) -> ErrorReply {
    let mut events = agent.events(&format!("event.{}.{name}.", agent.node)).await;
    let result = agent
        .client()
        .call(Command::Start {
            name: Some(name.into()),
        })
        .await;
    let reply = match result {
        Err(ClientError::Remote(reply)) => reply,
        other => panic!("start {name} should fail, got {other:?}"),
    };
    assert_eq!(reply.kind, ErrorKind::SpawnFailed, "{}", reply.message);
    assert!(
        reply.message.contains(needle),
        "the error names '{needle}': {}",
        reply.message
    );
    events
        .wait(
            &format!("spawn_failed of {name}"),
            DEADLINE,
            |e| matches!(&e.kind, EventKind::SpawnFailed { error } if error.contains(needle)),
        )
        .await;
    reply
}

#[tokio::test]
async fn bad_process_settings_are_clear_errors_and_the_agent_carries_on() {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1 << 20);
    let agent = TestAgent::start(
        "procenv-errors",
        &format!(
            "[watchers.ghost_user]\ncmd = \"sleep 1000\"\nuid = \"no-such-user-xyz\"\nautostart = false\n\n\
             [watchers.ghost_group]\ncmd = \"sleep 1000\"\ngid = \"no-such-group-xyz\"\nautostart = false\n\n\
             [watchers.huge_limit]\ncmd = \"sleep 1000\"\nrlimit_nofile = {}\nautostart = false\n\n\
             [watchers.no_dir]\ncmd = \"sleep 1000\"\nworking_dir = \"/no/such/dir-xyz\"\nautostart = false\n\n\
             [watchers.fine]\ncmd = \"sleep 1000\"\n",
            nr_open + 1
        ),
    );
    agent.wait_pids("fine", 1).await;

    let reply = start_fails(&agent, "ghost_user", "no-such-user-xyz").await;
    assert!(reply.message.contains("no such user"), "{}", reply.message);
    let reply = start_fails(&agent, "ghost_group", "no-such-group-xyz").await;
    assert!(reply.message.contains("no such group"), "{}", reply.message);
    let reply = start_fails(&agent, "huge_limit", "rlimit_nofile").await;
    assert!(
        reply.message.contains(&(nr_open + 1).to_string()) && reply.message.contains("refuses"),
        "{}",
        reply.message
    );
    let reply = start_fails(&agent, "no_dir", "/no/such/dir-xyz").await;
    assert!(reply.message.contains("working_dir"), "{}", reply.message);

    // Each failed watcher is stopped with its error; the agent still answers and
    // the healthy watcher runs on.
    match agent.call(Command::Status { name: None }).await {
        Response::Status(list) => {
            for w in &list {
                match w.name.as_str() {
                    "fine" => assert_eq!(w.state, WatcherState::Active),
                    _ => {
                        assert_eq!(w.state, WatcherState::Stopped, "{w:?}");
                        assert!(w.last_error.is_some(), "{w:?}");
                    }
                }
            }
        }
        other => panic!("unexpected reply to status: {other:?}"),
    }
    assert_eq!(agent.pids("fine").await.len(), 1);
    // nodectl shows the reason and exits 3.
    let out = agent.nodectl(&["start", "huge_limit"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rlimit_nofile"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
