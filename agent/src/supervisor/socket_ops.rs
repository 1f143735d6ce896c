//! The agent's listening sockets seen from the supervisor: taking them over at
//! start, `listsockets`, what `reloadconfig` does to them, and what a watcher
//! that waits for connections (`on_demand`) needs to watch them.
//!
//! `reloadconfig` keeps every unchanged socket as it is (same descriptor, never
//! closed), binds new ones, closes removed ones, changes the backlog or the mode
//! of a unix socket file in place, and binds a socket whose address changed
//! again: on the new address first when it can, then reloads the watchers that
//! use it (gracefully: new processes on the new socket, then the old ones stop)
//! and closes the old socket; when the address is still held (the same address,
//! `reuseport` toggled), it stops those watchers, closes the old socket, binds the
//! new one and starts them again.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use ringmaster_protocol::message::{ChangeReport, SocketInfo};
use tracing::{info, warn};

use super::Agent;
use crate::config::SocketConfig;
use crate::sockets::{self, BoundSocket, Sockets};

impl Agent {
    /// Takes over the sockets bound at start; call it before any watcher starts.
    pub fn adopt_sockets(&self, sockets: Sockets) {
        *self.sockets.borrow_mut() = sockets;
    }

    /// Closes every socket, removing unix socket files (at exit).
    pub fn close_sockets(&self) {
        self.sockets.borrow_mut().close_all();
    }

    /// `listsockets`: every socket with the watchers that use it.
    pub(super) fn list_sockets(&self) -> Vec<SocketInfo> {
        let state = self.state.borrow();
        self.sockets
            .borrow()
            .info(state.watchers.iter().map(|(name, w)| (name, &w.config)))
    }

    /// Names of the sockets watcher `name` uses (every socket with
    /// `use_sockets`, else those its `cmd`, `args` and `env` name); empty when
    /// the watcher is unknown.
    pub fn sockets_of(&self, name: &str) -> Vec<String> {
        let state = self.state.borrow();
        state
            .watchers
            .get(name)
            .map(|w| self.sockets.borrow().used_by(&w.config))
            .unwrap_or_default()
    }

    /// Bumped whenever a socket is added, replaced or removed (see
    /// [`Sockets::generation`]).
    pub fn socket_generation(&self) -> u64 {
        self.sockets.borrow().generation()
    }

    /// Duplicates (close-on-exec) of the sockets watcher `name` uses, with the
    /// generation they belong to: something to wait on for an incoming
    /// connection (e.g. `tokio::io::unix::AsyncFd`, readable = a connection is
    /// queued) without accepting it. Drop them when [`Agent::socket_generation`]
    /// changes: while a duplicate is open, the old socket keeps listening and
    /// its address cannot be bound again.
    pub fn socket_fds_of(&self, name: &str) -> io::Result<(u64, Vec<(String, OwnedFd)>)> {
        let names = self.sockets_of(name);
        let sockets = self.sockets.borrow();
        let fds = names
            .into_iter()
            .filter_map(|n| sockets.get(&n).map(|s| (n, s)))
            .map(|(n, s)| s.try_clone_fd().map(|fd| (n, fd)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((sockets.generation(), fds))
    }

    /// Applies the `[sockets.*]` of a reloaded config, noting each change in
    /// `report` as `[sockets.NAME]`.
    pub(super) async fn reload_sockets(
        self: &Rc<Self>,
        new: &BTreeMap<String, SocketConfig>,
        report: &mut ChangeReport,
    ) {
        let old: BTreeMap<String, SocketConfig> = self
            .sockets
            .borrow()
            .iter()
            .map(|s| (s.name().to_string(), s.config().clone()))
            .collect();
        let mut note = |name: &str, outcome: String| {
            info!(socket = name, "reloadconfig: {outcome}");
            report.watchers.insert(format!("[sockets.{name}]"), outcome);
        };
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            // Processes still holding it keep it open until they exit.
            self.sockets.borrow_mut().remove(name);
            note(name, "removed".into());
        }
        for (name, config) in new {
            let Some(before) = old.get(name) else {
                let outcome = match bind(name, config).await {
                    Ok(bound) => {
                        let address = bound.endpoint().to_string();
                        self.sockets.borrow_mut().insert(bound);
                        format!("added on {address}")
                    }
                    Err(e) => format!("failed: {e}"),
                };
                note(name, outcome);
                continue;
            };
            if before == config {
                continue;
            }
            let adjusted = self
                .sockets
                .borrow_mut()
                .get_mut(name)
                .map(|s| s.adjust(config));
            let outcome = match adjusted {
                Some(Ok(true)) => "changed in place".to_string(),
                Some(Err(e)) => format!("failed: {e}"),
                Some(Ok(false)) | None => self.rebind(name, before, config).await,
            };
            note(name, outcome);
        }
    }

    /// Binds socket `name` again for its `new` config (see the module docs);
    /// says what happened.
    async fn rebind(self: &Rc<Self>, name: &str, old: &SocketConfig, new: &SocketConfig) -> String {
        let users = self.active_users_of(name);
        let resolved = match sockets::resolve(name, new).await {
            Ok(resolved) => resolved,
            Err(e) => return format!("failed: {e}; the old socket stays"),
        };
        if let Ok(bound) = BoundSocket::bind(name, new, resolved) {
            // A new address: the new processes get the new socket, the old
            // ones keep the old one until they stop.
            let address = bound.endpoint().to_string();
            let previous = self.sockets.borrow_mut().insert(bound);
            let reloaded = self.for_users(&users, Usage::Reload).await;
            drop(previous);
            return format!("rebound on {address}{reloaded}");
        }
        // The address is still held by the old socket (and by the processes
        // that have it): stop them, close it, bind again, start them.
        let stopped = self.for_users(&users, Usage::Stop).await;
        self.sockets.borrow_mut().remove(name);
        let outcome = match BoundSocket::bind(name, new, resolved) {
            Ok(bound) => {
                let address = bound.endpoint().to_string();
                self.sockets.borrow_mut().insert(bound);
                format!("rebound on {address}{stopped}")
            }
            Err(e) => {
                warn!("{e}");
                let restored = match bind(name, old).await {
                    Ok(bound) => {
                        self.sockets.borrow_mut().insert(bound);
                        "the old settings are back"
                    }
                    Err(_) => "the socket is closed",
                };
                format!("failed: {e}; {restored}")
            }
        };
        let started = self.for_users(&users, Usage::Start).await;
        format!("{outcome}{started}")
    }

    /// Active watchers that use socket `name`.
    fn active_users_of(&self, name: &str) -> Vec<String> {
        let state = self.state.borrow();
        let sockets = self.sockets.borrow();
        state
            .watchers
            .iter()
            .filter(|(_, w)| w.life.is_active())
            .filter(|(_, w)| sockets.used_by(&w.config).iter().any(|s| s == name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Reloads, stops or starts each watcher of `users` (holding its lock);
    /// says which, for the report.
    async fn for_users(self: &Rc<Self>, users: &[String], usage: Usage) -> String {
        let mut done = Vec::new();
        for name in users {
            let Ok(lock) = self.lock_of(name) else {
                continue;
            };
            let _guard = lock.lock().await;
            let result = match usage {
                Usage::Reload => self.reload_watcher(name, false).await,
                Usage::Stop => self.stop_watcher(name, true).await,
                Usage::Start => self.start_watcher(name, true).await,
            };
            match result {
                Ok(_) => done.push(name.clone()),
                Err(e) => {
                    warn!(watcher = %name, "{} after a socket change failed: {}", usage.verb(), e.message)
                }
            }
        }
        if done.is_empty() {
            String::new()
        } else {
            format!("; {} {}", usage.verb(), done.join(", "))
        }
    }
}

/// What a socket change does to the watchers that use the socket.
#[derive(Debug, Clone, Copy)]
enum Usage {
    Reload,
    Stop,
    Start,
}

impl Usage {
    fn verb(self) -> &'static str {
        match self {
            Usage::Reload => "reloaded",
            Usage::Stop => "stopped",
            Usage::Start => "started",
        }
    }
}

async fn bind(name: &str, config: &SocketConfig) -> Result<BoundSocket, sockets::SocketError> {
    let resolved = sockets::resolve(name, config).await?;
    BoundSocket::bind(name, config, resolved)
}
