//! Waiting for the children the agent did not spawn in this program image: the
//! processes an upgrade in place handed over (see [`crate::upgrade`]). They are
//! the agent's children (same pid), but tokio has no handle on them, so they are
//! reaped here: on every SIGCHLD, and once right after they are adopted (one may
//! have exited during the `exec`), each adopted pid is asked `waitpid(pid,
//! WNOHANG)`. Only those pids: a `waitpid(-1)` would take the exit status of a
//! child tokio waits for.
//!
//! Each adopted pid is registered with [`crate::reaper`] from the moment the
//! new image starts until it is reaped here, so that the orphan reaper never
//! takes its status. Everything runs on the agent's one runtime thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tracing::warn;

/// How an adopted process ended: its status, or an error when it could not be
/// waited for (it was reaped before it was adopted).
pub type Ended = std::io::Result<ExitStatus>;

/// The adopted children and whoever waits for each.
#[derive(Default)]
pub struct Adopted {
    waiting: RefCell<HashMap<u32, oneshot::Sender<Ended>>>,
    watching: std::cell::Cell<bool>,
}

impl Adopted {
    /// Waits for child `pid` from now on; the receiver gets how it ended.
    pub fn adopt(self: &Rc<Self>, pid: u32) -> oneshot::Receiver<Ended> {
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(pid, tx);
        if !self.watching.replace(true) {
            let adopted = Rc::clone(self);
            tokio::task::spawn_local(async move { adopted.watch().await });
        }
        rx
    }

    /// How many are still running.
    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    /// True when none is left.
    pub fn is_empty(&self) -> bool {
        self.waiting.borrow().is_empty()
    }

    async fn watch(self: Rc<Self>) {
        let mut children = match signal(SignalKind::child()) {
            Ok(stream) => Some(stream),
            Err(e) => {
                warn!("cannot watch SIGCHLD ({e}): adopted processes are checked every second");
                None
            }
        };
        loop {
            self.reap();
            if self.is_empty() {
                self.watching.set(false);
                return;
            }
            match children.as_mut() {
                Some(stream) => {
                    stream.recv().await;
                }
                None => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            }
        }
    }

    /// Reaps every adopted child that has ended.
    fn reap(&self) {
        let pids: Vec<u32> = self.waiting.borrow().keys().copied().collect();
        for pid in pids {
            let Some(ended) = check(pid) else {
                continue;
            };
            crate::reaper::untrack(pid);
            if let Some(tx) = self.waiting.borrow_mut().remove(&pid) {
                let _ = tx.send(ended);
            }
        }
    }
}

/// `Some` when child `pid` has ended (and is reaped now).
fn check(pid: u32) -> Option<Ended> {
    let raw = i32::try_from(pid).ok()?;
    match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(status) => Some(Ok(to_exit_status(status)?)),
        Err(nix::Error::EINTR) => None,
        Err(e) => Some(Err(std::io::Error::from(e))),
    }
}

/// The standard library's view of a wait status (the raw `wait` encoding).
fn to_exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, signal, core) => Some(ExitStatus::from_raw(
            signal as i32 | if core { 0x80 } else { 0 },
        )),
        // Stopped or continued: not an end.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_read_as_the_standard_library_reads_them() {
        let pid = Pid::from_raw(5);
        let exited = to_exit_status(WaitStatus::Exited(pid, 3));
        assert_eq!(exited.and_then(|s| s.code()), Some(3));
        let killed = to_exit_status(WaitStatus::Signaled(
            pid,
            nix::sys::signal::Signal::SIGKILL,
            false,
        ));
        assert_eq!(killed.and_then(|s| s.signal()), Some(9));
        assert_eq!(killed.and_then(|s| s.code()), None);
        let dumped = to_exit_status(WaitStatus::Signaled(
            pid,
            nix::sys::signal::Signal::SIGSEGV,
            true,
        ));
        assert!(dumped.is_some_and(|s| s.core_dumped()));
        assert!(to_exit_status(WaitStatus::StillAlive).is_none());
    }

    #[test]
    fn a_child_not_spawned_by_tokio_is_reaped_with_its_status() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::task::LocalSet::new().block_on(&runtime, async {
            // A child whose handle is forgotten stands for one from the image
            // before an upgrade.
            let child = std::process::Command::new("sh")
                .args(["-c", "exit 7"])
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"));
            let pid = child.id();
            drop(child);
            let adopted = Rc::new(Adopted::default());
            let ended = adopted.adopt(pid);
            let status = tokio::time::timeout(std::time::Duration::from_secs(10), ended)
                .await
                .unwrap_or_else(|_| panic!("child {pid} was not reaped within 10 s"))
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status.code(), Some(7));
            assert!(adopted.is_empty());
        });
    }
}
