//! No process outlives its watcher: what a worker starts in a session of its own
//! (still its child, or orphaned at once by `setsid -f`) goes at `stop`, at `quit`
//! or SIGTERM, and when the worker exits by itself; another watcher's processes
//! are never touched; orphans that die are reaped by the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringmaster_tests::{pid_alive, wait_for, TestAgent, DEADLINE};

/// A worker that starts two descendants in sessions of their own and records
/// their pids in `DIR/<its pid>.child` (a child of the worker) and
/// `DIR/<its pid>.orphan` (`setsid -f`: its parent exits at once, so it is
/// reparented). With `exit`, the worker exits once both are recorded; with
/// `stay`, it waits for them.
const ESCAPER: &str = r#"#!/bin/sh
dir=$1
me=$$
setsid sh -c 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0"; exec sleep 1000' "$dir/$me.child" &
setsid -f sh -c 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0"; exec sleep 1000' "$dir/$me.orphan"
if [ "$2" = exit ]; then
    while [ ! -e "$dir/$me.child" ] || [ ! -e "$dir/$me.orphan" ]; do sleep 0.02; done
    exit 0
fi
wait
"#;

/// Writes the escaper script into `dir`; returns its path.
fn escaper(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("escaper.sh");
    std::fs::write(&path, ESCAPER).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A watcher `name` running the escaper into `dir/name/`.
fn watcher(dir: &Path, name: &str, mode: &str) -> String {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    format!(
        "\n[watchers.{name}]\ncmd = \"{} {} {mode}\"\ngraceful_timeout = 2\nmin_uptime = 0.05\n",
        escaper(dir).display(),
        out.display()
    )
}

/// The two descendants worker `pid` of `name` recorded.
async fn descendants(dir: &Path, name: &str, pid: u32) -> [u32; 2] {
    let read = |kind: &str| {
        std::fs::read_to_string(dir.join(name).join(format!("{pid}.{kind}")))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
    };
    wait_for(
        &format!("the descendants of {name}'s process {pid}"),
        DEADLINE,
        || async { read("child").is_some() && read("orphan").is_some() },
    )
    .await;
    let found = [read("child").unwrap(), read("orphan").unwrap()];
    for pid in found {
        assert!(pid_alive(pid), "descendant {pid} of {name}");
    }
    found
}

/// `/proc/<pid>/stat`: (state, ppid, session).
fn stat(pid: u32) -> Option<(String, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.to_string(),
        fields.get(1)?.parse().ok()?,
        fields.get(3)?.parse().ok()?,
    ))
}

/// Every process whose parent is `parent`: (pid, state).
fn children(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid, _) = stat(pid)?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

/// Kills what a failed test may leave behind.
struct Cleanup(std::cell::RefCell<Vec<u32>>);

impl Cleanup {
    fn of(pids: impl IntoIterator<Item = u32>) -> Self {
        Cleanup(std::cell::RefCell::new(pids.into_iter().collect()))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in self.0.borrow().iter() {
            if pid_alive(*pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Starts an agent with watchers `doomed` and `bystander` (both `stay`); returns
/// it with the descendants of each.
async fn two_watchers(node: &str) -> (TestAgent, tempfile::TempDir, [u32; 2], [u32; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        watcher(dir.path(), "doomed", "stay"),
        watcher(dir.path(), "bystander", "stay")
    );
    let agent = TestAgent::start(node, &config);
    let doomed = agent.wait_pids("doomed", 1).await[0];
    let bystander = agent.wait_pids("bystander", 1).await[0];
    let ours = descendants(dir.path(), "doomed", doomed).await;
    let [child, orphan] = descendants(dir.path(), "bystander", bystander).await;
    for pid in ours.iter().chain(&[child, orphan]) {
        let (_, _, session) = stat(*pid).unwrap();
        assert_eq!(session, *pid, "{pid} leads a session of its own");
    }
    (agent, dir, ours, [bystander, child, orphan])
}

#[tokio::test]
async fn stop_leaves_no_descendant_even_in_another_session_and_spares_other_watchers() {
    let (agent, _dir, ours, theirs) = two_watchers("escape-stop").await;
    let _cleanup = Cleanup::of(ours.iter().chain(&theirs).copied());
    let out = agent.nodectl(&["stop", "doomed"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The reply comes once they are gone.
    for pid in ours {
        assert!(
            !pid_alive(pid),
            "doomed's descendant {pid} outlived the stop"
        );
    }
    for pid in theirs {
        assert!(pid_alive(pid), "bystander's process {pid} was touched");
    }
    assert_eq!(agent.pids("bystander").await, vec![theirs[0]]);
}

#[tokio::test]
async fn quit_leaves_no_descendant_even_in_another_session() {
    let (mut agent, _dir, ours, theirs) = two_watchers("escape-quit").await;
    let _cleanup = Cleanup::of(ours.iter().chain(&theirs).copied());
    let out = agent.nodectl(&["quit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_exit(DEADLINE);
    for pid in ours.iter().chain(&theirs) {
        assert!(!pid_alive(*pid), "{pid} outlived quit");
    }
}

#[tokio::test]
async fn sigterm_leaves_no_descendant_even_in_another_session() {
    let (mut agent, _dir, ours, theirs) = two_watchers("escape-term").await;
    let _cleanup = Cleanup::of(ours.iter().chain(&theirs).copied());
    assert!(agent.stop().success(), "{}", agent.log());
    for pid in ours.iter().chain(&theirs) {
        assert!(!pid_alive(*pid), "{pid} outlived SIGTERM");
    }
}

/// The worker exits by itself once its descendants run: they go while its slot
/// is filled again, and respawns do not pile them up.
#[tokio::test]
async fn a_leader_that_exits_by_itself_takes_its_other_sessions_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        watcher(dir.path(), "leaver", "exit"),
        watcher(dir.path(), "bystander", "stay")
    );
    let agent = TestAgent::start("escape-exit", &config);
    let bystander = agent.wait_pids("bystander", 1).await[0];
    let theirs = descendants(dir.path(), "bystander", bystander).await;
    let first = agent.wait_pids("leaver", 1).await[0];
    let ours = descendants(dir.path(), "leaver", first).await;
    let cleanup = Cleanup::of(ours.iter().chain(&theirs).copied());
    wait_for("a second leader", DEADLINE, || async {
        agent.pids("leaver").await.iter().any(|pid| *pid != first)
    })
    .await;
    wait_for(
        "the first leader's descendants in other sessions to be stopped",
        DEADLINE,
        || async { ours.iter().all(|pid| !pid_alive(*pid)) },
    )
    .await;
    // Later generations are stopped as well: at most the newest ones run.
    let outputs = dir.path().join("leaver");
    let recorded = || -> Vec<PathBuf> {
        std::fs::read_dir(&outputs)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "child" || x == "orphan"))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for("three generations of leavers", DEADLINE, || async {
        recorded().len() >= 6
    })
    .await;
    wait_for(
        "at most one generation of descendants alive",
        DEADLINE,
        || async {
            let alive = recorded()
                .into_iter()
                .filter_map(|path| std::fs::read_to_string(path).ok())
                .filter_map(|t| t.trim().parse::<u32>().ok())
                .inspect(|pid| cleanup.0.borrow_mut().push(*pid))
                .filter(|pid| pid_alive(*pid))
                .count();
            alive <= 2
        },
    )
    .await;
    for pid in std::iter::once(bystander).chain(theirs) {
        assert!(pid_alive(pid), "bystander's process {pid} was touched");
    }
}

/// Orphans reparented to the agent are reaped when they die: no zombie child of
/// the agent is left.
#[tokio::test]
async fn orphans_are_adopted_by_the_agent_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let config = format!(
        "\n[watchers.spawner]\ncmd = \"sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; \
         do setsid -f sleep 0.$i; done; touch {}; exec sleep 1000'\"\n",
        done.display()
    );
    let agent = TestAgent::start("orphans", &config);
    let worker = agent.wait_pids("spawner", 1).await[0];
    wait_for("the orphans to be started", DEADLINE, || async {
        done.exists()
    })
    .await;
    let me = agent.pid();
    // They are the agent's now (it is a subreaper), not init's.
    let adopted: Vec<(u32, String)> = children(me)
        .into_iter()
        .filter(|(pid, _)| *pid != worker)
        .collect();
    assert!(
        !adopted.is_empty(),
        "no orphan was reparented to the agent {me}"
    );
    wait_for(
        "every orphan gone, and no zombie child of the agent",
        Duration::from_secs(10),
        || async { children(me).iter().all(|(pid, _)| *pid == worker) },
    )
    .await;
    assert!(pid_alive(worker));
    assert_eq!(
        agent.pids("spawner").await,
        vec![worker],
        "the worker is untouched"
    );
    // The agent keeps SIGCHLD blocked outside one thread of its own; its
    // children must not inherit that.
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(str::trim);
    assert_eq!(blocked, Some("0000000000000000"), "{status}");
}

#[tokio::test]
async fn after_an_upgrade_in_place_a_stop_still_takes_every_descendant() {
    let (agent, _dir, ours, theirs) = two_watchers("escape-upgrade").await;
    let _cleanup = Cleanup::of(ours.iter().chain(&theirs).copied());
    let out = agent.nodectl(&["upgrade"]);
    assert!(
        out.status.success(),
        "upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in ours.iter().chain(&theirs) {
        assert!(pid_alive(*pid), "{pid} survived the upgrade");
    }
    let out = agent.nodectl(&["stop", "doomed"]);
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in ours {
        assert!(
            !pid_alive(pid),
            "doomed's descendant {pid} outlived a stop after the upgrade"
        );
    }
    for pid in theirs {
        assert!(pid_alive(pid), "bystander's process {pid} was touched");
    }
}
