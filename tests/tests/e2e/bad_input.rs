//! Malformed frames and bad configs get clear errors and never crash or wedge the
//! agent.

use std::collections::BTreeMap;
use std::process::Command as Process;

use ringmaster_protocol::{Command, ErrorKind, Response, PROTOCOL_VERSION};
use ringmaster_tests::{bin_path, TestAgent};
use serde::Serialize;

async fn still_answers(agent: &TestAgent) {
    match agent.call(Command::NumWatchers {}).await {
        Response::Count(_) => {}
        other => panic!("{other:?}"),
    }
}

#[derive(Serialize)]
struct RawRequest<T: Serialize> {
    v: u16,
    id: u64,
    command: BTreeMap<String, T>,
}

fn raw<T: Serialize>(id: u64, name: &str, args: T) -> Vec<u8> {
    let mut command = BTreeMap::new();
    command.insert(name.to_string(), args);
    rmp_serde::to_vec_named(&RawRequest {
        v: PROTOCOL_VERSION,
        id,
        command,
    })
    .unwrap()
}

#[tokio::test]
async fn malformed_frames_get_error_replies() {
    let agent = TestAgent::start("frames", "\n[watchers.w]\ncmd = \"sleep 1000\"\n");
    let mut client = agent.client();
    let cases: Vec<(Vec<u8>, u64, ErrorKind, &str)> = vec![
        (
            b"\xc1 definitely not msgpack".to_vec(),
            0,
            ErrorKind::BadFrame,
            "not a Ringmaster request",
        ),
        (
            Vec::new(),
            0,
            ErrorKind::BadFrame,
            "not a Ringmaster request",
        ),
        (
            vec![0x92; ringmaster_protocol::MAX_FRAME_BYTES + 1],
            0,
            ErrorKind::BadFrame,
            "larger than",
        ),
        (
            raw(11, "explode", BTreeMap::<String, u8>::new()),
            11,
            ErrorKind::UnknownCommand,
            "'explode'",
        ),
        (
            raw(12, "incr", BTreeMap::from([("name", "w"), ("nb", "three")])),
            12,
            ErrorKind::BadArguments,
            "'incr'",
        ),
        (
            rmp_serde::to_vec_named(&RawRequest {
                v: 99,
                id: 13,
                command: BTreeMap::from([("quit".to_string(), ())]),
            })
            .unwrap(),
            13,
            ErrorKind::VersionMismatch,
            "version 99",
        ),
    ];
    for (body, id, kind, needle) in cases {
        let reply = client.call_raw(body, id).await.expect("an error reply");
        assert_eq!(reply.id, id);
        let err = reply.result.expect_err("an error");
        assert_eq!(err.kind, kind, "{err}");
        assert!(
            err.message.contains(needle),
            "{needle:?} not in {:?}",
            err.message
        );
        still_answers(&agent).await;
    }
    let pids = agent.pids("w").await;
    assert_eq!(pids.len(), 1, "supervision goes on");
}

fn check_config(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, body).unwrap();
    let out = Process::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_are_refused_naming_file_line_and_key() {
    let cases = [
        (
            "[agent]\nnode = \"n\"\n[watchers.w]\ncmd = \"sleep 1\"\nnumproceses = 2\n",
            "bad.toml:5",
            "numproceses",
        ),
        ("[agent]\nnode = \"n\n", "bad.toml:2", ""),
        (
            "[watchers.w]\ncmd = \"a\"\n[watchers.w]\ncmd = \"b\"\n",
            "bad.toml:3",
            "duplicate",
        ),
        (
            "[watchers.w]\ncmd = \"a\"\nnumprocesses = -1\n",
            "bad.toml:3",
            "",
        ),
        (
            "[watchers.w]\ncmd = \"a\"\nsingleton = true\nnumprocesses = 2\n",
            "bad.toml:4",
            "watchers.w.numprocesses",
        ),
        (
            "[watchers.w]\ncmd = \"a\"\nstop_signal = \"SIGNOPE\"\n",
            "bad.toml:3",
            "SIGNOPE",
        ),
        (
            "[agent]\ncontrol = \"tcp://0.0.0.0:5555\"\n",
            "bad.toml:2",
            "insecure",
        ),
    ];
    for (body, place, needle) in cases {
        let (code, stderr) = check_config(body);
        assert_eq!(code, 2, "{body}\n{stderr}");
        assert!(stderr.contains(place), "{place:?} not in {stderr:?}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
    let (code, stderr) = check_config("[watchers.w]\ncmd = \"sleep 1\"\n");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let out = Process::new(bin_path("nodeagent"))
        .args(["--config", "/no/such/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/no/such/agent.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn a_busy_endpoint_is_refused_clearly() {
    let first = TestAgent::start("busy", "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.toml");
    std::fs::write(
        &path,
        format!("[agent]\nnode = \"busy2\"\ncontrol = \"{}\"\npubsub = \"ipc://{}/p.sock\"\nstate_dir = \"s\"\n", first.control, dir.path().display()),
    )
    .unwrap();
    let out = Process::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another process is listening"), "{stderr}");
}
