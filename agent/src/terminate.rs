//! Stopping a set of process groups and processes with a deadline: the one way the
//! agent makes processes go that it does not wait for itself (what a leader left
//! in its group or outside it, what a crashed agent left running, strays at
//! `quit`).
//!
//! A stop sends a signal (or none, when it was sent already) to every target,
//! then polls, with a backoff from 1 ms to 50 ms, until each target is gone or
//! its deadline has passed; a target past its deadline gets SIGKILL and has
//! [`KILL_WAIT`] more to disappear. These processes are not the caller's children
//! (or are reaped by someone else), so polling `/proc` is the only way to see
//! them go.
//!
//! The steps are one [`Stop`]; [`stop`] drives it on the runtime (async) and
//! [`stop_blocking`] on the current thread (the agent's start, before anything
//! else runs).
//!
//! A group is alive while `kill(-pgid, 0)` finds a member (a zombie counts until
//! it is reaped: the agent reaps its own, see [`crate::reaper`]); a process is
//! alive while `/proc/<pid>/stat` shows it running with the same start time, so
//! a reused pid is never signalled.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tracing::warn;

use crate::lineage::Found;
use crate::survivors::read_stat;

/// How long targets may take to disappear after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// The first and the longest pause between two polls.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// Something to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every process of a process group.
    Group(u32),
    /// One process, known by pid and start time.
    Process(Found),
}

fn raw(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

impl Target {
    /// Sends `signal`; a target that is gone is not an error.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        let result = match *self {
            Target::Group(pgid) => raw(pgid).map_or(Ok(()), |g| killpg(g, signal)),
            Target::Process(found) if self.alive() => {
                raw(found.pid).map_or(Ok(()), |p| kill(p, signal))
            }
            Target::Process(_) => Ok(()),
        };
        match result {
            Err(nix::Error::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Whether anything of it is left.
    pub fn alive(&self) -> bool {
        match *self {
            Target::Group(pgid) => {
                raw(pgid).is_some_and(|g| !matches!(killpg(g, None), Err(nix::Error::ESRCH)))
            }
            Target::Process(found) => {
                read_stat(found.pid).is_some_and(|s| !s.dead && s.start == found.start)
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Group(pgid) => write!(f, "process group {pgid}"),
            Target::Process(found) => write!(f, "process {}", found.pid),
        }
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Targets that needed SIGKILL.
    pub killed: usize,
    /// Targets still there [`KILL_WAIT`] after SIGKILL.
    pub left: usize,
}

/// One target of a stop and where it stands.
#[derive(Debug)]
struct Pending {
    target: Target,
    deadline: Instant,
    killed: bool,
}

/// A stop in progress (see the module doc).
#[derive(Debug)]
pub struct Stop {
    pending: Vec<Pending>,
    pause: Duration,
    outcome: Outcome,
}

impl Stop {
    /// Sends `signal` (if any) to every target and starts the clock: each
    /// target has its own grace before SIGKILL.
    pub fn start(targets: Vec<(Target, Duration)>, signal: Option<Signal>) -> Stop {
        let now = Instant::now();
        let pending = targets
            .into_iter()
            .map(|(target, grace)| {
                if let Some(signal) = signal {
                    if let Err(e) = target.signal(signal) {
                        warn!("cannot send {signal} to {target}: {e}");
                    }
                }
                Pending {
                    target,
                    deadline: now + grace,
                    killed: false,
                }
            })
            .collect();
        Stop {
            pending,
            pause: FIRST_PAUSE,
            outcome: Outcome::default(),
        }
    }

    /// Forgets the targets that are gone, kills those past their deadline, gives
    /// up on those killed [`KILL_WAIT`] ago; then says how long to wait before
    /// the next step, or `None` when nothing is left.
    pub fn step(&mut self, now: Instant) -> Option<Duration> {
        let outcome = &mut self.outcome;
        self.pending.retain_mut(|p| {
            if !p.target.alive() {
                return false;
            }
            if now < p.deadline {
                return true;
            }
            if p.killed {
                outcome.left += 1;
                return false;
            }
            if let Err(e) = p.target.signal(Signal::SIGKILL) {
                warn!("cannot kill {}: {e}", p.target);
            }
            outcome.killed += 1;
            p.killed = true;
            p.deadline = now + KILL_WAIT;
            true
        });
        let next = self.pending.iter().map(|p| p.deadline).min()?;
        let pause = self.pause.min(next.saturating_duration_since(now));
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        Some(pause.max(Duration::from_micros(100)))
    }

    /// How it ended (once [`Stop::step`] said `None`).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
}

/// Stops `targets` (see the module doc), on the runtime.
pub async fn stop(targets: Vec<(Target, Duration)>, signal: Option<Signal>) -> Outcome {
    let mut stop = Stop::start(targets, signal);
    while let Some(pause) = stop.step(Instant::now()) {
        tokio::time::sleep(pause).await;
    }
    stop.outcome()
}

/// Stops `targets` (see the module doc), blocking the current thread.
pub fn stop_blocking(targets: Vec<(Target, Duration)>, signal: Option<Signal>) -> Outcome {
    let mut stop = Stop::start(targets, signal);
    while let Some(pause) = stop.step(Instant::now()) {
        std::thread::sleep(pause); // poll: these are not this thread's children
    }
    stop.outcome()
}

/// The processes of `found` as targets, each with `grace`.
pub fn processes(found: &[Found], grace: Duration) -> Vec<(Target, Duration)> {
    found.iter().map(|f| (Target::Process(*f), grace)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("sh")
    }

    fn found(child: &std::process::Child) -> Found {
        let pid = child.id();
        let start = read_stat(pid).map(|s| s.start).unwrap_or(0);
        Found { pid, start }
    }

    #[test]
    fn a_group_that_obeys_goes_without_sigkill_and_one_that_ignores_is_killed() {
        let mut polite = spawn("sleep 1000");
        let mut stubborn = spawn("trap '' TERM; while :; do sleep 0.05; done");
        let polite_group = Target::Group(polite.id());
        let stubborn_one = Target::Process(found(&stubborn));
        // Let the trap be set before SIGTERM is sent.
        std::thread::sleep(Duration::from_millis(200));
        let reaper = std::thread::spawn(move || {
            let _ = polite.wait();
            let _ = stubborn.wait();
        });
        let began = Instant::now();
        let outcome = stop_blocking(
            vec![
                (polite_group, Duration::from_secs(5)),
                (stubborn_one, Duration::from_millis(300)),
            ],
            Some(Signal::SIGTERM),
        );
        let _ = reaper.join();
        assert_eq!(outcome, Outcome { killed: 1, left: 0 });
        assert!(!polite_group.alive() && !stubborn_one.alive());
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        let mut child = spawn("sleep 1000");
        let mut other = found(&child);
        other.start += 1;
        let target = Target::Process(other);
        assert!(!target.alive());
        assert!(target.signal(Signal::SIGKILL).is_ok());
        assert!(Target::Process(found(&child)).alive(), "left alone");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn nothing_to_stop_ends_at_once() {
        let mut stop = Stop::start(Vec::new(), Some(Signal::SIGTERM));
        assert_eq!(stop.step(Instant::now()), None);
        assert_eq!(stop.outcome(), Outcome::default());
    }
}
