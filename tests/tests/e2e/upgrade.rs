//! Upgrade in place (`nodectl upgrade`, SIGUSR2): the agent re-executes itself
//! with the same pid, and every process keeps its pid, its output pipe and its
//! shared socket; clients see no refused connection and no unanswered request;
//! a new binary that is missing, not executable, not a nodeagent or that refuses
//! the config is refused with nothing changed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringmaster_protocol::message::NodeInfo;
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::http::{assert_clean, Hammer};
use ringmaster_tests::{bin_path, pid_alive, wait_for, TestAgent, DEADLINE};

async fn node_info(agent: &TestAgent) -> NodeInfo {
    match agent.call(Command::NodeInfo {}).await {
        Response::NodeInfo(info) => *info,
        other => panic!("unexpected reply to nodeinfo: {other:?}"),
    }
}

async fn web_addr(agent: &TestAgent) -> SocketAddr {
    match agent.call(Command::ListSockets {}).await {
        Response::Sockets(list) => list
            .iter()
            .find(|s| s.name == "web")
            .and_then(|s| s.address.parse().ok())
            .unwrap_or_else(|| panic!("no socket 'web' in {list:?}")),
        other => panic!("unexpected reply to listsockets: {other:?}"),
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `nodectl upgrade ARGS`, run off the test's runtime.
async fn nodectl_upgrade(agent: &TestAgent, args: &[&str]) -> std::process::Output {
    let mut full = vec!["upgrade"];
    full.extend_from_slice(args);
    let full: Vec<String> = full.iter().map(|s| s.to_string()).collect();
    let control = agent.control.clone();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin_path("nodectl"))
            .arg("--endpoint")
            .arg(control)
            .args(&full)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nodectl: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("nodectl task: {e}"))
}

/// A client asking `status` back to back on one connection until stopped.
struct StatusLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl StatusLoop {
    fn start(agent: &TestAgent) -> StatusLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let mut client = agent.client();
        client.set_timeout(Duration::from_secs(10));
        let task = {
            let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
            tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match client.call(Command::Status { name: None }).await {
                        Ok(Response::Status(_)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(other) => errors.push(format!("unexpected reply {other:?}")),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                errors
            })
        };
        StatusLoop { stop, ok, task }
    }

    async fn wait_more(&self, more: u64) {
        let target = self.ok.load(Ordering::SeqCst) + more;
        wait_for("status answers", DEADLINE, || async {
            self.ok.load(Ordering::SeqCst) >= target
        })
        .await;
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self
            .task
            .await
            .unwrap_or_else(|e| panic!("status loop: {e}"));
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

fn config() -> String {
    format!(
        "[sockets.web]\nhost = \"127.0.0.1\"\nport = 0\n\n\
         [watchers.web]\ncmd = \"{}\"\nnumprocesses = 50\nuse_sockets = true\n\n\
         [watchers.printer]\ncmd = \"sh\"\n\
         args = [\"-c\", \"while true; do echo line $$; sleep 0.05; done\"]\n\
         numprocesses = 2\nstdout = \"capture\"\n",
        bin_path("ringmaster-http-worker").display()
    )
}

#[tokio::test]
async fn an_upgrade_keeps_every_pid_pipe_and_connection() {
    let agent = TestAgent::start("upgrade", &config());
    let mut web = agent.wait_pids("web", 50).await;
    let mut printers = agent.wait_pids("printer", 2).await;
    web.sort_unstable();
    printers.sort_unstable();
    let addr = web_addr(&agent).await;
    let before = node_info(&agent).await;
    assert_eq!(before.upgrades, 0);
    assert_eq!(before.pid, agent.pid());

    let hammer = Hammer::start(addr);
    hammer.wait_more(20, "requests served before the upgrade");
    let status = StatusLoop::start(&agent);
    status.wait_more(20).await;

    let out = nodectl_upgrade(&agent, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "upgrade failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("upgraded upgrade in place in ")
            && stdout.contains(&format!("pid {} kept", agent.pid()))
            && stdout.contains("52 process(es) and 3 socket(s) handed over"),
        "nodectl upgrade printed {stdout:?}"
    );
    let switched = now_secs();

    status.wait_more(20).await;
    hammer.wait_more(20, "requests served after the upgrade");
    let (answered, errors) = status.finish().await;
    assert!(
        errors.is_empty(),
        "{} status request(s) failed across the upgrade (of {answered}): {:?}",
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
    let tally = hammer.finish();
    eprintln!(
        "across the upgrade: {} HTTP request(s) served by {} worker(s), {answered} status \
         answer(s)",
        tally.ok,
        tally.pids.len()
    );
    assert_clean(&tally, 40);

    let after = node_info(&agent).await;
    assert_eq!(after.upgrades, 1, "nodeinfo counts the upgrade");
    assert_eq!(after.pid, agent.pid(), "the agent kept its pid");
    assert!(
        after.uptime >= before.uptime,
        "uptime went on: {} then {}",
        before.uptime,
        after.uptime
    );
    let mut web_after = agent.pids("web").await;
    web_after.sort_unstable();
    assert_eq!(web_after, web, "every web worker kept its pid");
    let mut printers_after = agent.pids("printer").await;
    printers_after.sort_unstable();
    assert_eq!(printers_after, printers, "the printers kept their pids");

    // Their output still goes through the agent: new lines, same pids.
    for pid in &printers {
        let wanted = format!("line {pid}");
        wait_for(
            &format!("a line of printer {pid} read after the upgrade"),
            DEADLINE,
            || async {
                match agent
                    .call(Command::Logs {
                        name: "printer".into(),
                        lines: 20,
                        stream: None,
                    })
                    .await
                {
                    Response::Logs(report) => report
                        .lines
                        .iter()
                        .any(|l| l.pid == *pid && l.text == wanted && l.time > switched),
                    other => panic!("unexpected reply to logs: {other:?}"),
                }
            },
        )
        .await;
    }

    // An adopted process that dies is reaped with its status and replaced.
    let victim = web[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill {victim}: {e}"));
    wait_for("the killed worker replaced", DEADLINE, || async {
        let pids = agent.pids("web").await;
        pids.len() == 50 && !pids.contains(&victim)
    })
    .await;
    let out = agent.nodectl(&["status", "web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SIGKILL"),
        "status shows how the adopted worker ended: {text}"
    );
    assert!(
        !pid_alive(victim),
        "the adopted worker was reaped, not left a zombie"
    );
}

/// Copies the running nodeagent to `name` in the agent's dir (mode `mode`).
fn copy_binary(agent: &TestAgent, name: &str, mode: u32) -> String {
    let path = agent.dir().join(name);
    std::fs::copy(bin_path("nodeagent"), &path).unwrap_or_else(|e| panic!("copy: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    path.display().to_string()
}

#[tokio::test]
async fn a_bad_binary_is_refused_and_nothing_changes() {
    let agent = TestAgent::start(
        "refuse",
        "[watchers.w]\ncmd = \"sleep\"\nargs = [\"1000\"]\nnumprocesses = 2\n",
    );
    let pids = agent.wait_pids("w", 2).await;
    let missing = agent.dir().join("no-such-nodeagent").display().to_string();
    let not_executable = copy_binary(&agent, "nodeagent-0644", 0o644);
    let refuses = agent.dir().join("refuses-config");
    std::fs::write(
        &refuses,
        "#!/bin/sh\ncase \"$*\" in\n  --version) echo 'nodeagent 9.9.9' ;;\n  \
         *--check-upgrade*) echo 'config: unknown key frobnicate' >&2; exit 2 ;;\nesac\n",
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::set_permissions(&refuses, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let refuses = refuses.display().to_string();

    let cases: [(&str, &str); 5] = [
        (&missing, "no such file"),
        (&not_executable, "not executable"),
        ("/bin/true", "not a nodeagent binary"),
        (&refuses, "config: unknown key frobnicate"),
        ("relative/nodeagent", "no such file"),
    ];
    for (binary, reason) in cases {
        let out = nodectl_upgrade(&agent, &["--binary", binary]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(3),
            "upgrade with {binary} exits 3 (refused): {stderr}"
        );
        assert!(
            stderr.contains("upgrade refused, nothing was changed") && stderr.contains(reason),
            "upgrade with {binary}: the error names what is wrong ({reason:?}): {stderr}"
        );
    }
    let out = nodectl_upgrade(&agent, &["--binary", &refuses, "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {:?}", out.stdout));
    assert_eq!(json["error"]["kind"], "bad arguments", "{json}");

    let info = node_info(&agent).await;
    assert_eq!(info.upgrades, 0, "no upgrade happened");
    assert_eq!(info.pid, agent.pid());
    assert_eq!(agent.pids("w").await, pids, "no process was touched");
    // Changes are taken again: the agent thawed after each refusal.
    let out = agent.nodectl(&["incr", "w"]);
    assert!(
        out.status.success(),
        "incr after refused upgrades: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_pids("w", 3).await;
}

#[tokio::test]
async fn sigusr2_upgrades_a_keyed_agent_and_replays_stay_refused() {
    let (mut agent, keys) = TestAgent::start_keyed(
        "keyed-upgrade",
        "[watchers.w]\ncmd = \"sleep\"\nargs = [\"1000\"]\nnumprocesses = 2\n",
    );
    let pids = agent.wait_pids("w", 2).await;
    // A sealed `incr` that an eavesdropper captured, once admitted.
    let sealed = {
        let request = ringmaster_protocol::Request {
            v: ringmaster_protocol::PROTOCOL_VERSION,
            id: 77,
            no_wait: false,
            command: Command::Incr {
                name: "w".into(),
                nb: 1,
            },
        };
        let body = ringmaster_protocol::Codec::default()
            .encode(&request)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        ringmaster_protocol::seal::seal(
            keys.keyring().primary(),
            ringmaster_protocol::seal::Kind::Request,
            &[],
            &body,
        )
        .unwrap_or_else(|e| panic!("seal: {e}"))
        .bytes
    };
    let mut client = agent.client();
    client
        .exchange_frame(sealed.clone())
        .await
        .unwrap_or_else(|e| panic!("first send of the sealed incr: {e}"));
    let mut grown = agent.wait_pids("w", 3).await;

    agent.signal(nix::sys::signal::Signal::SIGUSR2);
    wait_for("the upgrade by SIGUSR2", DEADLINE, || async {
        node_info(&agent).await.upgrades == 1
    })
    .await;
    assert!(
        agent.try_wait().is_none(),
        "the agent process is still the same"
    );
    let mut after = agent.pids("w").await;
    after.sort_unstable();
    grown.sort_unstable();
    assert_eq!(after, grown, "every process kept its pid");
    assert!(pids.iter().all(|p| after.contains(p)));

    // The new image remembers what the old one admitted.
    let mut client = agent.client();
    let _ = client.exchange_frame(sealed).await;
    let info = node_info(&agent).await;
    assert_eq!(
        info.refused.replayed, 1,
        "the captured frame is refused as a replay after the upgrade: {:?}",
        info.refused
    );
    assert_eq!(agent.pids("w").await.len(), 3, "the replay changed nothing");
    // Sealed requests of the rightful client go on working.
    let out = agent.nodectl(&["decr", "w"]);
    assert!(
        out.status.success(),
        "decr after the upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_pids("w", 2).await;

    // After an upgrade the pid journal still knows every process: a crash of the
    // agent leaves no orphan and no double.
    agent.kill9();
    agent.launch();
    agent.wait_pids("w", 2).await;
    for pid in &after {
        wait_for(
            &format!("process {pid} of the crashed agent stopped"),
            DEADLINE,
            || async { !pid_alive(*pid) },
        )
        .await;
    }
}

#[tokio::test]
async fn each_watcher_keeps_its_state_across_an_upgrade() {
    let agent = TestAgent::start(
        "states",
        "\n[sockets.web]\nhost = \"127.0.0.1\"\nport = 0\n\
         \n[watchers.lazy]\ncmd = \"sleep 1000\"\nnumprocesses = 2\non_demand = true\n\
         use_sockets = true\n\
         \n[watchers.off]\ncmd = \"sleep 1000\"\n\
         \n[watchers.on]\ncmd = \"sleep 1000\"\nnumprocesses = 3\n",
    );
    use ringmaster_protocol::message::WatcherState;
    wait_for("the on-demand watcher waiting", DEADLINE, || async {
        agent.state("lazy").await == WatcherState::Waiting
    })
    .await;
    agent.wait_pids("off", 1).await;
    agent
        .call(Command::Stop {
            name: Some("off".into()),
        })
        .await;
    let on = agent.wait_pids("on", 3).await;

    let out = nodectl_upgrade(&agent, &[]).await;
    assert!(
        out.status.success(),
        "upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        agent.pids("on").await,
        on,
        "the active watcher kept its pids"
    );
    assert_eq!(
        agent.state("off").await,
        WatcherState::Stopped,
        "a watcher stopped by hand stays stopped, autostart or not"
    );
    assert!(agent.pids("off").await.is_empty());
    assert_eq!(agent.state("lazy").await, WatcherState::Waiting);
    assert!(
        agent.pids("lazy").await.is_empty(),
        "still nothing before a connection"
    );
    let addr = web_addr(&agent).await;
    let _client = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
    agent.wait_pids("lazy", 2).await;
    assert_eq!(agent.state("lazy").await, WatcherState::Active);
}
