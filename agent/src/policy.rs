//! Restart policy: when to respawn a process that exited unexpectedly, when a
//! watcher is flapping, and when to give up. Pure and clock-free (the caller passes
//! `now`), so that every rule is unit-tested.
//!
//! - **Backoff, per process slot (wid).** The first quick crash of a slot respawns at
//!   once. Each further crash of the same slot, while it keeps dying before
//!   `healthy_after` seconds, waits `backoff_initial × 2^(n-2)` seconds, capped at
//!   `backoff_max`, less up to 20% jitter so that slots do not respawn in lockstep.
//!   A process that ran `healthy_after` seconds resets its slot.
//! - **Flapping, per watcher (as in Circus).** `flapping_attempts` unexpected exits
//!   within `flapping_window` seconds stop the watcher; it is started again after
//!   `retry_in` seconds, at most `max_retry` times in a row (-1: forever), then the
//!   agent gives up until someone starts it. A stop that the agent asked for never
//!   counts.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::WatcherConfig;

/// What to do after an unexpected exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Respawn the slot after this delay (zero: at once).
    Respawn(Duration),
    /// The watcher is flapping: stop it and start it again after `retry_in`, or
    /// give up when `retry_in` is None. `attempt` counts flaps in a row.
    Flapping {
        /// Flaps in a row, this one included.
        attempt: u32,
        /// When to try again; None when the agent gives up.
        retry_in: Option<Duration>,
    },
}

#[derive(Debug, Clone, Default)]
struct Slot {
    crashes: u32,
    not_before: Option<Instant>,
}

/// Restart bookkeeping of one watcher.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    slots: BTreeMap<u32, Slot>,
    recent_exits: VecDeque<Instant>,
    flaps: u32,
    last_flap: Option<Instant>,
}

impl RestartTracker {
    /// Forgets everything (a user started the watcher).
    pub fn reset(&mut self) {
        *self = RestartTracker::default();
    }

    /// Forgets crash history but keeps the count of flaps in a row (the agent
    /// itself restarts the watcher after flapping).
    pub fn reset_for_retry(&mut self) {
        self.slots.clear();
        self.recent_exits.clear();
    }

    /// Flaps in a row so far.
    pub fn flaps(&self) -> u32 {
        self.flaps
    }

    /// Records an unexpected exit of slot `wid` after `uptime`, or a failed spawn
    /// (uptime zero), and says what to do.
    pub fn on_unexpected_exit(
        &mut self,
        config: &WatcherConfig,
        wid: u32,
        uptime: Duration,
        now: Instant,
        jitter: f64,
    ) -> Verdict {
        let healthy = Duration::from_secs_f64(config.healthy_after);
        if let Some(last) = self.last_flap {
            if now.duration_since(last) >= healthy + Duration::from_secs_f64(config.retry_in) {
                self.flaps = 0;
            }
        }

        if config.check_flapping {
            let window = Duration::from_secs_f64(config.flapping_window);
            self.recent_exits.push_back(now);
            while let Some(first) = self.recent_exits.front() {
                if now.duration_since(*first) > window {
                    self.recent_exits.pop_front();
                } else {
                    break;
                }
            }
            if self.recent_exits.len() >= config.flapping_attempts as usize {
                self.recent_exits.clear();
                self.slots.clear();
                self.flaps += 1;
                self.last_flap = Some(now);
                let gave_up = config.max_retry >= 0 && i64::from(self.flaps) > config.max_retry;
                return Verdict::Flapping {
                    attempt: self.flaps,
                    retry_in: (!gave_up).then(|| Duration::from_secs_f64(config.retry_in)),
                };
            }
        }

        let slot = self.slots.entry(wid).or_default();
        if uptime >= healthy {
            slot.crashes = 0;
        }
        slot.crashes += 1;
        let delay = backoff(config, slot.crashes, jitter);
        slot.not_before = (!delay.is_zero()).then(|| now + delay);
        Verdict::Respawn(delay)
    }

    /// When slot `wid` may be respawned, if it is backing off at `now`.
    pub fn backoff_until(&self, wid: u32, now: Instant) -> Option<Instant> {
        self.slots
            .get(&wid)
            .and_then(|slot| slot.not_before)
            .filter(|t| *t > now)
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
    use super::*;

    fn config() -> WatcherConfig {
        WatcherConfig::with_cmd("x").unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
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
    fn slots_back_off_independently_and_reset_after_a_healthy_run() {
        let mut c = config();
        c.check_flapping = false;
        let mut t = RestartTracker::default();
        let now = Instant::now();
        let quick = secs(0.5);
        assert_eq!(
            t.on_unexpected_exit(&c, 1, quick, now, 0.0),
            Verdict::Respawn(Duration::ZERO)
        );
        assert_eq!(
            t.on_unexpected_exit(&c, 1, quick, now, 0.0),
            Verdict::Respawn(secs(0.1))
        );
        assert_eq!(t.backoff_until(1, now), Some(now + secs(0.1)));
        assert_eq!(t.backoff_until(1, now + secs(0.2)), None);
        // Another slot is not slowed down by slot 1.
        assert_eq!(
            t.on_unexpected_exit(&c, 2, quick, now, 0.0),
            Verdict::Respawn(Duration::ZERO)
        );
        // A healthy run resets slot 1.
        assert_eq!(
            t.on_unexpected_exit(&c, 1, secs(11.0), now, 0.0),
            Verdict::Respawn(Duration::ZERO)
        );
    }

    #[test]
    fn flapping_within_the_window_stops_and_retries_then_gives_up() {
        let mut c = config();
        c.max_retry = 2;
        let mut t = RestartTracker::default();
        let start = Instant::now();
        let quick = secs(0.01);
        let mut now = start;
        for attempt in 1..=3 {
            assert_eq!(
                t.on_unexpected_exit(&c, 1, quick, now, 0.0),
                Verdict::Respawn(Duration::ZERO)
            );
            now += secs(0.5);
            let verdict = t.on_unexpected_exit(&c, 1, quick, now, 0.0);
            let expected_retry = (attempt <= 2).then(|| secs(7.0));
            assert_eq!(
                verdict,
                Verdict::Flapping {
                    attempt,
                    retry_in: expected_retry
                }
            );
            t.reset_for_retry();
            now += secs(7.0);
        }
    }

    #[test]
    fn exits_further_apart_than_the_window_are_not_flapping() {
        let c = config();
        let mut t = RestartTracker::default();
        let mut now = Instant::now();
        for _ in 0..10 {
            let verdict = t.on_unexpected_exit(&c, 1, secs(1.5), now, 0.0);
            assert!(matches!(verdict, Verdict::Respawn(_)), "{verdict:?}");
            now += secs(1.5);
        }
    }

    #[test]
    fn flap_count_resets_after_a_quiet_period() {
        let mut c = config();
        c.max_retry = 1;
        let mut t = RestartTracker::default();
        let now = Instant::now();
        t.on_unexpected_exit(&c, 1, secs(0.0), now, 0.0);
        assert!(matches!(
            t.on_unexpected_exit(&c, 1, secs(0.0), now, 0.0),
            Verdict::Flapping { attempt: 1, .. }
        ));
        let later = now + secs(60.0);
        t.on_unexpected_exit(&c, 1, secs(0.0), later, 0.0);
        assert!(matches!(
            t.on_unexpected_exit(&c, 1, secs(0.0), later, 0.0),
            Verdict::Flapping {
                attempt: 1,
                retry_in: Some(_)
            }
        ));
    }

    #[test]
    fn flapping_can_be_turned_off() {
        let mut c = config();
        c.check_flapping = false;
        let mut t = RestartTracker::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert!(matches!(
                t.on_unexpected_exit(&c, 1, secs(0.0), now, 0.5),
                Verdict::Respawn(_)
            ));
        }
    }
}
