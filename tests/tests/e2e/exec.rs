//! `exec`: refused unless the config allows it; runs `sh -c` with its output, exit
//! code and timeout; never holds up the other requests; `nodectl exec`.

use std::path::Path;
use std::time::{Duration, Instant};

use ringmaster_protocol::message::ExecOutput;
use ringmaster_protocol::transport::ClientError;
use ringmaster_protocol::{Command, ErrorKind, OptionValue, Response};
use ringmaster_tests::{group_members, pid_alive, wait_for, TestAgent, DEADLINE};

/// The `[agent]` line that turns `exec` on.
const ALLOW: &str = "allow_exec = true\n";

fn exec(cmd: &str, timeout: f64) -> Command {
    Command::Exec {
        cmd: cmd.into(),
        timeout,
    }
}

fn output(response: Response) -> ExecOutput {
    match response {
        Response::Exec(out) => out,
        other => panic!("expected an exec output, got {other:?}"),
    }
}

/// The error an `exec` ends with.
async fn refusal(agent: &TestAgent, command: Command) -> (ErrorKind, String) {
    match agent.client().call(command).await {
        Err(ClientError::Remote(e)) => (e.kind, e.message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Waits until `path` holds a pid, and returns it.
async fn read_pid(path: &Path) -> u32 {
    wait_for(
        &format!("a pid in {}", path.display()),
        DEADLINE,
        || async { std::fs::read_to_string(path).is_ok_and(|t| t.trim().parse::<u32>().is_ok()) },
    )
    .await;
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn exec_is_refused_unless_the_config_allows_it() {
    let agent = TestAgent::start("execoff", "");
    let (kind, message) = refusal(&agent, exec("echo hi", 5.0)).await;
    assert_eq!(kind, ErrorKind::Forbidden);
    assert!(
        message.contains("allow_exec = true") && message.contains("execoff"),
        "{message}"
    );
    match agent
        .call(Command::GlobalOptions {
            key: Some("allow_exec".into()),
        })
        .await
    {
        Response::Options(options) => {
            assert_eq!(options.get("allow_exec"), Some(&OptionValue::Bool(false)));
        }
        other => panic!("{other:?}"),
    }

    // Turned on by a config reload, without a restart.
    agent.rewrite_config(ALLOW);
    agent.call(Command::ReloadConfig {}).await;
    let out = output(agent.call(exec("echo hi", 5.0)).await);
    assert_eq!(out.stdout, "hi\n");
}

#[tokio::test]
async fn exec_captures_output_exit_code_and_environment() {
    let agent = TestAgent::start("execon", ALLOW);

    let out = output(
        agent
            .call(exec("echo hello; echo note >&2; exit 0", 10.0))
            .await,
    );
    assert_eq!(out.code, Some(0));
    assert!(out.success());
    assert_eq!(out.signal, None);
    assert!(!out.timed_out && !out.truncated, "{out:?}");
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "note\n");
    assert!(out.duration >= 0.0 && out.duration < 10.0, "{out:?}");

    let out = output(
        agent
            .call(exec("echo out; echo bad >&2; exit 7", 10.0))
            .await,
    );
    assert_eq!(out.code, Some(7));
    assert!(!out.success());
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "bad\n");

    let out = output(
        agent
            .call(exec("printf %s \"$RINGMASTER_NODE\"", 10.0))
            .await,
    );
    assert_eq!(out.stdout, "execon");

    // stdin is /dev/null: a command reading it ends at once.
    let out = output(agent.call(exec("cat; echo done", 10.0)).await);
    assert_eq!(out.stdout, "done\n");

    match agent
        .call(Command::GlobalOptions {
            key: Some("allow_exec".into()),
        })
        .await
    {
        Response::Options(options) => {
            assert_eq!(options.get("allow_exec"), Some(&OptionValue::Bool(true)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let agent = TestAgent::start("exectime", ALLOW);
    let dir = agent.dir().to_path_buf();
    let group_file = dir.join("group.pid");
    let bg_file = dir.join("bg.pid");
    let cmd = format!(
        "echo $$ > '{}'; sleep 100 & echo $! > '{}'; echo started; sh -c 'sleep 100 & sleep 100'",
        group_file.display(),
        bg_file.display()
    );
    let asked = Instant::now();
    let out = output(agent.call(exec(&cmd, 0.5)).await);
    let took = asked.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.code, None, "{out:?}");
    assert_eq!(out.signal, Some(9), "{out:?}");
    assert_eq!(out.stdout, "started\n", "output before the kill is kept");
    assert!(out.duration >= 0.5, "{out:?}");
    assert!(
        took < Duration::from_secs(5),
        "exec with a 0.5 s timeout answered after {took:?}"
    );

    let group = read_pid(&group_file).await;
    let background = read_pid(&bg_file).await;
    wait_for(
        &format!("every process of group {group} to die"),
        DEADLINE,
        || async { group_members(group).is_empty() && !pid_alive(background) },
    )
    .await;
}

#[tokio::test]
async fn exec_output_is_capped_and_the_command_still_finishes() {
    let agent = TestAgent::start("execbig", ALLOW);
    let out = output(
        agent
            .call(exec(
                "head -c 200000 /dev/zero | tr '\\0' a; head -c 100000 /dev/zero | tr '\\0' b >&2; echo end >&2",
                20.0,
            ))
            .await,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr.len());
    assert!(out.truncated);
    assert!(!out.timed_out);
    assert_eq!(out.stdout.len(), ExecOutput::MAX_OUTPUT);
    assert!(out.stdout.bytes().all(|b| b == b'a'));
    assert_eq!(out.stderr.len(), ExecOutput::MAX_OUTPUT);
    assert!(out.stderr.bytes().all(|b| b == b'b'));
}

#[tokio::test]
async fn other_requests_are_answered_while_exec_runs() {
    let agent = TestAgent::start(
        "execbusy",
        &format!("{ALLOW}\n[watchers.w]\ncmd = \"sleep 1000\"\n"),
    );
    agent.wait_pids("w", 1).await;
    let marker = agent.dir().join("running");
    let cmd = format!("touch '{}'; sleep 2; echo slept", marker.display());

    let long = async {
        let out = output(agent.call(exec(&cmd, 30.0)).await);
        (out, Instant::now())
    };
    let probe = async {
        wait_for("the exec to start", DEADLINE, || async { marker.exists() }).await;
        let asked = Instant::now();
        let status = agent.call(Command::Status { name: None }).await;
        let answered = Instant::now();
        (status, answered - asked, answered)
    };
    let ((out, exec_done), (status, status_took, status_done)) = tokio::join!(long, probe);
    assert_eq!(out.stdout, "slept\n");
    assert!(out.duration >= 2.0, "{out:?}");
    match status {
        Response::Status(list) => assert_eq!(list.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(
        status_done < exec_done,
        "status was answered only after the exec ended"
    );
    assert!(
        status_took < Duration::from_secs(1),
        "status took {status_took:?} while an exec ran"
    );
}

#[tokio::test]
async fn exec_refuses_bad_arguments() {
    let agent = TestAgent::start("execbad", ALLOW);
    for (command, what) in [
        (exec("echo hi", 0.0), "timeout 0"),
        (exec("echo hi", -1.0), "negative timeout"),
        (exec("echo hi", f64::NAN), "NaN timeout"),
        (exec("echo hi", 1e9), "huge timeout"),
        (exec("", 5.0), "empty command"),
        (exec("   ", 5.0), "blank command"),
    ] {
        let (kind, message) = refusal(&agent, command).await;
        assert_eq!(kind, ErrorKind::BadArguments, "{what}: {message}");
    }
}

#[tokio::test]
async fn nodectl_exec_prints_output_and_exits_with_the_command_code() {
    let agent = TestAgent::start("execcli", ALLOW);

    let out = agent.nodectl(&["exec", "--", "echo", "hi", "there;", "echo", "oops", ">&2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi there\n");
    assert_eq!(text(&out.stderr), "oops\n");

    let out = agent.nodectl(&["exec", "printf %s \"$RINGMASTER_NODE\"; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "execcli");

    let out = agent.nodectl(&["--json", "exec", "--", "echo", "x"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("JSON");
    assert_eq!(json["code"], 0);
    assert_eq!(json["stdout"], "x\n");
    assert_eq!(json["timed_out"], false);

    let out = agent.nodectl(&["exec", "--exec-timeout", "0.3", "--", "sleep", "100"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );

    let out = agent.nodectl(&["exec", "head -c 70000 /dev/zero | tr '\\0' a"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), ExecOutput::MAX_OUTPUT);
    assert!(
        text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );

    let off = TestAgent::start("execclioff", "");
    let out = off.nodectl(&["exec", "--", "true"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("allow_exec"),
        "{}",
        text(&out.stderr)
    );
}
