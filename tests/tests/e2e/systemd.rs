//! systemd's notify protocol, checked with a fake `$NOTIFY_SOCKET`: `READY=1` only
//! once the endpoints answer and the autostart watchers run, `STATUS=` kept
//! current, `WATCHDOG=1` at half `$WATCHDOG_USEC`, `STOPPING=1` on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use ringmaster_protocol::Command;
use ringmaster_tests::{TestAgent, DEADLINE};

/// A datagram socket standing in for systemd's.
struct FakeSystemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl FakeSystemd {
    fn new() -> FakeSystemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeSystemd {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// The next message, waiting at most until `deadline`.
    fn next(&self, deadline: Instant) -> Option<String> {
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            // Each recv waits at most its read timeout: a poll with a deadline.
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Reads messages until one satisfies `pick`, failing after [`DEADLINE`] with
    /// everything that was received.
    fn wait(&self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while let Some(message) = self.next(deadline) {
            if pick(&message) {
                return message;
            }
            seen.push(message);
        }
        panic!("no {what} from the agent within {DEADLINE:?}; received: {seen:?}");
    }
}

#[tokio::test]
async fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let systemd = FakeSystemd::new();
    let mut agent = TestAgent::start_with_env(
        "notified",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 3\n",
        &[
            ("NOTIFY_SOCKET", &systemd.path),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let ready = systemd.wait("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // Ready means: the control endpoint answers and the watcher already runs.
    assert!(
        ready.contains("STATUS=1 watcher(s), 3 process(es)"),
        "{ready}"
    );
    assert_eq!(agent.pids("w").await.len(), 3);

    // The watchdog is pinged at half of WATCHDOG_USEC (0.2 s): several times a
    // second.
    let started = Instant::now();
    for _ in 0..3 {
        systemd.wait("WATCHDOG=1", |m| m == "WATCHDOG=1");
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // STATUS follows the processes.
    agent
        .call(Command::Incr {
            name: "w".into(),
            nb: 2,
        })
        .await;
    systemd.wait("STATUS with 5 processes", |m| {
        m == "STATUS=1 watcher(s), 5 process(es)"
    });

    agent.signal(nix::sys::signal::Signal::SIGTERM);
    systemd.wait("STOPPING=1", |m| m.starts_with("STOPPING=1"));
    assert!(agent.wait_exit(DEADLINE).success());
}

#[tokio::test]
async fn an_unusable_notify_socket_does_not_stop_the_agent() {
    let agent = TestAgent::start_with_env(
        "unnotified",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\ncopy_env = true\n",
        &[("NOTIFY_SOCKET", "/nonexistent/notify.sock")],
    );
    agent.wait_pids("w", 1).await;
    // The children do not inherit the notify variables.
    let pid = agent.pids("w").await[0];
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"),
        "a watcher process inherited NOTIFY_SOCKET"
    );
}

#[test]
fn the_units_pass_systemd_analyze_verify_where_available() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = ringmaster_tests::bin_path("nodeagent")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
    let mut paths = Vec::new();
    for unit in ["nodeagent.service", "nodemeta.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        // Point ExecStart at the built binaries, which verify checks exist.
        let text = text.replace("/usr/local/bin", &bin_dir);
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The default `/etc/ringmaster/agent.toml` shipped in `packaging/` is valid as is.
#[test]
fn the_packaged_agent_config_is_valid() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    let out = std::process::Command::new(ringmaster_tests::bin_path("nodeagent"))
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not valid: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
