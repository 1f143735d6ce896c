//! The life of one watcher as a pure state machine: an [`Input`] goes in (a
//! command, an exit, a failed spawn, a timer, a hook's verdict, the wait for a
//! connection) and [`Effect`]s come out (emit an event, run a hook, fill the
//! slots, arm a timer, stop the processes). Nothing here spawns, signals, sleeps
//! or reads a clock: the time and the jitter draw come in as a [`Clock`], so
//! every transition is unit-tested with a fake clock, and the supervisor only
//! carries out what [`Life::next`] returns.
//!
//! ```text
//!            Start                 Started
//!  Stopped ─────────▶ Starting ─────────────▶ Active ──┐ Exited / SpawnFailed
//!     ▲  ▲  StartAborted │                     │  ▲    │ (policy: Fill, FillAt,
//!     │  └───────────────┘                Stop │  └────┘  LeaveEmpty)
//!     │                                        ▼
//!     │ Stopped                    Stopping(Asked) ◀── Stop (any phase)
//!     └───────────────────────────────────┘
//!   Active ── flapping verdict ──▶ Stopping(Flapping) ── Stopped ──▶ Flapping
//!   Flapping ── RetryDue(epoch) ──▶ (start again)     or, after max_retry: Stopped(GaveUp)
//!   Active ── last slot left empty by the policy ──▶ Stopped(AllExited) or Waiting
//!   Stopped ── Wait ──▶ Waiting ── (a connection: Start) ──▶ Starting
//! ```
//!
//! A user's `start` or `stop` bumps the watcher's *epoch*: a flapping stop or
//! retry scheduled before it carries the old epoch and does nothing when it
//! comes due. The wire [`WatcherState`] is derived from the [`Phase`], never
//! stored. What a single exit means (replace, back off, leave empty, flapping)
//! is the restart policy's, in [`crate::policy`]; this module decides what the
//! watcher does about it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ringmaster_protocol::message::{LastExit, SlotBackoff, WatcherState};
use ringmaster_protocol::EventKind;

use crate::config::{RestartMode, WatcherConfig};
use crate::hooks::HookPoint;
use crate::policy::{RestartTracker, Verdict};

/// Where a watcher is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Not running; says why.
    Stopped(Halt),
    /// Its processes are being started.
    Starting,
    /// Running and supervised.
    Active,
    /// Its processes are being stopped; says why.
    Stopping(StopCause),
    /// `on_demand`: waiting for a connection on one of its sockets.
    Waiting,
    /// Stopped because it was flapping; started again at `retry_at`.
    Flapping {
        /// Flaps in a row.
        attempt: u32,
        /// When the retry is due.
        retry_at: Instant,
    },
}

/// Why a watcher is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// It was never started.
    Never,
    /// Someone (or the agent's shutdown) stopped it.
    Asked,
    /// Its start failed (a hook, a spawn).
    StartFailed,
    /// Its restart policy left every slot empty.
    AllExited,
    /// It flapped more than `max_retry` times in a row.
    GaveUp {
        /// Flaps in a row.
        flaps: u32,
    },
    /// It was waiting for a connection and cannot any more.
    DemandLost,
}

/// Why a watcher's processes are being stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopCause {
    /// A stop command, the agent's shutdown, or a failed `after_start`.
    Asked {
        /// It had been started (so `stop` and `after_stop` follow).
        was_running: bool,
    },
    /// The restart policy found it flapping.
    Flapping {
        /// Flaps in a row.
        attempt: u32,
        /// When to start it again; None when the agent gives up.
        retry_in: Option<Duration>,
    },
}

/// Processes of the watcher that are alive or about to be, besides one that
/// just exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Processes running (not being stopped).
    pub running: usize,
    /// Slots whose process waits for its `before_spawn` hook.
    pub pending: usize,
}

/// A process of the watcher that ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitSeen {
    /// How and when it ended.
    pub record: LastExit,
    /// How long it ran.
    pub uptime: Duration,
    /// The agent had asked it to stop.
    pub expected: bool,
    /// What is left of the watcher.
    pub left: Occupancy,
}

/// What happened to a watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start it (`by_user`: a command, which forgets the restart history).
    Start {
        /// Asked by a user rather than by the agent's own retry.
        by_user: bool,
    },
    /// `on_demand`: its wait for a connection is armed.
    Wait {
        /// Asked by a user.
        by_user: bool,
    },
    /// Its processes are spawned and `after_start` passed.
    Started,
    /// Its start failed; `error` says why.
    StartAborted {
        /// What went wrong.
        error: String,
    },
    /// Stop it.
    Stop {
        /// Asked by a user.
        by_user: bool,
    },
    /// Every process it was stopping is gone.
    Stopped,
    /// One of its processes ended.
    Exited(ExitSeen),
    /// A spawn of slot `wid` failed.
    SpawnFailed {
        /// The slot.
        wid: u32,
        /// What went wrong, as the log says it.
        error: String,
    },
    /// A flapping retry scheduled in `epoch` came due.
    RetryDue {
        /// The epoch it was scheduled in.
        epoch: u64,
    },
    /// Its wait for a connection ended with an error.
    DemandLost {
        /// What went wrong.
        error: String,
    },
    /// The previous program image handed the watcher over in `state`.
    Adopted(WatcherState),
}

/// What the agent must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish this event of the watcher.
    Emit(EventKind),
    /// Run this watcher hook.
    Hook(HookPoint),
    /// Spawn the processes it is missing now (slots backing off excepted).
    Fill,
    /// Do that at this time.
    FillAt(Instant),
    /// Stop its processes because it flapped; then feed [`Input::Stopped`].
    /// Nothing to do if the epoch moved on meanwhile.
    StopForFlapping {
        /// The epoch of the verdict.
        epoch: u64,
    },
    /// Feed [`Input::RetryDue`] with `epoch` at `at`.
    RetryAt {
        /// When.
        at: Instant,
        /// The epoch it belongs to.
        epoch: u64,
    },
    /// Start it again (a flapping retry; its restart history is kept).
    Restart,
    /// `on_demand`: wait for the next connection.
    WaitAgain,
    /// Drop its wait for a connection, if any.
    CancelDemand,
    /// Log a warning.
    Warn(String),
    /// Log for information.
    Info(String),
}

/// The time and the random draw a transition may use.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Now.
    pub now: Instant,
    /// A draw in [0, 1) for the backoff's jitter.
    pub jitter: f64,
}

impl Clock {
    /// The real clock, with a fresh draw.
    pub fn now() -> Self {
        Clock {
            now: Instant::now(),
            jitter: fastrand::f64(),
        }
    }
}

/// Which slots to spawn now, and when to look again for those backing off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillPlan {
    /// Slots (wids) to spawn now.
    pub spawn: Vec<u32>,
    /// The soonest end of a backoff among the missing slots.
    pub wake: Option<Instant>,
}

/// The state of one slot (a wid) of a watcher, as `list` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlotState {
    /// Its process runs.
    Running,
    /// Its process is being stopped.
    Stopping,
    /// Its process waits for the `before_spawn` hook.
    Spawning,
    /// It waits out a backoff.
    Backoff {
        /// Seconds left.
        remaining: f64,
    },
    /// The restart policy leaves it empty.
    Exited,
}

impl SlotState {
    /// The name `list` shows.
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Running => "running",
            SlotState::Stopping => "stopping",
            SlotState::Spawning => "spawning",
            SlotState::Backoff { .. } => "backoff",
            SlotState::Exited => "exited",
        }
    }
}

/// One watcher's life: its phase, restart history, epoch and last error.
#[derive(Debug, Clone)]
pub struct Life {
    phase: Phase,
    restarts: RestartTracker,
    epoch: u64,
    last_error: Option<String>,
}

impl Default for Life {
    fn default() -> Self {
        Life {
            phase: Phase::Stopped(Halt::Never),
            restarts: RestartTracker::default(),
            epoch: 0,
            last_error: None,
        }
    }
}

impl Life {
    /// The phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The state the protocol reports, derived from the phase.
    pub fn wire_state(&self) -> WatcherState {
        match self.phase {
            Phase::Stopped(_) => WatcherState::Stopped,
            Phase::Starting => WatcherState::Starting,
            Phase::Active => WatcherState::Active,
            Phase::Stopping(_) => WatcherState::Stopping,
            Phase::Waiting => WatcherState::Waiting,
            Phase::Flapping { .. } => WatcherState::Flapping,
        }
    }

    /// Running and supervised.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Its processes are (being) kept: active or starting.
    pub fn supervised(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::Starting)
    }

    /// Neither stopped nor paused after flapping: a stop has work to do.
    pub fn is_running(&self) -> bool {
        !matches!(self.phase, Phase::Stopped(_) | Phase::Flapping { .. })
    }

    /// The epoch (bumped by a user's start or stop).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last error while starting or running it.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Records (or clears) the last error.
    pub fn set_error(&mut self, error: Option<String>) {
        self.last_error = error;
    }

    /// The restart history.
    pub fn restarts(&self) -> &RestartTracker {
        &self.restarts
    }

    /// The watcher was scaled to `count`: the slots above are forgotten.
    pub fn scaled(&mut self, count: u32) {
        self.restarts.forget_slots_above(count);
    }

    /// Whether a flapping stop of `epoch` is still the thing to do.
    pub fn flapping_stop_due(&self, epoch: u64) -> bool {
        epoch == self.epoch && matches!(self.phase, Phase::Stopping(StopCause::Flapping { .. }))
    }

    /// The transition for `input`, given the watcher's `config` and the time.
    pub fn next(&mut self, config: &WatcherConfig, input: Input, clock: Clock) -> Vec<Effect> {
        match input {
            Input::Start { by_user } => {
                if self.phase == Phase::Active {
                    return Vec::new();
                }
                if by_user {
                    self.forget_history();
                }
                self.phase = Phase::Starting;
                self.last_error = None;
                Vec::new()
            }
            Input::Wait { by_user } => {
                if by_user {
                    self.forget_history();
                }
                self.phase = Phase::Waiting;
                self.last_error = None;
                Vec::new()
            }
            Input::Started => {
                if self.phase != Phase::Starting {
                    // Stopped meanwhile (a stop, the agent's shutdown).
                    return Vec::new();
                }
                self.phase = Phase::Active;
                vec![Effect::Emit(EventKind::Start {}), Effect::Fill]
            }
            Input::StartAborted { error } => {
                if self.phase == Phase::Starting {
                    self.phase = Phase::Stopped(Halt::StartFailed);
                }
                self.last_error = Some(error);
                Vec::new()
            }
            Input::Stop { by_user } => {
                if by_user {
                    self.epoch += 1;
                }
                let was_running = self.is_running();
                self.phase = Phase::Stopping(StopCause::Asked { was_running });
                vec![Effect::CancelDemand]
            }
            Input::Stopped => self.stopped(clock),
            Input::Exited(seen) => self.exited(config, seen, clock),
            Input::SpawnFailed { wid, error } => {
                self.last_error = Some(error.clone());
                let mut effects = vec![
                    Effect::Warn(error.clone()),
                    Effect::Emit(EventKind::SpawnFailed { error }),
                ];
                let verdict = self
                    .restarts
                    .on_spawn_failure(config, wid, clock.now, clock.jitter);
                effects.extend(match verdict {
                    // Never retried in the same turn: through a timer.
                    Verdict::Replace => vec![Effect::FillAt(clock.now)],
                    Verdict::Backoff(delay) => vec![Effect::FillAt(clock.now + delay)],
                    verdict => self.act_on(config, verdict, Occupancy::default(), clock),
                });
                effects
            }
            Input::RetryDue { epoch } => {
                if epoch != self.epoch || !matches!(self.phase, Phase::Flapping { .. }) {
                    return Vec::new();
                }
                self.restarts.reset_for_retry();
                vec![
                    Effect::Info("retrying after flapping".into()),
                    Effect::Restart,
                ]
            }
            Input::DemandLost { error } => {
                self.phase = Phase::Stopped(Halt::DemandLost);
                self.last_error = Some(error.clone());
                vec![
                    Effect::Warn(error),
                    Effect::CancelDemand,
                    Effect::Emit(EventKind::Stop {}),
                ]
            }
            Input::Adopted(state) => self.adopted(config, state, clock),
        }
    }

    /// A user's start or wait: the history goes, the epoch moves on.
    fn forget_history(&mut self) {
        self.restarts.reset();
        self.epoch += 1;
    }

    fn stopped(&mut self, clock: Clock) -> Vec<Effect> {
        let ended = vec![
            Effect::Emit(EventKind::Stop {}),
            Effect::Hook(HookPoint::AfterStop),
        ];
        match self.phase {
            Phase::Stopping(StopCause::Asked { was_running }) => {
                self.phase = Phase::Stopped(Halt::Asked);
                if was_running {
                    ended
                } else {
                    Vec::new()
                }
            }
            Phase::Stopping(StopCause::Flapping {
                attempt,
                retry_in: Some(delay),
            }) => {
                let at = clock.now + delay;
                self.phase = Phase::Flapping {
                    attempt,
                    retry_at: at,
                };
                let mut effects = ended;
                effects.push(Effect::RetryAt {
                    at,
                    epoch: self.epoch,
                });
                effects
            }
            Phase::Stopping(StopCause::Flapping {
                attempt,
                retry_in: None,
            }) => {
                self.phase = Phase::Stopped(Halt::GaveUp { flaps: attempt });
                ended
            }
            _ => Vec::new(),
        }
    }

    fn exited(&mut self, config: &WatcherConfig, seen: ExitSeen, clock: Clock) -> Vec<Effect> {
        if seen.expected || !self.supervised() {
            return Vec::new();
        }
        let verdict =
            self.restarts
                .on_exit(config, seen.record, seen.uptime, clock.now, clock.jitter);
        self.act_on(config, verdict, seen.left, clock)
    }

    /// What the watcher does about the policy's `verdict`.
    fn act_on(
        &mut self,
        config: &WatcherConfig,
        verdict: Verdict,
        left: Occupancy,
        clock: Clock,
    ) -> Vec<Effect> {
        match verdict {
            Verdict::Replace => vec![Effect::Fill],
            Verdict::Backoff(delay) => vec![
                Effect::Info(format!(
                    "a slot crashed quickly again: backing off {:.1}s",
                    delay.as_secs_f64()
                )),
                Effect::FillAt(clock.now + delay),
            ],
            Verdict::LeaveEmpty => {
                let all_gone = self.phase == Phase::Active
                    && config.restart_mode() != RestartMode::Always
                    && config.numprocesses > 0
                    && left.running == 0
                    && left.pending == 0
                    && self.restarts.backing_off(clock.now).is_empty();
                if !all_gone {
                    return Vec::new();
                }
                // As Circus does without respawn: the watcher stops with its
                // last process (or waits for the next connection).
                self.phase = Phase::Stopped(Halt::AllExited);
                if config.on_demand {
                    vec![Effect::WaitAgain]
                } else {
                    vec![
                        Effect::Info(
                            "its last process is gone and its restart policy leaves the slots \
                             empty: stopped"
                                .into(),
                        ),
                        Effect::Emit(EventKind::Stop {}),
                        Effect::Hook(HookPoint::AfterStop),
                    ]
                }
            }
            Verdict::Stopping => Vec::new(),
            Verdict::Flapping { attempt, retry_in } => {
                let message = match retry_in {
                    Some(d) => format!(
                        "flapping ({} exits within {}s); retry {attempt} in {:.1}s",
                        config.flapping_attempts,
                        config.flapping_window,
                        d.as_secs_f64()
                    ),
                    None => format!(
                        "flapping ({} exits within {}s); gave up after {} retries, start it \
                         again by hand",
                        config.flapping_attempts,
                        config.flapping_window,
                        attempt.saturating_sub(1)
                    ),
                };
                self.phase = Phase::Stopping(StopCause::Flapping { attempt, retry_in });
                self.last_error = Some(message.clone());
                vec![
                    Effect::Warn(message),
                    Effect::Emit(EventKind::Flapping {
                        attempt,
                        retry_in: retry_in.map(|d| d.as_secs_f64()),
                    }),
                    Effect::StopForFlapping { epoch: self.epoch },
                ]
            }
        }
    }

    /// The state an upgrade in place handed over. A watcher paused after
    /// flapping gets its retry again (its timer did not cross the `exec`).
    fn adopted(
        &mut self,
        config: &WatcherConfig,
        state: WatcherState,
        clock: Clock,
    ) -> Vec<Effect> {
        match state {
            WatcherState::Active => {
                self.phase = Phase::Active;
                vec![Effect::Fill]
            }
            WatcherState::Flapping => {
                let at = clock.now + Duration::from_secs_f64(config.retry_in.max(0.0));
                self.phase = Phase::Flapping {
                    attempt: 1,
                    retry_at: at,
                };
                vec![Effect::RetryAt {
                    at,
                    epoch: self.epoch,
                }]
            }
            // A waiting watcher waits again through a start; a handover is
            // refused while one starts or stops.
            _ => {
                self.phase = Phase::Stopped(Halt::Asked);
                Vec::new()
            }
        }
    }

    /// Which slots of an active watcher to spawn now: the lowest wids that are
    /// neither `occupied` (running, stopping or pending) nor left empty by the
    /// policy, until `left` plus the empty slots make `numprocesses`; those
    /// backing off are left for `wake`.
    pub fn fill_plan(
        &self,
        config: &WatcherConfig,
        occupied: &BTreeSet<u32>,
        left: Occupancy,
        now: Instant,
    ) -> FillPlan {
        let mut plan = FillPlan::default();
        if self.phase != Phase::Active || config.restart_mode() == RestartMode::Never {
            return plan;
        }
        let empty = self.restarts.exited().count();
        let mut missing =
            (config.numprocesses as usize).saturating_sub(left.running + left.pending + empty);
        let mut wid = 0;
        while missing > 0 {
            wid += 1;
            if occupied.contains(&wid) || self.restarts.is_exited(wid) {
                continue;
            }
            missing -= 1;
            match self.restarts.backoff_until(wid, now) {
                Some(at) => plan.wake = Some(plan.wake.map_or(at, |w| w.min(at))),
                None => plan.spawn.push(wid),
            }
        }
        plan
    }

    /// The slots without a process, as `list` shows them: backing off, or left
    /// empty by the policy.
    pub fn empty_slots(&self, live: &BTreeSet<u32>, now: Instant) -> Vec<(u32, SlotState)> {
        let mut slots: Vec<(u32, SlotState)> = self
            .restarts
            .backing_off(now)
            .into_iter()
            .filter(|slot| !live.contains(&slot.wid))
            .map(|SlotBackoff { wid, remaining, .. }| (wid, SlotState::Backoff { remaining }))
            .collect();
        slots.extend(
            self.restarts
                .exited()
                .filter(|(wid, _)| !live.contains(wid))
                .map(|(wid, _)| (*wid, SlotState::Exited)),
        );
        slots.sort_by_key(|(wid, _)| *wid);
        slots
    }
}

#[cfg(test)]
mod tests {
    use ringmaster_protocol::ExitInfo;

    use super::*;

    fn config() -> WatcherConfig {
        let mut c = WatcherConfig::with_cmd("x").unwrap();
        c.numprocesses = 3;
        c
    }

    fn flapping(max_retry: i64) -> WatcherConfig {
        let mut c = config();
        c.check_flapping = Some(true);
        c.max_retry = Some(max_retry);
        c
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A fake clock `at` seconds after `t0`, with no jitter.
    fn at(t0: Instant, s: f64) -> Clock {
        Clock {
            now: t0 + secs(s),
            jitter: 0.0,
        }
    }

    fn exit(wid: u32, code: Option<i32>, signal: Option<i32>, ran: f64, running: usize) -> Input {
        Input::Exited(ExitSeen {
            record: LastExit {
                pid: 1000 + wid,
                wid,
                exit: ExitInfo { code, signal },
                time: 0.0,
                uptime: ran,
            },
            uptime: secs(ran),
            expected: false,
            left: Occupancy {
                running,
                pending: 0,
            },
        })
    }

    fn crash(wid: u32, ran: f64) -> Input {
        exit(wid, None, Some(9), ran, 2)
    }

    fn active(c: &WatcherConfig, t0: Instant) -> Life {
        let mut life = Life::default();
        assert!(life
            .next(c, Input::Start { by_user: true }, at(t0, 0.0))
            .is_empty());
        assert_eq!(life.wire_state(), WatcherState::Starting);
        let effects = life.next(c, Input::Started, at(t0, 0.0));
        assert_eq!(
            effects,
            vec![Effect::Emit(EventKind::Start {}), Effect::Fill]
        );
        life
    }

    /// Quick crashes of slot 1, 10 ms apart from `from` seconds, enough to flap;
    /// returns the effects of the last one.
    fn flap(life: &mut Life, c: &WatcherConfig, t0: Instant, from: f64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for i in 0..c.flapping_attempts {
            effects = life.next(c, crash(1, 0.01), at(t0, from + f64::from(i) * 0.01));
        }
        effects
    }

    fn fill_at(effects: &[Effect]) -> Option<Instant> {
        effects.iter().find_map(|e| match e {
            Effect::FillAt(at) => Some(*at),
            _ => None,
        })
    }

    #[test]
    fn a_new_watcher_is_stopped_and_a_start_makes_it_active() {
        let c = config();
        let life = Life::default();
        assert_eq!(life.phase(), &Phase::Stopped(Halt::Never));
        assert_eq!(life.wire_state(), WatcherState::Stopped);
        let t0 = Instant::now();
        let life = active(&c, t0);
        assert!(life.is_active() && life.supervised() && life.is_running());
    }

    #[test]
    fn a_start_of_an_active_watcher_changes_nothing() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        let epoch = life.epoch();
        assert!(life
            .next(&c, Input::Start { by_user: true }, at(t0, 1.0))
            .is_empty());
        assert_eq!(life.phase(), &Phase::Active);
        assert_eq!(life.epoch(), epoch);
    }

    #[test]
    fn a_failed_start_leaves_it_stopped_with_the_reason() {
        let c = config();
        let t0 = Instant::now();
        let mut life = Life::default();
        life.next(&c, Input::Start { by_user: true }, at(t0, 0.0));
        let error = "before_start exited 1".to_string();
        life.next(
            &c,
            Input::StartAborted {
                error: error.clone(),
            },
            at(t0, 0.0),
        );
        assert_eq!(life.phase(), &Phase::Stopped(Halt::StartFailed));
        assert_eq!(life.last_error(), Some(error.as_str()));
        // A `Started` that arrives after is ignored.
        assert!(life.next(&c, Input::Started, at(t0, 0.0)).is_empty());
        assert_eq!(life.wire_state(), WatcherState::Stopped);
    }

    #[test]
    fn a_stop_of_a_running_watcher_emits_stop_and_runs_after_stop() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        assert_eq!(
            life.next(&c, Input::Stop { by_user: true }, at(t0, 1.0)),
            vec![Effect::CancelDemand]
        );
        assert_eq!(life.wire_state(), WatcherState::Stopping);
        assert!(!life.supervised());
        assert_eq!(
            life.next(&c, Input::Stopped, at(t0, 2.0)),
            vec![
                Effect::Emit(EventKind::Stop {}),
                Effect::Hook(HookPoint::AfterStop)
            ]
        );
        assert_eq!(life.phase(), &Phase::Stopped(Halt::Asked));
    }

    #[test]
    fn a_stop_of_a_stopped_watcher_emits_nothing() {
        let c = config();
        let t0 = Instant::now();
        let mut life = Life::default();
        life.next(&c, Input::Stop { by_user: true }, at(t0, 0.0));
        assert!(life.next(&c, Input::Stopped, at(t0, 0.0)).is_empty());
        assert_eq!(life.wire_state(), WatcherState::Stopped);
    }

    #[test]
    fn a_normal_exit_is_replaced_at_once_however_often_it_happens() {
        // Batch workers of 10 that each run 2 s and exit 0, for a minute.
        let mut c = config();
        c.numprocesses = 10;
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        for round in 0..30 {
            for wid in 1..=10 {
                let t = f64::from(round) * 2.0 + f64::from(wid) * 0.01;
                let effects = life.next(&c, exit(wid, Some(0), None, 2.0, 9), at(t0, t));
                assert_eq!(effects, vec![Effect::Fill], "round {round}, slot {wid}");
            }
        }
        assert_eq!(life.phase(), &Phase::Active);
        assert_eq!(life.restarts().restarts(), 300);
    }

    #[test]
    fn a_crash_after_min_uptime_is_replaced_at_once() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        for i in 0..20 {
            let t = f64::from(i) * 6.0;
            let effects = life.next(&c, exit(1, Some(3), None, 6.0, 2), at(t0, t));
            assert_eq!(effects, vec![Effect::Fill]);
        }
    }

    #[test]
    fn quick_crashes_of_one_slot_back_off_and_the_others_are_not_held() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        // The first quick crash is replaced at once, the next ones back off.
        assert_eq!(
            life.next(&c, crash(1, 0.1), at(t0, 0.1)),
            vec![Effect::Fill]
        );
        let second = life.next(&c, crash(1, 0.1), at(t0, 0.2));
        assert_eq!(fill_at(&second), Some(t0 + secs(0.2) + secs(0.1)));
        let third = life.next(&c, crash(1, 0.1), at(t0, 0.5));
        assert_eq!(fill_at(&third), Some(t0 + secs(0.5) + secs(0.2)));
        // Another slot's crash in the same second is replaced at once.
        assert_eq!(
            life.next(&c, crash(2, 0.1), at(t0, 0.55)),
            vec![Effect::Fill]
        );
        assert_eq!(life.phase(), &Phase::Active);
        // The plan spawns slot 2 and 3 and wakes for slot 1.
        let occupied = BTreeSet::new();
        let plan = life.fill_plan(&c, &occupied, Occupancy::default(), t0 + secs(0.6));
        assert_eq!(plan.spawn, vec![2, 3]);
        assert_eq!(plan.wake, Some(t0 + secs(0.7)));
        assert_eq!(
            life.empty_slots(&occupied, t0 + secs(0.6)),
            vec![(1, SlotState::Backoff { remaining: 0.1 })]
        );
    }

    #[test]
    fn a_slot_killed_every_300ms_keeps_being_respawned_by_default() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        let mut t = 0.0;
        for _ in 0..200 {
            let effects = life.next(&c, crash(1, 0.3), at(t0, t));
            assert!(
                effects
                    .iter()
                    .all(|e| matches!(e, Effect::Fill | Effect::FillAt(_) | Effect::Info(_))),
                "{effects:?}"
            );
            t += 0.3 + fill_at(&effects).map_or(0.0, |w| (w - (t0 + secs(t))).as_secs_f64());
        }
        assert_eq!(life.phase(), &Phase::Active);
        // Capped: the next respawn is never more than backoff_max away.
        let effects = life.next(&c, crash(1, 0.3), at(t0, t));
        let wait = fill_at(&effects).map(|w| w - (t0 + secs(t)));
        assert!(wait <= Some(secs(c.backoff_max)), "{wait:?}");
    }

    #[test]
    fn a_healthy_run_resets_the_slot_backoff() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        for i in 0..5 {
            life.next(&c, crash(1, 0.1), at(t0, f64::from(i)));
        }
        assert!(fill_at(&life.next(&c, crash(1, 0.1), at(t0, 10.0))).is_some());
        assert_eq!(
            life.next(&c, exit(1, Some(1), None, 60.0, 2), at(t0, 70.0)),
            vec![Effect::Fill]
        );
        // The next quick crash is a first one again.
        assert_eq!(
            life.next(&c, crash(1, 0.1), at(t0, 70.2)),
            vec![Effect::Fill]
        );
    }

    #[test]
    fn on_failure_leaves_a_success_empty_and_replaces_a_failure() {
        let mut c = config();
        c.numprocesses = 1;
        c.restart = RestartMode::OnFailure;
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        // A failure of the only process is replaced; the watcher stays active.
        assert_eq!(
            life.next(&c, exit(1, Some(2), None, 10.0, 0), at(t0, 10.0)),
            vec![Effect::Fill]
        );
        assert_eq!(life.phase(), &Phase::Active);
        // A success leaves the slot empty: the watcher's last process is gone.
        let effects = life.next(&c, exit(1, Some(0), None, 10.0, 0), at(t0, 20.0));
        assert!(
            effects.contains(&Effect::Emit(EventKind::Stop {})),
            "{effects:?}"
        );
        assert!(effects.contains(&Effect::Hook(HookPoint::AfterStop)));
        assert_eq!(life.phase(), &Phase::Stopped(Halt::AllExited));
        assert!(life.restarts().is_exited(1));
        assert_eq!(c.numprocesses, 1, "numprocesses is not changed");
    }

    #[test]
    fn on_failure_keeps_the_watcher_while_other_slots_run() {
        let mut c = config();
        c.restart = RestartMode::OnFailure;
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        assert!(life
            .next(&c, exit(1, Some(0), None, 10.0, 2), at(t0, 10.0))
            .is_empty());
        assert_eq!(life.phase(), &Phase::Active);
        let plan = life.fill_plan(
            &c,
            &BTreeSet::from([2, 3]),
            Occupancy {
                running: 2,
                pending: 0,
            },
            t0 + secs(10.0),
        );
        assert!(
            plan.spawn.is_empty(),
            "the exited slot stays empty: {plan:?}"
        );
        assert_eq!(
            life.empty_slots(&BTreeSet::from([2, 3]), t0 + secs(10.0)),
            vec![(1, SlotState::Exited)]
        );
    }

    #[test]
    fn never_with_on_demand_waits_again_when_the_last_process_is_gone() {
        let mut c = config();
        c.numprocesses = 1;
        c.restart = RestartMode::Never;
        c.on_demand = true;
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        assert_eq!(
            life.next(&c, exit(1, Some(0), None, 1.0, 0), at(t0, 1.0)),
            vec![Effect::WaitAgain]
        );
        life.next(&c, Input::Wait { by_user: false }, at(t0, 1.0));
        assert_eq!(life.wire_state(), WatcherState::Waiting);
        // A connection starts it: the agent's own start keeps the history.
        life.next(&c, Input::Start { by_user: false }, at(t0, 2.0));
        assert_eq!(life.wire_state(), WatcherState::Starting);
        assert!(life.restarts().is_exited(1));
    }

    #[test]
    fn an_expected_exit_never_counts() {
        let c = flapping(1);
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        for i in 0..20 {
            let input = Input::Exited(ExitSeen {
                expected: true,
                ..match crash(1, 0.0) {
                    Input::Exited(seen) => seen,
                    _ => unreachable!(),
                }
            });
            assert!(life.next(&c, input, at(t0, f64::from(i) * 0.01)).is_empty());
        }
        assert_eq!(life.restarts().restarts(), 0);
        assert_eq!(life.phase(), &Phase::Active);
    }

    #[test]
    fn flapping_is_off_by_default_so_the_agent_never_gives_up() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        for i in 0..100 {
            for wid in 1..=3 {
                let effects = life.next(&c, crash(wid, 0.01), at(t0, f64::from(i) * 0.05));
                assert!(
                    !effects
                        .iter()
                        .any(|e| matches!(e, Effect::StopForFlapping { .. })),
                    "{effects:?}"
                );
            }
        }
        assert_eq!(life.phase(), &Phase::Active);
    }

    #[test]
    fn when_asked_for_flapping_stops_the_watcher_retries_then_gives_up() {
        let c = flapping(1);
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        // Enough quick crashes within the window: flapping.
        let effects = flap(&mut life, &c, t0, 0.0);
        let epoch = life.epoch();
        assert!(
            effects.contains(&Effect::StopForFlapping { epoch }),
            "{effects:?}"
        );
        assert!(effects.contains(&Effect::Emit(EventKind::Flapping {
            attempt: 1,
            retry_in: Some(c.retry_in)
        })));
        assert_eq!(life.wire_state(), WatcherState::Stopping);
        assert!(life.flapping_stop_due(epoch));
        // Exits during the flapping stop change nothing.
        assert!(life.next(&c, crash(2, 0.01), at(t0, 0.2)).is_empty());
        // Its processes are gone: paused, with a retry armed.
        let stopped = life.next(&c, Input::Stopped, at(t0, 1.0));
        let retry_at = t0 + secs(1.0 + c.retry_in);
        assert!(stopped.contains(&Effect::RetryAt {
            at: retry_at,
            epoch
        }));
        assert_eq!(
            life.phase(),
            &Phase::Flapping {
                attempt: 1,
                retry_at
            }
        );
        assert_eq!(life.wire_state(), WatcherState::Flapping);
        assert_eq!(
            life.next(&c, Input::RetryDue { epoch }, at(t0, 8.0)),
            vec![
                Effect::Info("retrying after flapping".into()),
                Effect::Restart
            ]
        );
        life.next(&c, Input::Start { by_user: false }, at(t0, 8.0));
        life.next(&c, Input::Started, at(t0, 8.0));
        // Flapping again right away: attempt 2 > max_retry 1, the agent gives up.
        let effects = flap(&mut life, &c, t0, 8.1);
        assert!(effects.contains(&Effect::Emit(EventKind::Flapping {
            attempt: 2,
            retry_in: None
        })));
        let stopped = life.next(&c, Input::Stopped, at(t0, 9.0));
        assert!(!stopped.iter().any(|e| matches!(e, Effect::RetryAt { .. })));
        assert_eq!(life.phase(), &Phase::Stopped(Halt::GaveUp { flaps: 2 }));
        assert!(life
            .last_error()
            .is_some_and(|e| e.contains("gave up after 1 retries")));
        // A user's start forgets it all.
        life.next(&c, Input::Start { by_user: true }, at(t0, 10.0));
        assert_eq!(life.last_error(), None);
        assert_eq!(life.restarts().flaps(), 0);
    }

    #[test]
    fn a_user_stop_overtakes_a_pending_flapping_stop_and_retry() {
        let c = flapping(-1);
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        flap(&mut life, &c, t0, 0.0);
        let epoch = life.epoch();
        // The user stops it before the flapping stop ran.
        life.next(&c, Input::Stop { by_user: true }, at(t0, 0.5));
        assert!(!life.flapping_stop_due(epoch));
        life.next(&c, Input::Stopped, at(t0, 0.6));
        assert_eq!(life.phase(), &Phase::Stopped(Halt::Asked));
        // A retry of the old epoch does nothing.
        assert!(life
            .next(&c, Input::RetryDue { epoch }, at(t0, 8.0))
            .is_empty());
        assert_eq!(life.wire_state(), WatcherState::Stopped);
    }

    #[test]
    fn a_stop_while_paused_after_flapping_cancels_the_retry() {
        let c = flapping(-1);
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        flap(&mut life, &c, t0, 0.0);
        let epoch = life.epoch();
        life.next(&c, Input::Stopped, at(t0, 0.5));
        // Paused: a stop has no process to stop and emits nothing.
        assert!(!life.is_running());
        life.next(&c, Input::Stop { by_user: true }, at(t0, 1.0));
        assert!(life.next(&c, Input::Stopped, at(t0, 1.0)).is_empty());
        assert!(life
            .next(&c, Input::RetryDue { epoch }, at(t0, 8.0))
            .is_empty());
    }

    #[test]
    fn a_failed_spawn_is_retried_through_a_timer_and_backs_off() {
        let c = config();
        let t0 = Instant::now();
        let mut life = active(&c, t0);
        let fail = |life: &mut Life, t: f64| {
            life.next(
                &c,
                Input::SpawnFailed {
                    wid: 1,
                    error: "no such file".into(),
                },
                at(t0, t),
            )
        };
        let first = fail(&mut life, 0.0);
        assert_eq!(fill_at(&first), Some(t0));
        assert!(first.contains(&Effect::Emit(EventKind::SpawnFailed {
            error: "no such file".into()
        })));
        assert_eq!(life.last_error(), Some("no such file"));
        let second = fail(&mut life, 0.0);
        assert_eq!(fill_at(&second), Some(t0 + secs(0.1)));
        assert_eq!(life.phase(), &Phase::Active);
    }

    #[test]
    fn exits_of_a_watcher_that_is_not_supervised_do_nothing() {
        let c = config();
        let t0 = Instant::now();
        let mut life = Life::default();
        assert!(life.next(&c, crash(1, 0.1), at(t0, 0.0)).is_empty());
        life.next(&c, Input::Stop { by_user: true }, at(t0, 0.0));
        assert!(life.next(&c, crash(1, 0.1), at(t0, 0.0)).is_empty());
        assert_eq!(life.restarts().restarts(), 0);
    }

    #[test]
    fn a_lost_wait_for_a_connection_stops_it_and_says_why() {
        let mut c = config();
        c.on_demand = true;
        let t0 = Instant::now();
        let mut life = Life::default();
        life.next(&c, Input::Wait { by_user: true }, at(t0, 0.0));
        let effects = life.next(
            &c,
            Input::DemandLost {
                error: "socket closed".into(),
            },
            at(t0, 1.0),
        );
        assert!(effects.contains(&Effect::Emit(EventKind::Stop {})));
        assert_eq!(life.phase(), &Phase::Stopped(Halt::DemandLost));
        assert_eq!(life.last_error(), Some("socket closed"));
    }

    #[test]
    fn an_adopted_flapping_watcher_gets_its_retry_again() {
        let c = flapping(-1);
        let t0 = Instant::now();
        let mut life = Life::default();
        let effects = life.next(&c, Input::Adopted(WatcherState::Flapping), at(t0, 0.0));
        let epoch = life.epoch();
        assert_eq!(
            effects,
            vec![Effect::RetryAt {
                at: t0 + secs(c.retry_in),
                epoch
            }]
        );
        assert_eq!(life.wire_state(), WatcherState::Flapping);
        assert!(life
            .next(&c, Input::RetryDue { epoch }, at(t0, c.retry_in))
            .contains(&Effect::Restart));
        let mut life = Life::default();
        assert_eq!(
            life.next(&c, Input::Adopted(WatcherState::Active), at(t0, 0.0)),
            vec![Effect::Fill]
        );
        assert!(life.is_active());
    }

    #[test]
    fn the_fill_plan_takes_the_lowest_free_slots_and_nothing_unless_active() {
        let c = config();
        let t0 = Instant::now();
        let life = Life::default();
        assert_eq!(
            life.fill_plan(&c, &BTreeSet::new(), Occupancy::default(), t0),
            FillPlan::default()
        );
        let life = active(&c, t0);
        let plan = life.fill_plan(
            &c,
            &BTreeSet::from([2]),
            Occupancy {
                running: 1,
                pending: 0,
            },
            t0,
        );
        assert_eq!(plan.spawn, vec![1, 3]);
        let mut never = c.clone();
        never.restart = RestartMode::Never;
        assert!(life
            .fill_plan(&never, &BTreeSet::new(), Occupancy::default(), t0)
            .spawn
            .is_empty());
    }
}
