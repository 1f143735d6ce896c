//! Process output: files with size and time rotation, timestamps, external
//! rotation and `reopen`, the last lines of a process, `capture` with `nodectl
//! logs [-f]`, the `log.*` topics, and a process that writes as fast as it can.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmaster_protocol::logs::{LogBatch, LogReport, LogStream};
use ringmaster_protocol::transport::ClientError;
use ringmaster_protocol::{Codec, Command, ErrorKind, OptionMap, OptionValue, Response};
use ringmaster_tests::{bin_path, group_members, wait_for, wait_for_blocking, TestAgent, DEADLINE};

/// A shell command line for a watcher's `cmd`, quoted for TOML.
fn sh(script: &str) -> String {
    format!(
        "cmd = \"/bin/sh\"\nargs = [\"-c\", {}]\n",
        toml_string(script)
    )
}

fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Prints `tick N` every `every` seconds, forever.
fn ticker(every: &str) -> String {
    sh(&format!(
        "i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep {every}; done"
    ))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn backup(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// The numbers of the `tick N` lines of `text`, in order.
fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.rsplit_once("tick ").and_then(|(_, n)| n.parse().ok()))
        .collect()
}

async fn logs(agent: &TestAgent, name: &str, lines: u32) -> LogReport {
    match agent
        .call(Command::Logs {
            name: name.into(),
            lines,
            stream: None,
        })
        .await
    {
        Response::Logs(report) => report,
        other => panic!("unexpected reply to logs: {other:?}"),
    }
}

#[tokio::test]
async fn size_rotation_keeps_whole_lines_in_at_most_backup_count_files() {
    let body =
        format!(
        "\n[watchers.w]\n{}stdout = {{ to = \"out.log\", max_bytes = 2000, backup_count = 2 }}\n",
        sh("i=0; while [ $i -lt 400 ]; do echo \"line $i of the rotation test\"; \
            i=$((i+1)); done; exec sleep 1000")
    );
    let agent = TestAgent::start("rotate", &body);
    let path = agent.dir().join("out.log");
    wait_for_blocking("the last line in out.log", DEADLINE, || {
        read(&path).ends_with("line 399 of the rotation test\n")
    });
    assert!(!backup(&path, 3).exists(), "more backups than backup_count");
    let mut all = String::new();
    for file in [backup(&path, 2), backup(&path, 1), path.clone()] {
        let text = read(&file);
        assert!(!text.is_empty(), "{} is missing or empty", file.display());
        assert!(
            text.len() <= 2000,
            "{}: {} bytes",
            file.display(),
            text.len()
        );
        assert!(
            text.lines()
                .all(|l| l.starts_with("line ") && l.ends_with(" test")),
            "{} has a cut line",
            file.display()
        );
        all.push_str(&text);
    }
    // The files hold the end of the output, in order, without a gap.
    let numbers: Vec<u64> = all
        .lines()
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .collect();
    assert_eq!(numbers.last(), Some(&399));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing across the rotated files"
    );
}

#[tokio::test]
async fn time_rotation_every_second() {
    let body = format!(
        "\n[watchers.w]\n{}stdout = {{ to = \"out.log\", rotate_when = \"S\", backup_count = 2 }}\n",
        ticker("0.05")
    );
    let agent = TestAgent::start("timed", &body);
    let path = agent.dir().join("out.log");
    // Each look at the three files may straddle a rotation: look until one is
    // consistent.
    let files = || {
        (
            ticks(&read(&backup(&path, 2))),
            ticks(&read(&backup(&path, 1))),
            ticks(&read(&path)),
        )
    };
    wait_for_blocking("two time rotations, files in order", DEADLINE, || {
        let (older, newer, current) = files();
        !older.is_empty()
            && !newer.is_empty()
            && !current.is_empty()
            && older.last() < newer.first()
            && newer.last() < current.first()
    });
    let (older, newer, _) = files();
    assert!(!backup(&path, 3).exists(), "more backups than backup_count");
    // One rotation a second, a line every 50 ms: each backup holds about a
    // second of lines, never everything.
    assert!(older.len() < 40 && newer.len() < 40, "{older:?} {newer:?}");
}

#[tokio::test]
async fn timestamps_prefix_every_line() {
    let body = format!(
        "\n[watchers.w]\n{}stdout = {{ to = \"out.log\", timestamp = true, utc = true, \
         time_format = \"%Y-%m-%dT%H:%M:%S.%f%z\" }}\n\
         stderr = {{ to = \"err.log\", timestamp = true }}\n",
        sh("echo hello; echo oops >&2; exec sleep 1000")
    );
    let agent = TestAgent::start("stamps", &body);
    let pid = agent.wait_pids("w", 1).await[0];
    let out = agent.dir().join("out.log");
    let err = agent.dir().join("err.log");
    wait_for_blocking("both lines", DEADLINE, || {
        read(&out).contains("hello") && read(&err).contains("oops")
    });
    let line = read(&out);
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, format!("[{pid}] | hello\n"));
    // 2024-05-01T12:34:56.123456+0000
    assert_eq!(stamp.len(), 31, "{stamp}");
    assert!(
        stamp.ends_with("+0000") && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );
    let year: i32 = stamp[..4].parse().unwrap();
    assert!(year >= 2024, "{stamp}");
    // The default format: "%Y-%m-%d %H:%M:%S [PID] | text".
    let line = read(&err);
    assert_eq!(&line[19..], format!(" [{pid}] | oops\n"), "{line}");
    assert_eq!(line.as_bytes()[10], b' ', "{line}");
}

#[tokio::test]
async fn files_moved_or_truncated_by_logrotate_are_followed() {
    let body = format!("\n[watchers.w]\n{}stdout = \"out.log\"\n", ticker("0.05"));
    let agent = TestAgent::start("logrotate", &body);
    let path = agent.dir().join("out.log");
    let moved = agent.dir().join("out.log.moved");
    wait_for_blocking("a first line", DEADLINE, || !read(&path).is_empty());

    std::fs::rename(&path, &moved).unwrap();
    wait_for_blocking("a new out.log after the move", DEADLINE, || {
        !ticks(&read(&path)).is_empty()
    });
    let before = ticks(&read(&moved));
    let after = ticks(&read(&path));
    assert!(before.last() < after.first(), "{before:?} then {after:?}");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_for_blocking("new lines after the truncation", DEADLINE, || {
        ticks(&read(&path)).len() >= 3
    });
    let text = std::fs::read(&path).unwrap();
    assert!(
        !text.contains(&0),
        "the file was written at its old offset (a hole of NULs)"
    );
    assert!(
        text.starts_with(b"tick "),
        "{}",
        String::from_utf8_lossy(&text)
    );
}

#[tokio::test]
async fn reopen_and_sigusr1_reopen_the_files() {
    let body = format!("\n[watchers.w]\n{}stdout = \"out.log\"\n", ticker("0.05"));
    let agent = TestAgent::start("reopen", &body);
    let path = agent.dir().join("out.log");
    wait_for_blocking("a first line", DEADLINE, || !read(&path).is_empty());

    let moved = agent.dir().join("out.log.1");
    std::fs::rename(&path, &moved).unwrap();
    let out = agent.nodectl(&["reopen"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("stdout reopened") && stdout.contains("out.log"),
        "{stdout}"
    );
    let frozen = read(&moved);
    wait_for_blocking("lines in the reopened file", DEADLINE, || {
        ticks(&read(&path)).len() >= 3
    });
    assert_eq!(
        read(&moved),
        frozen,
        "lines went to the moved file after reopen answered"
    );

    let moved = agent.dir().join("out.log.2");
    std::fs::rename(&path, &moved).unwrap();
    agent.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for_blocking("the SIGUSR1 reopen in the agent's log", DEADLINE, || {
        agent.log().matches("reopened 1 output file(s)").count() >= 2
    });
    wait_for_blocking("lines in the file reopened on SIGUSR1", DEADLINE, || {
        ticks(&read(&path)).len() >= 3
    });
    assert!(agent.log().contains("SIGUSR1"), "{}", agent.log());
}

#[tokio::test]
async fn the_last_output_of_a_process_reaches_its_file() {
    let body = "\n[watchers.burst]\ncmd = \"seq 1 5000\"\nrespawn = false\nstdout = \"burst.log\"\n\
                \n[watchers.stopped]\n"
        .to_string()
        + &sh("trap 'seq 1 3000; exit 0' TERM; sleep 1000 & wait")
        + "stdout = \"stopped.log\"\n";
    let mut agent = TestAgent::start("last", &body);
    let burst = agent.dir().join("burst.log");
    let expected: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    wait_for_blocking("5000 lines in burst.log", DEADLINE, || {
        read(&burst).len() >= expected.len()
    });
    assert_eq!(read(&burst), expected);

    // Lines printed while the agent stops are in the file once it has exited.
    let pid = agent.wait_pids("stopped", 1).await[0];
    // The trap is set once the shell has started its `sleep`.
    wait_for_blocking("the shell to set its trap", DEADLINE, || {
        group_members(pid).len() == 2
    });
    assert!(agent.stop().success());
    let expected: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    assert_eq!(read(&agent.dir().join("stopped.log")), expected);
}

/// A `nodectl` started in the background; killed when dropped.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn start(agent: &TestAgent, args: &[&str]) -> Background {
        let mut child = Process::new(bin_path("nodectl"))
            .env_remove("RINGMASTER_KEY")
            .arg("--endpoint")
            .arg(&agent.control)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// Lines printed until `done` says enough, within the deadline.
    fn read_until(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("timed out waiting for {what}; nodectl printed {seen:#?}"),
            }
        }
        seen
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn captured_output_is_kept_shown_and_followed() {
    let body = format!(
        "\n[watchers.w]\n{}stdout = \"capture\"\nstderr = \"capture\"\n",
        sh(
            "echo first; echo oops >&2; i=0; while true; do echo \"tick $i\"; \
            i=$((i+1)); sleep 0.1; done"
        )
    );
    let agent = TestAgent::start("capture", &body);
    wait_for("a few lines kept", DEADLINE, || async {
        ticks_of(&logs(&agent, "w", 100).await).len() >= 3
    })
    .await;
    let report = logs(&agent, "w", 100).await;
    assert_eq!(report.lines[0].text, "first");
    assert!(report
        .lines
        .iter()
        .any(|l| l.text == "oops" && l.stream == LogStream::Stderr));
    assert!(report.lines.iter().all(|l| l.wid == 1 && l.pid > 0));

    let out = agent.nodectl(&["logs", "-n", "2", "--stream", "stderr", "w"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(" w.1 stderr | oops"), "{text}");

    let out = agent.nodectl(&["logs", "w"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .ends_with("w.1 stdout | first"),
        "{text}"
    );

    let out = agent.nodectl(&["--json", "logs", "w"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["watcher"], "w");
    assert!(
        json["lines"].as_array().is_some_and(|l| l.len() >= 3),
        "{json}"
    );

    // Follow: recent lines first, then new ones, without a gap or a repeat.
    let follower = Background::start(&agent, &["logs", "-f", "-n", "3", "w"]);
    let printed = follower.read_until("ten more ticks", |seen| {
        let numbers = ticks(&seen.join("\n"));
        numbers.len() >= 13
    });
    let numbers = ticks(&printed.join("\n"));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks lost or repeated while following: {printed:#?}"
    );
    assert!(printed
        .iter()
        .all(|l| l.contains(" w.1 stdout | ") || l.contains(" w.1 stderr | ")));

    let out = agent.nodectl(&["logs", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no watcher named 'nope'"));

    // `listen` prints the lines too, with the rest of what the agent publishes.
    let listener = Background::start(&agent, &["listen", "log.capture.w.stdout"]);
    let lines = listener.read_until("two lines from listen", |seen| seen.len() >= 2);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("log.capture.w.stdout pid=") && l.contains(" wid=1 tick ")),
        "{lines:#?}"
    );
    let listener = Background::start(&agent, &["--json", "listen", "log."]);
    let lines = listener.read_until("a JSON line from listen", |seen| !seen.is_empty());
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["node"], "capture", "{line}");
    assert_eq!(line["watcher"], "w", "{line}");
    assert!(
        line["topic"]
            .as_str()
            .is_some_and(|t| t.starts_with("log.capture.w.")),
        "{line}"
    );
    assert!(
        line["line"]["pid"].as_u64().is_some_and(|p| p > 0),
        "{line}"
    );
}

fn ticks_of(report: &LogReport) -> Vec<u64> {
    let text: Vec<&str> = report.lines.iter().map(|l| l.text.as_str()).collect();
    ticks(&text.join("\n"))
}

#[tokio::test]
async fn subscribers_receive_the_lines() {
    let body = format!("\n[watchers.w]\n{}stdout = \"out.log\"\n", ticker("0.05"));
    let agent = TestAgent::start("topics", &body);
    let mut sub = agent.subscribe("log.topics.w.stdout").await;
    let codec = Codec::default();
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seqs.len() < 5 {
        let (topic, body) = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("lines published within the deadline")
            .unwrap();
        assert_eq!(topic, "log.topics.w.stdout");
        let batch: LogBatch = codec.decode(&body).unwrap();
        assert_eq!(
            (batch.node.as_str(), batch.watcher.as_str()),
            ("topics", "w")
        );
        assert_eq!(batch.stream, LogStream::Stdout);
        for line in batch.lines {
            assert!(line.text.starts_with("tick "), "{}", line.text);
            seqs.push(line.seq);
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn a_fast_writer_never_stalls_the_agent_and_its_drops_are_counted() {
    let body = format!(
        "\n[watchers.flood]\ncmd = \"yes\"\nstdout = \"capture\"\n\
         \n[watchers.flood_file]\ncmd = \"yes\"\nstdout = {{ to = \"flood.log\", max_bytes = 4000000, backup_count = 1 }}\n\
         \n[watchers.steady]\n{}stdout = \"capture\"\n",
        ticker("0.05")
    );
    let agent = TestAgent::start("flood", &body);
    agent.wait_pids("flood", 1).await;
    let mut client = agent.client();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..300 {
        let sent = Instant::now();
        match client.call(Command::Status { name: None }).await {
            Ok(Response::Status(_)) => {}
            other => panic!("status failed while yes runs: {other:?}"),
        }
        slowest = slowest.max(sent.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a status round trip took {slowest:?} while yes was running"
    );
    // Keep the flood going for at least a second, so that the budget is spent.
    if started.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_secs(1) - started.elapsed()).await; // a measurement window, not a wait for a condition
    }
    wait_for("the flood's drops to be counted", DEADLINE, || async {
        logs(&agent, "flood", 10).await.dropped_bytes > 0
    })
    .await;
    let report = logs(&agent, "flood", 10).await;
    assert_eq!(report.lines.len(), 10);
    assert!(report.lines.iter().all(|l| l.text == "y"));
    assert!(report.next.stdout > 10_000, "{:?}", report.next);

    // The other watchers go on: their lines are published without a gap (the
    // flood has a budget of its own) ...
    let mut sub = agent.subscribe("log.flood.steady.stdout").await;
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seqs.len() < 10 {
        let (_, body) = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("the steady watcher's lines published during the flood")
            .unwrap();
        let batch: LogBatch = Codec::default().decode(&body).unwrap();
        seqs.extend(batch.lines.iter().map(|l| l.seq));
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the steady watcher's lines had gaps during the flood: {seqs:?}"
    );
    // ... kept, and written to files.
    let before = ticks_of(&logs(&agent, "steady", 1000).await);
    wait_for("the steady watcher's next lines", DEADLINE, || async {
        ticks_of(&logs(&agent, "steady", 1000).await).last() > before.last()
    })
    .await;
    let file = agent.dir().join("flood.log");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    assert!(size(&file) <= 4_000_000 && size(&backup(&file, 1)) <= 4_000_000);
    assert!(!backup(&file, 2).exists());
    wait_for_blocking("the drop warning in the agent's log", DEADLINE, || {
        agent.log().contains("bytes of output in the last second")
    });
}

#[tokio::test]
async fn null_and_inherit_are_not_seen_by_the_agent() {
    let body = format!(
        "\n[watchers.quiet]\n{}stdout = \"null\"\nstderr = \"null\"\n\
         \n[watchers.loud]\n{}",
        sh("echo gone; exec sleep 1000"),
        sh("echo to the agent; exec sleep 1000")
    );
    let agent = TestAgent::start("null", &body);
    agent.wait_pids("quiet", 1).await;
    agent.wait_pids("loud", 1).await;
    for name in ["quiet", "loud"] {
        let report = logs(&agent, name, 100).await;
        assert!(report.lines.is_empty(), "{report:?}");
        assert_eq!(report.dropped_bytes, 0);
    }
}

#[tokio::test]
async fn bad_stream_options_are_refused_clearly() {
    let agent = TestAgent::start("badout", "");
    let add = |stdout: OptionValue| {
        let mut options = OptionMap::new();
        options.insert("stdout".into(), stdout);
        Command::Add {
            name: "w".into(),
            cmd: "sleep 1000".into(),
            args: vec![],
            options,
            start: true,
        }
    };
    let table = |pairs: &[(&str, OptionValue)]| {
        OptionValue::Table(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let file = || ("to", OptionValue::Str("out.log".into()));
    let cases = [
        (
            table(&[
                file(),
                ("rotate_when", OptionValue::Str("fortnight".into())),
            ]),
            ErrorKind::InvalidConfig,
            "unknown rotate_when \"fortnight\"",
        ),
        (
            table(&[file(), ("max_bytes", OptionValue::Int(-5))]),
            ErrorKind::InvalidConfig,
            "max_bytes must be",
        ),
        (
            table(&[
                ("to", OptionValue::Str("capture".into())),
                ("backup_count", OptionValue::Int(3)),
                ("max_bytes", OptionValue::Int(10)),
            ]),
            ErrorKind::InvalidConfig,
            "rotate a file",
        ),
        (
            OptionValue::Str("/nonexistent-ringmaster-dir/out.log".into()),
            ErrorKind::SpawnFailed,
            "cannot open stdout file '/nonexistent-ringmaster-dir/out.log'",
        ),
    ];
    for (stdout, kind, needle) in cases {
        match agent.client().call(add(stdout.clone())).await {
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.kind, kind, "{stdout:?}: {}", e.message);
                assert!(e.message.contains(needle), "{stdout:?}: {}", e.message);
            }
            other => panic!("{stdout:?} was accepted: {other:?}"),
        }
    }
    match agent.call(Command::NumWatchers {}).await {
        Response::Count(0) => {}
        other => panic!("a refused watcher stayed behind: {other:?}"),
    }
}
