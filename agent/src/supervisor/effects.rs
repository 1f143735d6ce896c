//! Where a watcher's [`Life`](crate::machine::Life) meets the world: an input is
//! fed to the pure state machine ([`Agent::step`]) and the effects it returns
//! are carried out here, and only here ([`Agent::carry_out`]). The two effects
//! that need the watcher's lock and time (the flapping stop and its retry) are
//! tasks of their own that feed their result back as inputs.

use std::rc::Rc;

use tracing::{info, warn};

use crate::hooks::HookPoint;
use crate::machine::{Clock, Effect, Input};

use super::lifecycle::OnFailure;
use super::Agent;

impl Agent {
    /// Feeds `input` to watcher `name`'s life; returns what to do (nothing for a
    /// watcher that is gone).
    pub(super) fn step(&self, name: &str, input: Input) -> Vec<Effect> {
        self.with_watcher(name, |w| w.life.next(&w.config, input, Clock::now()))
            .unwrap_or_default()
    }

    /// [`Agent::step`], then [`Agent::carry_out`].
    pub(super) fn apply(self: &Rc<Self>, name: &str, input: Input) {
        let effects = self.step(name, input);
        self.carry_out(name, effects);
    }

    /// Carries out `effects` without waiting: hooks run in the background.
    pub(super) fn carry_out(self: &Rc<Self>, name: &str, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Emit(kind) => self.emit(name, kind),
                Effect::Hook(point) => self.hook_in_background(name, point),
                Effect::Fill => self.fill(name),
                Effect::FillAt(at) => self.fill_at(name, at),
                Effect::StopForFlapping { epoch } => {
                    let agent = Rc::clone(self);
                    let name = name.to_string();
                    tokio::task::spawn_local(async move {
                        agent.stop_for_flapping(&name, epoch).await;
                    });
                }
                Effect::RetryAt { at, epoch } => {
                    let agent = Rc::clone(self);
                    let name = name.to_string();
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep_until(at.into()).await;
                        agent.retry(&name, epoch).await;
                    });
                }
                // Only [`Input::RetryDue`] asks for it, and [`Agent::retry`]
                // carries it out with the watcher's lock held.
                Effect::Restart => {}
                Effect::WaitAgain => self.wait_again(name),
                Effect::CancelDemand => {
                    let _ = self.with_watcher(name, |w| w.demand = None);
                }
                Effect::Warn(message) => warn!(watcher = name, "{message}"),
                Effect::Info(message) => info!(watcher = name, "{message}"),
            }
        }
    }

    /// [`Agent::carry_out`], but the hooks run in order and are waited for (a
    /// stop command replies after `after_stop`).
    pub(super) async fn carry_out_in_order(self: &Rc<Self>, name: &str, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Hook(point) => {
                    let _ = self.watcher_hook(name, point, OnFailure::Report).await;
                }
                other => self.carry_out(name, vec![other]),
            }
        }
    }

    /// The stop the restart policy asked for when watcher `name` flapped, unless
    /// a user's start or stop overtook it (`epoch`).
    async fn stop_for_flapping(self: &Rc<Self>, name: &str, epoch: u64) {
        let Ok(lock) = self.lock_of(name) else { return };
        let _guard = lock.lock().await;
        let due = self
            .with_watcher(name, |w| w.life.flapping_stop_due(epoch))
            .unwrap_or(false);
        if !due {
            return;
        }
        let _ = self
            .watcher_hook(name, HookPoint::BeforeStop, OnFailure::Report)
            .await;
        let Ok(pids) = self.with_watcher(name, |w| w.pids()) else {
            return;
        };
        self.stop_pids(name, pids).await;
        let effects = self.step(name, Input::Stopped);
        self.carry_out_in_order(name, effects).await;
    }

    /// A flapping retry of `epoch` came due: starts watcher `name` again, unless
    /// a user's start or stop overtook it.
    async fn retry(self: &Rc<Self>, name: &str, epoch: u64) {
        let Ok(lock) = self.lock_of(name) else { return };
        let _guard = lock.lock().await;
        if self.shutting_down.get() {
            return;
        }
        let effects = self.step(name, Input::RetryDue { epoch });
        let restart = effects.contains(&Effect::Restart);
        self.carry_out(name, effects);
        if restart {
            if let Err(e) = self.start_watcher(name, false).await {
                warn!(watcher = name, "retry after flapping failed: {}", e.message);
            }
        }
    }
}
