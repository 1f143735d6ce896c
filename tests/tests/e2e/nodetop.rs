//! `nodetop` as a user sees it: in a real 80×24 terminal (a detached tmux
//! session) against a live agent and against the nodes of a pool (`--pool`), and
//! its errors when there is no agent, no terminal or a bad pool.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ringmaster_tests::{bin_path, NodeDef, TestAgent, TestPool, DEADLINE};

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

    /// Presses `q` and waits for the exit status the command wrote to `file`.
    fn quit(&self, status_file: &Path) -> String {
        self.run(&["send-keys", "-t", "top", "q"]);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(status) = std::fs::read_to_string(status_file) {
                if status.ends_with('\n') {
                    return status.trim().to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodetop did not exit on 'q'; the screen:\n{}",
                self.capture()
            );
            std::thread::sleep(Duration::from_millis(20)); // poll interval
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

    assert_eq!(tmux.quit(&status_file), "0", "nodetop's exit status");
}

/// The words of a screen line.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// True when the screen has a node line for `node` that says it is up.
fn node_up(screen: &str, node: &str) -> bool {
    screen
        .lines()
        .any(|l| words(l).starts_with(&[node, "up", "cpu"]))
}

/// True when the watchers table (all nodes) has a row for `watcher` on `nodes`
/// nodes with `processes` processes in all.
fn watcher_total(screen: &str, watcher: &str, nodes: usize, processes: usize) -> bool {
    let (nodes, processes) = (nodes.to_string(), processes.to_string());
    screen.lines().any(|l| {
        let words = words(l);
        let words = words.strip_prefix(&[">"]).unwrap_or(&words);
        words.starts_with(&[watcher, &nodes, &processes])
    })
}

const POOL_NODES: [NodeDef<'static>; 3] = [
    NodeDef {
        name: "t-a",
        labels: "zone = \"eu-1\"",
    },
    NodeDef {
        name: "t-b",
        labels: "zone = \"eu-1\"",
    },
    NodeDef {
        name: "t-c",
        labels: "zone = \"eu-2\"",
    },
];

#[tokio::test]
async fn nodetop_shows_every_node_of_a_pool_and_watcher_totals_across_them() {
    if !Tmux::installed() {
        eprintln!("skipping: tmux not installed");
        return;
    }
    let pool = TestPool::start(
        "top",
        &POOL_NODES,
        "stats_interval = 0.2",
        "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n",
    );
    for agent in &pool.agents {
        agent.wait_pids("w", 2).await;
    }

    let status_file = pool.dir().join("nodetop.status");
    let command = format!(
        "{} --pools {} --pool top --refresh 0.2; echo $? > {}",
        quote(&bin_path("nodetop")),
        quote(&pool.pools_file()),
        quote(&status_file)
    );
    let mut tmux = Tmux::new("nodetop-pool");
    tmux.start(&command);
    let screen = tmux.wait_screen("3 nodes up and w with 6 processes on 3 nodes", |screen| {
        ["t-a", "t-b", "t-c"].iter().all(|n| node_up(screen, n))
            && screen
                .lines()
                .any(|l| l.starts_with("pool ") && l.contains("3/3 up"))
            && watcher_total(screen, "w", 3, 6)
            && screen.contains("w on 3 nodes: 6 processes")
    });
    eprintln!("nodetop --pool at 80x24:\n{screen}");
    assert_eq!(screen.lines().count(), 24, "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    // Every process of w, on whichever node, is listed.
    for agent in &pool.agents {
        for pid in agent.pids("w").await {
            assert!(screen.contains(&pid.to_string()), "pid {pid}:\n{screen}");
        }
    }

    // Right: one node's watchers, as for a single agent.
    tmux.run(&["send-keys", "-t", "top", "Right"]);
    let screen = tmux.wait_screen("the watchers of t-a alone", |screen| {
        screen.contains("w on t-a: 2 processes")
            && screen
                .lines()
                .any(|l| words(l).starts_with(&[">", "t-a", "w", "2"]))
    });
    eprintln!("node t-a selected:\n{screen}");
    assert_eq!(tmux.quit(&status_file), "0", "nodetop's exit status");
}

#[tokio::test]
async fn nodetop_lists_a_pool_node_that_is_down_and_shows_the_others() {
    if !Tmux::installed() {
        eprintln!("skipping: tmux not installed");
        return;
    }
    let pool = TestPool::start(
        "top",
        &POOL_NODES,
        "stats_interval = 0.2",
        "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n",
    );
    for agent in &pool.agents {
        agent.wait_pids("w", 2).await;
    }
    // t-x, in zone eu-1 too, has no agent at all.
    let mut pools = std::fs::read_to_string(pool.pools_file()).unwrap();
    let gone = pool.dir().join("t-x");
    pools.push_str(&format!(
        "\n[[pools.top.nodes]]\nname = \"t-x\"\ncontrol = \"ipc://{0}/control.sock\"\n\
         pubsub = \"ipc://{0}/pubsub.sock\"\nlabels = {{ zone = \"eu-1\" }}\n",
        gone.display()
    ));
    let pools_file = pool.dir().join("pools-with-t-x.toml");
    std::fs::write(&pools_file, pools).unwrap();

    let status_file = pool.dir().join("nodetop.status");
    let command = format!(
        "{} --pools {} --pool top --where zone=eu-1 --refresh 0.2; echo $? > {}",
        quote(&bin_path("nodetop")),
        quote(&pools_file),
        quote(&status_file)
    );
    let mut tmux = Tmux::new("nodetop-down");
    tmux.start(&command);
    let screen = tmux.wait_screen("t-a and t-b up, t-x without data", |screen| {
        node_up(screen, "t-a")
            && node_up(screen, "t-b")
            && screen.contains("no data from t-x for")
            && watcher_total(screen, "w", 2, 4)
    });
    eprintln!("nodetop --where zone=eu-1 with t-x down:\n{screen}");
    assert!(!screen.contains("t-c"), "t-c is in zone eu-2:\n{screen}");
    assert!(
        screen.lines().any(|l| l.starts_with("t-x: ")),
        "t-x's problem:\n{screen}"
    );
    assert_eq!(tmux.quit(&status_file), "0", "nodetop's exit status");
}

#[test]
fn nodetop_with_a_bad_pool_says_why_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let pools = dir.path().join("pools.toml");
    std::fs::write(
        &pools,
        "[pools.top]\n[[pools.top.nodes]]\nname = \"t-a\"\ncontrol = \"ipc:///nonexistent/c\"\n\
         pubsub = \"ipc:///nonexistent/p\"\nlabels = { zone = \"eu-1\" }\n",
    )
    .unwrap();
    let nodetop = |args: &[&str]| {
        Command::new(bin_path("nodetop"))
            .arg("--pools")
            .arg(&pools)
            .args(args)
            .env_remove("RINGMASTER_POOL")
            .output()
            .unwrap()
    };
    for (args, expected) in [
        (&["--pool", "nope"][..], "no pool 'nope'"),
        (&["--pool", "top", "--node", "t-z"][..], "no node 't-z'"),
        (&["--pool", "top", "--where", "zone=us-1"][..], "zone=us-1"),
        (&["--pool", "top", "--where", "zone"][..], "LABEL=VALUE"),
    ] {
        let out = nodetop(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("nodetop: ") && err.contains(expected),
            "{args:?}: {err}"
        );
    }
    let out = Command::new(bin_path("nodetop"))
        .args(["--pools", "/nonexistent/pools.toml", "--pool", "top"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/pools.toml"),
        "{}",
        stderr(&out)
    );
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
        "--pool",
        "--pools",
        "--node",
        "--where",
        "RINGMASTER_ENDPOINT",
        "RINGMASTER_POOL",
        "nodemeta",
        "Keys:",
    ] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
}
