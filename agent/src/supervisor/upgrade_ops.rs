//! The supervisor's side of an upgrade in place (see [`crate::upgrade`]): in the
//! old program image, checking the new binary, freezing and writing the
//! handover; in the new one, taking every handed-over process back.

use crate::machine::Input;
use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use ringmaster_protocol::logs::LogStream;
use ringmaster_protocol::message::{UpgradeReport, WatcherState};
use ringmaster_protocol::{ErrorKind, ErrorReply, RINGMASTER_VERSION};
use tracing::{info, warn};

use super::{now_secs, Agent, CmdResult, Proc};
use crate::lineage::Mark;
use crate::output::{CaptureEnd, Captured};
use crate::upgrade::{
    self, HandedEndpoint, HandedProcess, HandedWatcher, Handover, UpgradeError, FORMAT,
};

/// How long the output thread may take to hand over its pipes.
const OUTPUT_HANDOVER: Duration = Duration::from_secs(5);

/// An upgrade that passed its checks, waiting for its reply to go out.
pub struct UpgradePlan {
    /// The binary to execute.
    pub binary: PathBuf,
    /// The handover file.
    pub handover: PathBuf,
    /// Every descriptor to keep open across the `exec`.
    pub descriptors: Vec<RawFd>,
    /// The duplicates of the output pipes, open until the `exec`.
    _pipes: Vec<OwnedFd>,
}

/// What a new program image took over.
#[derive(Debug, Default)]
pub struct TakenOver {
    /// Processes adopted.
    pub processes: usize,
    /// Watchers named by the handover.
    pub watchers: BTreeSet<String>,
    /// On-demand watchers that were waiting for a connection: their wait is
    /// armed again by [`Agent::start_new`].
    pub waiting: BTreeSet<String>,
}

/// The mark of an adopted process: as handed over, else as its environment
/// says, else a new one (its descendants are then found by ancestry only).
fn adopted_mark(name: &str, p: &HandedProcess) -> Mark {
    p.mark
        .as_deref()
        .and_then(Mark::parse)
        .or_else(|| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .ok()
                .and_then(|environ| Mark::in_environ(&environ))
        })
        .unwrap_or_else(|| Mark::new(name, p.wid))
}

fn refused(e: &UpgradeError) -> ErrorReply {
    let kind = match e {
        UpgradeError::Binary { .. } | UpgradeError::Refused { .. } => ErrorKind::BadArguments,
        UpgradeError::Busy(_) => ErrorKind::ShuttingDown,
        UpgradeError::Io(_) => ErrorKind::Os,
    };
    ErrorReply::new(
        kind,
        format!("upgrade refused, nothing was changed and every process runs on: {e}"),
    )
}

impl Agent {
    /// `upgrade`: checks `binary` (or the running binary), freezes the agent,
    /// writes the handover and has the new binary check it. On success the
    /// plan waits for the reply to go out ([`Agent::upgrade_ready`]); on failure
    /// the agent goes on as before.
    pub(super) async fn upgrade(
        self: &Rc<Self>,
        binary: Option<String>,
    ) -> CmdResult<UpgradeReport> {
        if self.upgrading.get() {
            return Err(refused(&UpgradeError::Busy(
                "another upgrade is under way".into(),
            )));
        }
        let Some(config) = self.config_path.clone() else {
            return Err(refused(&UpgradeError::Busy(
                "the agent runs without a config file; a new image could not read one".into(),
            )));
        };
        let Some((control, pubsub)) = self.endpoint_fds.get() else {
            return Err(refused(&UpgradeError::Busy(
                "the agent's endpoints were not bound to sockets it can hand over".into(),
            )));
        };
        let binary =
            upgrade::binary_path(binary.as_deref(), &self.binary).map_err(|e| refused(&e))?;
        let to_version = upgrade::check_binary(&binary)
            .await
            .map_err(|e| refused(&e))?;
        self.upgrading.set(true);
        let prepared = self
            .prepare_upgrade(&binary, &config, (control, pubsub))
            .await;
        match prepared {
            Ok((plan, handover)) => {
                let report = UpgradeReport {
                    from_version: RINGMASTER_VERSION.to_string(),
                    to_version,
                    binary: binary.display().to_string(),
                    processes: u32::try_from(handover.process_count()).unwrap_or(u32::MAX),
                    sockets: u32::try_from(handover.sockets.len() + 2).unwrap_or(u32::MAX),
                };
                info!(
                    "upgrade checked: {} → {} ({}), handing over {} process(es)",
                    report.from_version, report.to_version, report.binary, report.processes
                );
                *self.upgrade_plan.borrow_mut() = Some(plan);
                Ok(report)
            }
            Err(e) => {
                warn!("{}", e.message);
                self.thaw();
                Err(e)
            }
        }
    }

    /// Freezes the agent and writes the handover; the new binary must accept it.
    async fn prepare_upgrade(
        self: &Rc<Self>,
        binary: &Path,
        config: &Path,
        (control, pubsub): (RawFd, RawFd),
    ) -> CmdResult<(UpgradePlan, Handover)> {
        // No command may be half-done: take every watcher's lock, then freeze
        // (no spawn, changes refused) before letting them go.
        let locks: Vec<_> = self
            .state
            .borrow()
            .watchers
            .values()
            .map(|w| Rc::clone(&w.lock))
            .collect();
        let mut guards = Vec::with_capacity(locks.len());
        for lock in &locks {
            guards.push(lock.lock().await);
        }
        self.shutting_down.set(true);
        drop(guards);
        self.refuse_if_busy().map_err(|e| refused(&e))?;

        let pipes = self
            .output
            .hand_over(OUTPUT_HANDOVER)
            .await
            .map_err(|e| refused(&UpgradeError::Io(format!("cannot hand over output: {e}"))))?;
        let streams: HashMap<(u32, LogStream), RawFd> = pipes
            .iter()
            .map(|p| ((p.pid, p.stream), p.fd.as_raw_fd()))
            .collect();
        let handover = self.handover(&streams, (control, pubsub));
        handover
            .validate()
            .map_err(|e| refused(&UpgradeError::Io(e)))?;
        handover
            .write(&self.handover_path)
            .map_err(|e| refused(&e))?;
        if let Err(e) = upgrade::check_resume(binary, config, &self.handover_path).await {
            let _ = std::fs::remove_file(&self.handover_path);
            return Err(refused(&e));
        }
        // Processes that exited during the checks were reaped and reported by this
        // image; handed over, the next one would report them a second time (with
        // no exit status). An exit between here and the `exec` still can be.
        let gone: Vec<u32> = handover
            .pids()
            .into_iter()
            .filter(|pid| !self.state.borrow().owners.contains_key(pid))
            .collect();
        let handover = if gone.is_empty() {
            handover
        } else {
            let again = self.handover(&streams, (control, pubsub));
            again.write(&self.handover_path).map_err(|e| refused(&e))?;
            again
        };
        let plan = UpgradePlan {
            binary: binary.to_path_buf(),
            handover: self.handover_path.clone(),
            descriptors: handover.descriptors(),
            _pipes: pipes.into_iter().map(|p| p.fd).collect(),
        };
        Ok((plan, handover))
    }

    /// Refuses a handover while something is in motion that the next image
    /// could not finish: a process being stopped, a spawn hook, a watcher in the
    /// middle of a start or a stop.
    fn refuse_if_busy(&self) -> Result<(), UpgradeError> {
        let state = self.state.borrow();
        for (name, w) in &state.watchers {
            let stopping = w.procs.values().filter(|p| p.stopping).count();
            if stopping > 0 {
                return Err(UpgradeError::Busy(format!(
                    "watcher '{name}' has {stopping} process(es) being stopped; try again when \
                     they are gone"
                )));
            }
            if !w.pending.is_empty() {
                return Err(UpgradeError::Busy(format!(
                    "watcher '{name}' has a process waiting for its spawn hook; try again in a \
                     moment"
                )));
            }
            if matches!(w.state(), WatcherState::Starting | WatcherState::Stopping) {
                return Err(UpgradeError::Busy(format!(
                    "watcher '{name}' is {}; try again when it is done",
                    w.state()
                )));
            }
        }
        Ok(())
    }

    /// The handover of the agent as it is now.
    fn handover(
        &self,
        streams: &HashMap<(u32, LogStream), RawFd>,
        (control, pubsub): (RawFd, RawFd),
    ) -> Handover {
        let state = self.state.borrow();
        let now = Instant::now();
        let watchers = state
            .watchers
            .iter()
            .map(|(name, w)| HandedWatcher {
                name: name.clone(),
                state: w.state(),
                processes: w
                    .procs
                    .iter()
                    .map(|(pid, p)| HandedProcess {
                        pid: *pid,
                        wid: p.wid,
                        started: now_secs(p.started),
                        ran: now.duration_since(p.since).as_secs_f64(),
                        stdout: streams.get(&(*pid, LogStream::Stdout)).copied(),
                        stderr: streams.get(&(*pid, LogStream::Stderr)).copied(),
                        mark: Some(p.mark.value()),
                    })
                    .collect(),
            })
            .collect();
        Handover {
            format: FORMAT,
            from_version: RINGMASTER_VERSION.to_string(),
            upgrades: self.upgrades.get(),
            uptime: self.uptime().as_secs_f64(),
            seq: self.seq.get(),
            control: HandedEndpoint {
                endpoint: self.control.clone(),
                fd: control,
            },
            pubsub: HandedEndpoint {
                endpoint: self.pubsub.clone(),
                fd: pubsub,
            },
            sockets: self.sockets.borrow().iter().map(|s| s.handed()).collect(),
            watchers,
            replay: None,
        }
    }

    /// Resolves once an upgrade's reply has gone out: its plan, for the `exec`.
    pub async fn upgrade_ready(&self) -> UpgradePlan {
        loop {
            self.upgrade_go.notified().await;
            if let Some(plan) = self.upgrade_plan.borrow_mut().take() {
                return plan;
            }
        }
    }

    /// Called once the reply to a successful `upgrade` was sent.
    pub fn upgrade_reply_sent(&self) {
        if self.upgrade_plan.borrow().is_some() {
            self.upgrade_go.notify_one();
        }
    }

    /// Ends a freeze (a refused upgrade, or an `exec` that failed): the agent
    /// goes on, and fills what emptied meanwhile.
    pub fn thaw(self: &Rc<Self>) {
        self.upgrade_plan.borrow_mut().take();
        self.shutting_down.set(false);
        self.upgrading.set(false);
        let active: Vec<String> = self
            .state
            .borrow()
            .watchers
            .iter()
            .filter(|(_, w)| w.life.is_active())
            .map(|(name, _)| name.clone())
            .collect();
        for name in active {
            self.fill(&name);
        }
    }

    /// In the new program image: adopts every process of `handover`, with its
    /// output pipes (`pipes`, inherited), and keeps each watcher's state.
    pub fn take_over(
        self: &Rc<Self>,
        handover: &Handover,
        mut pipes: HashMap<(u32, LogStream), OwnedFd>,
    ) -> TakenOver {
        self.upgrades.set(handover.upgrades.saturating_add(1));
        self.uptime_before
            .set(Duration::try_from_secs_f64(handover.uptime).unwrap_or_default());
        self.seq.set(handover.seq);
        let mut taken = TakenOver::default();
        let now = Instant::now();
        let mut adopted = Vec::new();
        for handed in &handover.watchers {
            taken.watchers.insert(handed.name.clone());
            let known = if handed.state == WatcherState::Waiting {
                // Its wait (a task on a duplicate of the socket) did not cross.
                taken.waiting.insert(handed.name.clone());
                self.with_watcher(&handed.name, |_| ()).is_ok()
            } else {
                let effects = self.step(&handed.name, Input::Adopted(handed.state));
                adopted.push((handed.name.clone(), effects));
                self.with_watcher(&handed.name, |_| ()).is_ok()
            };
            for p in &handed.processes {
                if !known {
                    warn!(
                        watcher = %handed.name,
                        pid = p.pid,
                        "process {} belongs to a watcher the new config does not have: stopping it",
                        p.pid
                    );
                    let _ = super::send_signal(p.pid, ringmaster_protocol::Signal::Term, true);
                    continue;
                }
                let mut captured = Captured::default();
                let streams = self
                    .with_watcher(&handed.name, |w| {
                        (w.config.stdout.clone(), w.config.stderr.clone())
                    })
                    .ok();
                if let Some((stdout, stderr)) = streams {
                    if let Some(fd) = pipes.remove(&(p.pid, LogStream::Stdout)) {
                        captured.stdout = CaptureEnd::inherited(LogStream::Stdout, fd, &stdout);
                    }
                    if let Some(fd) = pipes.remove(&(p.pid, LogStream::Stderr)) {
                        captured.stderr = CaptureEnd::inherited(LogStream::Stderr, fd, &stderr);
                    }
                }
                self.adopt_process(&handed.name, p, captured, now);
                taken.processes += 1;
            }
        }
        // Now that every process is back: fill what emptied, re-arm retries.
        for (name, effects) in adopted {
            self.carry_out(&name, effects);
        }
        taken
    }

    fn adopt_process(
        self: &Rc<Self>,
        name: &str,
        p: &HandedProcess,
        captured: Captured,
        now: Instant,
    ) {
        let ran = Duration::try_from_secs_f64(p.ran).unwrap_or_default();
        let proc = Proc {
            wid: p.wid,
            started: SystemTime::UNIX_EPOCH
                + Duration::try_from_secs_f64(p.started).unwrap_or_default(),
            since: now.checked_sub(ran).unwrap_or(now),
            stopping: false,
            waiters: Vec::new(),
            age_draw: fastrand::f64(),
            age_timer: None,
            mark: adopted_mark(name, p),
        };
        let ended = self.adopted.adopt(p.pid);
        self.supervise(name, p.pid, proc, captured, async move {
            ended
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the agent stopped waiting for it")))
        });
    }

    /// In the new program image: starts the watchers the handover did not name
    /// (new in the config), as a start would, and arms again the wait of those
    /// that were waiting for a connection.
    pub async fn start_new(self: &Rc<Self>, taken: &TakenOver) {
        let order = self.by_priority(|_| true);
        for (_, name) in order {
            let autostart = self
                .with_watcher(&name, |w| w.config.autostart)
                .unwrap_or(false);
            let wanted = if taken.watchers.contains(&name) {
                taken.waiting.contains(&name)
            } else {
                autostart
            };
            if !wanted {
                continue;
            }
            let Ok(lock) = self.lock_of(&name) else {
                continue;
            };
            let _guard = lock.lock().await;
            if let Err(e) = self.start_watcher(&name, true).await {
                warn!(watcher = %name, "cannot start: {}", e.message);
            }
        }
    }

    /// Sets what an upgrade hands over besides the processes: the listening
    /// sockets of the two endpoints.
    pub fn set_endpoint_fds(&self, control: RawFd, pubsub: RawFd) {
        self.endpoint_fds.set(Some((control, pubsub)));
    }

    /// The binary this agent runs (what `upgrade` without `--binary` executes).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// How long the agent's process has run, upgrades included.
    pub fn uptime(&self) -> Duration {
        self.uptime_before.get() + self.started.elapsed()
    }
}
