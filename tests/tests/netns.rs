//! Several hosts on one machine: every `nodeagent` runs in its own Linux network
//! namespace with its own address on a bridge of the host, and the host drives them
//! over TCP with `nodectl --pool` and follows them through `nodemeta`. One host's
//! link is cut (a partial failure that must not hang, a stale node in `stat.pool`)
//! and restored (everything answers again; nodemeta reconnects after the half-open
//! TCP connection).
//!
//! It needs root and iproute2 (`ip`); without them, or when `ip netns add` fails
//! (no privilege inside a container), or with `RINGMASTER_SKIP_NETNS=1`, it says
//! why on stderr and passes. Everything it creates (namespaces, bridge, veth pairs,
//! processes) is named after the test's pid and removed on drop, even on failure.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringmaster_protocol::stats::{NodeState, PoolStats, StatKind, POOL_TOPIC};
use ringmaster_protocol::transport::{Published, Subscriber};
use ringmaster_tests::{bin_path, DEADLINE};
use tempfile::TempDir;

/// Set to 1 to skip this test.
const SKIP_ENV: &str = "RINGMASTER_SKIP_NETNS";
/// The hosts: node `h-<host>` in namespace `rm<tag>-<host>`.
const HOSTS: [&str; 3] = ["a", "b", "c"];
/// Pool name in the pools file.
const POOL: &str = "net";
/// The pool timeout, in seconds.
const POOL_TIMEOUT: f64 = 1.0;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `ip ARGS...`; the error names the command and its stderr.
fn try_ip(args: &[&str]) -> Result<Output, String> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{command}` could not run: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{command}` failed ({}): {}",
            out.status,
            text(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS...`, panicking with the command and its stderr on failure.
fn ip(args: &[&str]) -> Output {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Why this test cannot run here, before touching anything.
fn cannot_run() -> Option<String> {
    if std::env::var(SKIP_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        return Some(format!("{SKIP_ENV} is set"));
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not running as root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip -V` failed ({}): {}",
            out.status,
            text(&out.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` binary (install iproute2): {e}")),
    }
}

/// A process the test started (an agent in a namespace, or nodemeta), with its log.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status, if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            ringmaster_tests::terminate(&mut child, Duration::from_secs(10));
        }
    }
}

/// The network (bridge, namespaces, veth pairs) and everything running in it,
/// torn down on drop.
struct Net {
    /// The test's pid in hex: part of every name.
    tag: String,
    /// X of 10.213.X.0/24.
    subnet: u8,
    /// Namespaces created so far.
    namespaces: Vec<String>,
    /// Host ends of the veth pairs created so far.
    host_veths: Vec<String>,
    /// The bridge, once created.
    bridge: Option<String>,
    /// Agents (and nodemeta), stopped first on drop.
    procs: Vec<Proc>,
    /// Pools file, nodemeta's socket and log, one subdir per node.
    dir: TempDir,
}

impl Net {
    /// Builds the network: `Err` (the test is skipped) when the first namespace
    /// cannot be created; any later failure panics.
    fn create() -> Result<Net, String> {
        let pid = std::process::id();
        let tag = format!("{pid:x}");
        let dir = tempfile::Builder::new()
            .prefix("ringmaster-netns-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        // A /24 no other interface of the host (another run of this test) uses.
        let used = text(&ip(&["-o", "-4", "addr", "show"]).stdout);
        let first = pid % 250;
        let subnet = (0..250)
            .map(|k| ((first + k) % 250 + 1) as u8)
            .find(|x| !used.contains(&format!("inet 10.213.{x}.")))
            .unwrap_or_else(|| panic!("every 10.213.X.0/24 is in use on this host:\n{used}"));
        let mut net = Net {
            tag,
            subnet,
            namespaces: Vec::new(),
            host_veths: Vec::new(),
            bridge: None,
            procs: Vec::new(),
            dir,
        };
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = net.ns(host);
            match try_ip(&["netns", "add", &ns]) {
                Ok(_) => net.namespaces.push(ns),
                Err(e) if i == 0 => return Err(e),
                Err(e) => panic!("{e}"),
            }
        }
        let bridge = format!("rmbr{}", net.tag);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        net.bridge = Some(bridge.clone());
        let bridge_addr = format!("10.213.{subnet}.254/24");
        ip(&["addr", "add", &bridge_addr, "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = net.ns(host);
            let outer = net.host_veth(host);
            let inner = format!("rm{}n-{host}", net.tag);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            net.host_veths.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &bridge]);
            ip(&["link", "set", &outer, "up"]);
            let addr = format!("{}/24", net.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        Ok(net)
    }

    fn ns(&self, host: &str) -> String {
        format!("rm{}-{host}", self.tag)
    }

    fn host_veth(&self, host: &str) -> String {
        format!("rm{}h-{host}", self.tag)
    }

    /// Address of host number `i`.
    fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, i + 1)
    }

    fn pools_file(&self) -> PathBuf {
        self.dir.path().join("pools.toml")
    }

    /// Writes the pools file naming every host.
    fn write_pools_file(&self) {
        let mut file = format!("[pools.{POOL}]\ntimeout = {POOL_TIMEOUT:?}\n");
        for (i, host) in HOSTS.iter().enumerate() {
            let addr = self.addr(i);
            write!(
                file,
                "\n[[pools.{POOL}.nodes]]\nname = \"h-{host}\"\ncontrol = \"tcp://{addr}:5555\"\n\
                 pubsub = \"tcp://{addr}:5556\"\nlabels = {{ host = \"{host}\" }}\n"
            )
            .unwrap();
        }
        std::fs::write(self.pools_file(), file)
            .unwrap_or_else(|e| panic!("cannot write the pools file: {e}"));
    }

    /// Starts the real nodeagent of host number `i` in its namespace.
    fn start_agent(&mut self, i: usize) {
        let host = HOSTS[i];
        let dir = self.dir.path().join(format!("node-{host}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let addr = self.addr(i);
        let config = format!(
            "[agent]\nnode = \"h-{host}\"\ncontrol = \"tcp://{addr}:5555\"\n\
             pubsub = \"tcp://{addr}:5556\"\ninsecure = true\nstats_interval = 0.3\n\
             state_dir = \"{}\"\nlabels = {{ host = \"{host}\" }}\n\n\
             [watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n",
            dir.join("state").display()
        );
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        self.spawn(
            &format!("nodeagent h-{host}"),
            dir.join("agent.log"),
            Command::new("ip")
                .args(["netns", "exec", &self.ns(host)])
                .arg(bin_path("nodeagent"))
                .arg("--config")
                .arg(&config_path)
                .arg("-v"),
        );
    }

    /// Starts nodemeta on the host; returns its publish endpoint.
    fn start_nodemeta(&mut self) -> String {
        let endpoint = format!("ipc://{}/meta.sock", self.dir.path().display());
        let pools = self.pools_file();
        self.spawn(
            "nodemeta",
            self.dir.path().join("nodemeta.log"),
            Command::new(bin_path("nodemeta"))
                .arg("--pools")
                .arg(&pools)
                .args(["--pool", POOL, "--pubsub", &endpoint])
                .args(["--interval", "0.3", "-v"])
                .env_remove("RINGMASTER_POOLS"),
        );
        endpoint
    }

    fn spawn(&mut self, name: &str, log: PathBuf, command: &mut Command) {
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.procs.push(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        });
    }

    /// Panics with its log if a started process has exited.
    fn check_alive(&mut self) {
        for proc in &mut self.procs {
            if let Some(status) = proc.exited() {
                panic!("{} exited ({status}):\n{}", proc.name, proc.log());
            }
        }
    }

    /// Runs `nodectl --pools FILE --pool net ARGS...`.
    fn nodectl(&self, args: &[&str]) -> Output {
        Command::new(bin_path("nodectl"))
            .arg("--pools")
            .arg(self.pools_file())
            .args(["--pool", POOL])
            .args(args)
            .env_remove("RINGMASTER_POOLS")
            .output()
            .unwrap_or_else(|e| panic!("cannot run nodectl: {e}"))
    }

    /// Polls `nodectl ARGS...` until `ok` accepts its output; panics naming `what`
    /// with the last output after `timeout`.
    fn wait_nodectl(
        &mut self,
        what: &str,
        args: &[&str],
        timeout: Duration,
        ok: impl Fn(&Output) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive();
            let out = self.nodectl(args);
            if ok(&out) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {:.1}s waiting for {what}; last `nodectl {}`: {}\n{}{}",
                timeout.as_secs_f64(),
                args.join(" "),
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100)); // poll interval
        }
    }

    /// Subscribes to nodemeta's `stat.pool`, retrying until it is bound.
    async fn subscribe(&mut self, endpoint: &str) -> Subscriber {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.check_alive();
            match Subscriber::connect(endpoint, &[POOL_TOPIC], Duration::from_millis(500)).await {
                Ok(sub) => return sub,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "cannot subscribe to nodemeta at {endpoint} within {DEADLINE:?}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            proc.stop();
        }
        if std::thread::panicking() {
            for proc in &self.procs {
                eprintln!("---- log of {} ----\n{}", proc.name, proc.log());
            }
        }
        // Whatever still runs in a namespace (orphaned watchers) dies with it.
        for ns in &self.namespaces {
            if let Ok(out) = try_ip(&["netns", "pids", ns]) {
                for pid in text(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            if let Err(e) = try_ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        // Deleting a namespace deletes its veth ends, and with them the pairs: the
        // host ends are usually gone already.
        for veth in &self.host_veths {
            if Path::new("/sys/class/net").join(veth).exists() {
                if let Err(e) = try_ip(&["link", "del", veth]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        if let Some(bridge) = &self.bridge {
            if let Err(e) = try_ip(&["link", "del", bridge]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Table rows (after the header) whose first column is `node`.
fn rows_of<'a>(text: &'a str, node: &str) -> Vec<&'a str> {
    text.lines()
        .skip(1)
        .filter(|l| l.split_whitespace().next() == Some(node))
        .collect()
}

/// `status` succeeded on every host, each with watcher w active with 2/2 processes.
fn all_three_active(out: &Output) -> bool {
    let stdout = text(&out.stdout);
    out.status.code() == Some(0)
        && HOSTS.iter().all(|host| {
            let rows = rows_of(&stdout, &format!("h-{host}"));
            rows.len() == 1 && rows[0].contains("active") && rows[0].contains("2/2")
        })
}

fn states(pool: &PoolStats) -> Vec<(String, NodeState)> {
    pool.nodes
        .iter()
        .map(|n| (n.name.clone(), n.state))
        .collect()
}

fn state(pool: &PoolStats, node: &str) -> NodeState {
    pool.nodes
        .iter()
        .find(|n| n.name == node)
        .map_or_else(|| panic!("{node} missing from {pool:?}"), |n| n.state)
}

/// Reads `stat.pool` messages until one satisfies `done`; panics naming `what`
/// with the last node states seen after `timeout`.
async fn wait_pool(
    sub: &mut Subscriber,
    what: &str,
    timeout: Duration,
    done: impl Fn(&PoolStats) -> bool,
) -> PoolStats {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, sub.recv_published()).await {
            Ok(Ok(Published::Stat(stat))) => {
                if let StatKind::Pool(pool) = stat.kind {
                    assert_eq!(stat.node, POOL, "stat.pool names the pool");
                    if done(&pool) {
                        return pool;
                    }
                    last = Some(states(&pool));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the subscription to nodemeta failed waiting for {what}: {e}"),
            Err(_) => panic!(
                "timed out after {:.1}s waiting for {what}; last stat.pool states: {last:?}",
                timeout.as_secs_f64()
            ),
        }
    }
}

#[tokio::test]
async fn agents_in_network_namespaces_a_cut_link_and_its_return() {
    if let Some(why) = cannot_run() {
        eprintln!("netns test skipped: {why}");
        return;
    }
    let started = Instant::now();
    let mut net = match Net::create() {
        Ok(net) => net,
        Err(why) => {
            eprintln!("netns test skipped: cannot create a network namespace: {why}");
            return;
        }
    };
    eprintln!(
        "netns: bridge rmbr{} on 10.213.{}.254/24, namespaces {:?}",
        net.tag, net.subnet, net.namespaces
    );
    net.write_pools_file();
    for i in 0..HOSTS.len() {
        net.start_agent(i);
    }
    for host in HOSTS {
        let node = format!("h-{host}");
        net.wait_nodectl(
            &format!("{node} to answer with watcher w active, 2/2"),
            &["--node", &node, "status"],
            DEADLINE,
            |out| {
                let stdout = text(&out.stdout);
                let rows = rows_of(&stdout, &node);
                out.status.code() == Some(0)
                    && rows.len() == 1
                    && rows[0].contains("active")
                    && rows[0].contains("2/2")
            },
        );
    }

    // The whole pool, over TCP to three addresses.
    let out = net.nodectl(&["status"]);
    assert!(
        all_three_active(&out),
        "status of the pool: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // nodemeta on the host follows the three agents.
    let endpoint = net.start_nodemeta();
    let mut sub = net.subscribe(&endpoint).await;
    let up = wait_pool(&mut sub, "the three nodes up", DEADLINE, |pool| {
        pool.nodes.len() == 3 && pool.nodes.iter().all(|n| n.state == NodeState::Up)
    })
    .await;
    assert_eq!(
        states(&up).into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
        ["h-a", "h-b", "h-c"]
    );

    // h-b's link goes down: its TCP connections are left half-open.
    let veth_b = net.host_veth("b");
    ip(&["link", "set", &veth_b, "down"]);
    let cut = Instant::now();
    let out = net.nodectl(&["status"]);
    let took = cut.elapsed();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(4),
        "a partial failure: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("h-b: unreachable"), "{stderr}");
    assert!(rows_of(&stdout, "h-b").is_empty(), "{stdout}");
    for node in ["h-a", "h-c"] {
        let rows = rows_of(&stdout, node);
        assert_eq!(rows.len(), 1, "{node} still answers: {stdout}\n{stderr}");
        assert!(
            rows[0].contains("active") && rows[0].contains("2/2"),
            "{stdout}"
        );
    }
    // The pool timeout is 1 s: an unreachable host costs about that, never a hang.
    assert!(
        took < Duration::from_secs(10),
        "status with h-b cut off took {took:?}"
    );
    eprintln!("netns: status with h-b cut off took {took:?}");

    let stale = wait_pool(&mut sub, "h-b stale, h-a and h-c up", DEADLINE, |pool| {
        state(pool, "h-b") == NodeState::Stale
            && state(pool, "h-a") == NodeState::Up
            && state(pool, "h-c") == NodeState::Up
    })
    .await;
    eprintln!(
        "netns: h-b stale after {:?}: {:?}",
        cut.elapsed(),
        states(&stale)
    );

    // The link comes back: every host answers, and nodemeta hears h-b again.
    ip(&["link", "set", &veth_b, "up"]);
    let restored = Instant::now();
    net.wait_nodectl(
        "the pool's status to succeed on all three hosts again",
        &["status"],
        DEADLINE,
        all_three_active,
    );
    eprintln!(
        "netns: status succeeds again {:?} after the link came back",
        restored.elapsed()
    );
    wait_pool(
        &mut sub,
        "h-b up again in nodemeta (reconnect after a half-open connection)",
        DEADLINE,
        |pool| pool.nodes.iter().all(|n| n.state == NodeState::Up),
    )
    .await;
    eprintln!(
        "netns: nodemeta reports h-b up again {:?} after the link came back; test took {:?}",
        restored.elapsed(),
        started.elapsed()
    );
    net.check_alive();
}
