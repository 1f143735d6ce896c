//! `exec`: running one shell command line on the node and answering with what it
//! printed and how it ended.
//!
//! Only an agent whose config says `allow_exec = true` runs it (the check is in the
//! command dispatch). The command runs as `/bin/sh -c CMD` in the agent's working
//! directory, with the agent's environment plus `RINGMASTER_NODE`, stdin from
//! `/dev/null`, and in a process group of its own, so that a timeout can kill
//! everything it started.
//!
//! The command is done when the shell has exited *and* both of its output pipes
//! are closed (a background process that keeps them open keeps it running). If that
//! takes longer than the timeout, the whole process group gets SIGKILL and the
//! answer says `timed_out`. Each stream keeps at most [`ExecOutput::MAX_OUTPUT`]
//! bytes; the rest is read and thrown away, so the command never blocks on a full
//! pipe. Everything is awaited: the agent goes on serving other requests meanwhile.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use ringmaster_protocol::message::ExecOutput;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use crate::reaper::{self, OnDrop};

/// Longest timeout an `exec` may ask for, in seconds.
pub const MAX_TIMEOUT: f64 = 3600.0;

/// How long to wait, after the SIGKILL of a timed-out command, for its output
/// pipes to close before giving up on them.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Checks the arguments of `exec`; returns the timeout, or what is wrong.
pub fn check(cmd: &str, timeout: f64) -> Result<Duration, String> {
    if cmd.trim().is_empty() {
        return Err("exec needs a command line".into());
    }
    if !timeout.is_finite() || timeout <= 0.0 || timeout > MAX_TIMEOUT {
        return Err(format!(
            "exec timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT}, not {timeout}"
        ));
    }
    Duration::try_from_secs_f64(timeout).map_err(|e| format!("bad exec timeout {timeout}: {e}"))
}

/// What was kept of one output stream.
#[derive(Debug, Default)]
struct Capture {
    kept: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// Reads `reader` to its end, keeping the first [`ExecOutput::MAX_OUTPUT`] bytes.
async fn capture<R: AsyncRead + Unpin>(reader: Option<R>, into: &mut Capture) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                let room = ExecOutput::MAX_OUTPUT.saturating_sub(into.kept.len());
                if n > room {
                    into.truncated = true;
                }
                into.kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!("exec: cannot read the command's output: {e}");
                return;
            }
        }
    }
}

/// Kills a command's process group when dropped, unless disarmed, so that nothing
/// a command started (an `exec`, a hook) outlives its timeout or the agent.
pub(crate) struct GroupGuard {
    pgid: Option<Pid>,
    what: &'static str,
}

impl GroupGuard {
    /// Guards the process group led by `child` (the child of a `process_group(0)`
    /// spawn); `what` names the command in the log.
    pub(crate) fn of(child: &tokio::process::Child, what: &'static str) -> Self {
        GroupGuard {
            pgid: child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .map(Pid::from_raw),
            what,
        }
    }

    /// Kills the group now (once).
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => warn!("{}: cannot kill process group {pgid}: {e}", self.what),
            }
        }
    }

    /// The command ended by itself: leave its group alone.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` with `/bin/sh -c` on node `node`, for at most `timeout`. Fails only
/// when the shell cannot be started.
pub async fn run(node: &str, cmd: &str, timeout: Duration) -> std::io::Result<ExecOutput> {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd)
        .env("RINGMASTER_NODE", node)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = reaper::spawn(&mut command, OnDrop::Kill)?;
    let pid = child.id();
    let mut guard = GroupGuard::of(&child, "exec");
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = Capture::default();
    let mut err = Capture::default();
    let mut timed_out = false;

    let finished = {
        let work = async {
            let (status, (), ()) = tokio::join!(
                child.wait(),
                capture(stdout, &mut out),
                capture(stderr, &mut err)
            );
            status
        };
        tokio::pin!(work);
        match tokio::time::timeout(timeout, &mut work).await {
            Ok(status) => Some(status),
            Err(_) => {
                timed_out = true;
                guard.kill();
                // The group is dead: its pipes close, unless something left the
                // group and kept them open.
                tokio::time::timeout(AFTER_KILL, &mut work).await.ok()
            }
        }
    };
    guard.disarm();
    let status = match finished {
        Some(status) => status,
        None => {
            // Gave up on the pipes; the shell itself got SIGKILL with its group.
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let duration = started.elapsed().as_secs_f64();
    let (code, signal) = match &status {
        Ok(status) => (status.code(), status.signal()),
        Err(e) => {
            warn!("exec: cannot learn how the command ended: {e}");
            (None, None)
        }
    };
    info!(
        node,
        cmd,
        pid = pid.unwrap_or(0),
        code = code.map_or_else(|| "-".to_string(), |c| c.to_string()),
        signal = signal.map_or_else(|| "-".to_string(), |s| s.to_string()),
        timed_out,
        duration = format!("{duration:.3}s"),
        "exec"
    );
    Ok(ExecOutput {
        code,
        signal,
        timed_out,
        stdout: out.text(),
        stderr: err.text(),
        truncated: out.truncated || err.truncated,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        assert!(check("true", 1.0).is_ok());
        assert!(check("true", MAX_TIMEOUT).is_ok());
        assert!(check("  ", 1.0).is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_TIMEOUT + 1.0] {
            assert!(check("true", bad).is_err(), "{bad}");
        }
    }
}
