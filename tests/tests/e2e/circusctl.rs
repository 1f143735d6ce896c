//! Circus compatibility, end to end: raw Circus JSON requests over a real DEALER
//! (one JSON frame, no delimiter, as circusctl frames them) against a real agent,
//! and the real `circusctl` (circus 0.19.0 from PyPI) driving a real agent through
//! every command it has.
//!
//! The circusctl tests find it in `$CIRCUSCTL`, then in `target/circus-venv`
//! (where `.ci/run` installs it), then on `PATH`. Without it they are skipped,
//! except under CI (`$CI` set), where a missing circusctl is a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use ringmaster_protocol::{Codec, Command, Reply, Request, Response, PROTOCOL_VERSION};
use ringmaster_tests::{wait_for, wait_for_blocking, TestAgent, DEADLINE};
use serde_json::{json, Value};

/// Two watchers, and statistics often enough for `stats` and `dstats`. The tests
/// signal every worker at once, which is not flapping.
const WATCHERS: &str = "stats_interval = 0.2\n\
[watchers.web]\ncmd = \"sleep 300\"\nnumprocesses = 1\n\n\
[watchers.worker]\ncmd = \"sleep 300\"\nnumprocesses = 2\ncheck_flapping = false\n";

/// A DEALER that speaks like circusctl: one JSON frame per request.
struct CircusDealer {
    socket: zmq::Socket,
    next: u64,
}

impl CircusDealer {
    /// A plain DEALER, as circusctl's: one frame per request, no delimiter. It
    /// blocks (with a deadline), which is fine beside an agent in another process.
    async fn connect(endpoint: &str) -> Self {
        let socket = zmq::Context::new()
            .socket(zmq::DEALER)
            .unwrap_or_else(|e| panic!("cannot make a DEALER: {e}"));
        socket.set_linger(0).unwrap();
        socket.set_rcvtimeo(DEADLINE.as_millis() as i32).unwrap();
        socket.set_sndtimeo(DEADLINE.as_millis() as i32).unwrap();
        socket
            .connect(endpoint)
            .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"));
        CircusDealer { socket, next: 0 }
    }

    async fn send_raw(&mut self, frame: Vec<u8>) {
        self.socket
            .send(frame, 0)
            .unwrap_or_else(|e| panic!("cannot send: {e}"));
    }

    /// The next reply frame, as JSON.
    async fn recv(&mut self) -> Value {
        let frames = self
            .socket
            .recv_multipart(0)
            .unwrap_or_else(|e| panic!("no reply within {DEADLINE:?}: {e}"));
        assert_eq!(frames.len(), 1, "a reply is one frame: {frames:?}");
        serde_json::from_slice(&frames[0]).unwrap_or_else(|e| {
            panic!(
                "the reply is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&frames[0])
            )
        })
    }

    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{:032x}", self.next)
    }

    /// Sends one request and returns its reply, checking that it carries our id.
    async fn call(&mut self, command: &str, properties: Value) -> Value {
        let id = self.next_id();
        let request = json!({"id": id, "command": command, "properties": properties});
        self.send_raw(serde_json::to_vec(&request).unwrap()).await;
        let reply = self.recv().await;
        assert_eq!(reply["id"], id, "reply to {request}: {reply}");
        assert!(reply["time"].as_f64().is_some(), "no time in {reply}");
        reply
    }

    /// Like [`CircusDealer::call`], expecting `status: ok`.
    async fn ok(&mut self, command: &str, properties: Value) -> Value {
        let reply = self.call(command, properties.clone()).await;
        assert_eq!(reply["status"], "ok", "{command} {properties}: {reply}");
        reply
    }

    /// Like [`CircusDealer::call`], expecting an error with `errno`.
    async fn error(&mut self, command: &str, properties: Value, errno: i64) -> String {
        let reply = self.call(command, properties.clone()).await;
        assert_eq!(reply["status"], "error", "{command} {properties}: {reply}");
        assert_eq!(reply["errno"], errno, "{command} {properties}: {reply}");
        assert_eq!(reply["tb"], Value::Null, "{reply}");
        reply["reason"].as_str().unwrap().to_string()
    }
}

async fn numprocesses(agent: &TestAgent, name: &str) -> usize {
    agent.pids(name).await.len()
}

#[tokio::test]
async fn circus_json_reads_come_back_in_circus_shape() {
    let agent = TestAgent::start("circus-read", WATCHERS);
    agent.wait_pids("web", 1).await;
    agent.wait_pids("worker", 2).await;
    let mut dealer = CircusDealer::connect(&agent.control).await;

    wait_for("both watchers active", DEADLINE, || async {
        let reply = CircusDealer::connect(&agent.control)
            .await
            .ok("status", json!({}))
            .await;
        reply["statuses"] == json!({"web": "active", "worker": "active"})
    })
    .await;
    let reply = dealer.call("status", json!({"name": "web"})).await;
    assert_eq!(reply["status"], "active", "{reply}");
    // Command and watcher names are case-insensitive.
    let reply = dealer.call("STATUS", json!({"name": "WEB"})).await;
    assert_eq!(reply["status"], "active", "{reply}");

    let reply = dealer.ok("list", json!({})).await;
    assert_eq!(reply["watchers"], json!(["web", "worker"]));
    let reply = dealer.ok("list", json!({"name": "worker"})).await;
    let pids: BTreeSet<u64> = reply["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let expected: BTreeSet<u64> = agent
        .pids("worker")
        .await
        .into_iter()
        .map(u64::from)
        .collect();
    assert_eq!(pids, expected);

    let reply = dealer.ok("numwatchers", json!({})).await;
    assert_eq!(reply["numwatchers"], 2);
    let reply = dealer.ok("numprocesses", json!({})).await;
    assert_eq!(reply["numprocesses"], 3);
    let reply = dealer.ok("numprocesses", json!({"name": "Worker"})).await;
    assert_eq!(reply["numprocesses"], 2);
    assert_eq!(reply["watcher_name"], "Worker");

    let reply = dealer.ok("options", json!({"name": "web"})).await;
    assert_eq!(reply["options"]["cmd"], "sleep 300", "{reply}");
    assert_eq!(reply["options"]["numprocesses"], 1, "{reply}");
    let reply = dealer
        .ok(
            "get",
            json!({"name": "web", "keys": ["numprocesses", "cmd"]}),
        )
        .await;
    assert_eq!(
        reply["options"],
        json!({"numprocesses": 1, "cmd": "sleep 300"})
    );
    let reason = dealer
        .error("get", json!({"name": "web", "keys": ["cmd", "nope"]}), 3)
        .await;
    assert_eq!(reason, "'nope' option not found");

    let reply = dealer.ok("globaloptions", json!({})).await;
    assert_eq!(reply["options"]["endpoint"], agent.control.as_str());
    assert_eq!(reply["options"]["pubsub_endpoint"], agent.pubsub.as_str());
    let reply = dealer
        .ok("globaloptions", json!({"option": "endpoint"}))
        .await;
    assert_eq!(reply["options"], json!({"endpoint": agent.control}));

    let reply = dealer.ok("listsockets", json!({})).await;
    assert_eq!(reply["sockets"], json!([]));

    // Statistics, once the first sample is taken.
    let web = agent.pids("web").await[0];
    wait_for("a statistics sample of web", DEADLINE, || async {
        let reply = CircusDealer::connect(&agent.control)
            .await
            .call("stats", json!({"name": "web"}))
            .await;
        reply["info"].get(web.to_string()).is_some()
    })
    .await;
    let reply = dealer.ok("stats", json!({"name": "web"})).await;
    assert_eq!(reply["name"], "web");
    let info = &reply["info"][web.to_string()];
    assert_eq!(info["pid"], web);
    assert_eq!(info["cmdline"], "sleep", "{info}");
    let reply = dealer
        .ok("stats", json!({"name": "web", "process": web}))
        .await;
    assert_eq!(reply["process"], web);
    assert_eq!(reply["info"]["pid"], web);
    let reply = dealer.ok("stats", json!({})).await;
    assert!(reply["infos"]["worker"].as_object().is_some(), "{reply}");
    let reply = dealer.ok("dstats", json!({})).await;
    assert_eq!(reply["info"]["pid"], agent.pid(), "{reply}");

    // A watcher that does not exist.
    let reason = dealer.error("status", json!({"name": "nope"}), 3).await;
    assert_eq!(reason, "program nope not found");
}

#[tokio::test]
async fn circus_json_changes_take_effect_and_report_when_waiting() {
    let agent = TestAgent::start("circus-change", WATCHERS);
    agent.wait_pids("web", 1).await;
    let mut dealer = CircusDealer::connect(&agent.control).await;

    // Without waiting: an immediate bare ok, then the work is done.
    let reply = dealer.ok("incr", json!({"name": "web"})).await;
    assert_eq!(reply.get("numprocesses"), None, "{reply}");
    agent.wait_pids("web", 2).await;
    // Waiting: the new count.
    let reply = dealer
        .ok("incr", json!({"name": "web", "nb": 2, "waiting": true}))
        .await;
    assert_eq!(reply["numprocesses"], 4);
    assert_eq!(numprocesses(&agent, "web").await, 4);
    let reply = dealer
        .ok("decr", json!({"name": "web", "nb": "3", "waiting": true}))
        .await;
    assert_eq!(reply["numprocesses"], 1);
    // Never below zero, as in Circus.
    let reply = dealer
        .ok("decr", json!({"name": "web", "nb": 5, "waiting": true}))
        .await;
    assert_eq!(reply["numprocesses"], 0);
    agent.wait_pids("web", 0).await;

    // `set` with a string, as a hand-written client may send it, and typed.
    dealer
        .ok(
            "set",
            json!({"name": "web", "options": {"numprocesses": "2"}, "waiting": true}),
        )
        .await;
    agent.wait_pids("web", 2).await;
    dealer
        .ok(
            "set",
            json!({"name": "web", "options": {"graceful_timeout": 5, "respawn": "false", "stop_signal": 2}}),
        )
        .await;
    let reply = dealer
        .ok(
            "get",
            json!({"name": "web", "keys": ["graceful_timeout", "respawn", "stop_signal"]}),
        )
        .await;
    assert_eq!(
        reply["options"],
        json!({"graceful_timeout": 5.0, "respawn": false, "stop_signal": 2})
    );
    let reason = dealer
        .error(
            "set",
            json!({"name": "web", "options": {"numprocesses": "many"}}),
            3,
        )
        .await;
    assert_eq!(reason, "'numprocesses' isn't an integer");
    let reason = dealer
        .error("set", json!({"name": "web", "options": {"nope": 1}}), 3)
        .await;
    assert!(reason.contains("nope"), "{reason}");

    // stop / start / restart, waiting: Circus's `info`.
    let reply = dealer
        .ok("stop", json!({"name": "worker", "waiting": true}))
        .await;
    assert_eq!(reply["info"], Value::Null, "{reply}");
    assert_eq!(
        dealer.call("status", json!({"name": "worker"})).await["status"],
        "stopped"
    );
    let reply = dealer
        .ok("start", json!({"name": "worker", "waiting": true}))
        .await;
    assert_eq!(
        reply["info"]["started"].as_array().unwrap().len(),
        2,
        "{reply}"
    );
    let before = agent.pids("worker").await;
    let reply = dealer
        .ok("restart", json!({"name": "worker", "waiting": true}))
        .await;
    let stopped: BTreeSet<u64> = reply["info"]["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(
        stopped,
        before
            .iter()
            .copied()
            .map(u64::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(reply["info"]["started"].as_array().unwrap().len(), 2);
    let reply = dealer
        .ok("reload", json!({"name": "worker", "waiting": true}))
        .await;
    assert!(reply["info"]["started"].is_array(), "{reply}");

    // A glob selects several watchers.
    dealer
        .ok("stop", json!({"name": "w*", "waiting": true}))
        .await;
    let reply = dealer.ok("status", json!({})).await;
    assert_eq!(
        reply["statuses"],
        json!({"web": "stopped", "worker": "stopped"})
    );
    dealer
        .ok("start", json!({"name": "W*", "waiting": true}))
        .await;
    let reply = dealer.ok("status", json!({})).await;
    assert_eq!(
        reply["statuses"],
        json!({"web": "active", "worker": "active"})
    );
    let reason = dealer
        .error("start", json!({"name": "w*", "match": "simple"}), 3)
        .await;
    assert_eq!(reason, "program w* not found");

    // signal: the process is replaced once TERM ends it.
    let old = agent.wait_pids("worker", 2).await;
    dealer
        .ok(
            "signal",
            json!({"name": "worker", "pid": old[0], "signum": "TERM"}),
        )
        .await;
    wait_for(
        "the signalled worker process replaced",
        DEADLINE,
        || async {
            let now = agent.pids("worker").await;
            now.len() == 2 && !now.contains(&old[0]) && now.contains(&old[1])
        },
    )
    .await;
    let reason = dealer
        .error("signal", json!({"name": "worker", "signum": "NOPE"}), 3)
        .await;
    assert!(reason.starts_with("signal invalid"), "{reason}");

    // add, rm.
    dealer
        .ok(
            "add",
            json!({"name": "extra", "cmd": "sleep 300", "start": true, "waiting": true}),
        )
        .await;
    agent.wait_pids("extra", 1).await;
    let reason = dealer
        .error("add", json!({"name": "extra", "cmd": "sleep 1"}), 5)
        .await;
    assert!(reason.contains("extra"), "{reason}");
    dealer
        .ok("rm", json!({"name": "extra", "waiting": true}))
        .await;
    let reply = dealer.ok("list", json!({})).await;
    assert_eq!(reply["watchers"], json!(["web", "worker"]));
}

#[tokio::test]
async fn bad_circus_frames_get_circus_errors_and_the_agent_keeps_serving() {
    let agent = TestAgent::start("circus-bad", WATCHERS);
    let mut dealer = CircusDealer::connect(&agent.control).await;

    dealer.send_raw(b"{this is not json".to_vec()).await;
    let reply = dealer.recv().await;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["errno"], 1);
    assert_eq!(reply["reason"], "json invalid");
    assert_eq!(reply["id"], Value::Null);

    let reason = dealer.error("nope", json!({}), 2).await;
    assert_eq!(reason, "unknown command: 'nope'");
    let reason = dealer.error("incr", json!({}), 3).await;
    assert_eq!(reason, "message invalid 'name' is missing");
    let reason = dealer.error("incr", json!({"name": "nope"}), 3).await;
    assert_eq!(reason, "program nope not found");

    // Garbage that starts like JSON: too large, too deep, binary. A frame over
    // the size limit is not read at all: its connection is closed (the DEALER
    // reconnects by itself) and the agent counts it.
    let closed_before = control_closed(&agent).await;
    let mut huge = b"{\"id\": \"x\", \"command\": \"".to_vec();
    huge.resize(3 << 20, b'a');
    dealer.send_raw(huge).await;
    ringmaster_tests::wait_for(
        "the oversize frame's connection to close",
        DEADLINE,
        || async { control_closed(&agent).await > closed_before },
    )
    .await;
    let deep = format!("{{\"a\": {}", "[".repeat(500_000));
    dealer.send_raw(deep.into_bytes()).await;
    assert_eq!(dealer.recv().await["errno"], 1);
    let mut binary = vec![b'{'];
    binary.extend((0..=255u8).cycle().take(100_000));
    dealer.send_raw(binary).await;
    assert_eq!(dealer.recv().await["errno"], 1);

    // The agent still answers, in both protocols.
    let reply = dealer.ok("numwatchers", json!({})).await;
    assert_eq!(reply["numwatchers"], 2);
    match agent.call(Command::Status { name: None }).await {
        Response::Status(list) => assert_eq!(list.len(), 2),
        other => panic!("unexpected answer to status: {other:?}"),
    }
}

/// Connections to the agent's control endpoint that have ended.
async fn control_closed(agent: &TestAgent) -> u64 {
    match agent.call(Command::NodeInfo {}).await {
        Response::NodeInfo(info) => info.control_connections.closed,
        other => panic!("unexpected answer to nodeinfo: {other:?}"),
    }
}

#[tokio::test]
async fn a_circus_cast_gets_no_reply_but_takes_effect() {
    let agent = TestAgent::start("circus-cast", WATCHERS);
    agent.wait_pids("web", 1).await;
    let mut dealer = CircusDealer::connect(&agent.control).await;

    let cast = json!({"id": "cast-1", "command": "incr", "properties": {"name": "web"}, "msg_type": "cast"});
    dealer.send_raw(serde_json::to_vec(&cast).unwrap()).await;
    let bad_cast = json!({"id": "cast-2", "command": "nope", "msg_type": "cast"});
    dealer
        .send_raw(serde_json::to_vec(&bad_cast).unwrap())
        .await;
    // The next reply on this socket is the answer to the next request: the casts
    // were not answered, not even the refused one.
    dealer.ok("numwatchers", json!({})).await;
    agent.wait_pids("web", 2).await;
    dealer.ok("numwatchers", json!({})).await;
}

#[tokio::test]
async fn messagepack_and_circus_clients_share_the_endpoint() {
    let agent = TestAgent::start("circus-mixed", WATCHERS);
    agent.wait_pids("worker", 2).await;
    // A MessagePack request whose body happens to be small still goes to the codec.
    let mut client = ringmaster_protocol::transport::Client::new(agent.control.clone(), DEADLINE);
    let request = Codec::default()
        .encode(&Request {
            v: PROTOCOL_VERSION,
            id: 9,
            no_wait: false,
            command: Command::NumWatchers {},
        })
        .unwrap();
    let reply: Reply = Codec::default()
        .decode(&client.exchange_frame(request).await.unwrap())
        .unwrap();
    assert_eq!(reply.id, 9);
    assert_eq!(reply.result.unwrap(), Response::Count(2));
    // A Circus request through the same kind of client (with an empty delimiter
    // frame, as REQ-style clients send) is answered in JSON.
    let frame = br#"{"id": "z", "command": "numprocesses", "properties": {"name": "worker"}}"#;
    let reply: Value =
        serde_json::from_slice(&client.exchange_frame(frame.to_vec()).await.unwrap()).unwrap();
    assert_eq!(
        reply,
        json!({"status": "ok", "time": reply["time"], "numprocesses": 2, "watcher_name": "worker", "id": "z"})
    );
}

// ----- the real circusctl ----------------------------------------------------------

/// The circusctl to test with, or `None` (after saying so) when there is none
/// outside CI.
pub(super) fn circusctl(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CIRCUSCTL") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "CIRCUSCTL={} does not exist; run .ci/run, which installs circus==0.19.0 into target/circus-venv",
            path.display()
        );
        return Some(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("target/circus-venv/bin/circusctl"));
    if let Some(venv) = venv.filter(|p| p.exists()) {
        return Some(venv);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("circusctl"))
            .find(|p| p.exists())
    });
    if on_path.is_some() {
        return on_path;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "circusctl not found (CI is set, so {test} may not be skipped): run .ci/run, which \
         installs circus==0.19.0 into target/circus-venv, or point CIRCUSCTL at a circusctl"
    );
    eprintln!(
        "skipping {test}: circusctl not found (set CIRCUSCTL, or run .ci/run to install it \
         into target/circus-venv)"
    );
    None
}

/// One run of circusctl.
#[derive(Debug, PartialEq)]
pub(super) struct Run {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// circusctl pointed at one agent (or circusd).
pub(super) struct Ctl {
    pub(super) path: PathBuf,
    pub(super) endpoint: String,
}

impl Ctl {
    pub(super) fn run(&self, args: &[&str]) -> Run {
        let out = Process::new(&self.path)
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--timeout")
            .arg("15")
            .args(args)
            .env_remove("CIRCUSCTL_ENDPOINT")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }

    /// Runs circusctl, expecting exit 0; returns its output.
    pub(super) fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "circusctl {args:?} exited {}:\nstdout: {}\nstderr: {}",
            run.code, run.stdout, run.stderr
        );
        run.stdout
    }

    /// Runs circusctl, expecting an error reply (exit 3); returns what it printed.
    fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code, 3,
            "circusctl {args:?} should have failed with 3, exited {}:\nstdout: {}\nstderr: {}",
            run.code, run.stdout, run.stderr
        );
        run.stderr
    }

    /// `--json` output, parsed.
    pub(super) fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?} is not JSON: {e}"))
    }

    fn pids(&self, name: &str) -> BTreeSet<u32> {
        let out = self.ok(&["list", name]);
        out.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or_else(|e| panic!("bad pid {p:?}: {e}")))
            .collect()
    }
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(|l| l.trim().to_string()).collect()
}

/// circusctl at `path`, pointed at `agent`.
fn ctl_for(path: PathBuf, agent: &TestAgent) -> Ctl {
    Ctl {
        path,
        endpoint: agent.control.clone(),
    }
}

#[test]
fn circusctl_reads_statuses_lists_options_and_stats() {
    let Some(path) = circusctl("circusctl_reads_statuses_lists_options_and_stats") else {
        return;
    };
    let agent = TestAgent::start("ctl-read", WATCHERS);
    let ctl = ctl_for(path, &agent);

    wait_for_blocking("both watchers active", DEADLINE, || {
        ctl.run(&["status"]).stdout == "web: active\nworker: active"
    });
    assert_eq!(ctl.ok(&["status", "web"]), "active");
    assert_eq!(ctl.ok(&["status", "WEB"]), "active");
    // circusctl prints the status of an error reply: "error".
    assert_eq!(ctl.fails(&["status", "nope"]), "error");

    assert_eq!(ctl.ok(&["list"]), "web,worker");
    wait_for_blocking("two worker processes", DEADLINE, || {
        ctl.pids("worker").len() == 2
    });
    assert_eq!(ctl.ok(&["numwatchers"]), "2");
    assert_eq!(ctl.ok(&["numprocesses"]), "3");
    assert_eq!(ctl.ok(&["numprocesses", "worker"]), "2");

    let options = lines(&ctl.ok(&["options", "web"]));
    for expected in ["cmd: sleep 300", "numprocesses: 1", "respawn: True"] {
        assert!(
            options.contains(expected),
            "{expected:?} not in {options:?}"
        );
    }
    assert_eq!(
        lines(&ctl.ok(&["get", "web", "numprocesses", "cmd"])),
        lines("numprocesses: 1\ncmd: sleep 300")
    );
    assert_eq!(
        ctl.fails(&["get", "web", "nope"]),
        "error: 'nope' option not found"
    );

    let global = lines(&ctl.ok(&["globaloptions"]));
    let endpoint = format!("endpoint: {}", agent.control);
    assert!(global.contains(&endpoint), "{endpoint:?} not in {global:?}");
    assert_eq!(ctl.ok(&["globaloptions", "endpoint"]), endpoint);

    assert_eq!(ctl.ok(&["listsockets"]), "");

    let web: u32 = *ctl.pids("web").iter().next().unwrap();
    wait_for_blocking("a statistics sample of web", DEADLINE, || {
        let run = ctl.run(&["stats", "web"]);
        run.code == 0 && run.stdout.contains(&format!("{web}: {web}  sleep"))
    });
    let all = ctl.ok(&["stats"]);
    assert!(all.contains("worker:"), "{all}");
    let one = ctl.ok(&["stats", "web", &web.to_string()]);
    assert!(one.starts_with(&format!("{web}: {web}  sleep")), "{one}");
    wait_for_blocking("dstats", DEADLINE, || ctl.run(&["dstats"]).code == 0);
    let own = ctl.ok(&["dstats"]);
    assert!(
        own.starts_with(&format!("Main Process:\n    {}  nodeagent", agent.pid())),
        "{own}"
    );

    let status = ctl.json(&["status"]);
    assert_eq!(
        status["statuses"],
        json!({"web": "active", "worker": "active"})
    );
}

#[test]
fn circusctl_scales_sets_signals_and_restarts() {
    let Some(path) = circusctl("circusctl_scales_sets_signals_and_restarts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-died");
    let body = format!(
        "{WATCHERS}\n[watchers.tree]\ncmd = \"sh -c 'sleep 300; touch {}; sleep 300'\"\n",
        marker.display()
    );
    let agent = TestAgent::start("ctl-change", &body);
    let ctl = ctl_for(path, &agent);
    wait_for_blocking("web, worker and tree running", DEADLINE, || {
        ctl.run(&["numprocesses"]).stdout == "4"
    });

    // incr / decr, without and with --waiting.
    assert_eq!(ctl.ok(&["incr", "web"]), "ok");
    wait_for_blocking("2 web processes", DEADLINE, || ctl.pids("web").len() == 2);
    assert_eq!(ctl.ok(&["incr", "web", "2", "--waiting"]), "4");
    assert_eq!(ctl.pids("web").len(), 4);
    assert_eq!(ctl.ok(&["decr", "web", "3", "--waiting"]), "1");
    assert_eq!(ctl.ok(&["decr", "web", "9", "--waiting"]), "0");
    assert_eq!(ctl.ok(&["decr", "web"]), "ok");
    assert_eq!(ctl.ok(&["incr", "WEB", "--waiting"]), "1");

    // set: circusctl sends typed values (and a signal as its number).
    assert_eq!(ctl.ok(&["set", "web", "numprocesses", "2"]), "ok");
    wait_for_blocking("2 web processes after set", DEADLINE, || {
        ctl.pids("web").len() == 2
    });
    assert_eq!(ctl.ok(&["get", "web", "numprocesses"]), "numprocesses: 2");
    assert_eq!(
        ctl.ok(&[
            "set",
            "web",
            "graceful_timeout",
            "5",
            "respawn",
            "false",
            "--waiting"
        ]),
        "ok"
    );
    assert_eq!(
        lines(&ctl.ok(&["get", "web", "graceful_timeout", "respawn"])),
        lines("graceful_timeout: 5.0\nrespawn: False")
    );
    assert_eq!(ctl.ok(&["set", "web", "stop_signal", "INT"]), "ok");
    assert_eq!(ctl.ok(&["get", "web", "stop_signal"]), "stop_signal: 2");
    assert!(
        ctl.fails(&["set", "web", "max_age", "-5"])
            .starts_with("error: "),
        "a negative max_age is refused"
    );

    // signal: one process, every process, a bad signal.
    let old: Vec<u32> = ctl.pids("worker").into_iter().collect();
    assert_eq!(
        ctl.ok(&["signal", "worker", &old[0].to_string(), "TERM"]),
        "ok"
    );
    wait_for_blocking("the signalled worker replaced", DEADLINE, || {
        let now = ctl.pids("worker");
        now.len() == 2 && !now.contains(&old[0]) && now.contains(&old[1])
    });
    let old = ctl.pids("worker");
    assert_eq!(ctl.ok(&["signal", "worker", "15", "--recursive"]), "ok");
    wait_for_blocking("every worker replaced", DEADLINE, || {
        let now = ctl.pids("worker");
        now.len() == 2 && now.is_disjoint(&old)
    });
    assert!(
        ctl.fails(&["signal", "worker", "NOPE"])
            .starts_with("error: signal invalid"),
        "a bad signal is refused"
    );
    // --children signals the children only: the shell's sleep dies, the shell
    // goes on (and leaves a mark).
    let tree = ctl.pids("tree");
    assert_eq!(ctl.ok(&["signal", "tree", "TERM", "--children"]), "ok");
    wait_for_blocking("the tree's child to die", DEADLINE, || marker.exists());
    assert_eq!(ctl.pids("tree"), tree);

    // stop / start / restart / reload.
    assert_eq!(ctl.ok(&["stop", "worker"]), "ok");
    wait_for_blocking("worker stopped", DEADLINE, || {
        ctl.run(&["status", "worker"]).stdout == "stopped"
    });
    let started = ctl.json(&["start", "worker", "--waiting"]);
    assert_eq!(started["status"], "ok");
    assert_eq!(started["info"]["started"].as_array().unwrap().len(), 2);
    let before = ctl.pids("worker");
    let restarted = ctl.json(&["restart", "worker", "--waiting"]);
    let stopped: BTreeSet<u32> = restarted["info"]["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(stopped, before);
    assert!(ctl.pids("worker").is_disjoint(&before));
    assert_eq!(ctl.ok(&["reload", "web"]), "ok");
    assert_eq!(
        ctl.ok(&["reload", "web", "--waiting", "--sequential"]),
        "ok"
    );
    assert_eq!(ctl.ok(&["reload", "--terminate", "--waiting"]), "ok");
    assert_eq!(ctl.ok(&["restart", "--waiting"]), "ok");
    assert_eq!(ctl.ok(&["stop", "w*", "--waiting"]), "ok");
    assert_eq!(
        ctl.ok(&["status"]),
        "tree: active\nweb: stopped\nworker: stopped"
    );
    assert_eq!(ctl.ok(&["start", "--waiting"]), "ok");
    assert_eq!(
        ctl.ok(&["status"]),
        "tree: active\nweb: active\nworker: active"
    );
}

#[test]
fn circusctl_adds_removes_reloads_config_and_quits() {
    let Some(path) = circusctl("circusctl_adds_removes_reloads_config_and_quits") else {
        return;
    };
    let mut agent = TestAgent::start("ctl-admin", WATCHERS);
    let ctl = ctl_for(path, &agent);

    assert_eq!(ctl.ok(&["add", "extra", "sleep", "300"]), "ok");
    assert_eq!(ctl.ok(&["status", "extra"]), "stopped");
    assert_eq!(ctl.ok(&["add", "--start", "more", "sleep", "300"]), "ok");
    wait_for_blocking("the added watcher running", DEADLINE, || {
        ctl.run(&["status", "more"]).stdout == "active"
    });
    assert_eq!(ctl.ok(&["list"]), "extra,more,web,worker");
    assert!(
        ctl.fails(&["add", "web", "sleep", "1"]).contains("web"),
        "adding an existing watcher is refused"
    );
    assert_eq!(ctl.ok(&["rm", "extra"]), "ok");
    assert_eq!(ctl.ok(&["rm", "more"]), "ok");
    wait_for_blocking("the removed watchers gone", DEADLINE, || {
        ctl.run(&["list"]).stdout == "web,worker"
    });

    assert_eq!(ctl.ok(&["reloadconfig", "--waiting"]), "ok");
    assert_eq!(ctl.ok(&["numwatchers"]), "2");

    assert_eq!(ctl.ok(&["quit"]), "ok");
    let status = agent.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "nodeagent exited with {status} after quit"
    );
}

#[tokio::test]
async fn listsockets_shows_real_sockets_in_circus_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.sock");
    let body = format!(
        "{WATCHERS}\n[sockets.web]\nhost = \"127.0.0.1\"\nport = 0\nbacklog = 64\n\n\
         [sockets.local]\npath = \"{}\"\n",
        path.display()
    );
    let agent = TestAgent::start("circus-sockets", &body);
    let mut dealer = CircusDealer::connect(&agent.control).await;
    let reply = dealer.ok("listsockets", json!({})).await;
    let sockets = reply["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 2, "{reply}");
    let fds: Vec<i64> = sockets.iter().map(|s| s["fd"].as_i64().unwrap()).collect();
    assert!(
        fds.windows(2).all(|w| w[0] < w[1]),
        "not sorted by fd: {reply}"
    );
    let web = sockets.iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web["host"], "127.0.0.1");
    assert_eq!(web["backlog"], 64);
    let port = web["port"].as_u64().unwrap();
    assert_ne!(port, 0, "the port the OS picked: {reply}");
    assert_eq!(web.get("path"), None);
    std::net::TcpStream::connect(("127.0.0.1", port as u16))
        .unwrap_or_else(|e| panic!("nothing listens on the port listsockets shows: {e}"));
    let local = sockets.iter().find(|s| s["name"] == "local").unwrap();
    assert_eq!(local["path"], path.display().to_string());
    assert_eq!(local["backlog"], 2048);
    assert_eq!(local.get("host"), None);

    let Some(circusctl) = circusctl("listsockets_shows_real_sockets_in_circus_shape") else {
        return;
    };
    let ctl = ctl_for(circusctl, &agent);
    let expected: Vec<String> = sockets
        .iter()
        .map(|s| match s.get("path") {
            Some(path) => format!("{}:socket 'local' at {}", s["fd"], path.as_str().unwrap()),
            None => format!("{}:socket 'web' at 127.0.0.1:{port}", s["fd"]),
        })
        .collect();
    assert_eq!(ctl.ok(&["listsockets"]), expected.join("\n"));
}
