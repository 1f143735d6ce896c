//! Restart policy: what happens when a process exits without the agent asking it
//! to. Pure and clock-free (the caller passes `now` and the jitter draw), so that
//! every rule is unit-tested; the supervisor only carries out the [`Verdict`].
//!
//! - **The process's own run decides.** An exit with a success code
//!   (`success_exit_codes`), or after the process ran at least `min_uptime`, is a
//!   *normal exit*: it is replaced at once, with no backoff, and it never counts
//!   toward flapping, however often it happens across the watcher.
//! - **Quick crashes back off, per slot (wid).** A failure (another code, or a
//!   signal) before `min_uptime`, or a spawn that failed, is a *quick crash*. The
//!   first one of a slot is respawned at once; each further one waits
//!   `backoff_initial × 2^(n-2)`, capped at `backoff_max`, less up to 20% jitter so
//!   that slots do not respawn in lockstep. A normal run resets the slot. Slots
//!   never wait for each other.
//! - **`restart`** decides which exits are replaced at all: `always`, `on-failure`
//!   (a success code leaves the slot empty) or `never`. An empty slot is reported
//!   (`exited`) until the watcher is started again; `numprocesses` stays as asked.
//! - **Giving up only when asked.** By default the agent retries forever. With
//!   flapping detection on (`check_flapping`, `max_retry`, or Circus's Flapping
//!   plugin), `flapping_attempts` quick crashes of the watcher within
//!   `flapping_window` stop it; it is started again after `retry_in`, at most
//!   `max_retry` times in a row (-1: forever), then the agent gives up until
//!   someone starts it. A stop that the agent asked for never counts.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ringmaster_protocol::message::{LastExit, SlotBackoff};

use crate::config::{RestartMode, WatcherConfig};

/// What to do after a process exited by itself (or failed to spawn).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Start the slot's process again at once.
    Replace,
    /// Start it again after this delay: the slot is backing off.
    Backoff(Duration),
    /// The restart policy leaves the slot empty.
    LeaveEmpty,
    /// The watcher is flapping: stop it and start it again after `retry_in`, or
    /// give up when `retry_in` is None. `attempt` counts flaps in a row.
    Flapping {
        /// Flaps in a row, this one included.
        attempt: u32,
        /// When to try again; None when the agent gives up.
        retry_in: Option<Duration>,
    },
    /// A flapping stop is already under way: nothing more to do.
    Stopping,
}

/// How an exit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// A success code, or a run of at least `min_uptime`.
    Normal,
    /// A failure before `min_uptime`.
    QuickCrash,
}

/// Classifies an exit of a process that ran `uptime`.
pub fn classify(config: &WatcherConfig, exit: &LastExit, uptime: Duration) -> ExitClass {
    if succeeded(config, exit) || uptime >= min_uptime(config) {
        ExitClass::Normal
    } else {
        ExitClass::QuickCrash
    }
}

fn succeeded(config: &WatcherConfig, exit: &LastExit) -> bool {
    exit.exit.code.is_some_and(|code| config.is_success(code))
}

fn min_uptime(config: &WatcherConfig) -> Duration {
    Duration::from_secs_f64(config.min_uptime)
}

#[derive(Debug, Clone, Default)]
struct Slot {
    crashes: u32,
    not_before: Option<Instant>,
    restarts: u32,
    last_exit: Option<LastExit>,
}

/// Restart bookkeeping of one watcher.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    slots: BTreeMap<u32, Slot>,
    recent_crashes: VecDeque<Instant>,
    flaps: u32,
    last_flap: Option<Instant>,
    /// A flapping verdict was given and the watcher has not been started since.
    flap_pending: bool,
    restarts: u64,
    last_exit: Option<LastExit>,
    /// Slots left empty by the policy, with how their process ended.
    exited: BTreeMap<u32, LastExit>,
}

impl RestartTracker {
    /// Forgets everything (a user started the watcher).
    pub fn reset(&mut self) {
        *self = RestartTracker::default();
    }

    /// Forgets crash history but keeps the count of flaps in a row and the
    /// history shown in `status` (the agent itself restarts the watcher after
    /// flapping).
    pub fn reset_for_retry(&mut self) {
        for slot in self.slots.values_mut() {
            slot.crashes = 0;
            slot.not_before = None;
        }
        self.recent_crashes.clear();
        self.exited.clear();
        self.flap_pending = false;
    }

    /// Forgets the slots above `count` (the watcher was scaled down).
    pub fn forget_slots_above(&mut self, count: u32) {
        self.slots.retain(|wid, _| *wid <= count);
        self.exited.retain(|wid, _| *wid <= count);
    }

    /// Flaps in a row so far.
    pub fn flaps(&self) -> u32 {
        self.flaps
    }

    /// Processes replaced after they exited by themselves.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Times slot `wid` was restarted.
    pub fn slot_restarts(&self, wid: u32) -> u32 {
        self.slots.get(&wid).map_or(0, |slot| slot.restarts)
    }

    /// The last exit of any process of the watcher.
    pub fn last_exit(&self) -> Option<LastExit> {
        self.last_exit
    }

    /// How slot `wid`'s previous process ended.
    pub fn slot_last_exit(&self, wid: u32) -> Option<LastExit> {
        self.slots.get(&wid).and_then(|slot| slot.last_exit)
    }

    /// Slots the policy left empty.
    pub fn exited(&self) -> impl Iterator<Item = (&u32, &LastExit)> {
        self.exited.iter()
    }

    /// Whether slot `wid` stays empty by the policy.
    pub fn is_exited(&self, wid: u32) -> bool {
        self.exited.contains_key(&wid)
    }

    /// Records an exit the agent did not ask for, of the process described by
    /// `exit` that ran `uptime`, and says what to do.
    pub fn on_exit(
        &mut self,
        config: &WatcherConfig,
        exit: LastExit,
        uptime: Duration,
        now: Instant,
        jitter: f64,
    ) -> Verdict {
        self.last_exit = Some(exit);
        self.slots.entry(exit.wid).or_default().last_exit = Some(exit);
        if self.flap_pending {
            return Verdict::Stopping;
        }
        let replaced = match config.restart_mode() {
            RestartMode::Always => true,
            RestartMode::OnFailure => !succeeded(config, &exit),
            RestartMode::Never => false,
        };
        if !replaced {
            self.exited.insert(exit.wid, exit);
            return Verdict::LeaveEmpty;
        }
        match classify(config, &exit, uptime) {
            ExitClass::Normal => {
                let slot = self.slots.entry(exit.wid).or_default();
                slot.crashes = 0;
                slot.not_before = None;
                slot.restarts += 1;
                self.restarts += 1;
                Verdict::Replace
            }
            ExitClass::QuickCrash => self.on_quick_crash(config, exit.wid, now, jitter),
        }
    }

    /// Records a spawn of slot `wid` that failed, and says what to do.
    pub fn on_spawn_failure(
        &mut self,
        config: &WatcherConfig,
        wid: u32,
        now: Instant,
        jitter: f64,
    ) -> Verdict {
        if self.flap_pending {
            return Verdict::Stopping;
        }
        self.on_quick_crash(config, wid, now, jitter)
    }

    fn on_quick_crash(
        &mut self,
        config: &WatcherConfig,
        wid: u32,
        now: Instant,
        jitter: f64,
    ) -> Verdict {
        if let Some(last) = self.last_flap {
            let quiet = min_uptime(config) + Duration::from_secs_f64(config.retry_in);
            if now.duration_since(last) >= quiet {
                self.flaps = 0;
            }
        }
        if config.flapping_enabled() {
            let window = Duration::from_secs_f64(config.flapping_window);
            self.recent_crashes.push_back(now);
            while let Some(first) = self.recent_crashes.front() {
                if now.duration_since(*first) > window {
                    self.recent_crashes.pop_front();
                } else {
                    break;
                }
            }
            if self.recent_crashes.len() >= config.flapping_attempts as usize {
                self.recent_crashes.clear();
                self.flaps += 1;
                self.last_flap = Some(now);
                self.flap_pending = true;
                let max_retry = config.max_retry();
                let gave_up = max_retry >= 0 && i64::from(self.flaps) > max_retry;
                return Verdict::Flapping {
                    attempt: self.flaps,
                    retry_in: (!gave_up).then(|| Duration::from_secs_f64(config.retry_in)),
                };
            }
        }
        let slot = self.slots.entry(wid).or_default();
        slot.crashes += 1;
        slot.restarts += 1;
        self.restarts += 1;
        let delay = backoff(config, slot.crashes, jitter);
        if delay.is_zero() {
            slot.not_before = None;
            Verdict::Replace
        } else {
            slot.not_before = Some(now + delay);
            Verdict::Backoff(delay)
        }
    }

    /// When slot `wid` may be respawned, if it is backing off at `now`.
    pub fn backoff_until(&self, wid: u32, now: Instant) -> Option<Instant> {
        self.slots
            .get(&wid)
            .and_then(|slot| slot.not_before)
            .filter(|t| *t > now)
    }

    /// The slots backing off at `now`, soonest first.
    pub fn backing_off(&self, now: Instant) -> Vec<SlotBackoff> {
        let mut list: Vec<SlotBackoff> = self
            .slots
            .iter()
            .filter_map(|(wid, slot)| {
                let at = slot.not_before.filter(|t| *t > now)?;
                Some(SlotBackoff {
                    wid: *wid,
                    crashes: slot.crashes,
                    remaining: at.duration_since(now).as_secs_f64(),
                })
            })
            .collect();
        list.sort_by(|a, b| a.remaining.total_cmp(&b.remaining));
        list
    }
}

/// Delay before the `crashes`-th quick crash of a slot is respawned. `jitter` in
/// [0, 1) takes up to 20% off the delay.
pub fn backoff(config: &WatcherConfig, crashes: u32, jitter: f64) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let exponent = (crashes - 2).min(30);
    let raw = config.backoff_initial * f64::from(1u32 << exponent);
    let capped = raw.min(config.backoff_max);
    let jittered = capped * (1.0 - 0.2 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(jittered.max(0.0))
}

#[cfg(test)]
mod tests {
    use ringmaster_protocol::ExitInfo;

    use super::*;

    fn config() -> WatcherConfig {
        WatcherConfig::with_cmd("x").unwrap()
    }

    fn flapping() -> WatcherConfig {
        let mut c = config();
        c.check_flapping = Some(true);
        c
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn code(wid: u32, code: i32) -> LastExit {
        LastExit {
            pid: 100 + wid,
            wid,
            exit: ExitInfo {
                code: Some(code),
                signal: None,
            },
            time: 0.0,
            uptime: 0.0,
        }
    }

    fn killed(wid: u32) -> LastExit {
        LastExit {
            exit: ExitInfo {
                code: None,
                signal: Some(9),
            },
            ..code(wid, 0)
        }
    }

    #[test]
    fn first_crash_respawns_at_once_then_backs_off_exponentially_with_a_cap() {
        let c = config();
        assert_eq!(backoff(&c, 1, 0.0), Duration::ZERO);
        assert_eq!(backoff(&c, 2, 0.0), secs(0.1));
        assert_eq!(backoff(&c, 3, 0.0), secs(0.2));
        assert_eq!(backoff(&c, 6, 0.0), secs(1.6));
        assert_eq!(backoff(&c, 40, 0.0), secs(30.0));
        let jittered = backoff(&c, 40, 0.999);
        assert!(
            jittered < secs(30.0) && jittered >= secs(24.0),
            "{jittered:?}"
        );
    }

    #[test]
    fn the_defaults_replace_and_never_give_up() {
        let c = config();
        assert_eq!(c.restart_mode(), RestartMode::Always);
        assert!(!c.flapping_enabled());
        assert_eq!(c.min_uptime, 5.0);
        let mut t = RestartTracker::default();
        let now = Instant::now();
        for n in 0..1000u32 {
            let verdict = t.on_exit(&c, code(1, 1), secs(0.0), now + secs(f64::from(n)), 0.0);
            assert!(
                matches!(verdict, Verdict::Replace | Verdict::Backoff(_)),
                "{verdict:?}"
            );
        }
        assert_eq!(t.restarts(), 1000);
        assert_eq!(t.last_exit(), Some(code(1, 1)));
    }

    #[test]
    fn clean_exits_are_replaced_at_once_however_often_and_on_every_slot() {
        let c = flapping();
        let mut t = RestartTracker::default();
        let now = Instant::now();
        for round in 0..50 {
            for wid in 1..=10 {
                let verdict = t.on_exit(&c, code(wid, 0), secs(0.2), now, 0.5);
                assert_eq!(verdict, Verdict::Replace, "round {round}, slot {wid}");
            }
        }
        assert_eq!(t.restarts(), 500);
        assert!(t.backing_off(now).is_empty());
    }

    #[test]
    fn a_kill_after_min_uptime_is_a_normal_exit_on_any_slot() {
        let c = flapping();
        let mut t = RestartTracker::default();
        let now = Instant::now();
        // Two different slots killed within the same instant: neither waits and
        // the watcher is not flapping.
        assert_eq!(
            t.on_exit(&c, killed(1), secs(6.0), now, 0.0),
            Verdict::Replace
        );
        assert_eq!(
            t.on_exit(&c, killed(2), secs(6.0), now, 0.0),
            Verdict::Replace
        );
        assert_eq!(
            t.on_exit(&c, killed(3), secs(6.0), now, 0.0),
            Verdict::Replace
        );
    }

    #[test]
    fn slots_back_off_independently_and_reset_after_a_normal_run() {
        let c = config();
        let mut t = RestartTracker::default();
        let now = Instant::now();
        let quick = secs(0.5);
        assert_eq!(t.on_exit(&c, code(1, 2), quick, now, 0.0), Verdict::Replace);
        assert_eq!(
            t.on_exit(&c, code(1, 2), quick, now, 0.0),
            Verdict::Backoff(secs(0.1))
        );
        assert_eq!(t.backoff_until(1, now), Some(now + secs(0.1)));
        assert_eq!(t.backoff_until(1, now + secs(0.2)), None);
        let waiting = t.backing_off(now);
        assert_eq!(waiting.len(), 1);
        assert_eq!((waiting[0].wid, waiting[0].crashes), (1, 2));
        // Another slot is not slowed down by slot 1.
        assert_eq!(t.on_exit(&c, code(2, 2), quick, now, 0.0), Verdict::Replace);
        assert_eq!(t.backoff_until(2, now), None);
        // A normal run resets slot 1: its next quick crash starts over.
        assert_eq!(
            t.on_exit(&c, code(1, 2), secs(11.0), now, 0.0),
            Verdict::Replace
        );
        assert_eq!(t.on_exit(&c, code(1, 2), quick, now, 0.0), Verdict::Replace);
        assert_eq!(t.slot_restarts(1), 4);
        assert_eq!(t.slot_restarts(2), 1);
    }

    #[test]
    fn on_failure_leaves_a_slot_empty_after_a_success_code_only() {
        let mut c = config();
        c.restart = RestartMode::OnFailure;
        c.success_exit_codes = vec![0, 3];
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert_eq!(
            t.on_exit(&c, code(1, 3), secs(0.1), now, 0.0),
            Verdict::LeaveEmpty
        );
        assert!(t.is_exited(1));
        assert_eq!(
            t.on_exit(&c, code(2, 1), secs(0.1), now, 0.0),
            Verdict::Replace
        );
        // A death by a signal is a failure, never a success code.
        assert_eq!(
            t.on_exit(&c, killed(2), secs(0.1), now, 0.0),
            Verdict::Backoff(secs(0.1))
        );
        assert!(!t.is_exited(2));
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn never_and_respawn_false_replace_nothing() {
        let mut c = config();
        c.restart = RestartMode::Never;
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert_eq!(
            t.on_exit(&c, code(1, 1), secs(0.1), now, 0.0),
            Verdict::LeaveEmpty
        );
        let mut circus = config();
        circus.respawn = false;
        assert_eq!(circus.restart_mode(), RestartMode::Never);
        assert_eq!(
            t.on_exit(&circus, code(2, 0), secs(10.0), now, 0.0),
            Verdict::LeaveEmpty
        );
        assert_eq!(t.exited().count(), 2);
        t.forget_slots_above(1);
        assert_eq!(t.exited().count(), 1);
        t.reset();
        assert_eq!(t.exited().count(), 0);
    }

    #[test]
    fn flapping_within_the_window_stops_and_retries_then_gives_up() {
        let mut c = flapping();
        c.max_retry = Some(2);
        let mut t = RestartTracker::default();
        let mut now = Instant::now();
        let quick = secs(0.01);
        for attempt in 1..=3 {
            assert_eq!(t.on_exit(&c, code(1, 1), quick, now, 0.0), Verdict::Replace);
            now += secs(0.5);
            let verdict = t.on_exit(&c, code(1, 1), quick, now, 0.0);
            let expected_retry = (attempt <= 2).then(|| secs(7.0));
            assert_eq!(
                verdict,
                Verdict::Flapping {
                    attempt,
                    retry_in: expected_retry
                }
            );
            // Exits while the watcher is being stopped add nothing.
            assert_eq!(
                t.on_exit(&c, code(2, 1), quick, now, 0.0),
                Verdict::Stopping
            );
            t.reset_for_retry();
            now += secs(7.0);
        }
    }

    #[test]
    fn max_retry_alone_turns_flapping_on() {
        let mut c = config();
        c.max_retry = Some(0);
        assert!(c.flapping_enabled());
        let mut t = RestartTracker::default();
        let now = Instant::now();
        t.on_exit(&c, code(1, 1), secs(0.0), now, 0.0);
        assert_eq!(
            t.on_exit(&c, code(1, 1), secs(0.0), now, 0.0),
            Verdict::Flapping {
                attempt: 1,
                retry_in: None
            }
        );
        c.check_flapping = Some(false);
        assert!(!c.flapping_enabled());
    }

    #[test]
    fn crashes_further_apart_than_the_window_are_not_flapping() {
        let c = flapping();
        let mut t = RestartTracker::default();
        let mut now = Instant::now();
        for _ in 0..10 {
            let verdict = t.on_exit(&c, code(1, 1), secs(1.5), now, 0.0);
            assert!(
                matches!(verdict, Verdict::Replace | Verdict::Backoff(_)),
                "{verdict:?}"
            );
            now += secs(1.5);
        }
    }

    #[test]
    fn flap_count_resets_after_a_quiet_period() {
        let mut c = flapping();
        c.max_retry = Some(1);
        let mut t = RestartTracker::default();
        let now = Instant::now();
        t.on_exit(&c, code(1, 1), secs(0.0), now, 0.0);
        assert!(matches!(
            t.on_exit(&c, code(1, 1), secs(0.0), now, 0.0),
            Verdict::Flapping { attempt: 1, .. }
        ));
        t.reset_for_retry();
        let later = now + secs(60.0);
        t.on_exit(&c, code(1, 1), secs(0.0), later, 0.0);
        assert!(matches!(
            t.on_exit(&c, code(1, 1), secs(0.0), later, 0.0),
            Verdict::Flapping {
                attempt: 1,
                retry_in: Some(_)
            }
        ));
    }

    #[test]
    fn failed_spawns_back_off_like_quick_crashes() {
        let c = config();
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert_eq!(t.on_spawn_failure(&c, 1, now, 0.0), Verdict::Replace);
        assert_eq!(
            t.on_spawn_failure(&c, 1, now, 0.0),
            Verdict::Backoff(secs(0.1))
        );
        assert_eq!(
            t.on_spawn_failure(&c, 1, now, 0.0),
            Verdict::Backoff(secs(0.2))
        );
    }
}
