//! `nodectl` as a user runs it: tables, JSON, exit codes, unreachable agents.

use std::time::Instant;

use ringmaster_tests::{bin_path, TestAgent};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn status_incr_and_json_list_from_the_command_line() {
    let agent = TestAgent::start("cli", "\n[watchers.worker]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n\n[watchers.idle]\ncmd = \"sleep 1000\"\nautostart = false\n");
    agent.wait_pids("worker", 2).await;

    let out = agent.nodectl(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("WATCHER") && lines[0].contains("STATE"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("idle") && lines[1].contains("stopped") && lines[1].contains("0/1"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("worker") && lines[2].contains("active") && lines[2].contains("2/2"),
        "{text}"
    );
    // Columns line up.
    let column = lines[0].find("STATE").unwrap();
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l[column..].starts_with(|c: char| c.is_ascii_lowercase())),
        "{text}"
    );

    let out = agent.nodectl(&["incr", "worker", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("numprocesses: 5"), "{}", stdout(&out));

    let out = agent.nodectl(&["--json", "list", "worker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), 5);
    assert!(list
        .iter()
        .all(|p| p["pid"].as_u64().is_some() && p["wid"].as_u64().is_some()));

    let out = agent.nodectl(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(status[1]["name"], "worker");
    assert_eq!(status[1]["processes"], 5);
}

#[tokio::test]
async fn errors_exit_3_and_say_what_is_wrong() {
    let agent = TestAgent::start("clierr", "\n[watchers.w]\ncmd = \"sleep 1000\"\n");
    let out = agent.nodectl(&["stop", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no watcher named 'nope'"),
        "{}",
        stderr(&out)
    );
    let out = agent.nodectl(&["decr", "w", "4"]);
    assert_eq!(out.status.code(), Some(3));
    let out = agent.nodectl(&["--json", "get", "w", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON error");
    assert_eq!(json["error"]["kind"], "not_found");
    // Options that are known but not set read as empty, not as unknown.
    let out = agent.nodectl(&["--json", "get", "w", "uid", "rlimit_nofile", "working_dir"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({"uid": "", "rlimit_nofile": "", "working_dir": ""})
    );
    let out = agent.nodectl(&["signal", "w", "SIGNOPE"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown signal 'SIGNOPE'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_agent_is_reported_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/nobody.sock", dir.path().display());
    let started = Instant::now();
    let out = std::process::Command::new(bin_path("nodectl"))
        .args(["--endpoint", &endpoint, "--timeout", "1", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("cannot reach agent") && text.contains(&endpoint),
        "{text}"
    );
    assert!(started.elapsed().as_secs_f64() < 5.0);
}

#[tokio::test]
async fn add_set_rm_and_nodeinfo_from_the_command_line() {
    let agent = TestAgent::start("clirw", "labels = { zone = \"eu-1\" }\n");
    let out = agent.nodectl(&[
        "add",
        "web",
        "--start",
        "-o",
        "numprocesses=2",
        "--",
        "sh",
        "-c",
        "sleep 1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.pids("web").await.len(), 2);
    let out = agent.nodectl(&["set", "web", "graceful_timeout", "2.5", "numprocesses", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent.nodectl(&["get", "web", "graceful_timeout", "numprocesses"]);
    let text = stdout(&out);
    assert!(
        text.contains("graceful_timeout = 2.5") && text.contains("numprocesses     = 1"),
        "{text}"
    );
    let out = agent.nodectl(&["nodeinfo"]);
    let text = stdout(&out);
    assert!(
        text.contains("clirw") && text.contains("zone=eu-1"),
        "{text}"
    );
    let out = agent.nodectl(&["globaloptions", "node"]);
    assert_eq!(stdout(&out).trim(), "node = clirw");
    let out = agent.nodectl(&["rm", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent.nodectl(&["numwatchers"]);
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
fn help_covers_every_command() {
    let out = std::process::Command::new(bin_path("nodectl"))
        .arg("--help")
        .output()
        .unwrap();
    let text = stdout(&out);
    for command in ringmaster_protocol::Command::NAMES {
        assert!(text.contains(command), "--help does not mention {command}");
    }
    assert!(text.contains("Exit codes"));
}
