//! Keys and sealed frames, against the real agent: who is let in, what is refused
//! (and counted), what an eavesdropper sees, and the secure defaults. These tests
//! fail if sealing is switched off: a plain client would be let in, and published
//! bodies would be readable without a key.

use std::os::unix::fs::PermissionsExt;
use std::process::Command as Process;
use std::time::Duration;

use ringmaster_protocol::message::{NodeInfo, Reply, Request};
use ringmaster_protocol::seal::{self, Key, Keyring, Kind, NONCE_LEN};
use ringmaster_protocol::transport::{Client, ClientError, Subscriber, TransportError};
use ringmaster_protocol::{Codec, Command, ErrorKind, Response, PROTOCOL_VERSION};
use ringmaster_tests::{bin_path, wait_for, KeyFiles, TestAgent, DEADLINE};

const SLEEPER: &str = "[watchers.sleeper]\ncmd = \"sleep 300\"\nnumprocesses = 1\n";

fn request(id: u64, command: Command) -> Vec<u8> {
    Codec::default()
        .encode(&Request {
            v: PROTOCOL_VERSION,
            id,
            no_wait: false,
            command,
        })
        .unwrap()
}

/// The error a client gets back.
async fn refusal(client: &mut Client, command: Command) -> (ErrorKind, String) {
    match client.call(command).await {
        Err(ClientError::Remote(e)) => (e.kind, e.message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// The reply in clear to a raw frame (the agent's refusal of it).
async fn raw_refusal(agent: &TestAgent, frame: Vec<u8>) -> (ErrorKind, String) {
    let mut client = Client::new(agent.control.clone(), DEADLINE);
    let reply = client.exchange_frame(frame).await.unwrap();
    assert!(
        !seal::is_sealed(&reply),
        "a refusal came back sealed: {:?}",
        String::from_utf8_lossy(&reply)
    );
    let reply: Reply = Codec::default().decode(&reply).unwrap();
    let error = reply.result.unwrap_err();
    (error.kind, error.message)
}

async fn node_info(agent: &TestAgent) -> NodeInfo {
    match agent.call(Command::NodeInfo {}).await {
        Response::NodeInfo(info) => *info,
        other => panic!("unexpected answer to nodeinfo: {other:?}"),
    }
}

#[tokio::test]
async fn a_keyed_agent_refuses_and_counts_every_bad_frame_and_keeps_serving() {
    let (agent, keys) = TestAgent::start_keyed("sealed", SLEEPER);
    agent.wait_pids("sleeper", 1).await;
    let admin = Key::load(&keys.admin).unwrap();

    // No key at all.
    let mut plain = Client::new(agent.control.clone(), DEADLINE);
    let (kind, message) = refusal(&mut plain, Command::Status { name: None }).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("requires a key"), "{message}");

    // A key the agent does not know.
    let stranger = Keyring::new(Key::generate().unwrap(), []);
    let mut wrong = Client::new(agent.control.clone(), DEADLINE).with_keys(Some(stranger));
    let (kind, message) = refusal(&mut wrong, Command::Status { name: None }).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("not one of the keys"), "{message}");

    // A tampered frame: one bit of the ciphertext flipped.
    let mut bent = seal::seal(
        &admin,
        Kind::Request,
        &[],
        &request(1, Command::NumWatchers {}),
    )
    .unwrap()
    .bytes;
    bent[seal::HEADER_LEN] ^= 0x01;
    let (kind, message) = raw_refusal(&agent, bent).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("failed authentication"), "{message}");

    // A replayed frame: accepted once, refused the second time.
    let sealed = seal::seal(
        &admin,
        Kind::Request,
        &[],
        &request(2, Command::NumWatchers {}),
    )
    .unwrap();
    let mut raw = Client::new(agent.control.clone(), DEADLINE);
    let first = raw.exchange_frame(sealed.bytes.clone()).await.unwrap();
    let opened = seal::open(&keys.keyring(), Kind::Reply, &sealed.nonce, &first).unwrap();
    let reply: Reply = Codec::default().decode(&opened.body).unwrap();
    assert_eq!(reply.result, Ok(Response::Count(1)));
    let (kind, message) = raw_refusal(&agent, sealed.bytes).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("replay"), "{message}");

    // An expired frame: sealed two minutes ago (the window is 30 s).
    let old = seal::seal_at(
        &admin,
        Kind::Request,
        &[],
        &request(3, Command::NumWatchers {}),
        seal::now_ms() - 120_000,
        [7; NONCE_LEN],
    );
    let (kind, message) = raw_refusal(&agent, old).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("replay window"), "{message}");

    // A read key may read, but not change anything.
    let mut reader = Client::new(agent.control.clone(), DEADLINE).with_keys(Some(keys.read_only()));
    assert!(matches!(
        reader.call(Command::Status { name: None }).await,
        Ok(Response::Status(_))
    ));
    let (kind, message) = refusal(
        &mut reader,
        Command::Stop {
            name: Some("sleeper".into()),
        },
    )
    .await;
    assert_eq!(kind, ErrorKind::Forbidden);
    assert!(message.contains("read key"), "{message}");

    // A Circus JSON request gets a Circus-shaped error.
    let mut raw = Client::new(agent.control.clone(), DEADLINE);
    let reply = raw
        .exchange_frame(br#"{"id": "c0ffee", "command": "list", "properties": {}}"#.to_vec())
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["id"], "c0ffee");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be sealed"),
        "{reply}"
    );

    // Nothing of that reached the supervisor, every refusal was counted, and
    // the agent still serves its clients.
    assert_eq!(agent.pids("sleeper").await.len(), 1);
    let info = node_info(&agent).await;
    assert!(info.sealed);
    let counts = info.refused;
    assert_eq!(
        (
            counts.unsealed,
            counts.unknown_key,
            counts.tampered,
            counts.replayed,
            counts.expired,
            counts.forbidden,
            counts.circus_json
        ),
        (1, 1, 1, 1, 1, 1, 1),
        "{counts:?}"
    );
    assert!(
        agent.log().contains("refused a control frame"),
        "{}",
        agent.log()
    );
}

#[tokio::test]
async fn published_bodies_are_sealed_and_open_only_with_a_pool_key() {
    let (agent, keys) = TestAgent::start_keyed("sealpub", "");
    // An eavesdropper without keys sees topics in clear and sealed bodies.
    let mut eavesdropper = Subscriber::connect(&agent.pubsub, &["stat."], DEADLINE)
        .await
        .unwrap();
    match tokio::time::timeout(DEADLINE, eavesdropper.recv()).await {
        Ok(Err(TransportError::Refused { topic, reason })) => {
            assert_eq!(topic, "stat.sealpub");
            assert!(reason.contains("sealed with key"), "{reason}");
        }
        other => panic!("an eavesdropper read a body: {other:?}"),
    }
    // A subscriber with only the read key opens them (bodies are sealed with it).
    let mut reader = Subscriber::connect(&agent.pubsub, &["stat."], DEADLINE)
        .await
        .unwrap()
        .with_keys(Some(keys.read_only()));
    match tokio::time::timeout(DEADLINE, reader.recv_published()).await {
        Ok(Ok(_)) => {}
        other => panic!("the read key could not open a body: {other:?}"),
    }
    // A subscriber with the wrong key is refused, and told why.
    let mut stranger = Subscriber::connect(&agent.pubsub, &["stat."], DEADLINE)
        .await
        .unwrap()
        .with_keys(Some(Keyring::new(Key::generate().unwrap(), [])));
    match tokio::time::timeout(DEADLINE, stranger.recv()).await {
        Ok(Err(TransportError::Refused { reason, .. })) => {
            assert!(reason.contains("not among your keys"), "{reason}")
        }
        other => panic!("a wrong key opened a body: {other:?}"),
    }
}

#[tokio::test]
async fn nodectl_keygen_key_options_and_refusals() {
    let (agent, keys) = TestAgent::start_keyed("sealctl", SLEEPER);
    agent.wait_pids("sleeper", 1).await;
    let nodectl = |args: &[&str], key: Option<&str>| {
        let mut command = Process::new(bin_path("nodectl"));
        command.env_remove("RINGMASTER_KEY");
        if let Some(key) = key {
            command.env("RINGMASTER_KEY", key);
        }
        command
            .arg("--endpoint")
            .arg(&agent.control)
            .args(args)
            .output()
            .unwrap()
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let admin = keys.admin.to_str().unwrap();
    let read = keys.read.to_str().unwrap();

    // keygen: mode 0600, never overwrites.
    let mode = std::fs::metadata(&keys.admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = nodectl(&["keygen", admin], None);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    // --key and $RINGMASTER_KEY.
    let status = nodectl(&["--key", admin, "status"], None);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("sleeper"), "{}", text(&status));
    let status = nodectl(&["status"], Some(admin));
    assert!(status.status.success(), "{}", text(&status));

    // No key: the agent's refusal says what to do.
    let missing = nodectl(&["status"], None);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));
    assert!(text(&missing).contains("--key"), "{}", text(&missing));

    // A read key reads, and may not stop.
    let stop = nodectl(&["--key", read, "stop", "sleeper"], None);
    assert_eq!(stop.status.code(), Some(3), "{}", text(&stop));
    assert!(text(&stop).contains("read key"), "{}", text(&stop));
    assert_eq!(agent.pids("sleeper").await.len(), 1);

    // A key file others may read is refused before anything is sent.
    let loose = agent.dir().join("loose.key");
    std::fs::copy(&keys.admin, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = nodectl(&["--key", loose.to_str().unwrap(), "status"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));

    // nodeinfo shows the counts.
    let info = nodectl(&["--key", admin, "nodeinfo"], None);
    assert!(text(&info).contains("frames sealed"), "{}", text(&info));
    assert!(text(&info).contains("refused"), "{}", text(&info));
}

#[test]
fn the_agent_refuses_loose_key_files_and_routable_binds_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyFiles::generate(dir.path());
    let check = |body: &str| {
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, format!("[agent]\nnode = \"n\"\n{body}")).unwrap();
        let out = Process::new(bin_path("nodeagent"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let routable = "control = \"tcp://0.0.0.0:15555\"\npubsub = \"tcp://0.0.0.0:15556\"\n";
    let (code, text) = check(routable);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("nodectl keygen"), "{text}");
    let with_key = format!("{routable}admin_key = \"{}\"\n", keys.admin.display());
    let (code, text) = check(&with_key);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(&format!("read_key = \"{}\"\n", keys.read.display()));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("needs an admin_key"), "{text}");
    std::fs::set_permissions(&keys.admin, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, text) = check(&with_key);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    let (code, text) = check(&format!(
        "admin_key = \"{}/nope.key\"\n",
        dir.path().display()
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("nope.key"), "{text}");
}

#[tokio::test]
async fn a_client_with_keys_is_told_when_the_agent_has_none() {
    let agent = TestAgent::start("unsealed", "");
    let mut keyed = Client::new(agent.control.clone(), DEADLINE)
        .with_keys(Some(Keyring::new(Key::generate().unwrap(), [])));
    let (kind, message) = refusal(&mut keyed, Command::NumWatchers {}).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("no keys"), "{message}");
    // And it still serves plain clients.
    assert_eq!(
        agent.call(Command::NumWatchers {}).await,
        Response::Count(0)
    );
}

#[tokio::test]
async fn a_flood_of_bad_frames_does_not_stop_good_clients() {
    let (agent, keys) = TestAgent::start_keyed("sealflood", "");
    let stranger = Key::generate().unwrap();
    let mut bad = Client::new(agent.control.clone(), Duration::from_secs(5));
    for i in 0..200u64 {
        let frame = seal::seal(
            &stranger,
            Kind::Request,
            &[],
            &request(i, Command::NumWatchers {}),
        )
        .unwrap()
        .bytes;
        let reply = bad.exchange_frame(frame).await.unwrap();
        assert!(!seal::is_sealed(&reply));
    }
    let mut good = Client::new(agent.control.clone(), DEADLINE).with_keys(Some(keys.keyring()));
    assert_eq!(
        good.call(Command::NumWatchers {}).await.unwrap(),
        Response::Count(0)
    );
    wait_for("the refusals to be counted", DEADLINE, || async {
        node_info(&agent).await.refused.unknown_key == 200
    })
    .await;
    // Logging is limited: a flood does not write one line per frame.
    let logged = agent.log().matches("refused a control frame").count();
    assert!(logged < 200, "{logged} refusal lines for 200 frames");
}

#[tokio::test]
async fn a_pool_with_keys_nodectl_and_nodemeta() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyFiles::generate(dir.path());
    let watcher = "[watchers.w]\ncmd = \"sleep 300\"\nnumprocesses = 1\n";
    let agents = [
        TestAgent::start_shared_keys("kp-a", watcher, &keys),
        TestAgent::start_shared_keys("kp-b", watcher, &keys),
    ];
    for agent in &agents {
        agent.wait_pids("w", 1).await;
    }
    // Key paths relative to the pools file; the read key last, for nodemeta.
    let mut text = "[pools.kp]\ntimeout = 2.0\nkey = [\"admin.key\", \"read.key\"]\n".to_string();
    for agent in &agents {
        text.push_str(&format!(
            "\n[[pools.kp.nodes]]\nname = \"{}\"\ncontrol = \"{}\"\npubsub = \"{}\"\n",
            agent.node, agent.control, agent.pubsub
        ));
    }
    let pools = dir.path().join("pools.toml");
    std::fs::write(&pools, text).unwrap();
    let nodectl = |args: &[&str]| {
        let out = Process::new(bin_path("nodectl"))
            .arg("--pools")
            .arg(&pools)
            .args(["--pool", "kp"])
            .args(args)
            .env_remove("RINGMASTER_KEY")
            .env_remove("RINGMASTER_POOLS")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = nodectl(&["status"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("kp-a") && text.contains("kp-b"), "{text}");
    // --key replaces the pool's keys: the read key cannot stop anything.
    let read = keys.read.to_str().unwrap();
    let (code, text) = nodectl(&["--key", read, "stop", "w"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("read key"), "{text}");
    for agent in &agents {
        assert_eq!(agent.pids("w").await.len(), 1);
    }

    // nodemeta opens the agents' bodies and seals what it publishes.
    let endpoint = format!("ipc://{}/meta.pub", dir.path().display());
    let log = dir.path().join("nodemeta.log");
    let mut meta = Process::new(bin_path("nodemeta"))
        .arg("--pools")
        .arg(&pools)
        .args(["--pool", "kp", "--pubsub", &endpoint, "--interval", "0.2"])
        .env_remove("RINGMASTER_KEY")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Subscribe once nodemeta has bound its endpoint (retried until the deadline).
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut reader = loop {
        match Subscriber::connect(&endpoint, &["stat.pool"], Duration::from_millis(500)).await {
            Ok(sub) => break sub.with_keys(Some(keys.read_only())),
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "cannot subscribe to nodemeta at {endpoint}: {e}"
            ),
        }
    };
    let up = tokio::time::timeout(DEADLINE, async {
        loop {
            match reader.recv_published().await {
                Ok(ringmaster_protocol::transport::Published::Stat(stat)) => {
                    if let ringmaster_protocol::stats::StatKind::Pool(pool) = stat.kind {
                        let up = pool
                            .nodes
                            .iter()
                            .filter(|n| n.state == ringmaster_protocol::stats::NodeState::Up)
                            .count();
                        if up == 2 {
                            return pool.processes;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("nodemeta's body did not open with the read key: {e}"),
            }
        }
    })
    .await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(up.ok(), Some(2), "nodemeta log:\n{log_text}");
    // Without keys, nodemeta's bodies are refused.
    let mut plain = Subscriber::connect(&endpoint, &["stat.pool"], DEADLINE)
        .await
        .unwrap();
    match tokio::time::timeout(DEADLINE, plain.recv()).await {
        Ok(Err(TransportError::Refused { .. })) => {}
        other => panic!("nodemeta published in clear: {other:?}"),
    }
    ringmaster_tests::terminate(&mut meta, Duration::from_secs(5));
}

#[tokio::test]
async fn every_exec_is_logged_with_the_callers_key_id() {
    let (agent, keys) = TestAgent::start_keyed("sealexec", "allow_exec = true\n");
    let admin = Key::load(&keys.admin).unwrap();
    let out = agent
        .call(Command::Exec {
            cmd: "echo sealed".into(),
            timeout: 10.0,
        })
        .await;
    assert!(matches!(out, Response::Exec(_)), "{out:?}");
    let id = admin.id().to_string();
    wait_for(
        "the exec to be logged with the key id",
        DEADLINE,
        || async {
            agent
                .log()
                .lines()
                .any(|l| l.contains("exec requested") && l.contains(&id) && l.contains("admin"))
        },
    )
    .await;
    // The read key may not exec.
    let mut reader = Client::new(agent.control.clone(), DEADLINE).with_keys(Some(keys.read_only()));
    let (kind, _) = refusal(
        &mut reader,
        Command::Exec {
            cmd: "echo no".into(),
            timeout: 10.0,
        },
    )
    .await;
    assert_eq!(kind, ErrorKind::Forbidden);
}

#[tokio::test]
async fn a_captured_frame_is_refused_after_the_agent_restarts() {
    let (mut agent, keys) = TestAgent::start_keyed("replay", SLEEPER);
    agent.wait_pids("sleeper", 1).await;
    let admin = Key::load(&keys.admin).unwrap();
    // An eavesdropper captures one sealed `incr` on its way to the agent.
    let body = request(
        77,
        Command::Incr {
            name: "sleeper".into(),
            nb: 1,
        },
    );
    let captured = seal::seal(&admin, Kind::Request, &[], &body).unwrap().bytes;
    let mut wire = Client::new(agent.control.clone(), DEADLINE);
    let reply = wire.exchange_frame(captured.clone()).await.unwrap();
    assert!(seal::is_sealed(&reply), "the incr was not admitted");
    agent.wait_pids("sleeper", 2).await;

    // Resent at once, it is a replay.
    let (kind, message) = raw_refusal(&agent, captured.clone()).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("replay"), "{message}");

    // The agent restarts (its memory of nonces is gone); the frame is still
    // refused, and the watcher is not scaled a second time.
    agent.stop();
    agent.launch();
    agent.wait_pids("sleeper", 2).await;
    let (kind, message) = raw_refusal(&agent, captured).await;
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(message.contains("before this agent started"), "{message}");
    assert_eq!(node_info(&agent).await.refused.before_start, 1);
    assert_eq!(agent.pids("sleeper").await.len(), 2);
}
