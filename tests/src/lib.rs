//! A harness that runs the real Ringmaster binaries for end-to-end tests and the
//! benchmark.
//!
//! [`TestAgent`] writes a config into its own temp dir with `ipc://` endpoints (so
//! tests run in parallel without port clashes), starts the real `nodeagent` binary,
//! and waits until it answers. Conditions are polled with a deadline ([`wait_for`])
//! and fail naming what was awaited; nothing sleeps for a fixed time. Dropping an
//! agent stops it (SIGTERM, then SIGKILL) and prints its log if the test failed.
//!
//! The binaries are found next to the running executable (`target/<profile>/`), or
//! in `$RINGMASTER_BIN_DIR`. `cargo test --workspace` builds them.

pub mod http;
pub mod meta;
pub mod pool;

pub use meta::NodeMeta;
pub use pool::{NodeDef, TestPool};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use ringmaster_protocol::seal::Keyring;
use ringmaster_protocol::transport::{Client, Subscriber};
use ringmaster_protocol::{Command as Cmd, Response};
use tempfile::TempDir;

/// How long a test waits for anything before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Path of one of Ringmaster's binaries (`nodeagent`, `nodectl`).
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RINGMASTER_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo test --workspace` or `cargo build --workspace`), \
         or point RINGMASTER_BIN_DIR at them",
        path.display()
    );
    path
}

/// Polls `check` every 10 ms until it returns true; panics naming `what` after
/// `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {:.1}s waiting for {what}",
            timeout.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    }
}

/// Blocking variant of [`wait_for`] for code outside a runtime.
pub fn wait_for_blocking(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {:.1}s waiting for {what}",
            timeout.as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(10)); // poll interval
    }
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the first field after the ")" that closes the name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Pids of every live process in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    // fields[0] = state, fields[2] = pgrp
                    let alive = !matches!(fields.first(), Some(&"Z") | Some(&"X"));
                    Some(alive && fields.get(2)?.parse::<u32>().ok()? == pgid)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Stops a process the tests started: SIGTERM, up to `grace` to exit, then SIGKILL;
/// always reaped.
pub fn terminate(child: &mut Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A real `nodeagent` in a temp dir.
pub struct TestAgent {
    dir: TempDir,
    child: Option<Child>,
    /// Node name.
    pub node: String,
    /// Control endpoint.
    pub control: String,
    /// Publish endpoint.
    pub pubsub: String,
    /// Extra environment variables of the agent process.
    env: Vec<(String, String)>,
    /// The keys clients of this agent use (admin first), when it has keys.
    pub keys: Option<Keyring>,
    /// The files of those keys.
    pub key_files: Option<KeyFiles>,
    /// Processes left behind by [`TestAgent::kill9`], killed on drop.
    orphans: Vec<u32>,
    /// A config file of the test's own (e.g. a Circus INI) instead of the
    /// generated `agent.toml`; the agent then runs from its temp dir.
    config_file: Option<PathBuf>,
}

/// An admin and a read key file, made by the real `nodectl keygen`.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// The admin key file.
    pub admin: PathBuf,
    /// The read key file.
    pub read: PathBuf,
}

impl KeyFiles {
    /// Makes `admin.key` and `read.key` in `dir` with `nodectl keygen`.
    pub fn generate(dir: &Path) -> KeyFiles {
        let files = KeyFiles {
            admin: dir.join("admin.key"),
            read: dir.join("read.key"),
        };
        for file in [&files.admin, &files.read] {
            let out = Command::new(bin_path("nodectl"))
                .arg("keygen")
                .arg(file)
                .output()
                .unwrap_or_else(|e| panic!("cannot run nodectl keygen: {e}"));
            assert!(
                out.status.success(),
                "nodectl keygen {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        files
    }

    /// Both keys, admin first (as a client with both holds them).
    pub fn keyring(&self) -> Keyring {
        Keyring::load(&[self.admin.clone(), self.read.clone()])
            .unwrap_or_else(|e| panic!("cannot load the test keys: {e}"))
            .unwrap_or_else(|| panic!("no test keys"))
    }

    /// The read key alone.
    pub fn read_only(&self) -> Keyring {
        Keyring::load(std::slice::from_ref(&self.read))
            .unwrap_or_else(|e| panic!("cannot load the read key: {e}"))
            .unwrap_or_else(|| panic!("no read key"))
    }
}

impl TestAgent {
    /// Starts an agent named `node` with `body` appended to its `[agent]` section
    /// (so it may add agent keys first, then `[watchers.*]` tables).
    pub fn start(node: &str, body: &str) -> TestAgent {
        Self::start_with_env(node, body, &[])
    }

    /// [`TestAgent::start`] with extra environment variables for the agent process
    /// (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(node: &str, body: &str, env: &[(&str, &str)]) -> TestAgent {
        let mut agent = Self::prepare(node, body, env);
        agent.launch();
        agent
    }

    /// [`TestAgent::start`] for an agent with keys: `nodectl keygen` makes an admin
    /// and a read key in its dir, its config names them, and its [`client`],
    /// [`subscribe`] and [`nodectl`] use them.
    ///
    /// [`client`]: TestAgent::client
    /// [`subscribe`]: TestAgent::subscribe
    /// [`nodectl`]: TestAgent::nodectl
    pub fn start_keyed(node: &str, body: &str) -> (TestAgent, KeyFiles) {
        let probe = Self::prepare(node, "", &[]);
        let keys = KeyFiles::generate(probe.dir());
        let agent = Self::start_with_keys(body, &keys, probe);
        (agent, keys)
    }

    /// [`TestAgent::start_keyed`] on TCP endpoints of loopback (free ports).
    pub fn start_keyed_tcp(node: &str, body: &str) -> (TestAgent, KeyFiles) {
        let endpoints = (free_tcp_endpoint(), free_tcp_endpoint());
        let probe = Self::prepare_at(node, Some(endpoints), "", &[]);
        let keys = KeyFiles::generate(probe.dir());
        let agent = Self::start_with_keys(body, &keys, probe);
        (agent, keys)
    }

    /// An agent with the keys in `keys` (shared by several agents of a pool).
    pub fn start_shared_keys(node: &str, body: &str, keys: &KeyFiles) -> TestAgent {
        let probe = Self::prepare(node, "", &[]);
        Self::start_with_keys(body, keys, probe)
    }

    /// Names `keys` in the config of `prepared` (an agent not started yet), then
    /// starts it.
    fn start_with_keys(body: &str, keys: &KeyFiles, prepared: TestAgent) -> TestAgent {
        let mut agent = prepared;
        agent.rewrite_config(&format!(
            "admin_key = \"{}\"\nread_key = \"{}\"\n{body}",
            keys.admin.display(),
            keys.read.display()
        ));
        agent.keys = Some(keys.keyring());
        agent.key_files = Some(keys.clone());
        agent.launch();
        agent
    }

    /// Writes the config of an agent named `node` in a new temp dir, without
    /// starting it.
    pub fn prepare(node: &str, body: &str, env: &[(&str, &str)]) -> TestAgent {
        Self::prepare_at(node, None, body, env)
    }

    /// [`TestAgent::prepare`] with its endpoints given (`None`: `ipc://` ones in its
    /// temp dir), e.g. TCP ports from [`free_tcp_endpoint`].
    pub fn prepare_at(
        node: &str,
        endpoints: Option<(String, String)>,
        body: &str,
        env: &[(&str, &str)],
    ) -> TestAgent {
        let dir = tempfile::Builder::new()
            .prefix("ringmaster-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let (control, pubsub) = endpoints.unwrap_or_else(|| {
            (
                format!("ipc://{}/control.sock", dir.path().display()),
                format!("ipc://{}/pubsub.sock", dir.path().display()),
            )
        });
        let config = format!(
            "[agent]\nnode = \"{node}\"\ncontrol = \"{control}\"\npubsub = \"{pubsub}\"\nstate_dir = \"state\"\n{body}\n"
        );
        std::fs::write(dir.path().join("agent.toml"), config)
            .unwrap_or_else(|e| panic!("cannot write config: {e}"));
        let agent = TestAgent {
            dir,
            child: None,
            node: node.to_string(),
            control,
            pubsub,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            keys: None,
            key_files: None,
            orphans: Vec::new(),
            config_file: None,
        };
        agent
    }

    /// Makes a prepared agent run on `file` (a config the test wrote, e.g. a
    /// Circus INI naming [`TestAgent::control`] and [`TestAgent::pubsub`] as its
    /// endpoints), from its temp dir, as node `node`, with `env` added to its
    /// environment. Call [`TestAgent::launch`] next.
    pub fn use_config_file(&mut self, file: PathBuf, node: &str, env: &[(&str, &str)]) {
        self.config_file = Some(file);
        self.node = node.to_string();
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    }

    /// Makes a prepared agent's clients use these endpoints (those its config
    /// file names, or binds by default).
    pub fn use_endpoints(&mut self, control: &str, pubsub: &str) {
        self.control = control.to_string();
        self.pubsub = pubsub.to_string();
    }

    /// Adds a variable to the agent's environment (before [`TestAgent::launch`]).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The agent's temp dir (config, state, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the agent's config file.
    pub fn config_path(&self) -> PathBuf {
        match &self.config_file {
            Some(file) => file.clone(),
            None => self.dir.path().join("agent.toml"),
        }
    }

    /// Rewrites the config file (for `reloadconfig` tests), keeping `[agent]`.
    pub fn rewrite_config(&self, body: &str) {
        let config = format!(
            "[agent]\nnode = \"{}\"\ncontrol = \"{}\"\npubsub = \"{}\"\nstate_dir = \"state\"\n{body}\n",
            self.node, self.control, self.pubsub
        );
        std::fs::write(self.config_path(), config)
            .unwrap_or_else(|e| panic!("cannot write config: {e}"));
    }

    /// Starts the binary (again) and waits until it answers.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap_or_else(|e| panic!("cannot open agent log: {e}"));
        let mut command = Command::new(bin_path("nodeagent"));
        if self.config_file.is_some() {
            command.current_dir(self.dir.path());
        }
        let child = command
            .arg("--config")
            .arg(self.config_path())
            .arg("-v")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nodeagent: {e}"));
        self.child = Some(child);
        let control = self.control.clone();
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                panic!("nodeagent exited at start ({status}):\n{}", self.log());
            }
            if accepts_connections(&control) {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "nodeagent did not open {control} within {DEADLINE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Exit status, if the agent has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// Waits for the agent to exit, within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nodeagent did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
    }

    /// SIGTERM, then waits for the agent to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(DEADLINE)
    }

    /// SIGKILL (no cleanup: its processes are orphaned, and killed when the
    /// `TestAgent` is dropped) and reap.
    pub fn kill9(&mut self) {
        self.orphans.extend(children_of(self.pid()));
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(DEADLINE);
    }

    /// A protocol client of this agent.
    pub fn client(&self) -> Client {
        Client::new(self.control.clone(), DEADLINE).with_keys(self.keys.clone())
    }

    /// Sends one command and returns its result, panicking on an error reply.
    pub async fn call(&self, command: Cmd) -> Response {
        let name = command.name();
        self.client()
            .call(command)
            .await
            .unwrap_or_else(|e| panic!("{name} failed: {e}\n{}", self.log()))
    }

    /// Subscribes to the agent's publish endpoint.
    pub async fn subscribe(&self, prefix: &str) -> Subscriber {
        Subscriber::connect(&self.pubsub, &[prefix], DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("cannot subscribe: {e}"))
            .with_keys(self.keys.clone())
    }

    /// Runs `nodectl --endpoint <control> ARGS...`.
    pub fn nodectl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(bin_path("nodectl"));
        match &self.key_files {
            Some(keys) => command.env(
                "RINGMASTER_KEY",
                format!("{}:{}", keys.admin.display(), keys.read.display()),
            ),
            None => command.env_remove("RINGMASTER_KEY"),
        };
        command
            .arg("--endpoint")
            .arg(&self.control)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nodectl: {e}"))
    }

    /// Waits until watcher `name` has exactly `n` processes; returns their pids.
    pub async fn wait_pids(&self, name: &str, n: usize) -> Vec<u32> {
        wait_for(
            &format!("{n} process(es) of watcher '{name}'"),
            DEADLINE,
            || async { self.pids(name).await.len() == n },
        )
        .await;
        self.pids(name).await
    }

    /// The state of watcher `name`.
    pub async fn state(&self, name: &str) -> ringmaster_protocol::message::WatcherState {
        match self
            .call(Cmd::Status {
                name: Some(name.into()),
            })
            .await
        {
            Response::Status(list) => list[0].state,
            other => panic!("unexpected status reply {other:?}"),
        }
    }

    /// Pids of watcher `name`, by `list`.
    pub async fn pids(&self, name: &str) -> Vec<u32> {
        match self
            .call(Cmd::List {
                name: Some(name.into()),
            })
            .await
        {
            Response::Processes(list) => list
                .into_iter()
                .filter(|p| p.is_process())
                .map(|p| p.pid)
                .collect(),
            other => panic!("unexpected reply to list: {other:?}"),
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
        for pid in self.orphans.drain(..) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::thread::panicking() {
            eprintln!("---- log of nodeagent '{}' ----\n{}", self.node, self.log());
        }
    }
}

/// True when something accepts connections at `endpoint` (`ipc://` or `tcp://`).
pub fn accepts_connections(endpoint: &str) -> bool {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return Path::new(path).exists() && std::os::unix::net::UnixStream::connect(path).is_ok();
    }
    endpoint
        .strip_prefix("tcp://")
        .is_some_and(|addr| std::net::TcpStream::connect(addr).is_ok())
}

/// A `tcp://127.0.0.1:PORT` endpoint whose port was free a moment ago.
pub fn free_tcp_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read a free port: {e}"))
        .port();
    format!("tcp://127.0.0.1:{port}")
}

/// The resident memory of `pid` now and at its peak (`VmRSS`, `VmHWM`), in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The direct children of `pid`, from `/proc/PID/task/*/children`.
fn children_of(pid: u32) -> Vec<u32> {
    // `/proc/<pid>/task/<tid>/children` needs CONFIG_PROC_CHILDREN, which not
    // every kernel has: the parent field of every `stat` always works.
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    // fields[1] = ppid
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Events of one subscription, with helpers to wait for specific ones.
pub struct EventStream {
    sub: Subscriber,
    /// Every event received so far, in order.
    pub seen: Vec<ringmaster_protocol::Event>,
}

/// The watcher [`TestAgent::events`] adds and removes to make a subscription
/// live; [`EventStream::wait`] never shows its events.
pub const SYNC_PROBE: &str = "sync-probe";

impl EventStream {
    /// Waits for the next event matching `pred`, keeping everything seen on the way.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ringmaster_protocol::Event) -> bool,
    ) -> ringmaster_protocol::Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.sub.recv_event()).await {
                // The probe that made the subscription live is not the test's.
                Ok(Ok(event)) if event.watcher == SYNC_PROBE => {}
                Ok(Ok(event)) => {
                    self.seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Ok(Err(e)) => panic!("subscription failed while waiting for {what}: {e}"),
                Err(_) => panic!(
                    "timed out after {:.1}s waiting for {what}; saw {} event(s): {:#?}",
                    timeout.as_secs_f64(),
                    self.seen.len(),
                    self.seen.iter().rev().take(10).collect::<Vec<_>>()
                ),
            }
        }
    }
}

impl TestAgent {
    /// Subscribes to `prefix` and makes sure the subscription is live (pub/sub
    /// subscriptions take effect asynchronously): a probe watcher is added until
    /// its `add` event arrives, then removed.
    pub async fn events(&self, prefix: &str) -> EventStream {
        let probe = SYNC_PROBE;
        let probe_prefix = format!("event.{}.{probe}.", self.node);
        let sub = Subscriber::connect(&self.pubsub, &[prefix, &probe_prefix], DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("cannot subscribe: {e}"));
        let mut stream = EventStream {
            sub,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let _ = self
                .client()
                .call(Cmd::Add {
                    name: probe.into(),
                    cmd: "true".into(),
                    args: vec![],
                    // Never started, not even by the agent's first start of its
                    // autostart watchers, which may come after this `add`.
                    options: [(
                        "autostart".to_string(),
                        ringmaster_protocol::OptionValue::Bool(false),
                    )]
                    .into_iter()
                    .collect(),
                    start: false,
                })
                .await;
            let got =
                tokio::time::timeout(Duration::from_millis(200), stream.sub.recv_event()).await;
            let _ = self
                .client()
                .call(Cmd::Rm {
                    name: probe.into(),
                    nostop: false,
                })
                .await;
            if let Ok(Ok(event)) = got {
                if event.watcher == probe {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "subscription to {} never became live",
                self.pubsub
            );
        }
        stream.seen.clear();
        stream
    }
}
