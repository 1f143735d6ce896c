//! Hooks: shell commands a watcher runs at points of its lifecycle
//! (`[watchers.NAME.hooks]`), and what their outcome means.
//!
//! A hook is `/bin/sh -c CMD`, run on the agent's runtime without blocking it (the
//! agent answers commands and reaps processes while a hook runs). It gets the
//! environment the watcher's processes get (`copy_env`, `copy_path`, `env`, with
//! `$(...)` expanded), the agent's `PATH` when that has none, and
//! `RINGMASTER_HOOK`, `RINGMASTER_WATCHER`, `RINGMASTER_NODE`, plus, where they
//! apply, `RINGMASTER_PID`, `RINGMASTER_WID`, `RINGMASTER_SIGNAL`,
//! `RINGMASTER_EXIT_CODE`, `RINGMASTER_EXIT_SIGNAL` and `RINGMASTER_EXPECTED`. It
//! runs in the watcher's `working_dir`, with stdin from `/dev/null`, in a process
//! group of its own, as the agent's user.
//!
//! Exit status 0 is success. Anything else fails: another exit code, death by a
//! signal, a shell that cannot be started, or running past the hook's `timeout`,
//! after which its whole process group gets SIGKILL. The end of what it printed
//! (stdout and stderr together, at most [`OUTPUT_TAIL`] bytes) is kept for the
//! error message and the `hook_failure` event.
//!
//! This module only runs hooks; the supervisor decides what a failure does to the
//! action around it (see [`HookPoint::may_stop_action`]).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ringmaster_protocol::{ExitInfo, Signal};
use tokio::io::AsyncReadExt;

use crate::config::{Hook, Hooks, WatcherConfig};
use crate::exec::GroupGuard;
use crate::reaper::{self, OnDrop};
use crate::spawn::{self, SpawnVars};

/// Most bytes of a hook's output kept (the end of it).
pub const OUTPUT_TAIL: usize = 4096;

/// Most characters of output quoted in an error message.
const MESSAGE_EXCERPT: usize = 800;

/// How long to keep reading a hook's output after its shell exited (a
/// background process it started may hold the pipe open).
const DRAIN: Duration = Duration::from_millis(250);

/// How long to wait for a killed hook to be reaped.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// A point of a watcher's lifecycle where a hook may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// Before the watcher starts.
    BeforeStart,
    /// After its processes were spawned, before it is `active`.
    AfterStart,
    /// Before each process is spawned.
    BeforeSpawn,
    /// After each process was spawned.
    AfterSpawn,
    /// Before the watcher stops.
    BeforeStop,
    /// After it stopped.
    AfterStop,
    /// Before the agent sends a signal to a process.
    BeforeSignal,
    /// After it sent one.
    AfterSignal,
    /// When a process has exited, before the agent handles the exit.
    BeforeReap,
    /// After the agent handled the exit.
    AfterReap,
}

impl HookPoint {
    /// Every hook point, in lifecycle order.
    pub const ALL: [HookPoint; 10] = [
        HookPoint::BeforeStart,
        HookPoint::AfterStart,
        HookPoint::BeforeSpawn,
        HookPoint::AfterSpawn,
        HookPoint::BeforeStop,
        HookPoint::AfterStop,
        HookPoint::BeforeSignal,
        HookPoint::AfterSignal,
        HookPoint::BeforeReap,
        HookPoint::AfterReap,
    ];

    /// Its name in the config and in events (`before_start`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::BeforeStart => "before_start",
            HookPoint::AfterStart => "after_start",
            HookPoint::BeforeSpawn => "before_spawn",
            HookPoint::AfterSpawn => "after_spawn",
            HookPoint::BeforeStop => "before_stop",
            HookPoint::AfterStop => "after_stop",
            HookPoint::BeforeSignal => "before_signal",
            HookPoint::AfterSignal => "after_signal",
            HookPoint::BeforeReap => "before_reap",
            HookPoint::AfterReap => "after_reap",
        }
    }

    /// The hook configured for this point, if any.
    pub fn of(self, hooks: &Hooks) -> Option<&Hook> {
        match self {
            HookPoint::BeforeStart => hooks.before_start.as_ref(),
            HookPoint::AfterStart => hooks.after_start.as_ref(),
            HookPoint::BeforeSpawn => hooks.before_spawn.as_ref(),
            HookPoint::AfterSpawn => hooks.after_spawn.as_ref(),
            HookPoint::BeforeStop => hooks.before_stop.as_ref(),
            HookPoint::AfterStop => hooks.after_stop.as_ref(),
            HookPoint::BeforeSignal => hooks.before_signal.as_ref(),
            HookPoint::AfterSignal => hooks.after_signal.as_ref(),
            HookPoint::BeforeReap => hooks.before_reap.as_ref(),
            HookPoint::AfterReap => hooks.after_reap.as_ref(),
        }
    }

    /// True when a failure of this hook can change the action around it:
    /// before/after_start, before/after_spawn, before_stop and before_signal. The
    /// others (after_stop, after_signal, before/after_reap) are only reported.
    pub fn may_stop_action(self) -> bool {
        matches!(
            self,
            HookPoint::BeforeStart
                | HookPoint::AfterStart
                | HookPoint::BeforeSpawn
                | HookPoint::AfterSpawn
                | HookPoint::BeforeStop
                | HookPoint::BeforeSignal
        )
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a hook is about besides its watcher: the process, the signal, the exit.
/// Each set field becomes an environment variable of the hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSubject {
    /// The process (`RINGMASTER_PID`).
    pub pid: Option<u32>,
    /// Its worker id (`RINGMASTER_WID`).
    pub wid: Option<u32>,
    /// The signal being sent (`RINGMASTER_SIGNAL`, a name such as `SIGTERM`).
    pub signal: Option<Signal>,
    /// How the process ended (`RINGMASTER_EXIT_CODE` or `RINGMASTER_EXIT_SIGNAL`).
    pub exit: Option<ExitInfo>,
    /// Whether the agent had asked the process to stop (`RINGMASTER_EXPECTED`,
    /// `1` or `0`).
    pub expected: Option<bool>,
}

/// A hook ready to run: everything it needs, copied out of the agent's state.
#[derive(Debug, Clone)]
pub struct HookJob {
    /// Where it runs.
    pub point: HookPoint,
    /// The command line, with `$(...)` expanded.
    pub cmd: String,
    /// How long it may run.
    pub timeout: Duration,
    /// A failure never changes the action.
    pub ignore_errors: bool,
    /// Its whole environment.
    pub env: BTreeMap<String, String>,
    /// Its working directory (the agent's when None).
    pub working_dir: Option<PathBuf>,
    /// What it is about.
    pub subject: HookSubject,
}

impl HookJob {
    /// The job for `hook` at `point` of a watcher with `config`; `vars` name the
    /// node, the watcher and the worker id used to expand `$(...)` (0 for the
    /// watcher-wide hooks).
    pub fn new(
        point: HookPoint,
        hook: &Hook,
        config: &WatcherConfig,
        vars: &SpawnVars<'_>,
        subject: HookSubject,
    ) -> HookJob {
        let mut env = spawn::environment(config, vars);
        if !env.contains_key("PATH") {
            if let Ok(path) = std::env::var("PATH") {
                env.insert("PATH".into(), path);
            }
        }
        let cmd = spawn::expand(&hook.cmd, vars, &env);
        let mut set = |key: &str, value: String| {
            env.insert(key.to_string(), value);
        };
        set("RINGMASTER_HOOK", point.name().to_string());
        set("RINGMASTER_WATCHER", vars.watcher.to_string());
        set("RINGMASTER_NODE", vars.node.to_string());
        if let Some(pid) = subject.pid {
            set("RINGMASTER_PID", pid.to_string());
        }
        if let Some(wid) = subject.wid {
            set("RINGMASTER_WID", wid.to_string());
        }
        if let Some(signal) = subject.signal {
            set("RINGMASTER_SIGNAL", signal.name().to_string());
        }
        if let Some(exit) = subject.exit {
            if let Some(code) = exit.code {
                set("RINGMASTER_EXIT_CODE", code.to_string());
            }
            if let Some(number) = exit.signal {
                let name = Signal::from_number(number)
                    .map_or_else(|| number.to_string(), |s| s.name().to_string());
                set("RINGMASTER_EXIT_SIGNAL", name);
            }
        }
        if let Some(expected) = subject.expected {
            set(
                "RINGMASTER_EXPECTED",
                if expected { "1" } else { "0" }.into(),
            );
        }
        HookJob {
            point,
            cmd,
            // The config checks 0 < timeout <= one day.
            timeout: Duration::try_from_secs_f64(hook.timeout).unwrap_or(Duration::from_secs(30)),
            ignore_errors: hook.ignore_errors,
            env,
            working_dir: config.working_dir.clone(),
            subject,
        }
    }

    /// Runs the hook to its end (or its timeout) and says how it went. Never
    /// blocks the runtime; if the future is dropped half-way (the agent exiting),
    /// the hook's process group is killed.
    pub async fn run(self) -> HookOutcome {
        let started = Instant::now();
        let result = execute(&self).await;
        HookOutcome {
            point: self.point,
            duration: started.elapsed(),
            result,
        }
    }
}

/// How a hook went.
#[derive(Debug)]
pub struct HookOutcome {
    /// Which hook.
    pub point: HookPoint,
    /// How long it ran.
    pub duration: Duration,
    /// Success, or why it failed.
    pub result: Result<(), HookFailure>,
}

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureCause {
    /// It exited with a non-zero code, or was killed by a signal.
    Exited(ExitInfo),
    /// It ran past its timeout and its process group was killed.
    TimedOut(Duration),
    /// `/bin/sh` could not be started (e.g. a missing working directory).
    CannotStart(String),
}

/// A failed hook: which one, why, and the end of its output.
#[derive(Debug, Clone, PartialEq)]
pub struct HookFailure {
    /// Which hook.
    pub point: HookPoint,
    /// Why it failed.
    pub cause: FailureCause,
    /// The end of what it printed (stdout and stderr together), at most
    /// [`OUTPUT_TAIL`] bytes, trimmed.
    pub output: String,
}

impl HookFailure {
    /// How it ended, when it ended by itself or by a signal.
    pub fn exit(&self) -> Option<ExitInfo> {
        match self.cause {
            FailureCause::Exited(exit) => Some(exit),
            _ => None,
        }
    }

    /// True when it ran past its timeout.
    pub fn timed_out(&self) -> bool {
        matches!(self.cause, FailureCause::TimedOut(_))
    }

    /// Why it failed, in words (without the output).
    pub fn reason(&self) -> String {
        match &self.cause {
            FailureCause::Exited(exit) => exit.to_string(),
            FailureCause::TimedOut(limit) => format!(
                "timed out after {}s and was killed",
                trim_float(limit.as_secs_f64())
            ),
            FailureCause::CannotStart(why) => format!("could not be started: {why}"),
        }
    }
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} hook failed ({})", self.point, self.reason())?;
        if self.output.is_empty() {
            f.write_str(", no output")
        } else {
            write!(f, "; output: {}", excerpt(&self.output, MESSAGE_EXCERPT))
        }
    }
}

fn trim_float(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The end of `text`, at most `max` characters, marked when cut.
fn excerpt(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let tail: String = text.chars().skip(count - max).collect();
    format!("...{tail}")
}

/// The last [`OUTPUT_TAIL`] bytes written into it.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * OUTPUT_TAIL {
            let extra = self.bytes.len() - OUTPUT_TAIL;
            self.bytes.drain(..extra);
            self.cut = true;
        }
    }

    fn text(mut self) -> String {
        if self.bytes.len() > OUTPUT_TAIL {
            let extra = self.bytes.len() - OUTPUT_TAIL;
            self.bytes.drain(..extra);
            self.cut = true;
        }
        // Do not start in the middle of a UTF-8 character.
        let start = if self.cut {
            self.bytes
                .iter()
                .position(|b| (*b & 0xC0) != 0x80)
                .unwrap_or(0)
        } else {
            0
        };
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let trimmed = text.trim();
        if self.cut && !trimmed.is_empty() {
            format!("...{trimmed}")
        } else {
            trimmed.to_string()
        }
    }
}

async fn execute(job: &HookJob) -> Result<(), HookFailure> {
    let fail = |cause: FailureCause, output: String| HookFailure {
        point: job.point,
        cause,
        output,
    };
    let cannot = |what: &str, e: &dyn fmt::Display| {
        fail(
            FailureCause::CannotStart(format!("{what}: {e}")),
            String::new(),
        )
    };
    // One pipe for stdout and stderr, so the output keeps its order.
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| cannot("pipe", &e))?;
    let err_end = write_end.try_clone().map_err(|e| cannot("pipe", &e))?;
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .map_err(|e| cannot("pipe", &e))?;
    let mut child = {
        // The command holds the pipe's write end until it is dropped: keep it in
        // this block so that the pipe closes when the hook is done with it.
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&job.cmd)
            .env_clear()
            .envs(&job.env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(err_end))
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &job.working_dir {
            command.current_dir(dir);
        }
        reaper::spawn(&mut command, OnDrop::Kill).map_err(|e| {
            let place = job
                .working_dir
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default();
            cannot(&format!("/bin/sh{place}"), &e)
        })?
    };
    let mut guard = GroupGuard::of(&child, "hook");
    let mut tail = Tail::default();
    let mut timed_out = false;
    let status = {
        let reading = async {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => tail.push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        };
        tokio::pin!(reading);
        let deadline = tokio::time::sleep(job.timeout);
        tokio::pin!(deadline);
        let mut read_done = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = &mut reading, if !read_done => read_done = true,
                () = &mut deadline => {
                    timed_out = true;
                    guard.kill();
                    break tokio::time::timeout(AFTER_KILL, child.wait())
                        .await
                        .unwrap_or_else(|_| Err(std::io::Error::other("not reaped after SIGKILL")));
                }
            }
        };
        if !read_done {
            let _ = tokio::time::timeout(DRAIN, &mut reading).await;
        }
        status
    };
    // The shell is gone; what it left running in the background is its own
    // business (only a timeout kills the group).
    guard.disarm();
    let output = tail.text();
    if timed_out {
        return Err(fail(FailureCause::TimedOut(job.timeout), output));
    }
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(fail(
            FailureCause::Exited(ExitInfo {
                code: status.code(),
                signal: status.signal(),
            }),
            output,
        )),
        Err(e) => Err(fail(
            FailureCause::CannotStart(format!("cannot learn how it ended: {e}")),
            output,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmd: &str, timeout: f64) -> HookJob {
        let mut config = WatcherConfig::with_cmd("true").unwrap();
        config.env.insert("GREETING".into(), "hello-$(wid)".into());
        let hook = Hook {
            cmd: cmd.into(),
            timeout,
            ignore_errors: false,
        };
        let vars = SpawnVars {
            node: "n1",
            watcher: "web",
            wid: 2,
        };
        let subject = HookSubject {
            pid: Some(42),
            wid: Some(2),
            signal: Some(Signal::Term),
            exit: Some(ExitInfo {
                code: None,
                signal: Some(9),
            }),
            expected: Some(true),
        };
        HookJob::new(HookPoint::AfterReap, &hook, &config, &vars, subject)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_hook_gets_the_watcher_environment_and_its_subject() {
        let job = job("echo", 5.0);
        let env = &job.env;
        assert_eq!(env["GREETING"], "hello-2");
        assert_eq!(env["RINGMASTER_HOOK"], "after_reap");
        assert_eq!(env["RINGMASTER_WATCHER"], "web");
        assert_eq!(env["RINGMASTER_NODE"], "n1");
        assert_eq!(env["RINGMASTER_PID"], "42");
        assert_eq!(env["RINGMASTER_WID"], "2");
        assert_eq!(env["RINGMASTER_SIGNAL"], "SIGTERM");
        assert_eq!(env["RINGMASTER_EXIT_SIGNAL"], "SIGKILL");
        assert_eq!(env["RINGMASTER_EXPECTED"], "1");
        assert!(!env.contains_key("RINGMASTER_EXIT_CODE"));
        assert!(env.contains_key("PATH"), "the agent's PATH by default");
    }

    #[test]
    fn success_failure_and_output() {
        let rt = rt();
        let ok = rt.block_on(job("test \"$GREETING\" = hello-2", 5.0).run());
        assert!(ok.result.is_ok(), "{:?}", ok.result);
        let failed = rt.block_on(job("echo out; echo err >&2; exit 3", 5.0).run());
        let failure = failed.result.unwrap_err();
        assert_eq!(
            failure.exit(),
            Some(ExitInfo {
                code: Some(3),
                signal: None
            })
        );
        assert_eq!(failure.output, "out\nerr");
        let text = failure.to_string();
        assert!(
            text.starts_with("after_reap hook failed (exit code 3); output: out"),
            "{text}"
        );
    }

    #[test]
    fn a_hung_hook_is_killed_at_its_timeout_with_its_group() {
        let rt = rt();
        let started = Instant::now();
        let outcome = rt.block_on(job("echo waiting; sleep 60 & sleep 60", 0.3).run());
        let failure = outcome.result.unwrap_err();
        assert!(failure.timed_out(), "{failure:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(failure.output, "waiting");
        assert!(
            failure.to_string().contains("timed out after 0.3s"),
            "{failure}"
        );
    }

    #[test]
    fn a_missing_working_dir_is_a_failure_that_says_so() {
        let rt = rt();
        let mut job = job("true", 5.0);
        job.working_dir = Some(PathBuf::from("/no/such/dir"));
        let failure = rt.block_on(job.run()).result.unwrap_err();
        assert!(
            matches!(failure.cause, FailureCause::CannotStart(_)),
            "{failure:?}"
        );
        assert!(failure.to_string().contains("/no/such/dir"), "{failure}");
    }

    #[test]
    fn output_keeps_only_its_end() {
        let mut tail = Tail::default();
        for _ in 0..10_000 {
            tail.push(b"0123456789");
        }
        tail.push(b"THE END");
        let text = tail.text();
        assert!(text.len() <= OUTPUT_TAIL + 3, "{}", text.len());
        assert!(text.starts_with("...") && text.ends_with("THE END"));
        assert_eq!(excerpt("abcdef", 3), "...def");
    }
}
