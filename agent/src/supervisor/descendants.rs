//! What the supervisor does with what its processes started: the descendants of a
//! worker go with it, including those that left its process group or session.
//!
//! Which processes are a worker's is decided by [`crate::lineage`] from a
//! snapshot of `/proc` (ancestry while the worker lives, then the worker's mark);
//! they are stopped with [`crate::terminate`]. When:
//!
//! | moment | what goes | how |
//! | --- | --- | --- |
//! | `stop`, `decr`, `reload`, `max_age`: while the workers stop | with `stop_children`, their descendants outside the group get the stop signal with the group | a snapshot before the signal |
//! | the same, once the workers are gone | what is left of them (in or out of their groups; for a whole watcher, every orphan marked with its name) | SIGKILL at once, as the group gets today |
//! | a worker exited by itself and left processes in its group | the group and its descendants outside it, before the slot is filled again | stop signal, SIGKILL after `graceful_timeout` |
//! | a worker exited by itself with an empty group | its descendants outside the group, while the slot is filled again | the same, from a scan shared by the exits of [`SWEEP_GAP`] (or 20 times the last scan's time) |
//! | `quit` or SIGTERM, once every watcher stopped | every process below the agent that nobody waits for | SIGTERM, SIGKILL after [`STRAY_GRACE`] |
//! | a second SIGTERM | everything below the agent | SIGKILL |
//!
//! The scan of `/proc` is kept off the respawn path: an exit with an empty group
//! (the common case) only queues its worker's mark, and the queue is scanned once
//! per [`SWEEP_GAP`] at most, and never more than 1/[`SWEEP_DUTY`] of the time
//! (a scan reads the `stat` of every process of the host).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringmaster_protocol::Signal;
use tracing::{info, warn};

use super::{to_nix, Agent};
use crate::lineage::{Found, Mark, Snapshot, Worker};
use crate::reaper;
use crate::terminate::{self, Target};

/// How long strays get between SIGTERM and SIGKILL at `quit`.
pub const STRAY_GRACE: Duration = Duration::from_secs(3);

/// The shortest time between two scans for what workers that exited by
/// themselves left outside their groups.
pub const SWEEP_GAP: Duration = Duration::from_millis(20);

/// Between two such scans, at least this many times as long as the last one
/// took: however many processes the host runs, the scans of a watcher whose
/// workers exit all the time take at most about 1/20 of the agent's time.
pub const SWEEP_DUTY: u32 = 20;

/// What a stop sweeps once its workers are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sweep {
    /// The descendants of the stopped workers.
    Workers,
    /// Those, and every orphan marked with the watcher's name.
    Watcher,
}

/// Workers that exited by themselves, whose descendants outside their groups
/// are still to be looked for.
#[derive(Debug, Default)]
pub(super) struct SweepQueue {
    pending: RefCell<Vec<(String, u32, Mark)>>,
    running: Cell<bool>,
}

/// A live (or just gone) worker and its mark, owned.
pub(super) type Marked = (u32, Mark);

fn live(marked: &[Marked]) -> Vec<Worker<'_>> {
    marked
        .iter()
        .map(|(pid, mark)| Worker::live(*pid, mark))
        .collect()
}

fn gone(marked: &[Marked]) -> Vec<Worker<'_>> {
    marked
        .iter()
        .map(|(pid, mark)| Worker::gone(*pid, mark))
        .collect()
}

fn snapshot() -> Snapshot {
    Snapshot::take(std::process::id(), reaper::tracked())
}

impl Agent {
    /// The stop signal and graceful timeout of watcher `name`.
    fn stop_policy(&self, name: &str) -> (Signal, Duration) {
        self.with_watcher(name, |w| {
            (
                w.config.stop_signal,
                Duration::from_secs_f64(w.config.graceful_timeout),
            )
        })
        .unwrap_or((Signal::Term, Duration::ZERO))
    }

    /// The descendants of `workers` (not reaped yet) outside their process
    /// groups.
    pub(super) fn escaped(&self, workers: &[Marked]) -> Vec<Found> {
        if workers.is_empty() {
            return Vec::new();
        }
        snapshot().escaped(&live(workers))
    }

    /// Sends `signal` to each of `found`, descendants of watcher `name`.
    pub(super) fn signal_found(&self, name: &str, found: &[Found], signal: Signal) {
        let Some(sig) = to_nix(signal) else {
            return;
        };
        for f in found {
            if let Err(e) = Target::Process(*f).signal(sig) {
                warn!(watcher = name, pid = f.pid, "cannot send {signal}: {e}");
            }
        }
    }

    /// Once `stopped` are gone: SIGKILL to what is left of them (and, with
    /// [`Sweep::Watcher`], to every orphan marked as the watcher's), as their
    /// groups get.
    pub(super) async fn finish_stop(&self, name: &str, stopped: &[Marked], sweep: Sweep) {
        if stopped.is_empty() && sweep == Sweep::Workers {
            return;
        }
        let snapshot = snapshot();
        let mut found = snapshot.descendants(&gone(stopped));
        if sweep == Sweep::Watcher {
            found.extend(snapshot.of_watcher(name));
            found.sort();
            found.dedup();
        }
        if found.is_empty() {
            return;
        }
        info!(
            watcher = name,
            "killing {} process(es) its stopped processes left",
            found.len()
        );
        let outcome = terminate::stop(terminate::processes(&found, Duration::ZERO), None).await;
        if outcome.left > 0 {
            warn!(
                watcher = name,
                "{} process(es) left by its stopped processes are still running after SIGKILL",
                outcome.left
            );
        }
    }

    /// Stops what a leader that exited by itself left behind: its process group
    /// and its descendants outside it, with the stop signal, then SIGKILL after
    /// `graceful_timeout`.
    pub(super) async fn stop_leftovers(&self, name: &str, leader: u32, mark: &Mark) {
        let escaped = snapshot().escaped(&[Worker::gone(leader, mark)]);
        let mut targets = vec![Target::Group(leader)];
        targets.extend(escaped.iter().map(|f| Target::Process(*f)));
        self.stop_targets(name, leader, targets).await;
    }

    async fn stop_targets(&self, name: &str, leader: u32, targets: Vec<Target>) {
        let (signal, graceful) = self.stop_policy(name);
        info!(
            watcher = name,
            leader,
            "stopping {} group(s) or process(es) that process {leader} left",
            targets.len()
        );
        let targets = targets.into_iter().map(|t| (t, graceful)).collect();
        let outcome = terminate::stop(targets, to_nix(signal)).await;
        if outcome.killed > 0 {
            warn!(
                watcher = name,
                leader, "{} of what process {leader} left needed SIGKILL", outcome.killed
            );
        }
        if outcome.left > 0 {
            warn!(
                watcher = name,
                leader,
                "{} of what process {leader} left is still running after SIGKILL",
                outcome.left
            );
        }
    }

    /// Looks, soon and off the respawn path, for what `leader` (which exited by
    /// itself with nothing left in its group) left outside its group, and stops
    /// it.
    pub(super) fn sweep_later(self: &Rc<Self>, name: &str, leader: u32, mark: Mark) {
        self.sweeps
            .pending
            .borrow_mut()
            .push((name.to_string(), leader, mark));
        if self.sweeps.running.replace(true) {
            return;
        }
        let agent = Rc::clone(self);
        tokio::task::spawn_local(async move { agent.sweep_queue().await });
    }

    async fn sweep_queue(self: Rc<Self>) {
        loop {
            let batch = std::mem::take(&mut *self.sweeps.pending.borrow_mut());
            if batch.is_empty() {
                self.sweeps.running.set(false);
                return;
            }
            let scanned = Instant::now();
            let snapshot = snapshot();
            let gap = SWEEP_GAP.max(scanned.elapsed() * SWEEP_DUTY);
            for (name, leader, mark) in batch {
                let found = snapshot.descendants(&[Worker::gone(leader, &mark)]);
                if found.is_empty() {
                    continue;
                }
                let agent = Rc::clone(&self);
                tokio::task::spawn_local(async move {
                    let targets = found.into_iter().map(Target::Process).collect();
                    agent.stop_targets(&name, leader, targets).await;
                });
            }
            tokio::time::sleep_until((scanned + gap).into()).await;
        }
    }

    /// At `quit`, once every watcher stopped: every process below the agent
    /// that nobody waits for (what hooks, `exec` or removed watchers left, and
    /// anything missed) gets SIGTERM, then SIGKILL after [`STRAY_GRACE`].
    pub(super) async fn stop_strays(&self) {
        let strays = snapshot().strays();
        if strays.is_empty() {
            return;
        }
        info!("stopping {} process(es) left below the agent", strays.len());
        let outcome = terminate::stop(
            terminate::processes(&strays, STRAY_GRACE),
            Some(nix::sys::signal::Signal::SIGTERM),
        )
        .await;
        if outcome.left > 0 {
            warn!(
                "{} process(es) below the agent are still running after SIGKILL",
                outcome.left
            );
        }
    }

    /// SIGKILL to every process below the agent but its own children (a second
    /// SIGTERM; the children's groups are killed by the caller).
    pub(super) fn kill_everything_below(&self) {
        for found in snapshot().everything() {
            let _ = Target::Process(found).signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
