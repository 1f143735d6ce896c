//! The agent as its descendants' reaper: a child subreaper that reaps the orphans
//! it inherits without ever taking an exit status that someone else waits for.
//!
//! # Subreaper, not a cgroup
//!
//! At start the agent sets `PR_SET_CHILD_SUBREAPER`: a process below it whose
//! parent dies is reparented to the agent instead of init, so everything a worker
//! starts stays in the agent's subtree, where [`crate::lineage`] finds it even
//! after a double fork or `setsid`. A cgroup per process would hold them as well
//! (and survive the agent), but it needs a writable, delegated cgroup2 hierarchy:
//! hosts that still run the v1/v2 hybrid have no controller there, systemd gives a
//! unit its own subtree only with `Delegate=yes`, and containers usually mount
//! `/sys/fs/cgroup` read-only. The subreaper works for every agent, root or not,
//! and under systemd the unit's cgroup (`KillMode=control-group`) already covers
//! the agent's own death.
//!
//! # Whose exit status is whose
//!
//! Orphans reparented to the agent become its zombies when they die, and must be
//! reaped. The agent's own children are reaped by tokio (`tokio::process::Child`,
//! through a pidfd or SIGCHLD, each by its pid); a `waitpid(-1)` would steal their
//! statuses. So every child the agent waits for itself is in a registry of pids:
//! [`spawn`] starts a `tokio::process::Command` and registers its pid under the
//! registry's lock, so no reap can come between the fork and the registration;
//! [`OwnChild`] removes it once its status was collected. Code that waits for a
//! child by other means (a pidfd and `waitid`, e.g. processes adopted across an
//! upgrade in place) registers it with [`track`] and removes it with [`untrack`]
//! after it reaped it.
//!
//! On every SIGCHLD (tokio's own handling of the signal goes on beside it),
//! [`reap_orphans`] looks at the first waitable child without reaping it
//! (`waitid(P_ALL, WNOWAIT)`) and reaps it with `waitpid(pid, WNOHANG)` only when
//! it is not registered; when a registered child is first in line (its owner has
//! not collected it yet), it falls back to the agent's zombie children in `/proc`
//! and reaps the unregistered ones by pid.
//!
//! # SIGCHLD goes to a thread of its own
//!
//! Watching SIGCHLD installs a handler, and a handled signal interrupts the
//! system call of the thread it lands on: a libzmq call on the runtime thread
//! then fails with `EINTR` (a request would be lost at every exit of a child).
//! So [`route_sigchld`], called first thing in `main`, blocks SIGCHLD in the main
//! thread, which every later thread inherits (the runtime's, libzmq's), and
//! starts one idle thread that leaves it unblocked: the kernel delivers SIGCHLD
//! there, and the handler only tells the runtime. Children do not inherit the
//! blocked signal: the standard library empties the signal mask of a child
//! before `exec` (and before `pre_exec` steps).
//!
//! Everything that spawns a child and the reaper run on the agent's one
//! `current_thread` runtime thread; the lock makes the registration atomic even so
//! (a spawn from another thread would be safe too). The only other `Command` in
//! the agent's crate is in a unit test of [`crate::stats`].

use std::collections::BTreeSet;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, warn};

use crate::lineage::Snapshot;

/// The pids of the agent's children that someone waits for by pid.
static OWN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn own() -> MutexGuard<'static, BTreeSet<u32>> {
    // A panic while the set was held leaves it consistent (each change is one
    // insert or remove): go on with it.
    OWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers `pid`, a child of the agent whose exit status its caller collects:
/// the orphan reaper leaves it alone until [`untrack`].
pub fn track(pid: u32) {
    own().insert(pid);
}

/// Removes `pid` from the registry, once its status was collected.
pub fn untrack(pid: u32) {
    own().remove(&pid);
}

/// Whether `pid` is registered.
pub fn is_tracked(pid: u32) -> bool {
    own().contains(&pid)
}

/// The registered pids.
pub fn tracked() -> BTreeSet<u32> {
    own().clone()
}

/// Makes the agent a child subreaper (see the module doc). Call it before the
/// agent starts any process.
pub fn become_subreaper() {
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => debug!("the agent is a child subreaper"),
        Err(e) => warn!(
            "cannot become a child subreaper ({e}): processes that leave their worker's \
             process group and outlive their parent are reparented to init, and stop or \
             quit cannot find them"
        ),
    }
}

/// Routes SIGCHLD to a thread of its own (see the module doc). Call it first
/// thing in `main`, before any other thread exists.
pub fn route_sigchld() {
    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    if let Err(e) = sigchld.thread_block() {
        warn!("cannot block SIGCHLD in the main thread: {e}");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sigchld".into())
        .spawn(move || {
            if let Err(e) = sigchld.thread_unblock() {
                warn!("cannot unblock SIGCHLD for its thread: {e}");
            }
            loop {
                std::thread::park();
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the thread that takes SIGCHLD ({e}); the main thread takes it");
        let _ = sigchld.thread_unblock();
    }
}

/// What to do with a child that is still running when its [`OwnChild`] is
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// Let it run (it is waited for in the background).
    Keep,
    /// SIGKILL it (as `kill_on_drop`), then wait for it in the background.
    Kill,
}

/// A child of the agent that is registered until its status is collected.
///
/// It derefs to the `tokio::process::Child`; await [`OwnChild::wait`] rather
/// than the child's own. Dropped while the child runs, it leaves the child
/// registered, waits for it on the runtime and only then unregisters it.
#[derive(Debug)]
pub struct OwnChild {
    child: Option<Child>,
    pid: u32,
    on_drop: OnDrop,
}

/// Spawns `command` and registers its child, atomically for the reaper.
pub fn spawn(command: &mut Command, on_drop: OnDrop) -> std::io::Result<OwnChild> {
    let mut own = own();
    let child = command.spawn()?;
    let Some(pid) = child.id() else {
        return Err(std::io::Error::other("the child has no pid"));
    };
    own.insert(pid);
    drop(own);
    Ok(OwnChild {
        child: Some(child),
        pid,
        on_drop,
    })
}

impl OwnChild {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for it to exit, and unregisters it once its status is collected.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("the child was waited for already"));
        };
        let status = child.wait().await;
        if status.is_ok() {
            untrack(self.pid);
        }
        status
    }
}

impl std::ops::Deref for OwnChild {
    type Target = Child;

    fn deref(&self) -> &Child {
        // Always Some until drop.
        self.child
            .as_ref()
            .unwrap_or_else(|| unreachable!("an OwnChild holds its child until it is dropped"))
    }
}

impl std::ops::DerefMut for OwnChild {
    fn deref_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| unreachable!("an OwnChild holds its child until it is dropped"))
    }
}

impl Drop for OwnChild {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid;
        match child.try_wait() {
            Ok(None) => {
                if self.on_drop == OnDrop::Kill {
                    let _ = child.start_kill();
                }
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            if child.wait().await.is_ok() {
                                untrack(pid);
                            }
                        });
                    }
                    // No runtime (the agent is ending): tokio reaps it; it stays
                    // registered, so the reaper never takes it.
                    Err(_) => drop(child),
                }
            }
            Ok(Some(_)) => untrack(pid),
            Err(e) => debug!(pid, "cannot learn whether child {pid} exited: {e}"),
        }
    }
}

/// What one look at the exited children found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every exited child nobody waits for was reaped (this many).
    Clear(usize),
    /// A registered child is first in line (its owner has not collected it yet);
    /// this many were reaped before it.
    Blocked(usize),
}

/// Reaps the agent's children that died and that nobody waits for (see the
/// module doc), looking in `/proc` when a registered child hides them; returns
/// how many.
pub fn reap_orphans() -> usize {
    match reap_pass() {
        Pass::Clear(reaped) => reaped,
        Pass::Blocked(reaped) => reaped + reap_unclaimed_zombies(),
    }
}

/// Reaps exited children that nobody waits for, one after the other, until none
/// is left or a registered one is first in line.
fn reap_pass() -> Pass {
    let mut reaped = 0;
    let blocked = {
        let own = own();
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::All, flags) {
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => break false,
                Err(nix::Error::EINTR) => {}
                Err(e) => {
                    warn!("cannot look for exited children: {e}");
                    break false;
                }
                Ok(status) => match status.pid() {
                    Some(pid) if own.contains(&pid_u32(pid)) => break true,
                    Some(pid) => {
                        if reap(pid) {
                            reaped += 1;
                        } else {
                            break false;
                        }
                    }
                    None => break false,
                },
            }
        }
    };
    if blocked {
        Pass::Blocked(reaped)
    } else {
        Pass::Clear(reaped)
    }
}

fn pid_u32(pid: Pid) -> u32 {
    u32::try_from(pid.as_raw()).unwrap_or(0)
}

/// Reaps `pid`; false when it could not.
fn reap(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(status) => {
            debug!("reaped orphan {pid}: {status:?}");
            true
        }
        Err(e) => {
            warn!("cannot reap orphan {pid}: {e}");
            false
        }
    }
}

/// The slow way, when a registered child is first in line: the agent's zombie
/// children in `/proc` that nobody waits for, each reaped by pid.
fn reap_unclaimed_zombies() -> usize {
    let me = std::process::id();
    let own = own();
    let snapshot = Snapshot::take(me, own.clone());
    snapshot
        .unclaimed_zombies()
        .into_iter()
        .filter(|pid| !own.contains(pid))
        .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
        .filter(|pid| reap(*pid))
        .count()
}

/// Reaps orphans on every SIGCHLD, for the agent's life. Runs on the agent's
/// runtime.
pub async fn reap_forever() {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(sigchld) => sigchld,
        Err(e) => {
            warn!("cannot watch SIGCHLD ({e}): orphans are not reaped");
            return;
        }
    };
    info!("reaping orphaned descendants");
    while sigchld.recv().await.is_some() {
        // A registered child first in line is, almost always, a worker whose
        // exit its task is about to collect (woken by the same exit): let it run
        // and look again, a few times, before taking the slow way.
        for attempt in 0..=BLOCKED_RETRIES {
            match reap_pass() {
                Pass::Clear(_) => break,
                Pass::Blocked(_) if attempt < BLOCKED_RETRIES => {
                    tokio::task::yield_now().await;
                }
                Pass::Blocked(_) => {
                    reap_unclaimed_zombies();
                }
            }
        }
    }
}

/// How often the reaper lets the runtime run before it looks in `/proc` for
/// orphans hidden behind a registered child.
const BLOCKED_RETRIES: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registered_child_keeps_its_status_and_an_orphan_is_reaped() {
        // A child whose status tokio collects, and a child nobody waits for
        // (standing for an orphan): only the latter is reaped here.
        let mut mine =
            spawn(Command::new("true").kill_on_drop(false), OnDrop::Keep).expect("spawn true");
        let orphan = std::process::Command::new("true").spawn().expect("true");
        let orphan_pid = orphan.id();
        drop(orphan);
        assert!(is_tracked(mine.pid()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::survivors::read_stat(orphan_pid).is_some() {
            reap_orphans();
            assert!(
                std::time::Instant::now() < deadline,
                "orphan {orphan_pid} not reaped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let status = mine.wait().await.expect("the registered child's status");
        assert!(status.success());
        assert!(!is_tracked(mine.pid()));
    }

    #[tokio::test]
    async fn a_child_dropped_while_running_stays_registered_until_reaped() {
        let child = spawn(Command::new("sleep").arg("1000"), OnDrop::Kill).expect("sleep");
        let pid = child.pid();
        drop(child);
        assert!(is_tracked(pid), "killed, not reaped yet");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_tracked(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} still registered"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
