//! The lifecycle options layered on the supervisor: hooks at each point of a
//! watcher's life ([`crate::hooks`] runs them; this decides what their outcome
//! does), `max_age` (replacing old processes) and `on_demand` (spawning on the
//! first connection).
//!
//! What a failed hook does (unless it has `ignore_errors`):
//!
//! | hook | on failure |
//! | --- | --- |
//! | `before_start` | the start is aborted, the watcher stays stopped, `start` fails |
//! | `after_start` | the watcher is stopped again, `start` fails |
//! | `before_spawn` | that spawn does not happen; it counts as a failed spawn (backoff, flapping) |
//! | `after_spawn` | that process is stopped gracefully; it counts as a failed spawn |
//! | `before_stop` | the stop is aborted and fails, except when the agent shuts down |
//! | `before_signal` | that signal is not sent (SIGKILL always is) |
//! | the others | logged and published only |
//!
//! No hook runs while the state's `RefCell` is borrowed: a hook is copied out as a
//! [`HookJob`] first, then awaited.
//!
//! `max_age`: each process has one timer, armed when it is spawned (and again
//! when `set` changes `max_age`); when it fires, a replacement is spawned first
//! and the old process is then stopped gracefully.
//!
//! `on_demand`: `start` puts the watcher in the `waiting` state, with a task
//! polling duplicates of its sockets for a queued connection (never accepting
//! it); the first connection starts it for real (`before_start`, processes,
//! `after_start`, `active`).

use crate::machine::Input;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ringmaster_protocol::message::{ChangeReport, WatcherState};
use ringmaster_protocol::{ErrorKind, ErrorReply, EventKind, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::{send_signal, Agent, CmdResult};
use crate::config::RestartMode;
use crate::hooks::{HookFailure, HookJob, HookPoint, HookSubject};
use crate::spawn::{SpawnError, SpawnVars};

/// How long to wait before trying again to replace a process past its
/// `max_age` when its replacement could not be started.
const AGE_RETRY: Duration = Duration::from_secs(10);

/// Whether a hook's failure may stop the action around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnFailure {
    /// A failure stops the action (unless the hook has `ignore_errors`, or its
    /// point never stops anything).
    Abort,
    /// A failure is logged and published only (e.g. `before_stop` during the
    /// agent's shutdown, `before_signal` before SIGKILL).
    Report,
}

/// A task that is aborted when this is dropped: a process's `max_age` timer, a
/// watcher's wait for a connection.
#[derive(Debug)]
pub(super) struct TaskGuard(AbortHandle);

impl TaskGuard {
    /// Guards the task behind `handle`.
    pub(super) fn new(handle: AbortHandle) -> Self {
        TaskGuard(handle)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What should be re-checked after a `before_spawn` hook, before the process is
/// really spawned (things may have changed while the hook ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recheck {
    /// A command spawns it (start, incr, reload): the watcher must still be
    /// starting or active.
    Command,
    /// The agent fills a missing slot: the watcher must still be active and
    /// short of processes.
    Fill,
}

/// The error reply for an action a hook stopped.
pub(super) fn hook_error(name: &str, failure: &HookFailure, consequence: &str) -> ErrorReply {
    ErrorReply::new(
        ErrorKind::HookFailed,
        format!("watcher '{name}': {failure}; {consequence}"),
    )
}

impl Agent {
    // ----- running hooks ------------------------------------------------------------

    /// The hook at `point` of watcher `name`, ready to run, or None when it has
    /// none (then nothing is allocated).
    pub(super) fn hook_job(
        &self,
        name: &str,
        point: HookPoint,
        subject: HookSubject,
    ) -> Option<HookJob> {
        let state = self.state.borrow();
        let w = state.watchers.get(name)?;
        let hook = point.of(&w.config.hooks)?;
        let node = self.node();
        let vars = SpawnVars {
            node: &node,
            watcher: name,
            wid: subject.wid.unwrap_or(0),
        };
        Some(HookJob::new(point, hook, &w.config, &vars, subject))
    }

    /// True when watcher `name` has a hook at any of `points`.
    pub(super) fn has_hook(&self, name: &str, points: &[HookPoint]) -> bool {
        let state = self.state.borrow();
        state
            .watchers
            .get(name)
            .is_some_and(|w| points.iter().any(|p| p.of(&w.config.hooks).is_some()))
    }

    /// Runs `job` for watcher `name`, publishes `hook_success` or `hook_failure`,
    /// and says whether the action may go on: an error only when the hook failed,
    /// its failure may stop the action, and it does not ignore errors.
    pub(super) async fn run_hook(
        &self,
        name: &str,
        job: HookJob,
        on_failure: OnFailure,
    ) -> Result<(), HookFailure> {
        let point = job.point;
        let pid = job.subject.pid;
        let ignored =
            job.ignore_errors || on_failure == OnFailure::Report || !point.may_stop_action();
        let outcome = job.run().await;
        let duration = outcome.duration.as_secs_f64();
        match outcome.result {
            Ok(()) => {
                debug!(
                    watcher = name,
                    hook = point.name(),
                    duration,
                    "hook succeeded"
                );
                self.emit(
                    name,
                    EventKind::HookSuccess {
                        hook: point.name().to_string(),
                        duration,
                        pid,
                    },
                );
                Ok(())
            }
            Err(failure) => {
                warn!(
                    watcher = name,
                    "{failure}{}",
                    if ignored { " (the action goes on)" } else { "" }
                );
                self.emit(
                    name,
                    EventKind::HookFailure {
                        hook: point.name().to_string(),
                        duration,
                        pid,
                        exit: failure.exit(),
                        timed_out: failure.timed_out(),
                        error: failure.reason(),
                        output: failure.output.clone(),
                        ignored,
                    },
                );
                if ignored {
                    Ok(())
                } else {
                    Err(failure)
                }
            }
        }
    }

    /// Runs the hook at `point` of watcher `name` if it has one (see
    /// [`Agent::run_hook`]).
    pub(super) async fn hook(
        &self,
        name: &str,
        point: HookPoint,
        subject: HookSubject,
        on_failure: OnFailure,
    ) -> Result<(), HookFailure> {
        match self.hook_job(name, point, subject) {
            None => Ok(()),
            Some(job) => self.run_hook(name, job, on_failure).await,
        }
    }

    /// [`Agent::hook`] for a watcher-wide hook (start, stop).
    pub(super) async fn watcher_hook(
        &self,
        name: &str,
        point: HookPoint,
        on_failure: OnFailure,
    ) -> Result<(), HookFailure> {
        self.hook(name, point, HookSubject::default(), on_failure)
            .await
    }

    /// Runs a report-only hook in the background (after_stop after an exit, ...).
    pub(super) fn hook_in_background(self: &Rc<Self>, name: &str, point: HookPoint) {
        if let Some(job) = self.hook_job(name, point, HookSubject::default()) {
            let agent = Rc::clone(self);
            let name = name.to_string();
            tokio::task::spawn_local(async move {
                let _ = agent.run_hook(&name, job, OnFailure::Report).await;
            });
        }
    }

    // ----- spawning with hooks --------------------------------------------------------

    /// True when watcher `name` has a spawn hook (then spawns go through
    /// [`Agent::spawn_with_hooks`]).
    pub(super) fn has_spawn_hooks(&self, name: &str) -> bool {
        self.has_hook(name, &[HookPoint::BeforeSpawn, HookPoint::AfterSpawn])
    }

    /// Spawns one process of `name` in slot `wid` with `before_spawn` and
    /// `after_spawn` around it. The caller has put `wid` in the watcher's
    /// `pending` slots (so that no one else takes it while `before_spawn` runs);
    /// this takes it out. `Ok(None)`: a hook stopped this spawn, or the watcher no
    /// longer wants it; a hook failure counts as a failed spawn for the restart
    /// policy.
    pub(super) async fn spawn_with_hooks(
        self: &Rc<Self>,
        name: &str,
        wid: u32,
        recheck: Recheck,
    ) -> Result<Option<u32>, SpawnError> {
        let subject = HookSubject {
            wid: Some(wid),
            ..HookSubject::default()
        };
        let before = self
            .hook(name, HookPoint::BeforeSpawn, subject, OnFailure::Abort)
            .await;
        let still_wanted = self
            .with_watcher(name, |w| {
                w.pending.remove(&wid);
                let used = w.procs.values().any(|p| p.wid == wid);
                match recheck {
                    Recheck::Command => w.supervised() && !used,
                    Recheck::Fill => {
                        w.life.is_active()
                            && w.config.restart_mode() != RestartMode::Never
                            && !used
                            && w.running_count() + w.pending.len() < w.config.numprocesses as usize
                    }
                }
            })
            .unwrap_or(false);
        if let Err(failure) = before {
            self.on_spawn_failure(name, wid, &failure);
            return Ok(None);
        }
        if !still_wanted || self.shutting_down.get() {
            return Ok(None);
        }
        let pid = self.spawn_process(name, wid)?;
        let subject = HookSubject {
            pid: Some(pid),
            wid: Some(wid),
            ..HookSubject::default()
        };
        if let Err(failure) = self
            .hook(name, HookPoint::AfterSpawn, subject, OnFailure::Abort)
            .await
        {
            self.stop_pids(name, vec![pid]).await;
            self.on_spawn_failure(name, wid, &failure);
            return Ok(None);
        }
        Ok(Some(pid))
    }

    /// Fills slot `wid` of `name` in the background, with its spawn hooks.
    pub(super) fn fill_slot_with_hooks(self: &Rc<Self>, name: &str, wid: u32) {
        if self.with_watcher(name, |w| w.pending.insert(wid)).is_err() {
            return;
        }
        let agent = Rc::clone(self);
        let name = name.to_string();
        tokio::task::spawn_local(async move {
            if let Err(e) = agent.spawn_with_hooks(&name, wid, Recheck::Fill).await {
                agent.on_spawn_failure(&name, wid, e);
            }
        });
    }

    // ----- signals with hooks ---------------------------------------------------------

    /// True when watcher `name` has a signal hook.
    pub(super) fn has_signal_hooks(&self, name: &str) -> bool {
        self.has_hook(name, &[HookPoint::BeforeSignal, HookPoint::AfterSignal])
    }

    /// Sends `signal` to `pid` of `name` (its process group with `group`) with
    /// `before_signal` and `after_signal` around it, and publishes `kill` when
    /// `publish_kill`. A failed `before_signal` keeps the signal from being sent,
    /// except SIGKILL. Returns the hook failure that kept it, if any.
    pub(super) async fn signal_with_hooks(
        &self,
        name: &str,
        pid: u32,
        signal: Signal,
        group: bool,
        publish_kill: bool,
    ) -> Result<(), SignalRefused> {
        let wid = self
            .with_watcher(name, |w| w.procs.get(&pid).map(|p| p.wid))
            .ok()
            .flatten();
        let subject = HookSubject {
            pid: Some(pid),
            wid,
            signal: Some(signal),
            ..HookSubject::default()
        };
        let on_failure = if signal == Signal::Kill {
            OnFailure::Report
        } else {
            OnFailure::Abort
        };
        if let Err(failure) = self
            .hook(name, HookPoint::BeforeSignal, subject, on_failure)
            .await
        {
            return Err(SignalRefused::Hook(failure));
        }
        if !self.state.borrow().owners.contains_key(&pid) {
            // It exited while the hook ran (its pid may be reused: leave it).
            return Ok(());
        }
        if let Err(e) = send_signal(pid, signal, group) {
            warn!(watcher = name, pid, "cannot send {signal}: {e}");
            return Err(SignalRefused::Os(e));
        }
        if publish_kill {
            self.emit(
                name,
                EventKind::Kill {
                    pid,
                    signal: signal.to_string(),
                    group,
                },
            );
        }
        let _ = self
            .hook(name, HookPoint::AfterSignal, subject, OnFailure::Report)
            .await;
        Ok(())
    }

    /// [`Agent::signal_with_hooks`] for each of `pids` at once; returns the pids
    /// whose signal was kept from being sent, with why.
    pub(super) async fn signal_many_with_hooks(
        self: &Rc<Self>,
        name: &str,
        pids: &[u32],
        signal: Signal,
        group: bool,
        publish_kill: bool,
    ) -> Vec<(u32, SignalRefused)> {
        let tasks: Vec<_> = pids
            .iter()
            .map(|pid| {
                let agent = Rc::clone(self);
                let name = name.to_string();
                let pid = *pid;
                tokio::task::spawn_local(async move {
                    let result = agent
                        .signal_with_hooks(&name, pid, signal, group, publish_kill)
                        .await;
                    (pid, result)
                })
            })
            .collect();
        let mut refused = Vec::new();
        for task in tasks {
            if let Ok((pid, Err(why))) = task.await {
                refused.push((pid, why));
            }
        }
        refused
    }

    // ----- start and stop -------------------------------------------------------------

    /// Runs `before_start`; on failure the watcher goes back to `stopped` and the
    /// error says why.
    pub(super) async fn before_start(self: &Rc<Self>, name: &str) -> CmdResult<()> {
        let Some(job) = self.hook_job(name, HookPoint::BeforeStart, HookSubject::default()) else {
            return Ok(());
        };
        match self.run_hook(name, job, OnFailure::Abort).await {
            Ok(()) => Ok(()),
            Err(failure) => {
                let reply = hook_error(
                    name,
                    &failure,
                    "the start was aborted, the watcher stays stopped",
                );
                let error = reply.message.clone();
                self.apply(name, Input::StartAborted { error });
                Err(reply)
            }
        }
    }

    /// Runs `after_start`; on failure the watcher is stopped again (its stop
    /// cannot be aborted by `before_stop`) and the error says why.
    pub(super) async fn after_start(self: &Rc<Self>, name: &str) -> CmdResult<()> {
        let starting = self
            .with_watcher(name, |w| w.state() == WatcherState::Starting)
            .unwrap_or(false);
        if !starting {
            // Stopped meanwhile (the agent's shutdown): nothing to check.
            return Ok(());
        }
        let Some(job) = self.hook_job(name, HookPoint::AfterStart, HookSubject::default()) else {
            return Ok(());
        };
        match self.run_hook(name, job, OnFailure::Abort).await {
            Ok(()) => Ok(()),
            Err(failure) => {
                let reply = hook_error(name, &failure, "the watcher was stopped again");
                let _ = self.stop_watcher_as(name, false, OnFailure::Report).await;
                let message = reply.message.clone();
                let _ = self.with_watcher(name, |w| w.life.set_error(Some(message)));
                Err(reply)
            }
        }
    }

    // ----- max_age --------------------------------------------------------------------

    /// Arms the `max_age` timer of process `pid` of `name` (replacing any), for
    /// `at` or, when None, for when the process is `max_age` + its share of
    /// `max_age_variance` old. With `max_age = 0` it only disarms it.
    pub(super) fn arm_age_timer(self: &Rc<Self>, name: &str, pid: u32, at: Option<Instant>) {
        let due = {
            let mut state = self.state.borrow_mut();
            let Some(w) = state.watchers.get_mut(name) else {
                return;
            };
            let (max_age, variance) = (w.config.max_age, w.config.max_age_variance);
            let Some(p) = w.procs.get_mut(&pid) else {
                return;
            };
            p.age_timer = None;
            if max_age <= 0.0 || p.stopping {
                return;
            }
            let age = Duration::try_from_secs_f64(max_age + p.age_draw * variance)
                .unwrap_or(Duration::MAX);
            at.unwrap_or_else(|| {
                p.since
                    .checked_add(age)
                    .unwrap_or(p.since + Duration::from_secs(86_400 * 365))
            })
        };
        let agent = Rc::clone(self);
        let owned = name.to_string();
        let task = tokio::task::spawn_local(async move {
            tokio::time::sleep_until(due.into()).await;
            // The replacement runs as a task of its own: stopping this process
            // drops (and aborts) this timer.
            tokio::task::spawn_local(async move { agent.replace_aged(&owned, pid).await });
        });
        let guard = TaskGuard::new(task.abort_handle());
        let _ = self.with_watcher(name, |w| {
            if let Some(p) = w.procs.get_mut(&pid) {
                p.age_timer = Some(guard);
            }
        });
    }

    /// Re-arms the `max_age` timers of every process of `name` (after `set`).
    pub(super) fn rearm_age_timers(self: &Rc<Self>, name: &str) {
        let pids = self.with_watcher(name, |w| w.pids()).unwrap_or_default();
        for pid in pids {
            self.arm_age_timer(name, pid, None);
        }
    }

    /// Replaces process `pid` of `name`, which reached its `max_age`: starts its
    /// replacement first, then stops it gracefully, so the watcher never runs
    /// fewer processes than it should.
    async fn replace_aged(self: &Rc<Self>, name: &str, pid: u32) {
        let Ok(lock) = self.lock_of(name) else {
            return;
        };
        let guard = lock.lock().await;
        let now = Instant::now();
        let due = self.with_watcher(name, |w| {
            let p = w.procs.get(&pid).filter(|p| !p.stopping)?;
            let age = Duration::try_from_secs_f64(
                w.config.max_age + p.age_draw * w.config.max_age_variance,
            )
            .unwrap_or(Duration::MAX);
            Some((
                w.life.is_active() && w.config.max_age > 0.0,
                now.duration_since(p.since) >= age,
                now.duration_since(p.since),
            ))
        });
        let uptime = match due {
            Ok(Some((true, true, uptime))) => uptime,
            // Not due any more (max_age changed): wait again.
            Ok(Some((true, false, _))) => {
                drop(guard);
                self.arm_age_timer(name, pid, None);
                return;
            }
            // Gone, stopping, watcher not active, or max_age off.
            _ => return,
        };
        if self.shutting_down.get() {
            return;
        }
        info!(
            watcher = name,
            pid,
            "process is {:.1}s old, past max_age: starting its replacement, then stopping it",
            uptime.as_secs_f64()
        );
        let replacement = self.spawn_many(name, 1).await;
        drop(guard);
        match replacement {
            Ok(started) if !started.is_empty() => {
                self.stop_pids(name, vec![pid]).await;
            }
            Ok(_) | Err(_) => {
                warn!(
                    watcher = name,
                    pid,
                    "no replacement could be started for a process past max_age; it keeps running, next try in {}s",
                    AGE_RETRY.as_secs()
                );
                self.arm_age_timer(name, pid, Some(Instant::now() + AGE_RETRY));
            }
        }
    }
}

impl Agent {
    // ----- on_demand ------------------------------------------------------------------

    /// For an `on_demand` watcher that is not started yet: arms its wait for a
    /// connection (state `waiting`) and returns the report of `start`. None for
    /// any other watcher, which starts its processes now.
    pub(super) fn wait_for_demand(
        self: &Rc<Self>,
        name: &str,
        by_user: bool,
    ) -> CmdResult<Option<ChangeReport>> {
        let (on_demand, state) = self.with_watcher(name, |w| (w.config.on_demand, w.state()))?;
        if !on_demand || state == WatcherState::Active {
            return Ok(None);
        }
        let sockets = if state == WatcherState::Waiting {
            self.sockets_of(name)
        } else {
            let sockets = self.arm_demand(name)?;
            self.with_watcher(name, |_| ())?;
            self.apply(name, Input::Wait { by_user });
            info!(
                watcher = name,
                "on demand: waiting for a connection on {}",
                sockets.join(", ")
            );
            sockets
        };
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        report.watchers.insert(
            name.to_string(),
            format!("waiting for a connection on {}", sockets.join(", ")),
        );
        Ok(Some(report))
    }

    /// After the last process of an `on_demand` watcher without respawn is gone:
    /// waits for the next connection (or stops, saying why it cannot).
    pub(super) fn wait_again(self: &Rc<Self>, name: &str) {
        match self.arm_demand(name) {
            Ok(_) => {
                self.apply(name, Input::Wait { by_user: false });
                info!(
                    watcher = name,
                    "its last process is gone: waiting for the next connection"
                );
            }
            Err(e) => self.apply(name, Input::DemandLost { error: e.message }),
        }
    }

    /// Starts a task waiting for a connection on the sockets watcher `name`
    /// uses; returns their names.
    fn arm_demand(self: &Rc<Self>, name: &str) -> CmdResult<Vec<String>> {
        let (generation, fds) = self.socket_fds_of(name).map_err(|e| {
            ErrorReply::new(
                ErrorKind::Os,
                format!("watcher '{name}': cannot watch its sockets: {e}"),
            )
        })?;
        if fds.is_empty() {
            return Err(ErrorReply::new(
                ErrorKind::InvalidConfig,
                format!(
                    "watcher '{name}' is on_demand but uses no socket, so nothing would ever \
                     start it: set use_sockets = true or name a socket as \
                     $(circus.sockets.NAME) in its cmd, args or env (or set on_demand = false)"
                ),
            ));
        }
        let mut names = Vec::with_capacity(fds.len());
        let mut watched = Vec::with_capacity(fds.len());
        for (socket, fd) in fds {
            // Deprecated because an arbitrary `AsRawFd` may close or change its
            // descriptor while registered; an `OwnedFd` owns it for as long as the
            // `AsyncFd` lives, which is the invariant the unsafe successor asks for.
            #[allow(deprecated)]
            let fd = AsyncFd::with_interest(fd, Interest::READABLE).map_err(|e| {
                ErrorReply::new(
                    ErrorKind::Os,
                    format!("watcher '{name}': cannot watch socket '{socket}': {e}"),
                )
            })?;
            names.push(socket.clone());
            watched.push((socket, fd));
        }
        let agent = Rc::clone(self);
        let owned = name.to_string();
        let task = tokio::task::spawn_local(async move {
            agent.wait_for_connection(owned, generation, watched).await;
        });
        self.with_watcher(name, |w| {
            w.demand = Some(TaskGuard::new(task.abort_handle()));
        })?;
        Ok(names)
    }

    /// Waits until one of `fds` has a connection queued (without accepting it),
    /// then starts the watcher's processes.
    async fn wait_for_connection(
        self: Rc<Self>,
        name: String,
        generation: u64,
        fds: Vec<(String, AsyncFd<OwnedFd>)>,
    ) {
        let ready = std::future::poll_fn(|cx| {
            for (socket, fd) in &fds {
                match fd.poll_read_ready(cx) {
                    // The readiness stays set: the connection is for the workers.
                    Poll::Ready(Ok(_)) => return Poll::Ready(Ok(socket.clone())),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((socket.clone(), e))),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        // Close the duplicates now; the processes get the agent's sockets.
        drop(fds);
        match ready {
            Ok(socket) => {
                // A task of its own: starting drops (and aborts) this one.
                tokio::task::spawn_local(async move {
                    self.start_on_demand(&name, &socket, generation).await;
                });
            }
            Err((socket, e)) => {
                let message = format!("watcher '{name}': cannot wait on socket '{socket}': {e}");
                warn!("{message}");
                let _ = self.with_watcher(&name, |w| w.life.set_error(Some(message)));
            }
        }
    }

    /// A connection arrived on `socket` for waiting watcher `name`: start it.
    async fn start_on_demand(self: &Rc<Self>, name: &str, socket: &str, generation: u64) {
        let Ok(lock) = self.lock_of(name) else {
            return;
        };
        let _guard = lock.lock().await;
        let waiting = self
            .with_watcher(name, |w| w.state() == WatcherState::Waiting)
            .unwrap_or(false);
        if !waiting || self.shutting_down.get() {
            return;
        }
        if self.socket_generation() != generation {
            // The sockets changed meanwhile: wait on the new ones.
            if let Err(e) = self.arm_demand(name) {
                self.apply(name, Input::DemandLost { error: e.message });
            }
            return;
        }
        let _ = self.with_watcher(name, |w| w.demand = None);
        info!(
            watcher = name,
            socket, "a connection is waiting: starting the processes"
        );
        if let Err(e) = self.start_processes(name, false).await {
            warn!(watcher = name, "on-demand start failed: {}", e.message);
        }
    }

    /// Stops every wait for a connection and lets the waiting tasks close their
    /// duplicates of the sockets (before `reloadconfig` changes sockets: a
    /// duplicate keeps an old socket listening). Returns the waiting watchers.
    pub(super) async fn pause_demand_waits(&self) -> Vec<String> {
        let waiting: Vec<String> = {
            let mut state = self.state.borrow_mut();
            state
                .watchers
                .iter_mut()
                .filter(|(_, w)| w.state() == WatcherState::Waiting)
                .map(|(name, w)| {
                    w.demand = None;
                    name.clone()
                })
                .collect()
        };
        if !waiting.is_empty() {
            // Aborted tasks are dropped (closing their descriptors) when the
            // runtime next gets to them, before this task runs again.
            tokio::task::yield_now().await;
        }
        waiting
    }

    /// Waits again, on the current sockets, for the watchers of `waiting` that
    /// still wait.
    pub(super) fn resume_demand_waits(self: &Rc<Self>, waiting: Vec<String>) {
        for name in waiting {
            let still = self
                .with_watcher(&name, |w| {
                    w.state() == WatcherState::Waiting && w.demand.is_none()
                })
                .unwrap_or(false);
            if still {
                if let Err(e) = self.arm_demand(&name) {
                    self.apply(&name, Input::DemandLost { error: e.message });
                }
            }
        }
    }
}

/// Why a signal was not sent.
#[derive(Debug)]
pub(super) enum SignalRefused {
    /// `before_signal` failed.
    Hook(HookFailure),
    /// The operating system refused it.
    Os(nix::Error),
}

impl std::fmt::Display for SignalRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignalRefused::Hook(failure) => write!(f, "{failure}"),
            SignalRefused::Os(e) => write!(f, "{e}"),
        }
    }
}

/// The reply to `signal` for `targets` of watcher `name`, of which `refused`
/// did not get `signal`.
pub(super) fn signal_report(
    name: &str,
    signal: Signal,
    targets: Vec<u32>,
    refused: &[(u32, SignalRefused)],
) -> CmdResult<ChangeReport> {
    if refused.is_empty() {
        return Ok(ChangeReport {
            kept: targets,
            done: true,
            ..ChangeReport::default()
        });
    }
    let sent: Vec<String> = targets
        .iter()
        .filter(|pid| !refused.iter().any(|(r, _)| r == *pid))
        .map(u32::to_string)
        .collect();
    let why: Vec<String> = refused
        .iter()
        .map(|(pid, why)| format!("not sent to {pid}: {why}"))
        .collect();
    let kind = if refused
        .iter()
        .any(|(_, why)| matches!(why, SignalRefused::Hook(_)))
    {
        ErrorKind::HookFailed
    } else {
        ErrorKind::Os
    };
    Err(ErrorReply::new(
        kind,
        format!(
            "watcher '{name}': {signal} {}{}",
            why.join("; "),
            if sent.is_empty() {
                String::new()
            } else {
                format!(" (sent to {})", sent.join(", "))
            }
        ),
    ))
}
