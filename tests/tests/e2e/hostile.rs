//! Hostile input against the real agent's control and publish endpoints, and
//! against nodemeta's, over TCP and `ipc://`, with raw sockets (no ZeroMQ library
//! in between, so every byte is the attacker's choice) and with pyzmq from the CI
//! virtualenv: a frame header announcing a huge body, a 500 MB message, 10 000
//! garbage frames, 2000 idle connections, half frames held open, and subscribers
//! that never read. After each, the target is alive, answers within its normal
//! latency, its peak memory stayed under [`PEAK_BOUND_KIB`], and what it refused
//! is counted. And a local user who is not root cannot drive a root agent that
//! runs with the default config.
//!
//! Attacks over TCP come from 127.0.0.2 and the legitimate clients from 127.0.0.1,
//! so that they are two peers, as an attacker and an operator would be.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use ringmaster_protocol::message::{ConnectionCounts, NodeInfo};
use ringmaster_protocol::stats::{Stat, StatKind};
use ringmaster_protocol::transport::{Client, Published, MAX_CONTROL_MESSAGE};
use ringmaster_protocol::{Command, Response};
use ringmaster_tests::{
    bin_path, memory_kib, wait_for, NodeDef, NodeMeta, TestAgent, TestPool, DEADLINE,
};

/// What the agent's (and nodemeta's) peak resident memory must stay under, in KiB,
/// whatever a peer sends.
const PEAK_BOUND_KIB: u64 = 64 * 1024;

const SLEEPER: &str = "stats_interval = 0.2\n[watchers.w]\ncmd = \"sleep 1000\"\n";

// ----- raw ZMTP ---------------------------------------------------------------

/// A connection with nothing but the operating system between the test and the
/// endpoint.
enum Raw {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Raw {
    /// Connects to `endpoint`; TCP from 127.0.0.2.
    fn connect(endpoint: &str) -> io::Result<Raw> {
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            return UnixStream::connect(path).map(Raw::Unix);
        }
        let addr: SocketAddr = endpoint
            .strip_prefix("tcp://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not a tcp endpoint: {endpoint}")))?;
        use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(127, 0, 0, 2, 0),
        )?;
        let SocketAddr::V4(v4) = addr else {
            return Err(io::Error::other("IPv4 only"));
        };
        socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))?;
        Ok(Raw::Tcp(TcpStream::from(fd)))
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Raw::Tcp(s) => s,
            Raw::Unix(s) => s,
        }
    }

    fn set_timeouts(&self, timeout: Duration) {
        let _ = match self {
            Raw::Tcp(s) => s
                .set_read_timeout(Some(timeout))
                .and(s.set_write_timeout(Some(timeout))),
            Raw::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and(s.set_write_timeout(Some(timeout))),
        };
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream().write_all(bytes)
    }

    /// Waits until the other end closes the connection; false if it is still
    /// open after `timeout`.
    fn closed_within(&mut self, timeout: Duration) -> bool {
        self.set_timeouts(Duration::from_millis(200));
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream().read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// ZMTP 3.0's greeting for the NULL mechanism, as a client.
fn greeting() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 0];
    bytes.extend_from_slice(b"NULL");
    bytes.resize(32, 0);
    bytes.push(0); // as-server: no
    bytes.resize(64, 0);
    bytes
}

/// The READY command of a peer of `socket_type`.
fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend(body);
    frame
}

/// The header of a (last) message frame of `size` bytes, in the long form.
fn long_header(size: u64) -> Vec<u8> {
    let mut bytes = vec![0x02];
    bytes.extend_from_slice(&size.to_be_bytes());
    bytes
}

/// The kind of peer a raw connection pretends to be at each endpoint.
fn peer_type(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Control => "DEALER",
        Endpoint::Pubsub => "SUB",
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Control,
    Pubsub,
}

// ----- the targets ------------------------------------------------------------

/// An agent over TCP (with keys, as TCP needs) and one over `ipc://` (without).
fn agents(body: &str) -> Vec<TestAgent> {
    let (tcp, _keys) = TestAgent::start_keyed_tcp("hostile-tcp", body);
    let ipc = TestAgent::start("hostile-ipc", body);
    vec![tcp, ipc]
}

fn endpoint_of(agent: &TestAgent, which: Endpoint) -> &str {
    match which {
        Endpoint::Control => &agent.control,
        Endpoint::Pubsub => &agent.pubsub,
    }
}

async fn node_info(agent: &TestAgent) -> NodeInfo {
    match agent.call(Command::NodeInfo {}).await {
        Response::NodeInfo(info) => *info,
        other => panic!("unexpected answer to nodeinfo: {other:?}"),
    }
}

fn counts_of(info: &NodeInfo, which: Endpoint) -> ConnectionCounts {
    match which {
        Endpoint::Control => info.control_connections,
        Endpoint::Pubsub => info.pubsub_connections,
    }
}

/// The median of 20 `status` round trips on one connection.
async fn status_latency(agent: &TestAgent) -> Duration {
    let mut client = agent.client();
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        match client.call(Command::Status { name: None }).await {
            Ok(Response::Status(_)) => {}
            other => panic!("status failed: {other:?}\n{}", agent.log()),
        }
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// The agent is alive, answers `status` within its normal latency (measured
/// before the attack as `normal`), and its peak memory stayed under the bound.
async fn still_well(agent: &mut TestAgent, normal: Duration, after: &str) {
    assert!(
        agent.try_wait().is_none(),
        "the agent died after {after}:\n{}",
        agent.log()
    );
    let now = status_latency(agent).await;
    assert!(
        now <= normal * 10 + Duration::from_millis(50),
        "after {after}, status takes {now:?} (before: {normal:?})"
    );
    let (rss, peak) = memory_kib(agent.pid());
    assert!(
        peak < PEAK_BOUND_KIB,
        "after {after}, the agent's peak memory is {peak} KiB (now {rss} KiB), over {PEAK_BOUND_KIB} KiB"
    );
}

// ----- pyzmq ------------------------------------------------------------------

/// The virtualenv's Python with pyzmq (circus depends on it), or `None` (after
/// saying so) outside CI.
fn python(test: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CIRCUSCTL").map(|c| PathBuf::from(c).with_file_name("python3")),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|root| root.join("target/circus-venv/bin/python3")),
    ];
    let found = candidates.into_iter().flatten().find(|p| {
        Process::new(p)
            .args(["-c", "import zmq"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "pyzmq not found (CI is set, so {test} may not skip it): run .ci/run, which \
             installs circus (and pyzmq) into target/circus-venv"
        );
        eprintln!("{test}: pyzmq not found, its pyzmq part is skipped (run .ci/run to install it)");
    }
    found
}

/// Runs `script` with `python`, the endpoint as its argument; it must succeed.
fn run_python(python: &PathBuf, script: &str, endpoint: &str) -> String {
    let out = Process::new(python)
        .args(["-c", script, endpoint])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the pyzmq script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        script
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ----- the attacks ------------------------------------------------------------

#[tokio::test]
async fn a_header_announcing_a_huge_body_closes_its_connection_before_anything_is_read() {
    for mut agent in agents(SLEEPER) {
        let normal = status_latency(&agent).await;
        for which in [Endpoint::Control, Endpoint::Pubsub] {
            let endpoint = endpoint_of(&agent, which).to_string();
            let before = counts_of(&node_info(&agent).await, which);
            // The 73 bytes that crashed zmq.rs: a greeting and a 2^49-byte frame.
            let mut raw = Raw::connect(&endpoint).unwrap();
            let mut attack = greeting();
            attack.extend(long_header(1 << 49));
            assert_eq!(attack.len(), 73);
            raw.send(&attack).unwrap();
            assert!(
                raw.closed_within(DEADLINE),
                "{endpoint} kept the connection"
            );
            // The same once the handshake is done, where a message may come.
            let mut raw = Raw::connect(&endpoint).unwrap();
            let mut attack = greeting();
            attack.extend(ready(peer_type(which)));
            attack.extend(long_header(1 << 49));
            raw.send(&attack).unwrap();
            assert!(
                raw.closed_within(DEADLINE),
                "{endpoint} kept the connection"
            );
            still_well(&mut agent, normal, &format!("a huge header on {endpoint}")).await;
            // The counts are kept by a task of their own: wait for them.
            let ended = |c: ConnectionCounts| c.closed + c.handshake_failed;
            wait_for("both connections to be counted", DEADLINE, || async {
                ended(counts_of(&node_info(&agent).await, which)) >= ended(before) + 2
            })
            .await;
            let after = counts_of(&node_info(&agent).await, which);
            assert!(
                after.closed + after.handshake_failed
                    >= before.closed + before.handshake_failed + 2,
                "{endpoint}: {before:?} -> {after:?}"
            );
        }
        // The host statistics, the pool's heartbeat, carry the count too.
        let mut stats = agent.subscribe("stat.").await;
        // (A greeting followed by a frame fails the handshake.)
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(
                Instant::now() < deadline,
                "no host statistics counted a refusal"
            );
            let published = tokio::time::timeout(DEADLINE, stats.recv_published())
                .await
                .expect("no host statistics counting the refusals")
                .unwrap();
            if let Published::Stat(Stat {
                kind: StatKind::Host(host),
                ..
            }) = published
            {
                if host.refused >= 1 {
                    break;
                }
            }
        }
    }
}

const PY_500MB: &str = r#"
import sys, zmq
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 3000)
s.connect(sys.argv[1])
s.send(b"\x00" * 500_000_000)
s.close()
"#;

#[tokio::test]
async fn a_500_mb_message_is_refused_unread() {
    let python = python("a_500_mb_message_is_refused_unread");
    for mut agent in agents(SLEEPER) {
        let normal = status_latency(&agent).await;
        let before = node_info(&agent).await.control_connections;
        // Raw: announce 500 MB and keep writing; the agent closes the connection
        // without reading the body, so little gets through before writes fail.
        let mut raw = Raw::connect(&agent.control).unwrap();
        raw.set_timeouts(Duration::from_secs(5));
        let mut head = greeting();
        head.extend(ready("DEALER"));
        head.extend(long_header(500_000_000));
        raw.send(&head).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0usize;
        while written < 500_000_000 {
            if raw.send(&chunk).is_err() {
                break;
            }
            written += chunk.len();
        }
        assert!(
            written < 64 << 20,
            "{} MB of the body were taken before the connection closed",
            written >> 20
        );
        if let Some(python) = &python {
            run_python(python, PY_500MB, &agent.control);
        }
        still_well(&mut agent, normal, "a 500 MB message").await;
        let attempts = if python.is_some() { 2 } else { 1 };
        wait_for(
            "the refused connections to be counted",
            DEADLINE,
            || async {
                node_info(&agent).await.control_connections.closed >= before.closed + attempts
            },
        )
        .await;
        let after = node_info(&agent).await.control_connections;
        assert!(
            after.closed >= before.closed + attempts,
            "{before:?} -> {after:?}"
        );
    }
}

const PY_GARBAGE_CONTROL: &str = r#"
import os, sys, zmq
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.RCVTIMEO, 20000)
s.connect(sys.argv[1])
replies = 0
# In batches: replies to a peer that does not read are dropped past its queue.
for batch in range(20):
    for i in range(500):
        s.send(b"\xc1" + os.urandom(i % 200))
    for i in range(500):
        s.recv()
        replies += 1
print(replies)
"#;

const PY_GARBAGE_PUBSUB: &str = r#"
import os, sys, zmq
s = zmq.Context().socket(zmq.XSUB)
s.setsockopt(zmq.LINGER, 5000)
s.connect(sys.argv[1])
for i in range(10000):
    s.send(bytes([2 + i % 250]) + os.urandom(i % 200))
s.close()
"#;

#[tokio::test]
async fn garbage_is_answered_or_dropped_and_counted() {
    let python = python("garbage_is_answered_or_dropped_and_counted");
    for mut agent in agents(SLEEPER) {
        let normal = status_latency(&agent).await;
        let before = node_info(&agent).await;
        // Bytes that are not ZeroMQ at all, on 100 connections to each endpoint.
        for which in [Endpoint::Control, Endpoint::Pubsub] {
            for i in 0..100u32 {
                let mut raw = Raw::connect(endpoint_of(&agent, which)).unwrap();
                let noise: Vec<u8> = (0..4096u32)
                    .map(|j| (j.wrapping_mul(2_654_435_761) ^ i) as u8)
                    .collect();
                let _ = raw.send(&noise);
                assert!(
                    raw.closed_within(DEADLINE),
                    "garbage kept a connection open"
                );
            }
        }
        // 10 000 ZeroMQ frames that are not requests, and 10 000 messages that
        // are not subscriptions.
        if let Some(python) = &python {
            let replies = run_python(python, PY_GARBAGE_CONTROL, &agent.control);
            assert_eq!(
                replies.trim(),
                "10000",
                "every garbage request gets an error reply"
            );
            run_python(python, PY_GARBAGE_PUBSUB, &agent.pubsub);
        }
        still_well(&mut agent, normal, "garbage").await;
        let ended = |c: ConnectionCounts| c.handshake_failed + c.closed;
        wait_for(
            "the garbage connections to be counted",
            DEADLINE,
            || async {
                let now = node_info(&agent).await;
                [Endpoint::Control, Endpoint::Pubsub]
                    .iter()
                    .all(|w| ended(counts_of(&now, *w)) >= ended(counts_of(&before, *w)) + 100)
            },
        )
        .await;
        let after = node_info(&agent).await;
        for which in [Endpoint::Control, Endpoint::Pubsub] {
            let (b, a) = (counts_of(&before, which), counts_of(&after, which));
            assert!(
                a.handshake_failed + a.closed >= b.handshake_failed + b.closed + 100,
                "{which:?}: {b:?} -> {a:?}"
            );
        }
        if python.is_some() {
            let refused = |i: &NodeInfo| i.malformed + i.refused.total();
            assert!(
                refused(&after) >= refused(&before) + 10_000,
                "malformed {} -> {}, refused {:?} -> {:?}",
                before.malformed,
                after.malformed,
                before.refused,
                after.refused
            );
        }
    }
}

/// Raises this process's descriptor limit to its hard limit (the test holds
/// thousands of connections; the agents, started before, keep theirs).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard);
    }
}

#[tokio::test]
async fn two_thousand_idle_connections_cost_nothing_and_other_peers_are_served() {
    let mut agents = agents(SLEEPER);
    raise_fd_limit();
    for agent in &mut agents {
        let normal = status_latency(agent).await;
        for which in [Endpoint::Control, Endpoint::Pubsub] {
            let endpoint = endpoint_of(agent, which).to_string();
            let before = counts_of(&node_info(agent).await, which);
            let mut held = Vec::new();
            for _ in 0..2000 {
                // A connect may fail while the listen queue is full for a moment
                // (the agent is closing the refused ones).
                if let Ok(raw) = Raw::connect(&endpoint) {
                    held.push(raw);
                }
            }
            let tcp = endpoint.starts_with("tcp://");
            // From one address over TCP, at most 64; over ipc, 256 in all, so that
            // a flood of the ipc control endpoint (which only the agent's own user
            // and group may open) keeps everyone out until it ends.
            let limit = if tcp { 64 } else { 256 };
            let held_count = held.len() as u64;
            let flooded = !tcp && which == Endpoint::Control;
            if flooded {
                drop(std::mem::take(&mut held));
            }
            wait_for(
                &format!("the agent to see the {held_count} connections to {endpoint}"),
                DEADLINE,
                || async {
                    counts_of(&node_info(agent).await, which).accepted
                        >= before.accepted + held_count
                },
            )
            .await;
            let now = counts_of(&node_info(agent).await, which);
            // Those idle past the handshake timeout were closed, and their places
            // taken by later ones; the rest were refused at once.
            let timed_out = now.closed - before.closed;
            if !flooded {
                assert!(now.open <= limit + 2, "{before:?} -> {now:?}");
            }
            assert!(
                now.refused - before.refused + limit + timed_out >= held_count,
                "{before:?} -> {now:?}"
            );
            if tcp {
                // Another peer is served while they are held.
                still_well(
                    agent,
                    normal,
                    &format!("2000 idle connections to {endpoint}"),
                )
                .await;
            }
            drop(held);
            let open = |c: ConnectionCounts| c.open;
            wait_for("the idle connections to close", DEADLINE, || async {
                open(counts_of(&node_info(agent).await, which)) <= 2
            })
            .await;
            still_well(
                agent,
                normal,
                &format!("2000 idle connections to {endpoint}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn half_frames_held_open_are_bounded() {
    for mut agent in agents(SLEEPER) {
        let normal = status_latency(&agent).await;
        for which in [Endpoint::Control, Endpoint::Pubsub] {
            let endpoint = endpoint_of(&agent, which).to_string();
            let before = counts_of(&node_info(&agent).await, which);
            // Each announces the largest message the endpoint takes and sends half.
            let size = match which {
                Endpoint::Control => MAX_CONTROL_MESSAGE,
                Endpoint::Pubsub => 4096,
            };
            let mut held = Vec::new();
            for _ in 0..32 {
                let mut raw = Raw::connect(&endpoint).unwrap();
                let mut bytes = greeting();
                bytes.extend(ready(peer_type(which)));
                bytes.extend(long_header(size as u64));
                bytes.extend(vec![0x5a; size / 2]);
                raw.send(&bytes).unwrap();
                held.push(raw);
            }
            still_well(&mut agent, normal, &format!("32 half frames on {endpoint}")).await;
            drop(held);
            wait_for(
                "the half frames' connections to close",
                DEADLINE,
                || async {
                    counts_of(&node_info(&agent).await, which).closed >= before.closed + 32
                },
            )
            .await;
            still_well(&mut agent, normal, &format!("32 half frames on {endpoint}")).await;
        }
    }
}

const PY_DEAF_SUBSCRIBERS: &str = r#"
import sys, time, zmq
ctx = zmq.Context()
subs = []
for i in range(5):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(sys.argv[1])
    subs.append(s)
time.sleep(float(sys.argv[2]))
"#;

/// A watcher whose processes print as fast as they can, through the agent.
const CHATTY: &str = "stats_interval = 0.1\n\
    [watchers.chatty]\ncmd = \"sh -c 'while :; do echo the quick brown fox jumps over the lazy dog; done'\"\n\
    numprocesses = 2\nstdout = \"capture\"\n\
    [watchers.many]\ncmd = \"sleep 1000\"\nnumprocesses = 20\n";

#[tokio::test]
async fn subscribers_that_never_read_cost_a_bounded_queue() {
    let hold = Duration::from_secs(60);
    let python = python("subscribers_that_never_read_cost_a_bounded_queue");
    let mut agent = TestAgent::start("deaf", CHATTY);
    agent.wait_pids("many", 20).await;
    let normal = status_latency(&agent).await;
    // Five raw subscribers and five pyzmq ones subscribe to everything, then
    // never read a byte.
    let mut deaf = Vec::new();
    for _ in 0..5 {
        let mut raw = Raw::connect(&agent.pubsub).unwrap();
        let mut bytes = greeting();
        bytes.extend(ready("SUB"));
        bytes.extend([0x00, 0x01, 0x01]); // subscribe to ""
        raw.send(&bytes).unwrap();
        deaf.push(raw);
    }
    let pyzmq = python.as_ref().map(|python| {
        Process::new(python)
            .args([
                "-c",
                PY_DEAF_SUBSCRIBERS,
                &agent.pubsub,
                &hold.as_secs().to_string(),
            ])
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()))
    });
    // A subscriber that reads keeps getting what is published.
    let mut reader = agent.subscribe("stat.").await;
    let started = Instant::now();
    let mut settled = None;
    while started.elapsed() < hold {
        tokio::time::timeout(DEADLINE, reader.recv())
            .await
            .expect("a reading subscriber got nothing while others do not read")
            .unwrap();
        if settled.is_none() && started.elapsed() > Duration::from_secs(20) {
            settled = Some(memory_kib(agent.pid()).0);
        }
    }
    let (rss, peak) = memory_kib(agent.pid());
    let settled = settled.unwrap_or(rss);
    assert!(
        rss <= settled + 8 * 1024,
        "the agent grew from {settled} KiB at 20 s to {rss} KiB at 60 s"
    );
    assert!(peak < PEAK_BOUND_KIB, "peak {peak} KiB");
    still_well(&mut agent, normal, "ten subscribers that never read").await;
    drop(deaf);
    if let Some(mut child) = pyzmq {
        let _ = child.wait();
    }
}

// ----- nodemeta -----------------------------------------------------------------

#[tokio::test]
async fn nodemeta_survives_the_same() {
    let pool = TestPool::start(
        "hostile",
        &[NodeDef {
            name: "hm-a",
            labels: "zone = \"z\"",
        }],
        "stats_interval = 0.1",
        "[watchers.w]\ncmd = \"sleep 1000\"\nnumprocesses = 5\n",
    );
    raise_fd_limit();
    let endpoints = [
        ringmaster_tests::free_tcp_endpoint(),
        format!("ipc://{}/meta-hostile.pub", pool.dir().display()),
    ];
    for endpoint in endpoints {
        let mut meta = NodeMeta::start_at(&pool, &endpoint, &["--interval", "0.2"]);
        let mut sub = meta.subscribe(&["stat.pool"]).await;
        tokio::time::timeout(DEADLINE, sub.recv())
            .await
            .unwrap()
            .unwrap();
        // A huge header, garbage, idle connections, half frames, and
        // subscribers that never read.
        let mut raw = Raw::connect(&endpoint).unwrap();
        let mut attack = greeting();
        attack.extend(long_header(1 << 49));
        raw.send(&attack).unwrap();
        assert!(raw.closed_within(DEADLINE), "nodemeta kept the connection");
        let mut raw = Raw::connect(&endpoint).unwrap();
        let _ = raw.send(&[0x42; 4096]);
        assert!(
            raw.closed_within(DEADLINE),
            "nodemeta kept a garbage connection"
        );
        let mut held = Vec::new();
        for _ in 0..2000 {
            if let Ok(raw) = Raw::connect(&endpoint) {
                held.push(raw);
            }
        }
        for _ in 0..10 {
            let mut raw = Raw::connect(&endpoint).unwrap();
            let mut bytes = greeting();
            bytes.extend(ready("SUB"));
            bytes.extend([0x00, 0x01, 0x01]);
            bytes.extend(long_header(4096));
            bytes.extend([0u8; 2048]);
            raw.send(&bytes).unwrap();
            held.push(raw);
        }
        // It goes on relaying to the subscriber it had.
        for _ in 0..10 {
            tokio::time::timeout(DEADLINE, sub.recv())
                .await
                .expect("nodemeta stopped relaying")
                .unwrap();
        }
        drop(held);
        assert!(meta.running(), "nodemeta died:\n{}", meta.log());
        let mut fresh = meta.subscribe(&["stat.pool"]).await;
        tokio::time::timeout(DEADLINE, fresh.recv())
            .await
            .expect("a new subscriber of nodemeta gets nothing")
            .unwrap();
        let (_, peak) = memory_kib(meta.pid());
        assert!(
            peak < PEAK_BOUND_KIB,
            "nodemeta's peak memory is {peak} KiB"
        );
    }
}

// ----- local users ------------------------------------------------------------

/// Runs `nodectl ARGS` as user and group nobody (65534), with `groups` as its
/// supplementary groups.
fn nodectl_as_nobody(endpoint: &str, groups: &str, args: &[&str]) -> std::process::Output {
    let mut command = Process::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534"]);
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.arg(format!("--groups={groups}"));
    }
    command
        .arg(bin_path("nodectl"))
        .args(["--endpoint", endpoint, "--timeout", "5"])
        .args(args)
        .env_remove("RINGMASTER_KEY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run setpriv: {e}"))
}

#[tokio::test]
async fn a_local_user_cannot_drive_a_root_agent_with_the_default_config() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root, so this test may not be skipped"
        );
        eprintln!("skipping: the local-user test runs as root (it starts a root agent)");
        return;
    }
    for (group, allowed) in [(None, false), (Some("nogroup"), true)] {
        // The default config names no endpoint: the agent makes its runtime
        // directory (moved into a temp dir that anyone may enter, so that only
        // the agent's own permissions stand in the way).
        let mut agent = TestAgent::prepare("localroot", "", &[]);
        let run = agent.dir().join("run");
        let config = match group {
            Some(g) => format!(
                "[agent]\nnode = \"localroot\"\ncontrol_group = \"{g}\"\nstate_dir = \"state\"\n"
            ),
            None => "[agent]\nnode = \"localroot\"\nstate_dir = \"state\"\n".to_string(),
        };
        std::fs::write(agent.config_path(), config).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(agent.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let control = format!("ipc://{}/control.sock", run.display());
        agent.use_endpoints(&control, &format!("ipc://{}/pubsub.sock", run.display()));
        agent.set_env("RINGMASTER_RUNTIME_DIR", &run.display().to_string());
        agent.launch();

        use std::os::unix::fs::MetadataExt;
        let dir_mode = std::fs::metadata(&run).unwrap().mode() & 0o777;
        let sock_mode = std::fs::metadata(run.join("control.sock")).unwrap().mode() & 0o777;
        match group {
            None => assert_eq!((dir_mode, sock_mode), (0o700, 0o600)),
            Some(_) => assert_eq!((dir_mode, sock_mode), (0o750, 0o660)),
        }
        let out = nodectl_as_nobody(
            &control,
            group.unwrap_or(""),
            &[
                "add",
                "pwn",
                "--start",
                "--",
                "/bin/sh",
                "-c",
                "id > /tmp/ringmaster-pwned",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if allowed {
            // A member of the control group may: the test can drive the agent
            // as nobody at all, so the refusal above is the agent's doing.
            assert!(out.status.success(), "{stderr}");
            agent
                .call(Command::Rm {
                    name: "pwn".into(),
                    nostop: false,
                })
                .await;
        } else {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains("cannot reach agent") && stderr.contains("permission denied"),
                "{stderr}"
            );
            match agent.call(Command::NumWatchers {}).await {
                Response::Count(n) => assert_eq!(n, 0, "a watcher was added"),
                other => panic!("{other:?}"),
            }
        }
    }
    // A TCP endpoint without keys is refused, even on loopback.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tcp.toml");
    std::fs::write(
        &path,
        "[agent]\nnode = \"n\"\ncontrol = \"tcp://127.0.0.1:5555\"\n",
    )
    .unwrap();
    let out = Process::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("every local user") && stderr.contains("insecure = true"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_refuses_to_send_an_oversize_request() {
    let agent = TestAgent::start("oversize", "");
    let mut client = Client::new(agent.control.clone(), DEADLINE);
    let err = client
        .call_raw(vec![0x92; MAX_CONTROL_MESSAGE + 1], 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // It did not even connect.
    let state = format!("{client:?}");
    assert!(state.contains("connected: false"), "{state}");
    // And it is still usable for a request of the right size.
    assert!(matches!(
        client.call(Command::NumWatchers {}).await,
        Ok(Response::Count(0))
    ));
}
