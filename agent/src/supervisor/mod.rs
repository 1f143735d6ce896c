//! The supervisor: watchers, their processes and their lifecycle (start, stop,
//! reload, scale, exits, restart policy). The commands of the control protocol are
//! built on it in [`commands`].
//!
//! Everything runs on one thread (a `current_thread` runtime with a `LocalSet`), so
//! the state is a plain `RefCell` that is never borrowed across an `.await`. There is
//! no global lock: each watcher has its own async mutex that orders the commands
//! acting on *that* watcher, while `status` and commands on other watchers go on. A
//! slow graceful stop is a task waiting for exits, not a blocked loop.
//!
//! Exits are noticed when they happen: each child has a task awaiting it (tokio reaps
//! through a pidfd or SIGCHLD, never by polling), which calls [`Agent::on_exit`]. That
//! publishes exactly one `reap`, wakes whoever waits for the process, and feeds the
//! exit to the watcher's [`Life`], the pure state machine that decides (with the
//! restart policy) whether to respawn at once, after a backoff, leave the slot
//! empty, or stop a flapping watcher. The watcher's state is only ever changed
//! there; [`effects`] carries out what it returns.
//!
//! A process's descendants go with it, even those that left its process group:
//! see [`descendants`] for what is stopped when.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use ringmaster_protocol::message::{ChangeReport, LastExit, WatcherState};
use ringmaster_protocol::seal::RefusalCounts;
use ringmaster_protocol::stats::{Stat, StatKind};
use ringmaster_protocol::transport::ConnectionCounter;
use ringmaster_protocol::{Codec, ErrorKind, ErrorReply, Event, EventKind, ExitInfo, Signal};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tracing::{debug, error, info, warn};

use crate::config::{AgentSettings, Config, WatcherConfig};
use crate::hooks::{HookPoint, HookSubject};
use crate::lineage::Mark;
use crate::machine::{Clock, Effect, ExitSeen, FillPlan, Input, Life, Occupancy};
use crate::nodeinfo::HostProbe;
use crate::output::{Captured, OutputService};
use crate::persist::{PersistError, StateStore};
use crate::sockets::Sockets;
use crate::spawn::{self, SpawnError, SpawnVars};
use crate::state_dir::{StateDir, StateLock};
use crate::stats::{Sample, Target};
use crate::survivors::PidJournal;

mod commands;
mod descendants;
mod effects;
mod lifecycle;
mod socket_ops;
mod upgrade_ops;

pub use upgrade_ops::{TakenOver, UpgradePlan};

use descendants::{Marked, Sweep, SweepQueue};

use lifecycle::{hook_error, OnFailure, Recheck, TaskGuard};

type CmdResult<T> = Result<T, ErrorReply>;

/// How long a process may take to die after SIGKILL before the agent reports it.
const KILL_WAIT: Duration = crate::terminate::KILL_WAIT;

/// A published message: topic and encoded body.
pub type Outgoing = (String, Vec<u8>);

/// The connection counts of the agent's two endpoints.
#[derive(Debug, Clone)]
pub struct EndpointCounters {
    /// The control endpoint's.
    pub control: ConnectionCounter,
    /// The publish endpoint's.
    pub pubsub: ConnectionCounter,
}

/// A process that exited, as [`Agent::on_exit`] found it.
struct Exited {
    pid: u32,
    wid: u32,
    exit: ExitInfo,
    expected: bool,
    /// It exited with one of the watcher's success codes.
    success: bool,
    uptime: Duration,
    /// What the watcher's life says to do about it.
    effects: Vec<Effect>,
    /// Processes it started are still alive in its process group.
    leftovers: bool,
    /// Its mark, which its descendants carry.
    mark: Mark,
}

struct Proc {
    wid: u32,
    started: SystemTime,
    since: Instant,
    stopping: bool,
    waiters: Vec<oneshot::Sender<ExitInfo>>,
    /// Share of `max_age_variance` this process gets, in [0, 1), drawn once.
    age_draw: f64,
    /// Its `max_age` timer, when `max_age` is set.
    age_timer: Option<TaskGuard>,
    /// The mark in its environment (see [`crate::lineage`]).
    mark: Mark,
}

struct Watcher {
    config: WatcherConfig,
    /// Its phase, restart history and last error: changed only through
    /// [`Agent::step`].
    life: Life,
    procs: BTreeMap<u32, Proc>,
    lock: Rc<Mutex<()>>,
    /// Slots (wids) whose process waits for its `before_spawn` hook.
    pending: BTreeSet<u32>,
    /// While `waiting` (on_demand): the task waiting for a connection.
    demand: Option<TaskGuard>,
}

impl Watcher {
    fn new(config: WatcherConfig) -> Self {
        Watcher {
            config,
            life: Life::default(),
            procs: BTreeMap::new(),
            lock: Rc::new(Mutex::new(())),
            pending: BTreeSet::new(),
            demand: None,
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

    fn free_wid(&self, skip: &[u32]) -> u32 {
        let used: BTreeSet<u32> = self
            .procs
            .values()
            .map(|p| p.wid)
            .chain(self.pending.iter().copied())
            .chain(skip.iter().copied())
            .collect();
        (1..).find(|w| !used.contains(w)).unwrap_or(1)
    }

    fn supervised(&self) -> bool {
        self.life.supervised()
    }

    /// The state the protocol reports.
    fn state(&self) -> WatcherState {
        self.life.wire_state()
    }

    /// What is alive or about to be besides the processes being stopped.
    fn occupancy(&self) -> Occupancy {
        Occupancy {
            running: self.running_count(),
            pending: self.pending.len(),
        }
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
    /// The desired state, written before it is acted on.
    store: RefCell<StateStore>,
    /// The live processes, for the next agent if this one dies.
    pids: RefCell<PidJournal>,
    /// Held for the agent's life.
    _lock: Option<StateLock>,
    codec: Codec,
    events: mpsc::Sender<Outgoing>,
    seq: Cell<u64>,
    dropped: Cell<u64>,
    refused: RefCell<RefusalCounts>,
    malformed: Cell<u64>,
    connections: RefCell<Option<EndpointCounters>>,
    started: Instant,
    shutting_down: Cell<bool>,
    quit: Notify,
    host: RefCell<HostProbe>,
    latest_stats: RefCell<Sample>,
    /// Listening sockets handed to children (see `socket_ops`).
    sockets: RefCell<Sockets>,
    /// Where output that goes through the agent is read, kept and published.
    output: OutputService,
    /// Children handed over by an upgrade in place, reaped by pid.
    adopted: Rc<crate::adopted::Adopted>,
    /// The binary this agent runs, as it was when it started.
    binary: PathBuf,
    /// Where an upgrade writes its handover.
    handover_path: PathBuf,
    /// The listening sockets of the control and publish endpoints.
    endpoint_fds: Cell<Option<(std::os::fd::RawFd, std::os::fd::RawFd)>>,
    /// Upgrades in place since the agent's process started.
    upgrades: Cell<u32>,
    /// How long the agent had run before this program image.
    uptime_before: Cell<Duration>,
    /// An upgrade is being checked or carried out.
    upgrading: Cell<bool>,
    /// An upgrade that passed its checks, until its reply went out.
    upgrade_plan: RefCell<Option<UpgradePlan>>,
    upgrade_go: Notify,
    /// Workers that exited by themselves, whose descendants are looked for.
    sweeps: SweepQueue,
}

fn now_secs(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The reply to a change that could not be saved.
fn persist_error(what: &str, e: &PersistError) -> ErrorReply {
    ErrorReply::new(
        ErrorKind::Os,
        format!(
            "{what}: nothing was changed, because the change cannot be saved: {e}. The running \
             and the saved state are as they were; make the state directory writable (or free \
             space on its file system) and try again"
        ),
    )
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

/// Whether any process is left in process group `group`.
fn group_alive(group: u32) -> bool {
    crate::terminate::Target::Group(group).alive()
}

impl Agent {
    /// A new agent for `config`, bound at `control` and `pubsub`, publishing into
    /// `events`, running the watchers of `state` (the config merged with the
    /// persisted runtime changes, see [`crate::state_dir::open`]).
    pub fn new(
        config: Config,
        state: StateDir,
        control: String,
        pubsub: String,
        events: mpsc::Sender<Outgoing>,
    ) -> Rc<Agent> {
        let StateDir {
            paths,
            lock,
            store,
            runtime,
            pids,
        } = state;
        let state = State {
            watchers: runtime
                .into_iter()
                .map(|(name, cfg)| (name, Watcher::new(cfg)))
                .collect(),
            owners: HashMap::new(),
            baseline: config.watchers.clone(),
        };
        let output = OutputService::start(&config.agent.node);
        Rc::new(Agent {
            settings: RefCell::new(config.agent),
            config_path: config.path,
            control,
            pubsub,
            state: RefCell::new(state),
            store: RefCell::new(store),
            pids: RefCell::new(pids),
            _lock: lock,
            codec: Codec::default(),
            events,
            seq: Cell::new(0),
            dropped: Cell::new(0),
            refused: RefCell::new(RefusalCounts::default()),
            malformed: Cell::new(0),
            connections: RefCell::new(None),
            started: Instant::now(),
            shutting_down: Cell::new(false),
            quit: Notify::new(),
            host: RefCell::new(HostProbe::default()),
            latest_stats: RefCell::new(Sample::default()),
            sockets: RefCell::new(Sockets::default()),
            output,
            adopted: Rc::default(),
            binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("nodeagent")),
            handover_path: paths.handover(),
            endpoint_fds: Cell::new(None),
            upgrades: Cell::new(0),
            uptime_before: Cell::new(Duration::ZERO),
            upgrading: Cell::new(false),
            upgrade_plan: RefCell::new(None),
            upgrade_go: Notify::new(),
            sweeps: SweepQueue::default(),
        })
    }

    /// The output service (captured streams, output files, `logs`).
    pub fn output(&self) -> &OutputService {
        &self.output
    }

    /// Node name.
    pub fn node(&self) -> String {
        self.settings.borrow().node.clone()
    }

    /// Records the control endpoint's refusal counts, for `nodeinfo`.
    pub fn record_refusals(&self, counts: &RefusalCounts) {
        self.refused.borrow_mut().clone_from(counts);
    }

    /// Everything refused so far, for the host statistics.
    fn refused_total(&self) -> u64 {
        let connections = self.connections.borrow().as_ref().map_or(0, |c| {
            [c.control.load(), c.pubsub.load()]
                .iter()
                .map(|n| n.refused + n.handshake_failed + n.accept_failed)
                .sum()
        });
        connections + self.refused.borrow().total() + self.malformed.get()
    }

    /// Counts one control frame that was not a Ringmaster request.
    pub fn record_malformed(&self) {
        self.malformed.set(self.malformed.get() + 1);
    }

    /// Where `nodeinfo` reads the endpoints' connection counts.
    pub fn watch_connections(&self, counters: EndpointCounters) {
        *self.connections.borrow_mut() = Some(counters);
    }

    /// One line for systemd's `STATUS=`: how many watchers and processes.
    pub fn summary(&self) -> String {
        let state = self.state.borrow();
        format!(
            "{} watcher(s), {} process(es)",
            state.watchers.len(),
            state.owners.len()
        )
    }

    /// Waits until a `quit` command has stopped everything.
    pub async fn quit_requested(&self) {
        self.quit.notified().await;
    }

    fn next_seq(&self) -> u64 {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        seq
    }

    /// Queues one message for the publisher; never waits (a full queue drops and
    /// counts it).
    fn publish<T: serde::Serialize>(&self, topic: String, body: &T) {
        match self.codec.encode(body) {
            Ok(body) => {
                if self.events.try_send((topic, body)).is_err() {
                    self.dropped.set(self.dropped.get() + 1);
                }
            }
            Err(e) => error!("cannot encode {topic}: {e}"),
        }
    }

    fn emit(&self, watcher: &str, kind: EventKind) {
        let event = Event {
            node: self.node(),
            seq: self.next_seq(),
            time: now_secs(SystemTime::now()),
            watcher: watcher.to_string(),
            kind,
        };
        self.publish(event.topic(), &event);
    }

    /// What the next statistics sample should cover: every watcher, and every
    /// live process with its age.
    pub fn stats_targets(&self) -> (Vec<String>, Vec<Target>) {
        let state = self.state.borrow();
        let watchers = state.watchers.keys().cloned().collect();
        let targets = state
            .watchers
            .iter()
            .flat_map(|(name, w)| {
                w.procs.iter().map(move |(pid, p)| Target {
                    watcher: name.clone(),
                    pid: *pid,
                    wid: p.wid,
                    age: p.since.elapsed().as_secs_f64(),
                })
            })
            .collect();
        (watchers, targets)
    }

    /// Publishes a sample (`stat.<node>.<watcher>.<pid>`, `stat.<node>.<watcher>`,
    /// `stat.<node>`) and keeps it for `stats` and `dstats`.
    pub fn publish_stats(&self, mut sample: Sample) {
        if let Some(host) = sample.host.as_mut() {
            host.refused = self.refused_total();
        }
        let node = self.node();
        let time = sample.time;
        let stat = |kind: StatKind| {
            let message = Stat {
                node: node.clone(),
                seq: self.next_seq(),
                time,
                kind,
            };
            self.publish(message.topic(), &message);
        };
        for process in &sample.processes {
            stat(StatKind::Process(process.clone()));
        }
        for watcher in &sample.watchers {
            stat(StatKind::Watcher(watcher.clone()));
        }
        if let Some(host) = &sample.host {
            stat(StatKind::Host(host.clone()));
        }
        *self.latest_stats.borrow_mut() = sample;
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
        if self.upgrading.get() && self.shutting_down.get() {
            return Err(ErrorReply::new(
                ErrorKind::ShuttingDown,
                "the agent is upgrading in place and takes no changes until it is done; try                  again in a moment",
            ));
        }
        if self.shutting_down.get() {
            return Err(ErrorReply::new(
                ErrorKind::ShuttingDown,
                "the agent is shutting down",
            ));
        }
        Ok(())
    }

    /// Writes a change of watcher `name` before it is made: its new config, or
    /// (`None`) its removal. On failure nothing was written and nothing may be
    /// done: the error says so to the client.
    fn persist_watcher(&self, name: &str, config: Option<&WatcherConfig>) -> CmdResult<()> {
        let mut store = self.store.borrow_mut();
        let written = match config {
            Some(config) => store.put(name, config),
            None => store.del(name),
        };
        written.map_err(|e| persist_error(&format!("watcher '{name}'"), &e))
    }

    /// Writes the whole desired state (`reloadconfig`), before it is made.
    fn persist_all(
        &self,
        baseline: BTreeMap<String, WatcherConfig>,
        watchers: BTreeMap<String, WatcherConfig>,
    ) -> CmdResult<()> {
        self.store
            .borrow_mut()
            .reset(baseline, watchers)
            .map_err(|e| persist_error("reloadconfig", &e))
    }

    // ----- spawning -------------------------------------------------------------

    /// Starts one process of `name` in slot `wid`.
    fn spawn_process(self: &Rc<Self>, name: &str, wid: u32) -> Result<u32, SpawnError> {
        let node = self.node();
        let mut prepared = {
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
            spawn::prepare_with(&w.config, &vars, &self.sockets.borrow())?
        };
        let captured = prepared.take_output();
        let mark = prepared.mark().clone();
        let mut child = prepared.spawn()?;
        let pid = child.pid();
        let now = Instant::now();
        let proc = Proc {
            wid,
            started: SystemTime::now(),
            since: now,
            stopping: false,
            waiters: Vec::new(),
            age_draw: fastrand::f64(),
            age_timer: None,
            mark,
        };
        self.supervise(name, pid, proc, captured, async move { child.wait().await });
        let _ = self.with_watcher(name, |w| w.life.set_error(None));
        self.emit(name, EventKind::Spawn { pid, wid });
        debug!(watcher = name, pid, wid, "spawned");
        Ok(pid)
    }

    /// Makes `pid` a process of watcher `name` (its slot and times in `proc`):
    /// recorded in the pid journal, its captured output attached, its `max_age`
    /// timer armed, and its end (`exit`) handed to [`Agent::on_exit`]. For a
    /// process just spawned, and for one adopted across an upgrade in place.
    fn supervise(
        self: &Rc<Self>,
        name: &str,
        pid: u32,
        proc: Proc,
        captured: Captured,
        exit: impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>> + 'static,
    ) {
        self.pids.borrow_mut().spawned(pid, name);
        if !captured.is_empty() {
            self.output.attach(name, pid, proc.wid, captured);
        }
        let aging = {
            let mut state = self.state.borrow_mut();
            state.owners.insert(pid, name.to_string());
            match state.watchers.get_mut(name) {
                Some(w) => {
                    w.procs.insert(pid, proc);
                    w.config.max_age > 0.0
                }
                None => false,
            }
        };
        if aging {
            self.arm_age_timer(name, pid, None);
        }
        let agent = Rc::clone(self);
        tokio::task::spawn_local(async move {
            let status = exit.await;
            agent.pids.borrow_mut().reaped(pid);
            agent.on_exit(pid, status);
        });
    }

    /// Starts `count` processes of `name`, `warmup_delay` apart. On failure, stops
    /// those it started and reports the error.
    async fn spawn_many(self: &Rc<Self>, name: &str, count: usize) -> CmdResult<Vec<u32>> {
        let mut started = Vec::with_capacity(count);
        // Slots a spawn hook refused in this round (retried later by the policy).
        let mut refused = Vec::new();
        for i in 0..count {
            let free = self.with_watcher(name, |w| w.supervised().then(|| w.free_wid(&refused)));
            let wid = match free {
                Ok(Some(wid)) => wid,
                // Stopped, removed or shutting down meanwhile: stop here.
                Ok(None) | Err(_) => break,
            };
            if self.shutting_down.get() {
                break;
            }
            let spawned = if self.has_spawn_hooks(name) {
                let _ = self.with_watcher(name, |w| w.pending.insert(wid));
                self.spawn_with_hooks(name, wid, Recheck::Command).await
            } else {
                self.spawn_process(name, wid).map(Some)
            };
            match spawned {
                Ok(Some(pid)) => started.push(pid),
                Ok(None) => refused.push(wid),
                Err(e) => {
                    let message = format!("watcher '{name}': {e}");
                    let _ = self.with_watcher(name, |w| w.life.set_error(Some(message.clone())));
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
        let plan = self.with_watcher(name, |w| {
            let occupied: BTreeSet<u32> = w
                .procs
                .values()
                .map(|p| p.wid)
                .chain(w.pending.iter().copied())
                .collect();
            w.life
                .fill_plan(&w.config, &occupied, w.occupancy(), Instant::now())
        });
        let Ok(FillPlan {
            spawn: to_spawn,
            wake,
        }) = plan
        else {
            return;
        };
        let hooked = !to_spawn.is_empty() && self.has_spawn_hooks(name);
        for wid in to_spawn {
            if hooked {
                self.fill_slot_with_hooks(name, wid);
            } else if let Err(e) = self.spawn_process(name, wid) {
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

    fn on_spawn_failure(self: &Rc<Self>, name: &str, wid: u32, error: impl std::fmt::Display) {
        let error = error.to_string();
        self.apply(name, Input::SpawnFailed { wid, error });
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
        let record = LastExit {
            pid,
            wid: proc.wid,
            exit,
            time: now_secs(SystemTime::now()),
            uptime: uptime.as_secs_f64(),
        };
        // Descendants the leader left behind in its group go before its slot is
        // filled again.
        let leftovers = !expected && group_alive(pid);
        let success = exit.code.is_some_and(|code| w.config.is_success(code));
        let seen = ExitSeen {
            record,
            uptime,
            expected,
            left: w.occupancy(),
        };
        let effects = w.life.next(&w.config, Input::Exited(seen), Clock::now());
        let hooks = &w.config.hooks;
        let reap_hooks = hooks.before_reap.is_some() || hooks.after_reap.is_some();
        drop(state);
        let exited = Exited {
            pid,
            wid: proc.wid,
            exit,
            expected,
            success,
            uptime,
            effects,
            leftovers,
            mark: proc.mark,
        };
        if reap_hooks {
            // The hooks run around the rest; whoever waits for this exit (a stop)
            // waits for them too.
            let agent = Rc::clone(self);
            tokio::task::spawn_local(async move {
                agent.reap_with_hooks(name, exited, proc.waiters).await;
            });
            return;
        }
        for waiter in proc.waiters {
            let _ = waiter.send(exit);
        }
        self.after_exit(&name, exited);
    }

    /// What follows an exit: `reap`, and a respawn or the end of the watcher.
    fn after_exit(self: &Rc<Self>, name: &str, exited: Exited) {
        let Exited {
            pid,
            wid,
            exit,
            expected,
            success,
            uptime,
            effects,
            leftovers,
            mark,
        } = exited;
        self.emit(
            name,
            EventKind::Reap {
                pid,
                wid,
                exit,
                expected,
                uptime: uptime.as_secs_f64(),
            },
        );
        let ran = uptime.as_secs_f64();
        if expected {
            info!(watcher = %name, pid, wid, "process stopped: {exit}");
        } else if success {
            info!(watcher = %name, pid, wid, "process exited by itself after {ran:.1}s: {exit}");
        } else {
            warn!(watcher = %name, pid, wid, "process exited by itself after {ran:.1}s: {exit}");
        }
        if leftovers {
            let agent = Rc::clone(self);
            let name = name.to_string();
            tokio::task::spawn_local(async move {
                agent.stop_leftovers(&name, pid, &mark).await;
                agent.carry_out(&name, effects);
            });
        } else {
            if !expected {
                // What it started outside its group, if anything: looked for
                // while the slot is filled again.
                self.sweep_later(name, pid, mark);
            }
            self.carry_out(name, effects);
        }
    }

    /// [`Agent::after_exit`] between `before_reap` and `after_reap`; then wakes
    /// whoever waits for the exit.
    async fn reap_with_hooks(
        self: &Rc<Self>,
        name: String,
        exited: Exited,
        waiters: Vec<oneshot::Sender<ExitInfo>>,
    ) {
        let subject = HookSubject {
            pid: Some(exited.pid),
            wid: Some(exited.wid),
            exit: Some(exited.exit),
            expected: Some(exited.expected),
            ..HookSubject::default()
        };
        let exit = exited.exit;
        let _ = self
            .hook(&name, HookPoint::BeforeReap, subject, OnFailure::Report)
            .await;
        self.after_exit(&name, exited);
        let _ = self
            .hook(&name, HookPoint::AfterReap, subject, OnFailure::Report)
            .await;
        for waiter in waiters {
            let _ = waiter.send(exit);
        }
    }

    // ----- stopping ---------------------------------------------------------------

    /// Stops `pids` of watcher `name` gracefully: the stop signal, then SIGKILL to
    /// the process group after `graceful_timeout`; then what they left (see
    /// [`descendants`]). Returns when all have exited.
    async fn stop_pids(self: &Rc<Self>, name: &str, pids: Vec<u32>) -> Vec<u32> {
        self.stop_pids_as(name, pids, Sweep::Workers).await
    }

    /// [`Agent::stop_pids`], saying what is swept once they are gone.
    async fn stop_pids_as(self: &Rc<Self>, name: &str, pids: Vec<u32>, sweep: Sweep) -> Vec<u32> {
        if pids.is_empty() {
            self.finish_stop(name, &[], sweep).await;
            return pids;
        }
        let mut to_signal = Vec::new();
        let mut marked: Vec<Marked> = Vec::new();
        let mut signalled: Vec<Marked> = Vec::new();
        let Ok((waits, signal, group, graceful)) = self.with_watcher(name, |w| {
            let mut waits = Vec::new();
            for pid in &pids {
                if let Some(p) = w.procs.get_mut(pid) {
                    let (tx, rx) = oneshot::channel();
                    p.waiters.push(tx);
                    waits.push((*pid, rx));
                    marked.push((*pid, p.mark.clone()));
                    if !p.stopping {
                        p.stopping = true;
                        to_signal.push(*pid);
                        signalled.push((*pid, p.mark.clone()));
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
        // With stop_children, what they started outside their groups gets the
        // signal with them.
        let escaped = if group {
            self.escaped(&signalled)
        } else {
            Vec::new()
        };
        if self.has_signal_hooks(name) {
            self.signal_many_with_hooks(name, &to_signal, signal, group, true)
                .await;
            self.signal_found(name, &escaped, signal);
        } else {
            self.signal_found(name, &escaped, signal);
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
        let alive: Vec<u32> = late
            .iter()
            .map(|(pid, _)| *pid)
            .filter(|pid| self.state.borrow().owners.contains_key(pid))
            .collect();
        if !alive.is_empty() && self.has_signal_hooks(name) {
            self.signal_many_with_hooks(name, &alive, Signal::Kill, true, true)
                .await;
        } else {
            for pid in alive {
                if let Err(e) = send_signal(pid, Signal::Kill, true) {
                    warn!(watcher = name, pid, "cannot send SIGKILL: {e}");
                }
                self.emit(
                    name,
                    EventKind::Kill {
                        pid,
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
        self.finish_stop(name, &marked, sweep).await;
        stopped
    }

    // ----- watcher operations (callers hold the watcher's lock) ---------------------

    async fn start_watcher(self: &Rc<Self>, name: &str, by_user: bool) -> CmdResult<ChangeReport> {
        self.refuse_if_shutting_down()?;
        // An on_demand watcher waits for a connection first.
        if let Some(waiting) = self.wait_for_demand(name, by_user)? {
            return Ok(waiting);
        }
        self.start_processes(name, by_user).await
    }

    /// The start itself: `before_start`, the processes, `after_start`, `active`.
    async fn start_processes(
        self: &Rc<Self>,
        name: &str,
        by_user: bool,
    ) -> CmdResult<ChangeReport> {
        self.refuse_if_shutting_down()?;
        let (already, count) = self.with_watcher(name, |w| {
            if w.life.is_active() {
                return (Some(w.pids()), 0);
            }
            w.life
                .next(&w.config, Input::Start { by_user }, Clock::now());
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
        self.before_start(name).await?;
        match self.spawn_many(name, count).await {
            Ok(started) => {
                self.after_start(name).await?;
                self.with_watcher(name, |_| ())?;
                self.apply(name, Input::Started);
                Ok(ChangeReport {
                    started,
                    done: true,
                    ..ChangeReport::default()
                })
            }
            Err(e) => {
                let error = e.message.clone();
                self.apply(name, Input::StartAborted { error });
                Err(e)
            }
        }
    }

    async fn stop_watcher(self: &Rc<Self>, name: &str, by_user: bool) -> CmdResult<ChangeReport> {
        // The agent's shutdown always stops: a failed before_stop is only reported.
        let on_failure = if self.shutting_down.get() {
            OnFailure::Report
        } else {
            OnFailure::Abort
        };
        self.stop_watcher_as(name, by_user, on_failure).await
    }

    /// [`Agent::stop_watcher`], saying whether a failed `before_stop` aborts it.
    async fn stop_watcher_as(
        self: &Rc<Self>,
        name: &str,
        by_user: bool,
        on_failure: OnFailure,
    ) -> CmdResult<ChangeReport> {
        let running = self.with_watcher(name, |w| w.life.is_running())?;
        if running {
            if let Err(failure) = self
                .watcher_hook(name, HookPoint::BeforeStop, on_failure)
                .await
            {
                return Err(hook_error(
                    name,
                    &failure,
                    "the stop was aborted, the watcher keeps running",
                ));
            }
        }
        let (was_stopped, pids) = self.with_watcher(name, |w| (!w.life.is_running(), w.pids()))?;
        self.apply(name, Input::Stop { by_user });
        // A watcher that was stopped and has no process had its orphans swept
        // when it stopped: no need to scan again (`rm` of many watchers).
        let sweep = if was_stopped && pids.is_empty() {
            Sweep::Workers
        } else {
            Sweep::Watcher
        };
        let stopped = self.stop_pids_as(name, pids, sweep).await;
        self.with_watcher(name, |_| ())?;
        let effects = self.step(name, Input::Stopped);
        self.carry_out_in_order(name, effects).await;
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
                w.life.is_active(),
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
    /// processes, or stops the oldest extras. The caller has saved the count.
    async fn scale_to(self: &Rc<Self>, name: &str, target: u32) -> CmdResult<ChangeReport> {
        let (active, running, mut by_age) = self.with_watcher(name, |w| {
            w.config.numprocesses = target;
            w.life.scaled(target);
            let mut by_age: Vec<(Instant, u32)> =
                w.running().map(|(pid, p)| (p.since, *pid)).collect();
            by_age.sort();
            (w.life.is_active(), w.running_count(), by_age)
        })?;
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
        let report = self.stop_all(false).await;
        self.stop_strays().await;
        report
    }

    /// Kills every process group at once (a second SIGTERM during shutdown).
    pub fn kill_all(&self) {
        self.shutting_down.set(true);
        let pids: Vec<u32> = self.state.borrow().owners.keys().copied().collect();
        warn!("killing {} process group(s) now", pids.len());
        for pid in pids {
            let _ = send_signal(pid, Signal::Kill, true);
        }
        self.kill_everything_below();
    }
}
