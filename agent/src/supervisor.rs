//! The supervisor: watchers, their processes, and every command that acts on them.
//!
//! Everything runs on one thread (a `current_thread` runtime with a `LocalSet`), so
//! the state is a plain `RefCell` that is never borrowed across an `.await`. There is
//! no global lock: each watcher has its own async mutex that orders the commands
//! acting on *that* watcher, while `status` and commands on other watchers go on. A
//! slow graceful stop is a task waiting for exits, not a blocked loop.
//!
//! Exits are noticed when they happen: each child has a task awaiting it (tokio reaps
//! through a pidfd or SIGCHLD, never by polling), which calls [`Agent::on_exit`]. That
//! publishes exactly one `reap`, wakes whoever waits for the process, and asks the
//! [`RestartTracker`] whether to respawn at once, after a backoff, or to stop a
//! flapping watcher.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use ringmaster_protocol::message::{
    ChangeReport, NodeInfo, ProcessInfo, WatcherState, WatcherStatus,
};
use ringmaster_protocol::{
    names, Codec, Command, ErrorKind, ErrorReply, Event, EventKind, ExitInfo, OptionMap,
    OptionValue, Response, Signal, PROTOCOL_VERSION, RINGMASTER_VERSION,
};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tracing::{debug, error, info, warn};

use crate::config::{AgentSettings, Config, WatcherConfig, LIVE_OPTIONS};
use crate::nodeinfo::HostProbe;
use crate::persist::{plan, Change, StateFile, StateStore, STATE_VERSION};
use crate::policy::{RestartTracker, Verdict};
use crate::spawn::{self, SpawnError, SpawnVars};

type CmdResult<T> = Result<T, ErrorReply>;

/// How long a process may take to die after SIGKILL before the agent reports it.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A published message: topic and encoded body.
pub type Outgoing = (String, Vec<u8>);

struct Proc {
    wid: u32,
    started: SystemTime,
    since: Instant,
    stopping: bool,
    waiters: Vec<oneshot::Sender<ExitInfo>>,
}

struct Watcher {
    config: WatcherConfig,
    state: WatcherState,
    procs: BTreeMap<u32, Proc>,
    lock: Rc<Mutex<()>>,
    restarts: RestartTracker,
    /// Bumped by every user start/stop, so that a pending flapping retry knows it
    /// has been overtaken.
    epoch: u64,
    last_error: Option<String>,
}

impl Watcher {
    fn new(config: WatcherConfig) -> Self {
        Watcher {
            config,
            state: WatcherState::Stopped,
            procs: BTreeMap::new(),
            lock: Rc::new(Mutex::new(())),
            restarts: RestartTracker::default(),
            epoch: 0,
            last_error: None,
        }
    }

    fn running(&self) -> impl Iterator<Item = (&u32, &Proc)> {
        self.procs.iter().filter(|(_, p)| !p.stopping)
    }

    fn running_count(&self) -> usize {
        self.running().count()
    }

    fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    fn free_wid(&self) -> u32 {
        let used: BTreeSet<u32> = self.procs.values().map(|p| p.wid).collect();
        (1..).find(|w| !used.contains(w)).unwrap_or(1)
    }

    fn supervised(&self) -> bool {
        matches!(self.state, WatcherState::Active | WatcherState::Starting)
    }
}

#[derive(Default)]
struct State {
    watchers: BTreeMap<String, Watcher>,
    /// Which watcher each live pid belongs to.
    owners: HashMap<u32, String>,
    /// Watchers as the config file last defined them.
    baseline: BTreeMap<String, WatcherConfig>,
}

/// The agent: owns every watcher and answers commands.
pub struct Agent {
    settings: RefCell<AgentSettings>,
    config_path: Option<PathBuf>,
    control: String,
    pubsub: String,
    state: RefCell<State>,
    store: StateStore,
    codec: Codec,
    events: mpsc::Sender<Outgoing>,
    seq: Cell<u64>,
    dropped: Cell<u64>,
    started: Instant,
    shutting_down: Cell<bool>,
    quit: Notify,
    host: RefCell<HostProbe>,
}

fn now_secs(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn not_found(name: &str) -> ErrorReply {
    ErrorReply::new(
        ErrorKind::NotFound,
        format!("no watcher named '{name}' (see `nodectl list`)"),
    )
}

fn exit_info(status: &std::io::Result<std::process::ExitStatus>) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => ExitInfo {
            code: status.code(),
            signal: status.signal(),
        },
        Err(_) => ExitInfo {
            code: None,
            signal: None,
        },
    }
}

fn to_nix(signal: Signal) -> Option<nix::sys::signal::Signal> {
    nix::sys::signal::Signal::try_from(signal.number()).ok()
}

/// Sends `signal` to `pid`, or to its process group. A process that is already
/// gone is not an error.
fn send_signal(pid: u32, signal: Signal, group: bool) -> Result<(), nix::Error> {
    let Some(sig) = to_nix(signal) else {
        return Err(nix::Error::EINVAL);
    };
    let Ok(raw) = i32::try_from(pid) else {
        return Err(nix::Error::EINVAL);
    };
    let target = nix::unistd::Pid::from_raw(raw);
    let result = if group {
        nix::sys::signal::killpg(target, sig)
    } else {
        nix::sys::signal::kill(target, sig)
    };
    match result {
        Err(nix::Error::ESRCH) => Ok(()),
        other => other,
    }
}

impl Agent {
    /// A new agent for `config`, bound at `control` and `pubsub`, publishing into
    /// `events`. Restores persisted runtime changes from the state directory.
    pub fn new(
        config: Config,
        control: String,
        pubsub: String,
        events: mpsc::Sender<Outgoing>,
    ) -> Rc<Agent> {
        let store = StateStore::new(&config.agent.state_dir, &config.agent.node);
        let mut runtime = config.watchers.clone();
        match store.load() {
            Ok(Some(saved)) => {
                let changes = plan(&config.watchers, &saved.baseline, &saved.watchers);
                runtime = saved.watchers;
                apply_plan(&mut runtime, changes);
                info!(
                    file = %store.path().display(),
                    "restored runtime changes: {} watcher(s)",
                    runtime.len()
                );
            }
            Ok(None) => {}
            Err(e) => warn!("{e}"),
        }
        let state = State {
            watchers: runtime
                .into_iter()
                .map(|(name, cfg)| (name, Watcher::new(cfg)))
                .collect(),
            owners: HashMap::new(),
            baseline: config.watchers.clone(),
        };
        Rc::new(Agent {
            settings: RefCell::new(config.agent),
            config_path: config.path,
            control,
            pubsub,
            state: RefCell::new(state),
            store,
            codec: Codec::default(),
            events,
            seq: Cell::new(0),
            dropped: Cell::new(0),
            started: Instant::now(),
            shutting_down: Cell::new(false),
            quit: Notify::new(),
            host: RefCell::new(HostProbe::default()),
        })
    }

    /// Node name.
    pub fn node(&self) -> String {
        self.settings.borrow().node.clone()
    }

    /// Waits until a `quit` command has stopped everything.
    pub async fn quit_requested(&self) {
        self.quit.notified().await;
    }

    /// Number of processes alive now.
    pub fn process_count(&self) -> usize {
        self.state.borrow().owners.len()
    }

    fn emit(&self, watcher: &str, kind: EventKind) {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let event = Event {
            node: self.node(),
            seq,
            time: now_secs(SystemTime::now()),
            watcher: watcher.to_string(),
            kind,
        };
        let topic = event.topic();
        match self.codec.encode(&event) {
            Ok(body) => {
                if self.events.try_send((topic, body)).is_err() {
                    self.dropped.set(self.dropped.get() + 1);
                }
            }
            Err(e) => error!("cannot encode event: {e}"),
        }
    }

    fn with_watcher<R>(&self, name: &str, f: impl FnOnce(&mut Watcher) -> R) -> CmdResult<R> {
        let mut state = self.state.borrow_mut();
        state
            .watchers
            .get_mut(name)
            .map(f)
            .ok_or_else(|| not_found(name))
    }

    fn lock_of(&self, name: &str) -> CmdResult<Rc<Mutex<()>>> {
        self.with_watcher(name, |w| w.lock.clone())
    }

    fn refuse_if_shutting_down(&self) -> CmdResult<()> {
        if self.shutting_down.get() {
            return Err(ErrorReply::new(
                ErrorKind::ShuttingDown,
                "the agent is shutting down",
            ));
        }
        Ok(())
    }

    fn persist(&self) {
        let state = self.state.borrow();
        let file = StateFile {
            version: STATE_VERSION,
            node: self.node(),
            baseline: state.baseline.clone(),
            watchers: state
                .watchers
                .iter()
                .map(|(name, w)| (name.clone(), w.config.clone()))
                .collect(),
        };
        drop(state);
        if let Err(e) = self.store.save(&file) {
            warn!(
                "cannot persist runtime changes to {}: {e}; they will be lost if the agent restarts",
                self.store.path().display()
            );
        }
    }

    // ----- spawning -------------------------------------------------------------

    /// Starts one process of `name` in slot `wid`.
    fn spawn_process(self: &Rc<Self>, name: &str, wid: u32) -> Result<u32, SpawnError> {
        let node = self.node();
        let prepared = {
            let state = self.state.borrow();
            let Some(w) = state.watchers.get(name) else {
                return Err(SpawnError::BadCommandLine(format!(
                    "watcher '{name}' is gone"
                )));
            };
            let vars = SpawnVars {
                node: &node,
                watcher: name,
                wid,
            };
            spawn::prepare(&w.config, &vars)?
        };
        let mut child = prepared.spawn()?;
        let Some(pid) = child.id() else {
            return Err(SpawnError::Os {
                program: name.to_string(),
                source: std::io::Error::other("child exited before its pid was read"),
            });
        };
        {
            let mut state = self.state.borrow_mut();
            state.owners.insert(pid, name.to_string());
            if let Some(w) = state.watchers.get_mut(name) {
                w.procs.insert(
                    pid,
                    Proc {
                        wid,
                        started: SystemTime::now(),
                        since: Instant::now(),
                        stopping: false,
                        waiters: Vec::new(),
                    },
                );
                w.last_error = None;
            }
        }
        let agent = Rc::clone(self);
        tokio::task::spawn_local(async move {
            let status = child.wait().await;
            agent.on_exit(pid, status);
        });
        self.emit(name, EventKind::Spawn { pid, wid });
        debug!(watcher = name, pid, wid, "spawned");
        Ok(pid)
    }

    /// Starts `count` processes of `name`, `warmup_delay` apart. On failure, stops
    /// those it started and reports the error.
    async fn spawn_many(self: &Rc<Self>, name: &str, count: usize) -> CmdResult<Vec<u32>> {
        let mut started = Vec::with_capacity(count);
        for i in 0..count {
            let wid = match self.with_watcher(name, |w| w.supervised().then(|| w.free_wid())) {
                Ok(Some(wid)) => wid,
                // Stopped, removed or shutting down meanwhile: stop here.
                Ok(None) | Err(_) => break,
            };
            if self.shutting_down.get() {
                break;
            }
            match self.spawn_process(name, wid) {
                Ok(pid) => started.push(pid),
                Err(e) => {
                    let message = format!("watcher '{name}': {e}");
                    let _ = self.with_watcher(name, |w| w.last_error = Some(message.clone()));
                    self.emit(
                        name,
                        EventKind::SpawnFailed {
                            error: e.to_string(),
                        },
                    );
                    warn!("{message}");
                    self.stop_pids(name, started).await;
                    return Err(ErrorReply::new(ErrorKind::SpawnFailed, message));
                }
            }
            let warmup = self
                .with_watcher(name, |w| w.config.warmup_delay)
                .unwrap_or(0.0);
            if warmup > 0.0 && i + 1 < count {
                tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
            } else if i % 32 == 31 {
                // Let replies and exits through during a large burst.
                tokio::task::yield_now().await;
            }
        }
        Ok(started)
    }

    /// Spawns the processes an active watcher is missing, except slots that are
    /// backing off (a timer comes back for those).
    fn fill(self: &Rc<Self>, name: &str) {
        if self.shutting_down.get() {
            return;
        }
        let now = Instant::now();
        let (to_spawn, wake) = {
            let state = self.state.borrow();
            let Some(w) = state.watchers.get(name) else {
                return;
            };
            if w.state != WatcherState::Active || !w.config.respawn {
                return;
            }
            let target = w.config.numprocesses as usize;
            let mut missing = target.saturating_sub(w.running_count());
            let used: BTreeSet<u32> = w.procs.values().map(|p| p.wid).collect();
            let mut to_spawn = Vec::new();
            let mut wake: Option<Instant> = None;
            let mut wid = 0;
            while missing > 0 {
                wid += 1;
                if used.contains(&wid) {
                    continue;
                }
                missing -= 1;
                match w.restarts.backoff_until(wid, now) {
                    Some(at) => wake = Some(wake.map_or(at, |w: Instant| w.min(at))),
                    None => to_spawn.push(wid),
                }
            }
            (to_spawn, wake)
        };
        for wid in to_spawn {
            if let Err(e) = self.spawn_process(name, wid) {
                self.on_spawn_failure(name, wid, e);
            }
        }
        if let Some(at) = wake {
            self.fill_at(name, at);
        }
    }

    fn fill_at(self: &Rc<Self>, name: &str, at: Instant) {
        let agent = Rc::clone(self);
        let name = name.to_string();
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(at.into()).await;
            agent.fill(&name);
        });
    }

    fn on_spawn_failure(self: &Rc<Self>, name: &str, wid: u32, error: SpawnError) {
        let message = format!("watcher '{name}': {error}");
        warn!("{message}");
        self.emit(
            name,
            EventKind::SpawnFailed {
                error: error.to_string(),
            },
        );
        let verdict = self.with_watcher(name, |w| {
            w.last_error = Some(message.clone());
            w.restarts.on_unexpected_exit(
                &w.config,
                wid,
                Duration::ZERO,
                Instant::now(),
                fastrand::f64(),
            )
        });
        match verdict {
            // Never retry a failed spawn in the same turn: go through a timer.
            Ok(Verdict::Respawn(delay)) => self.fill_at(name, Instant::now() + delay),
            Ok(verdict) => self.act_on(name, verdict),
            Err(_) => {}
        }
    }

    // ----- exits ----------------------------------------------------------------

    /// Called once for every child that exits.
    pub fn on_exit(self: &Rc<Self>, pid: u32, status: std::io::Result<std::process::ExitStatus>) {
        let exit = exit_info(&status);
        let mut state = self.state.borrow_mut();
        let Some(name) = state.owners.remove(&pid) else {
            return;
        };
        let Some(w) = state.watchers.get_mut(&name) else {
            // Removed with `rm --nostop`: no longer ours to report.
            return;
        };
        let Some(proc) = w.procs.remove(&pid) else {
            return;
        };
        let uptime = proc.since.elapsed();
        let expected = proc.stopping;
        if expected {
            // The leader is gone; make sure nothing it started lingers in its group.
            let _ = send_signal(pid, Signal::Kill, true);
        }
        let verdict = if !expected && w.supervised() {
            if w.config.respawn {
                Some(w.restarts.on_unexpected_exit(
                    &w.config,
                    proc.wid,
                    uptime,
                    Instant::now(),
                    fastrand::f64(),
                ))
            } else {
                None
            }
        } else {
            None
        };
        let all_gone = !expected
            && w.state == WatcherState::Active
            && !w.config.respawn
            && w.running_count() == 0;
        if all_gone {
            w.state = WatcherState::Stopped;
        }
        drop(state);
        for waiter in proc.waiters {
            let _ = waiter.send(exit);
        }
        self.emit(
            &name,
            EventKind::Reap {
                pid,
                wid: proc.wid,
                exit,
                expected,
                uptime: uptime.as_secs_f64(),
            },
        );
        if !expected {
            info!(watcher = %name, pid, wid = proc.wid, "process exited: {exit}");
        }
        if all_gone {
            self.emit(&name, EventKind::Stop {});
        }
        if let Some(verdict) = verdict {
            self.act_on(&name, verdict);
        }
    }

    fn act_on(self: &Rc<Self>, name: &str, verdict: Verdict) {
        match verdict {
            Verdict::Respawn(delay) if delay.is_zero() => self.fill(name),
            Verdict::Respawn(delay) => self.fill_at(name, Instant::now() + delay),
            Verdict::Flapping { attempt, retry_in } => {
                let window = self
                    .with_watcher(name, |w| {
                        (w.config.flapping_attempts, w.config.flapping_window)
                    })
                    .unwrap_or((0, 0.0));
                let message = match retry_in {
                    Some(d) => format!(
                        "flapping ({} exits within {}s); retry {attempt} in {:.1}s",
                        window.0,
                        window.1,
                        d.as_secs_f64()
                    ),
                    None => format!(
                        "flapping ({} exits within {}s); gave up after {} retries, start it again by hand",
                        window.0,
                        window.1,
                        attempt.saturating_sub(1)
                    ),
                };
                warn!(watcher = name, "{message}");
                self.emit(
                    name,
                    EventKind::Flapping {
                        attempt,
                        retry_in: retry_in.map(|d| d.as_secs_f64()),
                    },
                );
                let agent = Rc::clone(self);
                let name = name.to_string();
                tokio::task::spawn_local(async move {
                    agent.handle_flapping(&name, message, retry_in).await;
                });
            }
        }
    }

    async fn handle_flapping(
        self: &Rc<Self>,
        name: &str,
        message: String,
        retry_in: Option<Duration>,
    ) {
        let Ok(lock) = self.lock_of(name) else { return };
        let epoch = {
            let _guard = lock.lock().await;
            let Ok((epoch, pids)) = self.with_watcher(name, |w| {
                w.state = WatcherState::Stopping;
                w.last_error = Some(message.clone());
                (w.epoch, w.pids())
            }) else {
                return;
            };
            self.stop_pids(name, pids).await;
            let next = if retry_in.is_some() {
                WatcherState::Flapping
            } else {
                WatcherState::Stopped
            };
            let _ = self.with_watcher(name, |w| w.state = next);
            self.emit(name, EventKind::Stop {});
            epoch
        };
        let Some(delay) = retry_in else { return };
        tokio::time::sleep(delay).await;
        let _guard = lock.lock().await;
        let still_ours = self
            .with_watcher(name, |w| {
                w.epoch == epoch && w.state == WatcherState::Flapping
            })
            .unwrap_or(false);
        if still_ours && !self.shutting_down.get() {
            let _ = self.with_watcher(name, |w| w.restarts.reset_for_retry());
            info!(watcher = name, "retrying after flapping");
            if let Err(e) = self.start_watcher(name, false).await {
                warn!(watcher = name, "retry after flapping failed: {}", e.message);
            }
        }
    }

    // ----- stopping ---------------------------------------------------------------

    /// Stops `pids` of watcher `name` gracefully: the stop signal, then SIGKILL to
    /// the process group after `graceful_timeout`. Returns when all have exited.
    async fn stop_pids(self: &Rc<Self>, name: &str, pids: Vec<u32>) -> Vec<u32> {
        if pids.is_empty() {
            return pids;
        }
        let mut to_signal = Vec::new();
        let Ok((waits, signal, group, graceful)) = self.with_watcher(name, |w| {
            let mut waits = Vec::new();
            for pid in &pids {
                if let Some(p) = w.procs.get_mut(pid) {
                    let (tx, rx) = oneshot::channel();
                    p.waiters.push(tx);
                    waits.push((*pid, rx));
                    if !p.stopping {
                        p.stopping = true;
                        to_signal.push(*pid);
                    }
                }
            }
            (
                waits,
                w.config.stop_signal,
                w.config.stop_children,
                Duration::from_secs_f64(w.config.graceful_timeout),
            )
        }) else {
            return Vec::new();
        };
        for pid in &to_signal {
            if let Err(e) = send_signal(*pid, signal, group) {
                warn!(watcher = name, pid, "cannot send {signal}: {e}");
            }
            self.emit(
                name,
                EventKind::Kill {
                    pid: *pid,
                    signal: signal.to_string(),
                    group,
                },
            );
        }
        let deadline = tokio::time::Instant::now() + graceful;
        let mut waits = waits.into_iter().peekable();
        let mut stopped = Vec::new();
        let mut late = Vec::new();
        while let Some((pid, mut rx)) = waits.next() {
            match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(_) => stopped.push(pid),
                Err(_) => {
                    late.push((pid, rx));
                    late.extend(waits.by_ref());
                }
            }
        }
        for (pid, _) in &late {
            if self.state.borrow().owners.contains_key(pid) {
                if let Err(e) = send_signal(*pid, Signal::Kill, true) {
                    warn!(watcher = name, pid, "cannot send SIGKILL: {e}");
                }
                self.emit(
                    name,
                    EventKind::Kill {
                        pid: *pid,
                        signal: Signal::Kill.to_string(),
                        group: true,
                    },
                );
            }
        }
        for (pid, rx) in late {
            match tokio::time::timeout(KILL_WAIT, rx).await {
                Ok(_) => stopped.push(pid),
                Err(_) => error!(watcher = name, pid, "process did not exit after SIGKILL"),
            }
        }
        stopped
    }

    // ----- watcher operations (callers hold the watcher's lock) ---------------------

    async fn start_watcher(self: &Rc<Self>, name: &str, by_user: bool) -> CmdResult<ChangeReport> {
        self.refuse_if_shutting_down()?;
        let (already, count) = self.with_watcher(name, |w| {
            if w.state == WatcherState::Active {
                return (Some(w.pids()), 0);
            }
            if by_user {
                w.restarts.reset();
                w.epoch += 1;
            }
            w.state = WatcherState::Starting;
            w.last_error = None;
            let count = (w.config.numprocesses as usize).saturating_sub(w.running_count());
            (None, count)
        })?;
        if let Some(kept) = already {
            return Ok(ChangeReport {
                kept,
                done: true,
                ..ChangeReport::default()
            });
        }
        match self.spawn_many(name, count).await {
            Ok(started) => {
                let became_active = self.with_watcher(name, |w| {
                    if w.state == WatcherState::Starting {
                        w.state = WatcherState::Active;
                        true
                    } else {
                        false
                    }
                })?;
                if became_active {
                    self.emit(name, EventKind::Start {});
                    self.fill(name);
                }
                Ok(ChangeReport {
                    started,
                    done: true,
                    ..ChangeReport::default()
                })
            }
            Err(e) => {
                let _ = self.with_watcher(name, |w| w.state = WatcherState::Stopped);
                Err(e)
            }
        }
    }

    async fn stop_watcher(self: &Rc<Self>, name: &str, by_user: bool) -> CmdResult<ChangeReport> {
        let pids = self.with_watcher(name, |w| {
            if by_user {
                w.epoch += 1;
            }
            let was_stopped = matches!(w.state, WatcherState::Stopped | WatcherState::Flapping);
            w.state = WatcherState::Stopping;
            (was_stopped, w.pids())
        })?;
        let (was_stopped, pids) = pids;
        let stopped = self.stop_pids(name, pids).await;
        self.with_watcher(name, |w| w.state = WatcherState::Stopped)?;
        if !was_stopped {
            self.emit(name, EventKind::Stop {});
        }
        Ok(ChangeReport {
            stopped,
            done: true,
            ..ChangeReport::default()
        })
    }

    async fn reload_watcher(
        self: &Rc<Self>,
        name: &str,
        sequential: bool,
    ) -> CmdResult<ChangeReport> {
        let (active, old) = self.with_watcher(name, |w| {
            let mut old: Vec<(Instant, u32)> =
                w.running().map(|(pid, p)| (p.since, *pid)).collect();
            old.sort();
            (
                w.state == WatcherState::Active,
                old.into_iter().map(|(_, pid)| pid).collect::<Vec<_>>(),
            )
        })?;
        if !active {
            return self.start_watcher(name, true).await;
        }
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        if sequential {
            for pid in old {
                report.stopped.extend(self.stop_pids(name, vec![pid]).await);
                report.started.extend(self.spawn_many(name, 1).await?);
            }
        } else {
            let target = self.with_watcher(name, |w| w.config.numprocesses as usize)?;
            report.started = self.spawn_many(name, target).await?;
            report.stopped = self.stop_pids(name, old).await;
        }
        self.fill(name);
        Ok(report)
    }

    /// Sets the target process count and converges to it: spawns the missing
    /// processes, or stops the oldest extras.
    async fn scale_to(self: &Rc<Self>, name: &str, target: u32) -> CmdResult<ChangeReport> {
        let (active, running, mut by_age) = self.with_watcher(name, |w| {
            w.config.numprocesses = target;
            let mut by_age: Vec<(Instant, u32)> =
                w.running().map(|(pid, p)| (p.since, *pid)).collect();
            by_age.sort();
            (w.state == WatcherState::Active, w.running_count(), by_age)
        })?;
        self.persist();
        let mut report = ChangeReport {
            numprocesses: Some(target),
            done: true,
            ..ChangeReport::default()
        };
        if !active {
            return Ok(report);
        }
        let target = target as usize;
        if target > running {
            report.started = self.spawn_many(name, target - running).await?;
        } else if target < running {
            by_age.truncate(running - target);
            let victims = by_age.into_iter().map(|(_, pid)| pid).collect();
            report.stopped = self.stop_pids(name, victims).await;
        }
        report.kept = self.with_watcher(name, |w| {
            w.running()
                .map(|(pid, _)| *pid)
                .filter(|pid| !report.started.contains(pid))
                .collect()
        })?;
        Ok(report)
    }

    // ----- many watchers ------------------------------------------------------------

    /// Watcher names sorted by priority, highest first (name breaks ties).
    fn by_priority(&self, filter: impl Fn(&Watcher) -> bool) -> Vec<(i64, String)> {
        let state = self.state.borrow();
        let mut list: Vec<(i64, String)> = state
            .watchers
            .iter()
            .filter(|(_, w)| filter(w))
            .map(|(name, w)| (w.config.priority, name.clone()))
            .collect();
        list.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        list
    }

    /// Starts every autostart watcher, by priority, `warmup_delay` apart.
    pub async fn start_all(self: &Rc<Self>) -> ChangeReport {
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        let order = self.by_priority(|w| w.config.autostart);
        let warmup = self.settings.borrow().warmup_delay;
        for (i, (_, name)) in order.iter().enumerate() {
            if self.shutting_down.get() {
                break;
            }
            let Ok(lock) = self.lock_of(name) else {
                continue;
            };
            let _guard = lock.lock().await;
            let outcome = match self.start_watcher(name, true).await {
                Ok(r) => {
                    report.started.extend(r.started);
                    report.kept.extend(r.kept);
                    "started".to_string()
                }
                Err(e) => format!("failed: {}", e.message),
            };
            report.watchers.insert(name.clone(), outcome);
            if warmup > 0.0 && i + 1 < order.len() {
                tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
            }
        }
        report
    }

    /// Stops every watcher: lowest priority first, watchers of equal priority
    /// together. With `take_locks` false (shutdown) it does not wait for commands
    /// in progress.
    async fn stop_all(self: &Rc<Self>, take_locks: bool) -> ChangeReport {
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        let mut order = self.by_priority(|_| true);
        order.reverse();
        let mut groups: Vec<Vec<String>> = Vec::new();
        let mut last = None;
        for (priority, name) in order {
            if last != Some(priority) {
                groups.push(Vec::new());
                last = Some(priority);
            }
            if let Some(group) = groups.last_mut() {
                group.push(name);
            }
        }
        for group in groups {
            let tasks: Vec<_> = group
                .into_iter()
                .map(|name| {
                    let agent = Rc::clone(self);
                    tokio::task::spawn_local(async move {
                        let lock = agent.lock_of(&name).ok();
                        let _guard = match (&lock, take_locks) {
                            (Some(lock), true) => Some(lock.lock().await),
                            _ => None,
                        };
                        let result = agent.stop_watcher(&name, true).await;
                        (name, result)
                    })
                })
                .collect();
            for task in tasks {
                if let Ok((name, result)) = task.await {
                    match result {
                        Ok(r) => {
                            report.stopped.extend(r.stopped);
                            report.watchers.insert(name, "stopped".into());
                        }
                        Err(e) => {
                            report
                                .watchers
                                .insert(name, format!("failed: {}", e.message));
                        }
                    }
                }
            }
        }
        report
    }

    /// Stops everything for good: new commands are refused, watchers stop in
    /// reverse priority order.
    pub async fn shutdown(self: &Rc<Self>) -> ChangeReport {
        self.shutting_down.set(true);
        info!("stopping every watcher");
        self.stop_all(false).await
    }

    /// Kills every process group at once (a second SIGTERM during shutdown).
    pub fn kill_all(&self) {
        self.shutting_down.set(true);
        let pids: Vec<u32> = self.state.borrow().owners.keys().copied().collect();
        warn!("killing {} process group(s) now", pids.len());
        for pid in pids {
            let _ = send_signal(pid, Signal::Kill, true);
        }
    }

    // ----- commands -------------------------------------------------------------------

    /// True for commands that change state (and so may be run without waiting).
    pub fn is_mutating(command: &Command) -> bool {
        !matches!(
            command,
            Command::Status { .. }
                | Command::List { .. }
                | Command::Get { .. }
                | Command::Options { .. }
                | Command::GlobalOptions { .. }
                | Command::NumProcesses { .. }
                | Command::NumWatchers {}
                | Command::NodeInfo {}
        )
    }

    /// Runs one command to completion.
    pub async fn handle(self: &Rc<Self>, command: Command) -> CmdResult<Response> {
        if Self::is_mutating(&command) && !matches!(command, Command::Quit {}) {
            self.refuse_if_shutting_down()?;
        }
        match command {
            Command::Status { name } => self.status(name.as_deref()).map(Response::Status),
            Command::List { name: None } => Ok(Response::Watchers(
                self.state.borrow().watchers.keys().cloned().collect(),
            )),
            Command::List { name: Some(name) } => self.list(&name).map(Response::Processes),
            Command::Start { name: Some(name) } => self
                .locked(&name, |a, n| {
                    Box::pin(async move { a.start_watcher(&n, true).await })
                })
                .await
                .map(Response::Changes),
            Command::Start { name: None } => Ok(Response::Changes(self.start_all().await)),
            Command::Stop { name: Some(name) } => self
                .locked(&name, |a, n| {
                    Box::pin(async move { a.stop_watcher(&n, true).await })
                })
                .await
                .map(Response::Changes),
            Command::Stop { name: None } => Ok(Response::Changes(self.stop_all(true).await)),
            Command::Restart { name } => self
                .for_each_active(name, |a, n| {
                    Box::pin(async move {
                        let stopped = a.stop_watcher(&n, true).await?;
                        let mut started = a.start_watcher(&n, true).await?;
                        started.stopped = stopped.stopped;
                        Ok(started)
                    })
                })
                .await
                .map(Response::Changes),
            Command::Reload { name, sequential } => self
                .for_each_active(name, move |a, n| {
                    Box::pin(async move { a.reload_watcher(&n, sequential).await })
                })
                .await
                .map(Response::Changes),
            Command::Incr { name, nb } => self.incr(&name, nb).await.map(Response::Changes),
            Command::Decr { name, nb } => self.decr(&name, nb).await.map(Response::Changes),
            Command::Add {
                name,
                cmd,
                args,
                options,
                start,
            } => self
                .add(name, cmd, args, options, start)
                .await
                .map(Response::Changes),
            Command::Rm { name, nostop } => self.rm(&name, nostop).await.map(Response::Changes),
            Command::Set { name, options } => self.set(&name, options).await.map(Response::Changes),
            Command::Get { name, keys } => self.get(&name, &keys).map(Response::Options),
            Command::Options { name } => self
                .with_watcher(&name, |w| w.config.to_options())
                .map(Response::Options),
            Command::GlobalOptions { key } => {
                self.global_options(key.as_deref()).map(Response::Options)
            }
            Command::Signal {
                name,
                pid,
                signal,
                children,
            } => self
                .signal(&name, pid, signal, children)
                .map(Response::Changes),
            Command::NumProcesses { name } => {
                self.numprocesses(name.as_deref()).map(Response::Count)
            }
            Command::NumWatchers {} => {
                Ok(Response::Count(self.state.borrow().watchers.len() as u64))
            }
            Command::ReloadConfig {} => self.reload_config().await.map(Response::Changes),
            Command::Quit {} => {
                let report = self.shutdown().await;
                self.quit.notify_one();
                Ok(Response::Changes(report))
            }
            Command::NodeInfo {} => Ok(Response::NodeInfo(self.node_info())),
            other => Err(ErrorReply::new(
                ErrorKind::UnknownCommand,
                format!("command '{}' is not supported by this agent", other.name()),
            )),
        }
    }

    /// Runs `op` on watcher `name` holding its lock.
    async fn locked<F>(self: &Rc<Self>, name: &str, op: F) -> CmdResult<ChangeReport>
    where
        F: FnOnce(
            Rc<Self>,
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = CmdResult<ChangeReport>>>>,
    {
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        // It may have been removed while we waited.
        self.lock_of(name)?;
        op(Rc::clone(self), name.to_string()).await
    }

    /// Runs `op` on one watcher, or on every active watcher by priority.
    async fn for_each_active<F>(
        self: &Rc<Self>,
        name: Option<String>,
        op: F,
    ) -> CmdResult<ChangeReport>
    where
        F: Fn(
            Rc<Self>,
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = CmdResult<ChangeReport>>>>,
    {
        if let Some(name) = name {
            return self.locked(&name, op).await;
        }
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        for (_, name) in self.by_priority(|w| w.state == WatcherState::Active) {
            match self.locked(&name, &op).await {
                Ok(r) => {
                    report.started.extend(r.started);
                    report.stopped.extend(r.stopped);
                    report.watchers.insert(name, "done".into());
                }
                Err(e) => {
                    report
                        .watchers
                        .insert(name, format!("failed: {}", e.message));
                }
            }
        }
        Ok(report)
    }

    fn status(&self, name: Option<&str>) -> CmdResult<Vec<WatcherStatus>> {
        let state = self.state.borrow();
        let line = |name: &String, w: &Watcher| WatcherStatus {
            name: name.clone(),
            state: w.state,
            processes: u32::try_from(w.procs.len()).unwrap_or(u32::MAX),
            numprocesses: w.config.numprocesses,
            last_error: w.last_error.clone(),
        };
        match name {
            Some(name) => state
                .watchers
                .get_key_value(name)
                .map(|(n, w)| vec![line(n, w)])
                .ok_or_else(|| not_found(name)),
            None => Ok(state.watchers.iter().map(|(n, w)| line(n, w)).collect()),
        }
    }

    fn list(&self, name: &str) -> CmdResult<Vec<ProcessInfo>> {
        self.with_watcher(name, |w| {
            let mut list: Vec<ProcessInfo> = w
                .procs
                .iter()
                .map(|(pid, p)| ProcessInfo {
                    pid: *pid,
                    wid: p.wid,
                    started: now_secs(p.started),
                    state: if p.stopping { "stopping" } else { "running" }.into(),
                })
                .collect();
            list.sort_by_key(|p| (p.wid, p.pid));
            list
        })
    }

    async fn incr(self: &Rc<Self>, name: &str, nb: u32) -> CmdResult<ChangeReport> {
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        let (current, singleton) =
            self.with_watcher(name, |w| (w.config.numprocesses, w.config.singleton))?;
        if singleton && current.saturating_add(nb) > 1 {
            return Err(ErrorReply::new(
                ErrorKind::BadArguments,
                format!("watcher '{name}' is a singleton: it runs at most one process"),
            ));
        }
        let target = current
            .checked_add(nb)
            .filter(|t| *t <= 100_000)
            .ok_or_else(|| {
                ErrorReply::new(ErrorKind::BadArguments, "numprocesses would exceed 100000")
            })?;
        let report = self.scale_to(name, target).await?;
        self.emit(
            name,
            EventKind::Updated {
                keys: vec!["numprocesses".into()],
            },
        );
        Ok(report)
    }

    async fn decr(self: &Rc<Self>, name: &str, nb: u32) -> CmdResult<ChangeReport> {
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        let current = self.with_watcher(name, |w| w.config.numprocesses)?;
        let Some(target) = current.checked_sub(nb) else {
            return Err(ErrorReply::new(
                ErrorKind::BadArguments,
                format!("cannot decrease '{name}' by {nb}: it has numprocesses = {current}"),
            ));
        };
        let report = self.scale_to(name, target).await?;
        self.emit(
            name,
            EventKind::Updated {
                keys: vec!["numprocesses".into()],
            },
        );
        Ok(report)
    }

    async fn add(
        self: &Rc<Self>,
        name: String,
        cmd: String,
        args: Vec<String>,
        mut options: OptionMap,
        start: bool,
    ) -> CmdResult<ChangeReport> {
        names::validate("watcher", &name)
            .map_err(|e| ErrorReply::new(ErrorKind::BadArguments, e.to_string()))?;
        options.insert("cmd".into(), OptionValue::Str(cmd));
        if !args.is_empty() {
            options.insert(
                "args".into(),
                OptionValue::List(args.into_iter().map(OptionValue::Str).collect()),
            );
        }
        let config = WatcherConfig::from_options(&options)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| {
                ErrorReply::new(ErrorKind::InvalidConfig, format!("watcher '{name}': {e}"))
            })?;
        {
            let mut state = self.state.borrow_mut();
            if state.watchers.contains_key(&name) {
                return Err(ErrorReply::new(
                    ErrorKind::AlreadyExists,
                    format!("a watcher named '{name}' exists already (use `set` to change it)"),
                ));
            }
            state.watchers.insert(name.clone(), Watcher::new(config));
        }
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        if start {
            let lock = self.lock_of(&name)?;
            let _guard = lock.lock().await;
            match self.start_watcher(&name, true).await {
                Ok(r) => report.started = r.started,
                Err(e) => {
                    // Refuse the whole add: nothing half-made stays behind.
                    self.state.borrow_mut().watchers.remove(&name);
                    return Err(e);
                }
            }
        }
        self.persist();
        self.emit(&name, EventKind::Add {});
        report.watchers.insert(name, "added".into());
        Ok(report)
    }

    async fn rm(self: &Rc<Self>, name: &str, nostop: bool) -> CmdResult<ChangeReport> {
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        let mut report = if nostop {
            ChangeReport {
                kept: self.with_watcher(name, |w| w.pids())?,
                done: true,
                ..ChangeReport::default()
            }
        } else {
            self.stop_watcher(name, true).await?
        };
        self.state.borrow_mut().watchers.remove(name);
        self.persist();
        self.emit(name, EventKind::Rm {});
        report.watchers.insert(name.to_string(), "removed".into());
        Ok(report)
    }

    async fn set(self: &Rc<Self>, name: &str, options: OptionMap) -> CmdResult<ChangeReport> {
        if options.is_empty() {
            return Err(ErrorReply::new(
                ErrorKind::BadArguments,
                "set needs at least one option",
            ));
        }
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        let old = self.with_watcher(name, |w| w.config.clone())?;
        let new = old
            .with_changes(&options)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| {
                ErrorReply::new(ErrorKind::InvalidConfig, format!("watcher '{name}': {e}"))
            })?;
        let report = self.apply_config(name, old, new).await?;
        self.persist();
        self.emit(
            name,
            EventKind::Updated {
                keys: options.keys().cloned().collect(),
            },
        );
        Ok(report)
    }

    /// Moves watcher `name` from `old` to `new` config: live options in place, a
    /// new process count by scaling, anything else by a graceful reload.
    async fn apply_config(
        self: &Rc<Self>,
        name: &str,
        old: WatcherConfig,
        new: WatcherConfig,
    ) -> CmdResult<ChangeReport> {
        let old_options = old.to_options();
        let new_options = new.to_options();
        let needs_reload = new_options
            .iter()
            .filter(|(k, v)| old_options.get(*k) != Some(*v))
            .chain(
                old_options
                    .iter()
                    .filter(|(k, _)| !new_options.contains_key(*k)),
            )
            .any(|(k, _)| !LIVE_OPTIONS.contains(&k.as_str()));
        let target = new.numprocesses;
        let active = self.with_watcher(name, |w| {
            w.config = new;
            w.state == WatcherState::Active
        })?;
        if needs_reload && active {
            let mut report = self.reload_watcher(name, false).await?;
            report.numprocesses = Some(target);
            Ok(report)
        } else {
            self.scale_to(name, target).await
        }
    }

    fn get(&self, name: &str, keys: &[String]) -> CmdResult<OptionMap> {
        let options = self.with_watcher(name, |w| w.config.to_options())?;
        let mut out = OptionMap::new();
        for key in keys {
            match options.get(key) {
                Some(value) => {
                    out.insert(key.clone(), value.clone());
                }
                None if key == "working_dir" => {
                    out.insert(key.clone(), OptionValue::Str(String::new()));
                }
                None => {
                    return Err(ErrorReply::new(
                        ErrorKind::NotFound,
                        format!(
                            "watcher '{name}' has no option '{key}' (options: {})",
                            options.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn global_options(&self, key: Option<&str>) -> CmdResult<OptionMap> {
        let settings = self.settings.borrow();
        let mut all = OptionMap::new();
        let s = |v: &str| OptionValue::Str(v.to_string());
        all.insert("node".into(), s(&settings.node));
        all.insert("control".into(), s(&self.control));
        all.insert("pubsub".into(), s(&self.pubsub));
        all.insert("state_dir".into(), s(&settings.state_dir.to_string_lossy()));
        all.insert(
            "warmup_delay".into(),
            OptionValue::Float(settings.warmup_delay),
        );
        all.insert("insecure".into(), OptionValue::Bool(settings.insecure));
        all.insert(
            "labels".into(),
            OptionValue::Table(
                settings
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v)))
                    .collect(),
            ),
        );
        all.insert(
            "config".into(),
            s(&self
                .config_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()),
        );
        all.insert("version".into(), s(RINGMASTER_VERSION));
        match key {
            None => Ok(all),
            Some(key) => match all.remove(key) {
                Some(v) => Ok(OptionMap::from([(key.to_string(), v)])),
                None => Err(ErrorReply::new(
                    ErrorKind::NotFound,
                    format!(
                        "no global option '{key}' (options: {})",
                        all.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
            },
        }
    }

    fn signal(
        &self,
        name: &str,
        pid: Option<u32>,
        signal: Signal,
        children: bool,
    ) -> CmdResult<ChangeReport> {
        let pids = self.with_watcher(name, |w| w.pids())?;
        let targets = match pid {
            Some(pid) if pids.contains(&pid) => vec![pid],
            Some(pid) => {
                return Err(ErrorReply::new(
                    ErrorKind::NotFound,
                    format!(
                        "process {pid} is not one of watcher '{name}' (see `nodectl list {name}`)"
                    ),
                ))
            }
            None => pids,
        };
        for target in &targets {
            send_signal(*target, signal, children).map_err(|e| {
                ErrorReply::new(
                    ErrorKind::Os,
                    format!("cannot send {signal} to {target}: {e}"),
                )
            })?;
        }
        Ok(ChangeReport {
            kept: targets,
            done: true,
            ..ChangeReport::default()
        })
    }

    fn numprocesses(&self, name: Option<&str>) -> CmdResult<u64> {
        match name {
            Some(name) => self.with_watcher(name, |w| w.procs.len() as u64),
            None => Ok(self.state.borrow().owners.len() as u64),
        }
    }

    async fn reload_config(self: &Rc<Self>) -> CmdResult<ChangeReport> {
        let Some(path) = self.config_path.clone() else {
            return Err(ErrorReply::new(
                ErrorKind::InvalidConfig,
                "the agent was not started from a config file",
            ));
        };
        let config = Config::load(&path).map_err(|e| {
            ErrorReply::new(
                ErrorKind::InvalidConfig,
                format!("{e}; keeping the running config"),
            )
        })?;
        let mut report = ChangeReport {
            done: true,
            ..ChangeReport::default()
        };
        {
            let mut settings = self.settings.borrow_mut();
            let new = &config.agent;
            if new.node != settings.node
                || new.control != settings.control
                || new.pubsub != settings.pubsub
                || new.state_dir != settings.state_dir
            {
                report.watchers.insert(
                    "[agent]".into(),
                    "node, endpoints and state_dir take effect when nodeagent restarts".into(),
                );
            }
            settings.labels = new.labels.clone();
            settings.warmup_delay = new.warmup_delay;
        }
        let changes = {
            let state = self.state.borrow();
            let runtime: BTreeMap<String, WatcherConfig> = state
                .watchers
                .iter()
                .map(|(n, w)| (n.clone(), w.config.clone()))
                .collect();
            plan(&config.watchers, &state.baseline, &runtime)
        };
        self.state.borrow_mut().baseline = config.watchers.clone();
        let mut ordered: Vec<(String, Change)> = changes.into_iter().collect();
        // Removals first, then the rest by priority, highest first.
        ordered.sort_by_key(|(_, change)| match change {
            Change::Remove => (0, 0),
            Change::Replace(c) | Change::Add(c) => (1, c.priority.saturating_neg()),
        });
        for (name, change) in ordered {
            let outcome = match change {
                Change::Remove => self.rm(&name, false).await.map(|r| {
                    report.stopped.extend(r.stopped);
                    "removed"
                }),
                Change::Add(cfg) => {
                    let autostart = cfg.autostart;
                    self.state
                        .borrow_mut()
                        .watchers
                        .insert(name.clone(), Watcher::new(cfg));
                    self.emit(&name, EventKind::Add {});
                    if autostart {
                        self.locked(&name, |a, n| {
                            Box::pin(async move { a.start_watcher(&n, true).await })
                        })
                        .await
                        .map(|r| {
                            report.started.extend(r.started);
                            "added"
                        })
                    } else {
                        Ok("added")
                    }
                }
                Change::Replace(cfg) => {
                    let result = match self.lock_of(&name) {
                        Ok(lock) => {
                            let _guard = lock.lock().await;
                            match self.with_watcher(&name, |w| w.config.clone()) {
                                Ok(old) => self.apply_config(&name, old, cfg).await,
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    result.map(|r| {
                        report.started.extend(r.started);
                        report.stopped.extend(r.stopped);
                        self.emit(
                            &name,
                            EventKind::Updated {
                                keys: vec!["config".into()],
                            },
                        );
                        "changed"
                    })
                }
            };
            let text = match outcome {
                Ok(text) => text.to_string(),
                Err(e) => format!("failed: {}", e.message),
            };
            report.watchers.insert(name, text);
        }
        self.persist();
        info!("config reloaded from {}", path.display());
        Ok(report)
    }

    fn node_info(&self) -> NodeInfo {
        let facts = self.host.borrow_mut().read();
        let settings = self.settings.borrow();
        let state = self.state.borrow();
        NodeInfo {
            node: settings.node.clone(),
            labels: settings.labels.clone(),
            version: RINGMASTER_VERSION.to_string(),
            protocol: PROTOCOL_VERSION,
            uptime: self.started.elapsed().as_secs_f64(),
            cpus: facts.cpus,
            memory_total: facts.memory_total,
            memory_available: facts.memory_available,
            load: facts.load,
            processes: u32::try_from(state.owners.len()).unwrap_or(u32::MAX),
            watchers: u32::try_from(state.watchers.len()).unwrap_or(u32::MAX),
            host_processes: facts.processes,
            control: self.control.clone(),
            pubsub: self.pubsub.clone(),
            events_dropped: self.dropped.get(),
        }
    }
}

fn apply_plan(runtime: &mut BTreeMap<String, WatcherConfig>, changes: BTreeMap<String, Change>) {
    for (name, change) in changes {
        match change {
            Change::Add(cfg) | Change::Replace(cfg) => {
                runtime.insert(name, cfg);
            }
            Change::Remove => {
                runtime.remove(&name);
            }
        }
    }
}
