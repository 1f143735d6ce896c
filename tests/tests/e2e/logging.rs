//! Log formats of the real daemons (`--log-format`, `$RINGMASTER_LOG_FORMAT`), read
//! from their stderr redirected to a file: JSON lines, journald's priority prefixes
//! when `$JOURNAL_STREAM` names stderr (and not when it names another file), and
//! nodemeta's JSON lines.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ringmaster_tests::{bin_path, wait_for_blocking, TestAgent, DEADLINE};
use tempfile::TempDir;

/// A `nodeagent` or `nodemeta` with its stderr in `stderr.log` of its temp dir;
/// stopped (SIGTERM, then SIGKILL) on drop, its log printed when the test failed.
struct Daemon {
    name: &'static str,
    dir: TempDir,
    child: Option<Child>,
}

impl Daemon {
    /// A temp dir for a daemon, with its (still empty) stderr file.
    fn prepare(name: &'static str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("ringmaster-logging-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let daemon = Daemon {
            name,
            dir,
            child: None,
        };
        std::fs::File::create(daemon.log_path())
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", daemon.log_path().display()));
        daemon
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// `DEV:INO` of the stderr file, as systemd would put it in `$JOURNAL_STREAM`.
    fn journal_stream(&self) -> String {
        let meta = std::fs::metadata(self.log_path())
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", self.log_path().display()));
        format!("{}:{}", meta.dev(), meta.ino())
    }

    /// Starts the binary with `args` and `env`, stderr appended to the log file.
    /// The test's own `RUST_LOG`, `RINGMASTER_LOG_FORMAT` and `JOURNAL_STREAM` are
    /// not inherited: each test sets what it checks.
    fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path().display()));
        let child = Command::new(bin_path(self.name))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("RINGMASTER_LOG_FORMAT")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("RINGMASTER_POOLS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Non-empty lines of the log.
    fn lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Waits until a complete line of the log contains `needle` and returns it;
    /// fails at once if the daemon exits meanwhile.
    fn wait_line(&mut self, needle: &str) -> String {
        let name = self.name;
        wait_for_blocking(
            &format!("a line with {needle:?} in the log of {name}"),
            DEADLINE,
            || {
                if let Some(status) = self.try_wait() {
                    panic!("{name} exited ({status}) before logging {needle:?}");
                }
                self.complete_lines().iter().any(|l| l.contains(needle))
            },
        );
        self.complete_lines()
            .into_iter()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
    }

    /// Lines that end with a newline (a line may be caught half-written).
    fn complete_lines(&self) -> Vec<String> {
        let log = self.log();
        let complete = log.rsplit_once('\n').map_or("", |(done, _)| done);
        complete.lines().map(str::to_string).collect()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(&mut self) {
        let pid = self.child.as_ref().map_or(0, Child::id);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {DEADLINE:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        };
        self.child = None;
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            ringmaster_tests::terminate(&mut child, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!("---- stderr of {} ----\n{}", self.name, self.log());
        }
    }
}

/// A `nodeagent` with `ipc://` endpoints and one watcher, in a fresh temp dir.
fn agent(node: &str) -> Daemon {
    let daemon = Daemon::prepare("nodeagent");
    let dir = daemon.path().display().to_string();
    let config = format!(
        "[agent]\nnode = \"{node}\"\ncontrol = \"ipc://{dir}/control.sock\"\n\
         pubsub = \"ipc://{dir}/pubsub.sock\"\nstate_dir = \"state\"\n\n\
         [watchers.w]\ncmd = \"sleep 1000\"\n"
    );
    std::fs::write(daemon.path().join("agent.toml"), config)
        .unwrap_or_else(|e| panic!("cannot write the config: {e}"));
    daemon
}

fn config_arg(daemon: &Daemon) -> String {
    daemon.path().join("agent.toml").display().to_string()
}

/// The line the agent logs once its endpoints are bound.
const LISTENING: &str = " listening";
/// The line the agent logs once its autostart watchers run.
const STARTED: &str = "started 1 process(es) in 1 watcher(s)";
/// The agent's last line.
const BYE: &str = "every watcher stopped; bye";

/// True when `line` holds a time of day (`HH:MM:SS`), as timestamps do.
fn has_time_of_day(line: &str) -> bool {
    let b = line.as_bytes();
    b.windows(8).any(|w| {
        let digit = |i: usize| w[i].is_ascii_digit();
        digit(0)
            && digit(1)
            && w[2] == b':'
            && digit(3)
            && digit(4)
            && w[5] == b':'
            && digit(6)
            && digit(7)
    })
}

/// Parses every line as a JSON log object with a timestamp, a known level and a
/// message; returns them.
fn json_lines(daemon: &Daemon) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let lines = daemon.lines();
    assert!(!lines.is_empty(), "{} logged nothing", daemon.name);
    lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            let serde_json::Value::Object(object) = value else {
                panic!("not a JSON object: {line:?}");
            };
            let timestamp = object.get("timestamp").and_then(|t| t.as_str());
            assert!(
                timestamp.is_some_and(has_time_of_day),
                "no timestamp in {line:?}"
            );
            let level = object.get("level").and_then(|l| l.as_str());
            assert!(
                matches!(level, Some("ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE")),
                "no level in {line:?}"
            );
            assert!(
                object.get("message").is_some_and(|m| m.is_string()),
                "no message in {line:?}"
            );
            object
        })
        .collect()
}

fn message(object: &serde_json::Map<String, serde_json::Value>) -> &str {
    object.get("message").and_then(|m| m.as_str()).unwrap_or("")
}

#[test]
fn log_format_json_gives_one_json_object_per_line() {
    let mut agent = agent("json-node");
    let config = config_arg(&agent);
    agent.spawn(&["--config", &config, "--log-format", "json", "-v"], &[]);
    agent.wait_line(STARTED);
    agent.stop();

    let objects = json_lines(&agent);
    let listening = objects
        .iter()
        .find(|o| message(o).ends_with(LISTENING))
        .unwrap_or_else(|| panic!("no 'listening' line in {objects:#?}"));
    assert_eq!(listening["level"], "INFO", "{listening:?}");
    // The event's fields are at the top level, next to the message.
    assert_eq!(listening["node"], "json-node", "{listening:?}");
    assert!(
        listening["control"]
            .as_str()
            .is_some_and(|c| c.ends_with("/control.sock")),
        "{listening:?}"
    );
    // -v: debug lines too.
    assert!(
        objects.iter().any(|o| o["level"] == "DEBUG"),
        "no DEBUG line with -v: {objects:#?}"
    );
    assert!(
        objects.iter().any(|o| message(o) == BYE),
        "no {BYE:?} line: {objects:#?}"
    );
}

#[test]
fn journald_format_when_journal_stream_names_stderr() {
    let mut agent = agent("journald-node");
    let config = config_arg(&agent);
    let stream = agent.journal_stream();
    agent.spawn(
        &["--config", &config],
        &[
            ("JOURNAL_STREAM", &stream),
            // Not an absolute path: the agent warns about it at start.
            ("NOTIFY_SOCKET", "relative/notify.sock"),
        ],
    );
    agent.wait_line(STARTED);
    agent.stop();

    let lines = agent.lines();
    for line in &lines {
        let priority = line.get(..3);
        assert!(
            matches!(priority, Some("<3>" | "<4>" | "<6>" | "<7>")),
            "no priority prefix on {line:?} (JOURNAL_STREAM={stream})"
        );
        assert!(!has_time_of_day(line), "a timestamp in {line:?}");
        assert!(!line.contains('\x1b'), "an ANSI escape in {line:?}");
        for word in ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"] {
            assert!(!line.contains(word), "the level word {word} in {line:?}");
        }
    }
    let listening = lines
        .iter()
        .find(|l| l.contains(LISTENING))
        .unwrap_or_else(|| panic!("no 'listening' line in {lines:#?}"));
    assert!(
        listening.starts_with("<6>nodeagent ") && listening.contains("node=journald-node"),
        "{listening:?}"
    );
    assert!(
        lines.iter().any(|l| l == &format!("<6>{STARTED}")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == &format!("<6>{BYE}")),
        "{lines:#?}"
    );
    let warning = lines
        .iter()
        .find(|l| l.contains("NOTIFY_SOCKET=relative/notify.sock is not usable"))
        .unwrap_or_else(|| panic!("no warning about NOTIFY_SOCKET in {lines:#?}"));
    assert!(warning.starts_with("<4>"), "{warning:?}");
}

#[test]
fn human_format_when_journal_stream_names_another_file() {
    let mut agent = agent("human-node");
    let config = config_arg(&agent);
    agent.spawn(&["--config", &config], &[("JOURNAL_STREAM", "1:1")]);
    let listening = agent.wait_line(LISTENING);
    agent.stop();

    assert!(!listening.starts_with('<'), "{listening:?}");
    assert!(has_time_of_day(&listening), "no timestamp in {listening:?}");
    assert!(listening.contains("INFO"), "no level in {listening:?}");
    // stderr is a file, not a terminal: no colours.
    assert!(
        !agent.log().contains('\x1b'),
        "ANSI escapes:\n{}",
        agent.log()
    );
}

#[tokio::test]
async fn the_log_format_can_come_from_the_environment() {
    let agent = TestAgent::start_with_env(
        "env-format",
        "\n[watchers.w]\ncmd = \"sleep 1000\"\n",
        &[("RINGMASTER_LOG_FORMAT", "journald")],
    );
    agent.wait_pids("w", 1).await;
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains(LISTENING)),
        "no journald-style 'listening' line:\n{log}"
    );
    assert!(
        log.lines().all(|l| l.starts_with('<')),
        "a line without a priority prefix:\n{log}"
    );
}

#[test]
fn nodemeta_log_format_json_gives_json_lines() {
    let mut meta = Daemon::prepare("nodemeta");
    let dir = meta.path().display().to_string();
    // The pool's only node is down (nothing listens there): nodemeta runs anyway.
    let pools = format!(
        "[pools.p]\ntimeout = 1.0\n\n[[pools.p.nodes]]\nname = \"down-1\"\n\
         control = \"ipc://{dir}/down-control.sock\"\npubsub = \"ipc://{dir}/down-pubsub.sock\"\n"
    );
    let pools_file = meta.path().join("pools.toml");
    std::fs::write(&pools_file, pools).unwrap_or_else(|e| panic!("cannot write pools: {e}"));
    let endpoint = format!("ipc://{dir}/meta.pub");
    let pools_arg = pools_file.display().to_string();
    meta.spawn(
        &[
            "--pools",
            &pools_arg,
            "--pool",
            "p",
            "--pubsub",
            &endpoint,
            "--interval",
            "0.2",
            "--log-format",
            "json",
        ],
        &[],
    );
    meta.wait_line("relaying");
    meta.stop();

    let objects = json_lines(&meta);
    let relaying = objects
        .iter()
        .find(|o| message(o).ends_with(" relaying"))
        .unwrap_or_else(|| panic!("no 'relaying' line in {objects:#?}"));
    assert_eq!(relaying["level"], "INFO", "{relaying:?}");
    assert_eq!(relaying["pool"], "p", "{relaying:?}");
    assert_eq!(relaying["nodes"], 1, "{relaying:?}");
    assert!(
        objects.iter().any(|o| message(o) == "nodemeta stopped"),
        "no 'nodemeta stopped' line: {objects:#?}"
    );
}
