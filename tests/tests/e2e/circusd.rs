//! Side by side with circusd itself: one Circus INI run by the real circusd
//! (circus 0.19.0 from PyPI, next to the circusctl the other Circus tests use)
//! and by `nodeagent`, in one directory, and the real circusctl asked the same
//! questions of both. Their answers must be the same, byte for byte where no
//! pid, fd or memory figure is in them, and in shape (every number masked)
//! where one is.
//!
//! Skipped without circusd outside CI, as the circusctl tests are.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

use ringmaster_tests::{terminate, wait_for_blocking, TestAgent, DEADLINE};
use serde_json::Value;

use super::circusctl::{circusctl, Ctl, Run};

/// The watchers both run: options of every kind circusctl shows, a socket,
/// an `[env:…]` section, and a watcher that does not start by itself.
const WATCHERS: &str = "\
[socket:front]
host = 127.0.0.1
port = 0

[watcher:web]
cmd = sleep
args = 600
numprocesses = 2
priority = 10
graceful_timeout = 4
stop_signal = QUIT
max_age = 3600
max_age_variance = 60
stdout_stream.class = FileStream
stdout_stream.filename = web.log
stdout_stream.max_bytes = 1048576
stdout_stream.backup_count = 3
stderr_stream.class = TimedRotatingFileStream
stderr_stream.filename = web.err
stderr_stream.rotate_when = H
stderr_stream.rotate_interval = 2

[watcher:worker]
cmd = sleep 700
numprocesses = 3
close_child_stdout = True
max_retry = -1

[watcher:manual]
cmd = sleep 800
autostart = False

[env:worker]
ROLE = worker
";

/// circusd next to `circusctl`, or `None` (after saying so) outside CI.
fn circusd_next_to(circusctl: &Path, test: &str) -> Option<PathBuf> {
    let path = circusctl.with_file_name("circusd");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} not found (CI is set, so {test} may not be skipped): .ci/run installs \
         circus==0.19.0, circusd included, into target/circus-venv",
        path.display()
    );
    eprintln!(
        "skipping {test}: no circusd next to {}",
        circusctl.display()
    );
    None
}

/// A running circusd, stopped (SIGTERM, then SIGKILL) when dropped.
struct Circusd {
    child: Child,
    log: PathBuf,
}

impl Circusd {
    fn start(circusd: &Path, config: &Path, dir: &Path) -> Circusd {
        let log = dir.join("circusd.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Process::new(circusd)
            .arg(config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", circusd.display()));
        Circusd { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Circusd {
    fn drop(&mut self) {
        terminate(&mut self.child, DEADLINE);
    }
}

/// One Circus INI, run by the real circusd and by `nodeagent` at once.
struct SideBySide {
    agent: TestAgent,
    daemon: Circusd,
    circusctl: PathBuf,
    /// circusd's control endpoint.
    circusd_endpoint: String,
    /// circusd's working directory: the agent's own, or `circusd/` inside it.
    theirs: PathBuf,
}

impl SideBySide {
    /// Writes `[circus]` (the endpoints, then `circus_options`) and `body` for
    /// each daemon, the agent's copy with an `[agent]` section naming `node`, and
    /// starts both. circusd runs in the agent's directory, or in a `circusd/`
    /// directory of its own when `apart`. `None` (after saying so) when there is
    /// no circusd outside CI.
    fn start(
        test: &str,
        node: &str,
        circus_options: &str,
        body: &str,
        apart: bool,
    ) -> Option<Self> {
        let circusctl = circusctl(test)?;
        let circusd = circusd_next_to(&circusctl, test)?;
        let mut agent = TestAgent::prepare(node, "", &[]);
        let ours = agent.dir().to_path_buf();
        let theirs = if apart {
            ours.join("circusd")
        } else {
            ours.clone()
        };
        std::fs::create_dir_all(&theirs).unwrap();
        let circusd_endpoint = format!("ipc://{}/circusd.sock", theirs.display());
        let circus_ini = theirs.join("circus.ini");
        std::fs::write(
            &circus_ini,
            format!(
                "[circus]\nendpoint = {circusd_endpoint}\npubsub_endpoint = ipc://{}/circusd-pub.sock\n\
                 {circus_options}\n{body}",
                theirs.display()
            ),
        )
        .unwrap();
        let agent_ini = ours.join("agent.ini");
        std::fs::write(
            &agent_ini,
            format!(
                "[circus]\nendpoint = {}\npubsub_endpoint = {}\n{circus_options}\n{body}\n\
                 [agent]\nnode = {node}\nstate_dir = state\n",
                agent.control, agent.pubsub
            ),
        )
        .unwrap();
        let daemon = Circusd::start(&circusd, &circus_ini, &theirs);
        agent.use_config_file(agent_ini, node, &[]);
        agent.launch();
        Some(SideBySide {
            agent,
            daemon,
            circusctl,
            circusd_endpoint,
            theirs,
        })
    }
}

/// `text` with every run of digits replaced by `N`: what is left is its shape.
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// The two circusctls, one per daemon.
struct Pair {
    circusd: Ctl,
    ours: Ctl,
}

impl Pair {
    /// Asks both at once (each circusctl run is a Python start): ours, then
    /// circusd's.
    fn both(&self, args: &[&str]) -> (Run, Run) {
        std::thread::scope(|scope| {
            let theirs = scope.spawn(|| self.circusd.run(args));
            let ours = self.ours.run(args);
            let theirs = theirs
                .join()
                .unwrap_or_else(|_| panic!("circusctl {args:?} against circusd panicked"));
            (ours, theirs)
        })
    }

    /// Asks both; the exit codes and outputs must be the same. Returns ours.
    fn same(&self, args: &[&str]) -> String {
        let (got, expected) = self.both(args);
        assert_eq!(
            got, expected,
            "circusctl {args:?}: nodeagent (left) and circusd (right) answered differently"
        );
        got.stdout
    }

    /// Asks both; the answers must be the same with every number masked.
    fn same_shape(&self, args: &[&str]) -> (String, String) {
        let (got, expected) = self.both(args);
        assert_eq!(
            (got.code, masked(&got.stdout), masked(&got.stderr)),
            (
                expected.code,
                masked(&expected.stdout),
                masked(&expected.stderr)
            ),
            "circusctl {args:?}: nodeagent (left) and circusd (right) answered in different \
             shapes:\nnodeagent: {got:?}\ncircusd: {expected:?}"
        );
        (got.stdout, expected.stdout)
    }

    /// Polls both with `args` until each prints `wanted`.
    fn wait_until(&self, args: &[&str], wanted: &str) {
        for (who, ctl) in [("circusd", &self.circusd), ("nodeagent", &self.ours)] {
            wait_for_blocking(
                &format!("{who}: circusctl {args:?} = {wanted:?}"),
                DEADLINE,
                || ctl.run(args).stdout == wanted,
            );
        }
    }
}

/// Every option circusd shows for `name` must be in nodeagent's `options`, with
/// the same value. Left out, as noted: `__name__` (configparser's section
/// name, which circusd leaks into both `options` and `env`); a stream file's
/// name is compared by its file name (nodeagent resolves it against the config
/// file's directory at load time, circusd against its own working directory
/// when it opens it) and its numbers by their text (circusd keeps what the INI
/// said, as strings).
fn assert_options_match(pair: &Pair, name: &str) {
    let theirs = pair.circusd.json(&["options", name]);
    let ours = pair.ours.json(&["options", name]);
    let (Some(theirs), Some(ours)) = (theirs["options"].as_object(), ours["options"].as_object())
    else {
        panic!("options {name}: no options in\ncircusd: {theirs}\nnodeagent: {ours}");
    };
    let mut compared = 0;
    for (key, expected) in theirs {
        if key == "__name__" {
            continue;
        }
        let Some(got) = ours.get(key) else {
            panic!("options {name}: circusd shows {key} = {expected}, nodeagent has no {key}");
        };
        let (got, expected) = match key.as_str() {
            "env" => (without_name(got), without_name(expected)),
            "stdout_stream_conf" | "stderr_stream_conf" => (as_text(got), as_text(expected)),
            _ => (got.clone(), expected.clone()),
        };
        assert_eq!(
            got, expected,
            "options {name}: {key} is {got} in nodeagent, {expected} in circusd"
        );
        compared += 1;
    }
    assert!(
        compared >= 25,
        "only {compared} options compared: {theirs:?}"
    );
}

fn without_name(env: &Value) -> Value {
    let mut env = env.clone();
    if let Some(map) = env.as_object_mut() {
        map.remove("__name__");
    }
    env
}

/// A stream conf with every value as text, and `filename` as a file name.
fn as_text(conf: &Value) -> Value {
    let Some(map) = conf.as_object() else {
        return conf.clone();
    };
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let text = if key == "filename" {
                Path::new(&text)
                    .file_name()
                    .map_or(text.clone(), |f| f.to_string_lossy().into_owned())
            } else {
                text
            };
            (key.clone(), Value::String(text))
        })
        .collect()
}

/// `stats`/`dstats` lines: the same shape, and the same user, nice value and
/// program, field by field (`skip` names fields that differ by nature).
fn assert_process_lines_match(ours: &str, theirs: &str, skip: &[usize]) {
    let ours: Vec<&str> = ours.lines().collect();
    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{ours:?}\nagainst circusd's\n{theirs:?}"
    );
    for (got, expected) in ours.iter().zip(&theirs) {
        let got: Vec<&str> = got.split_whitespace().collect();
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "{got:?} against circusd's {expected:?}"
        );
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            if skip.contains(&i) {
                continue;
            }
            if g.chars().any(|c| c.is_ascii_digit()) {
                assert_eq!(
                    masked(g),
                    masked(e),
                    "field {i} of {got:?} against {expected:?}"
                );
            } else {
                assert_eq!(g, e, "field {i} of {got:?} against circusd's {expected:?}");
            }
        }
    }
}

#[test]
fn circusctl_gets_the_same_answers_from_nodeagent_as_from_circusd() {
    let Some(both) = SideBySide::start(
        "circusctl_gets_the_same_answers_from_nodeagent_as_from_circusd",
        "side-by-side",
        "",
        WATCHERS,
        false,
    ) else {
        return;
    };
    let SideBySide {
        mut agent,
        daemon,
        circusctl,
        circusd_endpoint,
        ..
    } = both;
    let pair = Pair {
        circusd: Ctl {
            path: circusctl.clone(),
            endpoint: circusd_endpoint,
        },
        ours: Ctl {
            path: circusctl,
            endpoint: agent.control.clone(),
        },
    };
    let started = std::time::Instant::now();
    loop {
        let run = pair.circusd.run(&["numprocesses"]);
        if run.stdout == "5" {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "circusd did not start 5 processes within {DEADLINE:?} ({run:?}):\n{}",
            daemon.log()
        );
    }
    pair.wait_until(&["numprocesses"], "5");

    // What is running, and how it is configured.
    assert_eq!(
        pair.same(&["status"]),
        "manual: stopped\nweb: active\nworker: active",
        "circusd: {}",
        daemon.log()
    );
    pair.same(&["list"]);
    pair.same(&["numwatchers"]);
    pair.same(&["numprocesses", "worker"]);
    pair.same(&["status", "manual"]);
    pair.same_shape(&["list", "worker"]);
    // Option by option where circusd and Ringmaster keep them differently
    // (names, numbers, lists, defaults), then all of them.
    pair.same(&["get", "web", "stop_signal"]);
    pair.same(&["get", "web", "args"]);
    pair.same(&["get", "web", "max_age"]);
    pair.same(&["get", "web", "warmup_delay"]);
    pair.same(&["get", "web", "uid"]);
    pair.same(&["get", "web", "working_dir"]);
    pair.same(&["get", "worker", "close_child_stdout"]);
    assert_options_match(&pair, "web");
    assert_options_match(&pair, "worker");
    assert_options_match(&pair, "manual");
    pair.same_shape(&["listsockets"]);

    // Statistics: the same fields, users and programs.
    let (ours, theirs) = pair.same_shape(&["list", "web"]);
    assert_eq!(ours.split(',').count(), 2, "{ours} / {theirs}");
    pair.wait_until(&["numprocesses", "web"], "2");
    let ours = pair.ours.ok(&["stats", "web"]);
    let theirs = pair.circusd.ok(&["stats", "web"]);
    assert_process_lines_match(&ours, &theirs, &[]);
    let ours = pair.ours.ok(&["dstats"]);
    let theirs = pair.circusd.ok(&["dstats"]);
    // Field 1 is the daemon's own program: python3 against nodeagent.
    assert_process_lines_match(&ours, &theirs, &[1]);

    // Errors, in Circus's words.
    for args in [
        &["status", "nope"][..],
        &["list", "nope"],
        &["start", "nope"],
        &["incr", "nope"],
        &["get", "web", "nope"],
        &["set", "web", "nope", "3"],
        &["options", "nope"],
    ] {
        pair.same(args);
    }

    // Changes.
    pair.same(&["incr", "web"]);
    pair.same(&["numprocesses", "web"]);
    pair.same(&["decr", "web", "2"]);
    pair.same(&["numprocesses", "web"]);
    pair.same(&["set", "web", "numprocesses", "2"]);
    pair.same(&["set", "web", "graceful_timeout", "7"]);
    pair.same(&["get", "web", "graceful_timeout"]);
    pair.wait_until(&["numprocesses", "web"], "2");
    pair.same(&["start", "manual", "--waiting"]);
    pair.same(&["status", "manual"]);
    pair.same(&["signal", "worker", "HUP"]);
    pair.same(&["reload", "web", "--waiting"]);
    pair.same(&["restart", "worker", "--waiting"]);
    pair.same(&["stop", "manual", "--waiting"]);
    pair.same(&["status", "manual"]);
    pair.same(&["rm", "manual", "--waiting"]);
    pair.same(&["list"]);
    pair.same(&["add", "extra", "sleep 900"]);
    pair.same(&["status", "extra"]);
    pair.same(&["start", "extra", "--waiting"]);
    pair.same(&["status"]);
    pair.same(&["stop", "--waiting"]);
    pair.same(&["status"]);
    pair.same(&["start", "--waiting"]);
    pair.same(&["status"]);

    pair.same(&["quit"]);
    let status = agent.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "nodeagent exited with {status} after quit"
    );
    let mut daemon = daemon;
    wait_for_blocking("circusd to exit after quit", DEADLINE, || {
        matches!(daemon.child.try_wait(), Ok(Some(_)))
    });
}

/// Watchers that write down what their processes got: environment, arguments
/// (with Circus variables and a socket's fd), umask and descriptors.
const DUMPERS: &str = "\
[socket:front]
host = 127.0.0.1
port = 0

[socket:local]
path = local.sock

[watcher:dump]
cmd = sh -c 'env | sort > env-$1.txt; echo \"$@\" > args-$1.txt; umask > umask-$1.txt; exec sleep 600' dump $(circus.wid) $(circus.sockets.front) ((circus.env.greeting))
numprocesses = 2
use_sockets = True

[watcher:plain]
cmd = sh -c 'env | sort > env-plain.txt; ls /proc/self/fd > fds-plain.txt; exec sleep 600'

[env:dump]
GREETING = hello
PATH = /usr/bin:/bin
FROM_CIRCUSD = $HOME/x

[env:d*]
BY_PATTERN = yes
";

/// What a dumping process wrote in `dir`, once it has.
fn written(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    wait_for_blocking(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || std::fs::read_to_string(&path).is_ok_and(|text| text.ends_with('\n')),
    );
    std::fs::read_to_string(&path).unwrap()
}

/// An environment dump without what differs on purpose: `PWD` (each daemon
/// has its own directory here), configparser's `__name__` (which circusd leaks
/// into the environment), the systemd `LISTEN_*` variables (which circusd
/// does not set) and the mark nodeagent gives each process
/// (`RINGMASTER_LINEAGE`, how it finds what a process started).
fn comparable_env(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter(|line| {
            !line.starts_with("PWD=")
                && !line.starts_with("__name__=")
                && !line.starts_with("LISTEN_")
                && !line.starts_with("RINGMASTER_LINEAGE=")
        })
        .collect()
}

#[test]
fn processes_start_as_they_would_under_circusd() {
    let Some(both) = SideBySide::start(
        "processes_start_as_they_would_under_circusd",
        "dumps",
        "umask = 027\n",
        DUMPERS,
        true,
    ) else {
        return;
    };
    let ours = both.agent.dir().to_path_buf();
    let theirs = both.theirs.clone();
    let daemon = &both.daemon;

    for wid in ["1", "2"] {
        let (got, expected) = (
            written(&ours, &format!("env-{wid}.txt")),
            written(&theirs, &format!("env-{wid}.txt")),
        );
        assert_eq!(
            comparable_env(&got),
            comparable_env(&expected),
            "environment of dump {wid}: nodeagent (left), circusd (right); circusd: {}",
            daemon.log()
        );
        assert!(
            got.contains("LISTEN_FDNAMES=front:local\nLISTEN_FDS=2\n"),
            "{got}"
        );
        let (got, expected) = (
            written(&ours, &format!("args-{wid}.txt")),
            written(&theirs, &format!("args-{wid}.txt")),
        );
        // The socket's fd differs: circusd passes its own descriptor number,
        // nodeagent hands sockets over from 3, as systemd does.
        assert_eq!(masked(&got), masked(&expected), "arguments of dump {wid}");
        assert_eq!(got.split(' ').nth(1), Some("3"), "{got}");
        assert_eq!(
            written(&ours, &format!("umask-{wid}.txt")),
            written(&theirs, &format!("umask-{wid}.txt")),
            "umask of dump {wid}"
        );
    }
    assert_eq!(
        comparable_env(&written(&ours, "env-plain.txt")),
        comparable_env(&written(&theirs, "env-plain.txt")),
        "environment of plain: nodeagent (left), circusd (right)"
    );
    // A watcher without use_sockets gets no descriptor beyond 0-2 (and the one
    // `ls` opens): circusd leaks some of its own there, nodeagent none.
    assert_eq!(written(&ours, "fds-plain.txt"), "0\n1\n2\n3\n");
}
