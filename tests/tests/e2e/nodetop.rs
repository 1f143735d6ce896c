//! `nodetop` as a user sees it: in a real 80×24 terminal (a detached tmux
//! session) against a live agent, and its errors when there is no agent or no
//! terminal.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ringmaster_tests::{bin_path, TestAgent, DEADLINE};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tmux server of our own (its own `-L` socket, no user config), killed on drop.
struct Tmux {
    socket: String,
    socket_path: Option<String>,
}

impl Tmux {
    fn installed() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("ringmaster-{name}-{}", std::process::id()),
            socket_path: None,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux: {e}"))
    }

    /// Starts session `top` running `command` in an 80×24 window.
    fn start(&mut self, command: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "80",
            "-y",
            "24",
            command,
        ]);
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        let out = self.run(&["display-message", "-p", "-t", "top", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.socket_path = Some(path).filter(|p| !p.is_empty());
    }

    /// The text of the session's only pane.
    fn capture(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `check` accepts it; panics with the last screen.
    fn wait_screen(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.capture();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {DEADLINE:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50)); // poll interval
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        // tmux leaves its socket file behind.
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[tokio::test]
async fn nodetop_shows_a_live_agent_in_an_80x24_terminal() {
    if !Tmux::installed() {
        eprintln!("skipping: tmux not installed");
        return;
    }
    let mut agent = TestAgent::start(
        "topnode",
        "stats_interval = 0.2\n\n[watchers.sleeper]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n",
    );
    agent.wait_pids("sleeper", 2).await;

    let status_file = agent.dir().join("nodetop.status");
    let command = format!(
        "{} --endpoint '{}' --refresh 0.2; echo $? > {}",
        quote(&bin_path("nodetop")),
        agent.control,
        quote(&status_file)
    );
    let mut tmux = Tmux::new("nodetop");
    tmux.start(&command);

    let screen = tmux.wait_screen("the node, its watcher and 2 processes", |screen| {
        let node_up = screen
            .lines()
            .any(|l| l.starts_with("topnode") && l.contains(" up ") && l.contains("procs 2"));
        let watcher_row = screen.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.iter().position(|w| *w == "sleeper").is_some_and(|i| {
                i > 0 && words[i - 1] == "topnode" && words.get(i + 1) == Some(&"2")
            })
        });
        node_up && watcher_row && screen.contains("sleeper on topnode: 2 processes")
    });
    eprintln!("nodetop at 80x24:\n{screen}");
    assert_eq!(screen.lines().count(), 24, "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    assert!(screen.contains("PID") && screen.contains("AGE"), "{screen}");
    let pids = agent.pids("sleeper").await;
    for pid in &pids {
        assert!(
            screen.contains(&pid.to_string()),
            "pid {pid} missing:\n{screen}"
        );
    }

    // Negative control: once the agent is gone, the screen says so.
    agent.stop();
    let screen = tmux.wait_screen("the node going quiet", |screen| {
        screen.contains("no data from topnode for")
    });
    eprintln!("after the agent stopped:\n{screen}");

    tmux.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if status.ends_with('\n') {
                break status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nodetop did not exit on 'q'; the screen:\n{}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.trim(), "0", "nodetop's exit status");
}

#[tokio::test]
async fn nodetop_without_an_agent_or_a_terminal_says_why_and_exits_1() {
    let started = Instant::now();
    let out = Command::new(bin_path("nodetop"))
        .args(["--endpoint", "ipc:///nonexistent/ringmaster/control.sock"])
        .args(["--timeout", "0.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach agent at ipc:///nonexistent/ringmaster/control.sock"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < DEADLINE);

    let agent = TestAgent::start("topnotty", "stats_interval = 0.2\n");
    let out = Command::new(bin_path("nodetop"))
        .args(["--endpoint", &agent.control])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("terminal"), "{}", stderr(&out));

    let out = Command::new(bin_path("nodetop"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--endpoint",
        "--pubsub",
        "--refresh",
        "RINGMASTER_ENDPOINT",
        "Keys:",
    ] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
}
