//! Circus INI configs (`tests/circus-configs/`, written the way Circus users write
//! them): each is accepted by `nodeagent --check-config`, which prints it resolved
//! as TOML, and an agent started on it runs what it describes, with Circus's
//! variables and `[env:…]` sections in the processes' environments. Broken ones are
//! refused with the file, the line and what is wrong. The configs of `examples/`
//! (the demos the README starts) are checked too.
//!
//! Each test copies its config into the agent's temp dir, points `endpoint` and
//! `pubsub_endpoint` at ipc sockets there, and appends an `[agent]` section (which
//! circusd ignores) naming the node and a state dir inside the temp dir. The agent
//! runs from the temp dir, so the config's relative paths land there, as they
//! would in circusd's working directory.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::{bin_path, wait_for, TestAgent, DEADLINE};

const NODE: &str = "circus-node";

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("circus-configs")
}

/// Copies `from` (a file or a directory tree) to `to`.
fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// A config of `tests/circus-configs/` in a prepared agent's temp dir.
struct Deployed {
    agent: TestAgent,
    main: PathBuf,
    env: Vec<(String, String)>,
}

/// Deploys config `name` (a file, or `DIR/FILE` with its whole directory), run
/// with `env` added to the agent's environment.
fn deploy(name: &str, env: &[(&str, &str)]) -> Deployed {
    let agent = TestAgent::prepare(NODE, "", &[]);
    let dir = agent.dir().to_path_buf();
    let main = match name.split_once('/') {
        Some((sub, file)) => {
            copy(&configs().join(sub), &dir.join(sub));
            dir.join(sub).join(file)
        }
        None => {
            copy(&configs().join(name), &dir.join(name));
            dir.join(name)
        }
    };
    let text = std::fs::read_to_string(&main).unwrap();
    let mut rewritten = String::new();
    let mut endpoints = 0;
    for line in text.lines() {
        match line.split_once('=').map(|(key, _)| key.trim()) {
            Some("endpoint") => {
                rewritten.push_str(&format!("endpoint = {}\n", agent.control));
                endpoints += 1;
            }
            Some("pubsub_endpoint") => {
                rewritten.push_str(&format!("pubsub_endpoint = {}\n", agent.pubsub));
                endpoints += 1;
            }
            _ => {
                rewritten.push_str(line);
                rewritten.push('\n');
            }
        }
    }
    assert_eq!(endpoints, 2, "{name} must set endpoint and pubsub_endpoint");
    rewritten.push_str(&format!("\n[agent]\nnode = {NODE}\nstate_dir = state\n"));
    std::fs::write(&main, rewritten).unwrap();
    Deployed {
        agent,
        main,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

impl Deployed {
    fn dir(&self) -> &Path {
        self.agent.dir()
    }

    /// `nodeagent --check-config FILE`, from the agent's dir: exit code, stdout,
    /// stderr.
    fn check(&self) -> (i32, String, String) {
        let out = Process::new(bin_path("nodeagent"))
            .arg("--check-config")
            .arg(&self.main)
            .current_dir(self.dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Checks the config (it must pass), then starts the agent on it; returns the
    /// agent and the resolved config `--check-config` printed.
    fn start(self) -> (TestAgent, String) {
        let (code, stdout, stderr) = self.check();
        assert_eq!(code, 0, "--check-config failed:\n{stderr}");
        let Deployed {
            mut agent,
            main,
            env,
        } = self;
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        agent.use_config_file(main, NODE, &env);
        agent.launch();
        (agent, stdout)
    }
}

/// The lines of table `[header]` in the TOML `--check-config` printed.
fn table<'a>(resolved: &'a str, header: &str) -> Vec<&'a str> {
    let wanted = format!("[{header}]");
    resolved
        .lines()
        .skip_while(|line| line.trim() != wanted)
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.trim().is_empty())
        .collect()
}

/// Asserts that table `[header]` of `resolved` has the line `line`.
fn assert_resolved(resolved: &str, header: &str, line: &str) {
    let lines = table(resolved, header);
    assert!(
        lines.contains(&line),
        "[{header}] has no line {line:?}; it has:\n{}\n\nwhole output:\n{resolved}",
        lines.join("\n")
    );
}

/// Waits until `path` exists and is not empty (a process writes it); returns
/// its text.
async fn file_text(path: &Path) -> String {
    wait_for(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || async { std::fs::metadata(path).is_ok_and(|m| m.len() > 0) },
    )
    .await;
    // The writer may still be writing: wait for the text to end its line.
    wait_for(
        &format!("{} to end its line", path.display()),
        DEADLINE,
        || async { std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')) },
    )
    .await;
    std::fs::read_to_string(path).unwrap()
}

/// The text after a `TIME [PID] | ` prefix whose time is `time_len` long.
fn unstamp(line: &str, time_len: usize) -> Option<&str> {
    let (time, rest) = line.split_at_checked(time_len)?;
    if !time
        .chars()
        .all(|c| c.is_ascii_digit() || "-: T".contains(c))
    {
        return None;
    }
    let (pid, rest) = rest.strip_prefix(" [")?.split_once("] | ")?;
    pid.parse::<u32>().ok()?;
    Some(rest)
}

async fn sockets(agent: &TestAgent) -> Vec<ringmaster_protocol::message::SocketInfo> {
    match agent.call(Command::ListSockets {}).await {
        Response::Sockets(list) => list,
        other => panic!("unexpected listsockets reply {other:?}"),
    }
}

fn current(what: &str) -> String {
    let out = Process::new("id").arg(what).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn webapp_workers_share_the_agents_sockets() {
    let (agent, resolved) = deploy("webapp.ini", &[]).start();
    assert_resolved(&resolved, "sockets.web", "port = 0");
    assert_resolved(&resolved, "sockets.web", "backlog = 128");
    assert_resolved(&resolved, "sockets.admin", "replace = true");
    assert_resolved(&resolved, "watchers.web", "numprocesses = 3");
    assert_resolved(&resolved, "watchers.web", "use_sockets = true");
    assert_resolved(&resolved, "watchers.web", "priority = 10");
    assert_resolved(&resolved, "watchers.web", "umask = \"002\"");
    assert_resolved(&resolved, "watchers.admin", "singleton = true");
    // ((circus.X)) becomes $(circus.X), expanded when a process is spawned.
    assert!(
        resolved.contains("admin $(circus.sockets.admin)"),
        "{resolved}"
    );

    let web = agent.wait_pids("web", 3).await;
    assert_eq!(web.len(), 3);
    agent.wait_pids("admin", 1).await;
    for wid in 1..=3 {
        let fd = file_text(&agent.dir().join(format!("web-fd-{wid}.txt"))).await;
        let fd: i32 = fd
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a fd: {fd:?}"));
        assert!(fd >= 3, "web's socket is passed as fd {fd}");
    }
    let fd = file_text(&agent.dir().join("admin-fd.txt")).await;
    assert!(fd.trim().parse::<i32>().is_ok(), "{fd:?}");

    let list = sockets(&agent).await;
    let web = list.iter().find(|s| s.name == "web").expect("socket web");
    let port = web.port.expect("a port");
    assert_ne!(port, 0, "the real port is shown");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the web socket accepts");
    let admin = list
        .iter()
        .find(|s| s.name == "admin")
        .expect("socket admin");
    assert_eq!(
        admin.path.as_deref().map(Path::new),
        Some(agent.dir().join("admin.sock").as_path())
    );
}

#[tokio::test]
async fn workers_get_their_environment_from_env_sections() {
    let (agent, resolved) = deploy("workers.ini", &[("REDIS_HOST", "10.0.0.7")]).start();
    // The Flapping plugin becomes the built-in flapping options; Circus measures
    // window + check_delay (5 s by default).
    assert_resolved(&resolved, "watchers.worker-high", "check_flapping = true");
    assert_resolved(&resolved, "watchers.worker-high", "flapping_attempts = 3");
    assert_resolved(&resolved, "watchers.worker-high", "flapping_window = 15.0");
    assert_resolved(&resolved, "watchers.worker-high", "retry_in = 5.0");
    assert_resolved(&resolved, "watchers.worker-high", "max_retry = 2");
    assert_resolved(&resolved, "watchers.worker-high", "stop_children = true");
    assert_resolved(&resolved, "watchers.worker-low", "flapping_window = 6.0");
    assert_resolved(&resolved, "watchers.worker-low", "max_retry = 3");
    assert_resolved(&resolved, "watchers.beat", "singleton = true");
    assert!(resolved.contains("detects flapping itself"), "{resolved}");

    agent.wait_pids("worker-high", 2).await;
    agent.wait_pids("worker-low", 1).await;
    agent.wait_pids("beat", 1).await;
    let broker = "BROKER_URL=redis://10.0.0.7:6379/0";
    for wid in 1..=2 {
        let env = file_text(&agent.dir().join(format!("worker-high-{wid}.env"))).await;
        for line in [
            broker,
            "QUEUES=high,default",
            "CONCURRENCY=8",
            "LOG_LEVEL=info",
            "APP_ENV=production",
        ] {
            assert!(
                env.lines().any(|l| l == line),
                "{line} not in worker-high's env:\n{env}"
            );
        }
        assert!(!env.contains("REDIS_HOST"), "copy_env is off:\n{env}");
    }
    let env = file_text(&agent.dir().join("worker-low-1.env")).await;
    for line in [broker, "QUEUES=low", "CONCURRENCY=4"] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} not in worker-low's env:\n{env}"
        );
    }
    let env = file_text(&agent.dir().join("beat.env")).await;
    assert!(env.lines().any(|l| l == "QUEUES=low"), "{env}");
    assert!(
        !env.contains("CONCURRENCY"),
        "[env:worker-*] is not beat's:\n{env}"
    );
}

#[tokio::test]
async fn streams_go_to_rotated_and_stamped_files() {
    let deployed = deploy("streams.ini", &[]);
    std::fs::create_dir(deployed.dir().join("logs")).unwrap();
    let (agent, resolved) = deployed.start();
    assert_resolved(&resolved, "watchers.api.stdout", "max_bytes = 1024");
    assert_resolved(&resolved, "watchers.api.stdout", "backup_count = 3");
    assert_resolved(&resolved, "watchers.api.stdout", "timestamp = true");
    assert_resolved(&resolved, "watchers.reports.stdout", "rotate_when = \"H\"");
    assert_resolved(&resolved, "watchers.reports.stdout", "rotate_interval = 6");
    assert_resolved(&resolved, "watchers.reports.stdout", "utc = true");
    assert_resolved(&resolved, "watchers.reports", "stderr = \"null\"");
    assert_resolved(&resolved, "watchers.console", "stdout = \"capture\"");
    assert_resolved(&resolved, "watchers.quiet", "stdout = \"null\"");
    assert_resolved(&resolved, "watchers.quiet", "stderr = \"null\"");

    let logs = agent.dir().join("logs");
    // 60 lines of ~70 bytes: more than 1024, so the file was rotated.
    file_text(&logs.join("api.out.log.1")).await;
    let api = file_text(&logs.join("api.out.log")).await;
    let line = api.lines().next().unwrap();
    let rest = unstamp(line, "2026-01-31 12:00:00".len())
        .unwrap_or_else(|| panic!("no 'time [pid] | ' prefix: {line:?}"));
    assert!(rest.starts_with("api request "), "{line:?}");
    assert!(file_text(&logs.join("api.err.log"))
        .await
        .contains("api warning"));
    let reports = file_text(&logs.join("reports.log")).await;
    let line = reports.lines().next().unwrap();
    assert_eq!(
        unstamp(line, "2026-01-31T12:00:00".len()),
        Some("report started"),
        "{line:?}"
    );
    assert!(file_text(&logs.join("legacy.log"))
        .await
        .contains("legacy line"));

    // StdoutStream / FancyStdoutStream: through the agent, kept for `logs`.
    wait_for("the console watcher's output in logs", DEADLINE, || async {
        match agent
            .call(Command::Logs {
                name: "console".into(),
                lines: 10,
                stream: None,
            })
            .await
        {
            Response::Logs(report) => {
                let texts: Vec<&str> = report.lines.iter().map(|l| l.text.as_str()).collect();
                texts.iter().any(|t| t.contains("to the console"))
                    && texts.iter().any(|t| t.contains("console error"))
            }
            other => panic!("unexpected logs reply {other:?}"),
        }
    })
    .await;
    agent.wait_pids("quiet", 1).await;
}

#[tokio::test]
async fn includes_pull_in_conf_d_and_common_settings() {
    let (agent, resolved) = deploy("include/circus.ini", &[("DEPLOYMENT_NAME", "blue-42")]).start();
    assert_resolved(&resolved, "watchers.api", "numprocesses = 2");
    assert_resolved(&resolved, "watchers.api", "priority = 2");
    assert_resolved(&resolved, "watchers.jobs.env", "JOB_QUEUE = \"nightly\"");
    assert!(!resolved.contains("README"), "{resolved}");

    agent.wait_pids("api", 2).await;
    agent.wait_pids("jobs", 1).await;
    let env = file_text(&agent.dir().join("api.env")).await;
    assert!(env.lines().any(|l| l == "DEPLOYMENT=blue-42"), "{env}");
    assert!(env.lines().any(|l| l == "TZ=UTC"), "{env}");
    let env = file_text(&agent.dir().join("jobs.env")).await;
    assert!(env.lines().any(|l| l == "JOB_QUEUE=nightly"), "{env}");
    assert!(
        env.lines().any(|l| l == "TZ=Europe/Paris"),
        "[env:jobs] wins over [env]:\n{env}"
    );
}

#[tokio::test]
async fn limits_umask_and_user_apply_to_the_processes() {
    let (user, group) = (current("-un"), current("-gn"));
    let (agent, resolved) = deploy(
        "limits.ini",
        &[("RUN_AS_USER", &user), ("RUN_AS_GROUP", &group)],
    )
    .start();
    assert_resolved(&resolved, "watchers.sync", &format!("uid = {user:?}"));
    assert_resolved(&resolved, "watchers.sync", "rlimit_nofile = 256");
    assert_resolved(&resolved, "watchers.sync", "rlimit_core = 0");
    assert_resolved(&resolved, "watchers.sync", "rlimit_fsize = \"unlimited\"");
    assert_resolved(&resolved, "watchers.sync", "umask = \"027\"");

    agent.wait_pids("sync", 1).await;
    let read = |name: &str| {
        let path = agent.dir().join(name);
        async move { file_text(&path).await.trim().to_string() }
    };
    assert_eq!(read("user.txt").await, user);
    assert_eq!(read("group.txt").await, group);
    assert_eq!(read("nofile.txt").await, "256");
    assert_eq!(read("core.txt").await, "0");
    assert_eq!(read("fsize.txt").await, "unlimited");
    assert_eq!(read("umask.txt").await, "0027");
}

#[tokio::test]
async fn plugins_are_reported_and_the_config_still_runs() {
    let (agent, resolved) = deploy("plugins.ini", &[]).start();
    for class in [
        "circus.plugins.statsd.StatsdEmitter",
        "circus.plugins.statsd.FullStats",
        "circus.plugins.watchdog.WatchDog",
        "circus.plugins.resource_watcher.ResourceWatcher",
        "circus.plugins.http_observer.HttpObserver",
        "circus.plugins.redis_observer.RedisObserver",
        "circus.plugins.command_reloader.CommandReloader",
        "shop.circus.SlackNotifier",
    ] {
        let warning = format!("plugin {class} is not supported");
        assert!(
            resolved
                .lines()
                .any(|l| l.starts_with("# warning: ") && l.contains(&warning)),
            "no warning about {class}:\n{resolved}"
        );
    }
    for option in [
        "statsd",
        "stats_endpoint",
        "multicast_endpoint",
        "httpd",
        "pidfile",
        "loglevel",
        "endpoint_owner",
    ] {
        assert!(
            resolved.contains(&format!("'[circus] {option}': ")),
            "no warning about {option}:\n{resolved}"
        );
    }
    // An inactive Flapping plugin leaves flapping off, as in Circus.
    assert_resolved(&resolved, "watchers.app", "check_flapping = false");

    agent.wait_pids("app", 2).await;
    let log = agent.log();
    assert!(
        log.contains("circus.plugins.statsd.StatsdEmitter is not supported"),
        "the agent logs the warnings at start:\n{log}"
    );
}

#[tokio::test]
async fn lifecycle_hooks_on_demand_and_manual_watchers() {
    let (agent, resolved) = deploy("lifecycle.ini", &[("DEPLOY_COLOR", "green")]).start();
    assert_resolved(&resolved, "watchers.migrate", "respawn = false");
    assert_resolved(
        &resolved,
        "watchers.migrate.hooks.after_start",
        "ignore_errors = true",
    );
    assert_resolved(
        &resolved,
        "watchers.web.hooks.before_stop",
        "ignore_errors = true",
    );
    assert_resolved(&resolved, "watchers.lazy", "on_demand = true");
    assert_resolved(&resolved, "watchers.manual", "autostart = false");
    assert_resolved(&resolved, "watchers.shellish", "shell = true");

    let dir = agent.dir().to_path_buf();
    assert_eq!(file_text(&dir.join("migrate.done")).await, "migrated\n");
    assert_eq!(
        file_text(&dir.join("hook-before-start.txt")).await,
        "before\n"
    );
    wait_for("the after_start hook", DEADLINE, || async {
        dir.join("hook-after-start.txt").exists()
    })
    .await;

    let web = agent.wait_pids("web", 2).await;
    for wid in 1..=2 {
        let name = file_text(&dir.join(format!("web-{wid}.name"))).await;
        assert_eq!(name, "web-green\n", "$(circus.env.X) in an [env:web] value");
    }
    wait_for(
        "the after_spawn hook of both web processes",
        DEADLINE,
        || async {
            std::fs::read_to_string(dir.join("spawned.txt"))
                .is_ok_and(|t| t.lines().filter(|l| !l.is_empty()).count() == 2)
        },
    )
    .await;
    let spawned = std::fs::read_to_string(dir.join("spawned.txt")).unwrap();
    for pid in web {
        assert!(
            spawned.lines().any(|l| l == pid.to_string()),
            "{pid} not in {spawned}"
        );
    }

    agent.wait_pids("shellish", 1).await;
    assert_eq!(agent.pids("manual").await.len(), 0);
    assert_eq!(agent.state("manual").await, WatcherState::Stopped);

    assert_eq!(
        agent.pids("lazy").await.len(),
        0,
        "on_demand: nothing before a connection"
    );
    let jobs = sockets(&agent).await;
    let port = jobs
        .iter()
        .find(|s| s.name == "jobs")
        .and_then(|s| s.port)
        .expect("socket jobs");
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    agent.wait_pids("lazy", 1).await;
}

#[test]
fn broken_circus_configs_are_refused_with_file_and_line() {
    let cases = [
        ("syntax.ini", 6, "neither"),
        ("syntax.ini", 6, "a line is a [section] header"),
        ("unknown-section.ini", 4, "unknown section [watchers:web]"),
        ("python-hook.ini", 3, "Python callable"),
        ("python-hook.ini", 3, "hooks are command lines"),
        ("queue-stream.ini", 3, "QueueStream is not supported"),
        ("virtualenv.ini", 4, "virtualenv"),
    ];
    for (file, line, needle) in cases {
        let path = configs().join("bad").join(file);
        let out = Process::new(bin_path("nodeagent"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        let place = format!("{}:{line}: ", path.display());
        assert!(stderr.contains(&place), "{place:?} not in {stderr:?}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        assert!(out.stdout.is_empty(), "{file}: nothing printed on stdout");
    }
}

#[test]
fn check_config_takes_a_file_of_either_format() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("agent.toml");
    std::fs::write(
        &toml,
        "[agent]\nnode = \"n\"\n[watchers.w]\ncmd = \"sleep 1\"\n",
    )
    .unwrap();
    let ini = dir.path().join("circus.conf");
    std::fs::write(&ini, "[watcher:w]\ncmd = sleep 1\n[agent]\nnode = n\n").unwrap();
    for path in [&toml, &ini] {
        let out = Process::new(bin_path("nodeagent"))
            .arg("--check-config")
            .arg(path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_resolved(&stdout, "watchers.w", "cmd = \"sleep 1\"");
        assert_resolved(&stdout, "agent", "node = \"n\"");
    }
    let out = Process::new(bin_path("nodeagent"))
        .arg("--check-config")
        .env_remove("RINGMASTER_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a FILE"));
}

#[test]
fn the_examples_are_valid_configs_without_warnings() {
    let examples = [
        "examples/circus.ini",
        "examples/agent.toml",
        "examples/pool/node-1.toml",
        "examples/pool/node-2.toml",
        "examples/pool/node-3.toml",
    ];
    // A copy of them, with the keys examples/pool.sh would make (a clean clone
    // has none).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let copied = tempfile::tempdir().unwrap();
    let root = copied.path();
    for example in examples {
        std::fs::create_dir_all(root.join(example).parent().unwrap()).unwrap();
        copy(&repo.join(example), &root.join(example));
    }
    std::fs::create_dir_all(root.join("examples/keys")).unwrap();
    for key in ["admin", "read"] {
        let out = Process::new(bin_path("nodectl"))
            .args(["keygen", &format!("examples/keys/{key}.key")])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for example in examples {
        // From the root, where examples/circus.sh runs the agent.
        let out = Process::new(bin_path("nodeagent"))
            .arg("--check-config")
            .arg(example)
            .current_dir(root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{example}:\n{stderr}");
        assert!(
            stdout.starts_with(&format!("# {example} is valid\n")),
            "{example}:\n{stdout}"
        );
        assert!(
            !stdout.contains("# warning") && !stderr.contains("warning"),
            "{example} has warnings:\n{stdout}\n{stderr}"
        );
    }
}
