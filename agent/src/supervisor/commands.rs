//! The commands of the control protocol, each on top of the supervisor's
//! lifecycle operations: `handle` runs one to completion and says what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

use ringmaster_protocol::message::{
    ChangeReport, ExecOutput, NodeInfo, ProcessInfo, StatsReport, WatcherStatus,
};
use ringmaster_protocol::{
    names, Command, ErrorKind, ErrorReply, EventKind, OptionMap, OptionValue, Response, Signal,
    PROTOCOL_VERSION, RINGMASTER_VERSION,
};
use tracing::info;

use super::{not_found, now_secs, send_signal, Agent, CmdResult, Watcher};
use crate::config::{is_optional_option, Config, WatcherConfig, LIVE_OPTIONS, MAX_PROCESSES};
use crate::exec;
use crate::machine::SlotState;
use crate::persist::{plan, Change};
use crate::state_dir::apply_plan;

impl Agent {
    /// Runs one command to completion.
    pub async fn handle(self: &Rc<Self>, command: Command) -> CmdResult<Response> {
        if command.changes_state() && !matches!(command, Command::Quit {}) {
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
                .with_watcher(&name, |w| w.config.shown_options())
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
                .await
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
            Command::NodeInfo {} => Ok(Response::NodeInfo(Box::new(self.node_info()))),
            Command::Stats { name } => self.stats(name.as_deref()).map(Response::Stats),
            Command::DStats {} => self.latest_stats.borrow().own.clone().map(Response::DStats).ok_or_else(|| {
                ErrorReply::new(
                    ErrorKind::NotFound,
                    "no statistics yet: they are off (stats_interval = 0) or the first sample is not taken",
                )
            }),
            Command::Exec { cmd, timeout } => self.exec(&cmd, timeout).await.map(Response::Exec),
            Command::ListSockets {} => Ok(Response::Sockets(self.list_sockets())),
            Command::Logs {
                name,
                lines,
                stream,
            } => {
                self.with_watcher(&name, |_| ())?;
                Ok(Response::Logs(self.output.logs(&name, lines, stream)))
            }
            Command::Reopen {} => self.reopen_files().await.map(Response::Changes),
            Command::Upgrade { binary } => self.upgrade(binary).await.map(Response::Upgrade),
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
        for (_, name) in self.by_priority(|w| w.life.is_active()) {
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
        let now = Instant::now();
        let line = |name: &String, w: &Watcher| WatcherStatus {
            name: name.clone(),
            state: w.state(),
            processes: u32::try_from(w.procs.len()).unwrap_or(u32::MAX),
            numprocesses: w.config.numprocesses,
            last_error: w.life.last_error().map(str::to_string),
            restarts: w.life.restarts().restarts(),
            last_exit: w.life.restarts().last_exit(),
            backoff: w.life.restarts().backing_off(now),
            exited: w.life.restarts().exited().map(|(_, exit)| *exit).collect(),
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

    fn stats(&self, name: Option<&str>) -> CmdResult<StatsReport> {
        if let Some(name) = name {
            self.with_watcher(name, |_| ())?;
        }
        let latest = self.latest_stats.borrow();
        let wanted = |watcher: &str| name.is_none_or(|n| n == watcher);
        Ok(StatsReport {
            time: latest.time,
            watchers: latest
                .watchers
                .iter()
                .filter(|w| wanted(&w.name))
                .cloned()
                .collect(),
            processes: latest
                .processes
                .iter()
                .filter(|p| wanted(&p.watcher))
                .cloned()
                .collect(),
        })
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
                    state: if p.stopping {
                        SlotState::Stopping
                    } else {
                        SlotState::Running
                    }
                    .name()
                    .into(),
                    restarts: w.life.restarts().slot_restarts(p.wid),
                    last_exit: w.life.restarts().slot_last_exit(p.wid),
                    retry_in: None,
                })
                .collect();
            let live: BTreeSet<u32> = list.iter().map(|p| p.wid).collect();
            let pending = w.pending.iter().filter(|wid| !live.contains(wid));
            let empty = pending
                .map(|wid| (*wid, SlotState::Spawning))
                .chain(w.life.empty_slots(&live, Instant::now()));
            list.extend(empty.map(|(wid, slot)| ProcessInfo {
                pid: 0,
                wid,
                started: 0.0,
                state: slot.name().into(),
                restarts: w.life.restarts().slot_restarts(wid),
                last_exit: w.life.restarts().slot_last_exit(wid),
                retry_in: match slot {
                    SlotState::Backoff { remaining } => Some(remaining),
                    _ => None,
                },
            }));
            list.sort_by_key(|p| (p.wid, p.pid));
            list
        })
    }

    async fn incr(self: &Rc<Self>, name: &str, nb: u32) -> CmdResult<ChangeReport> {
        self.change_numprocesses(name, |current, singleton| {
            if singleton && current.saturating_add(nb) > 1 {
                return Err(format!(
                    "watcher '{name}' is a singleton: it runs at most one process"
                ));
            }
            current
                .checked_add(nb)
                .filter(|t| *t <= MAX_PROCESSES)
                .ok_or_else(|| format!("numprocesses would exceed {MAX_PROCESSES}"))
        })
        .await
    }

    async fn decr(self: &Rc<Self>, name: &str, nb: u32) -> CmdResult<ChangeReport> {
        self.change_numprocesses(name, |current, _| {
            current.checked_sub(nb).ok_or_else(|| {
                format!("cannot decrease '{name}' by {nb}: it has numprocesses = {current}")
            })
        })
        .await
    }

    /// Scales watcher `name` to the count `target(current, singleton)` gives, or
    /// refuses with the message it gives. The new count is saved first. When the
    /// processes cannot all be started, the command fails and changes nothing:
    /// the count goes back to what it was, in the saved state too, and the
    /// processes started for it are stopped.
    async fn change_numprocesses(
        self: &Rc<Self>,
        name: &str,
        target: impl FnOnce(u32, bool) -> Result<u32, String>,
    ) -> CmdResult<ChangeReport> {
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        let config = self.with_watcher(name, |w| w.config.clone())?;
        let current = config.numprocesses;
        let target = target(current, config.singleton)
            .map_err(|message| ErrorReply::new(ErrorKind::BadArguments, message))?;
        let mut wanted = config.clone();
        wanted.numprocesses = target;
        self.persist_watcher(name, Some(&wanted))?;
        let report = match self.scale_to(name, target).await {
            Ok(report) => report,
            Err(e) => {
                let saved = match self.persist_watcher(name, Some(&config)) {
                    Ok(()) => String::new(),
                    Err(e) => format!(
                        " (but the saved state keeps numprocesses = {target}: {})",
                        e.message
                    ),
                };
                let _ = self.scale_to(name, current).await;
                return Err(ErrorReply::new(
                    e.kind,
                    format!("{}; numprocesses stays at {current}{saved}", e.message),
                ));
            }
        };
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
        if self.state.borrow().watchers.contains_key(&name) {
            return Err(ErrorReply::new(
                ErrorKind::AlreadyExists,
                format!("a watcher named '{name}' exists already (use `set` to change it)"),
            ));
        }
        // Saved first: a watcher that cannot be saved is not added.
        self.persist_watcher(&name, Some(&config))?;
        self.state
            .borrow_mut()
            .watchers
            .insert(name.clone(), Watcher::new(config));
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
                    if let Err(undo) = self.persist_watcher(&name, None) {
                        return Err(ErrorReply::new(
                            e.kind,
                            format!(
                                "{} (and the watcher stays in the saved state: {})",
                                e.message, undo.message
                            ),
                        ));
                    }
                    return Err(e);
                }
            }
        }
        self.emit(&name, EventKind::Add {});
        report.watchers.insert(name, "added".into());
        Ok(report)
    }

    /// `reopen` (and SIGUSR1): every output file is closed and opened again at
    /// its path, after an external rotation.
    async fn reopen_files(&self) -> CmdResult<ChangeReport> {
        let report = self
            .output
            .reopen(std::time::Duration::from_secs(10))
            .await
            .map_err(|e| ErrorReply::new(ErrorKind::Os, format!("reopen: {e}")))?;
        if let Some(failures) = report.failures() {
            return Err(ErrorReply::new(
                ErrorKind::Os,
                format!("reopen: {failures}"),
            ));
        }
        info!("reopened {} output file(s)", report.files.len());
        Ok(report.into_changes())
    }

    async fn rm(self: &Rc<Self>, name: &str, nostop: bool) -> CmdResult<ChangeReport> {
        let lock = self.lock_of(name)?;
        let _guard = lock.lock().await;
        // Saved first: a removal that cannot be saved is not made.
        let config = self.with_watcher(name, |w| w.config.clone())?;
        self.persist_watcher(name, None)?;
        let mut report = if nostop {
            ChangeReport {
                kept: self.with_watcher(name, |w| w.pids())?,
                done: true,
                ..ChangeReport::default()
            }
        } else {
            match self.stop_watcher(name, true).await {
                Ok(report) => report,
                Err(e) => {
                    // Not removed after all (a before_stop hook refused).
                    if let Err(undo) = self.persist_watcher(name, Some(&config)) {
                        tracing::warn!("{}", undo.message);
                    }
                    return Err(e);
                }
            }
        };
        self.state.borrow_mut().watchers.remove(name);
        self.output.forget(name);
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
        // Saved first; once saved the new config is kept even if applying it
        // fails (the error says what failed, `status` shows the watcher).
        self.persist_watcher(name, Some(&new))?;
        let report = self.apply_config(name, old, new).await?;
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
        let aging_changed =
            old.max_age != new.max_age || old.max_age_variance != new.max_age_variance;
        let active = self.with_watcher(name, |w| {
            w.config = new;
            w.life.is_active()
        })?;
        if aging_changed {
            self.rearm_age_timers(name);
        }
        if needs_reload && active {
            let mut report = self.reload_watcher(name, false).await?;
            report.numprocesses = Some(target);
            Ok(report)
        } else {
            self.scale_to(name, target).await
        }
    }

    fn get(&self, name: &str, keys: &[String]) -> CmdResult<OptionMap> {
        let options = self.with_watcher(name, |w| w.config.shown_options())?;
        let mut out = OptionMap::new();
        for key in keys {
            match options.get(key) {
                Some(value) => {
                    out.insert(key.clone(), value.clone());
                }
                // Known, but not set: the default applies.
                None if is_optional_option(key) => {
                    out.insert(key.clone(), OptionValue::Str(String::new()));
                }
                None => {
                    return Err(ErrorReply::new(
                        ErrorKind::NotFound,
                        format!(
                            "watcher '{name}' has no option '{key}' (options: {}, and when \
                             set: working_dir, uid, gid, umask, hooks, rlimit_NAME)",
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
        all.insert("allow_exec".into(), OptionValue::Bool(settings.allow_exec));
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

    async fn signal(
        self: &Rc<Self>,
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
        if self.has_signal_hooks(name) {
            let refused = self
                .signal_many_with_hooks(name, &targets, signal, children, false)
                .await;
            return super::lifecycle::signal_report(name, signal, targets, &refused);
        }
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

    /// Runs `cmd` through `/bin/sh -c` if the config allows it. Holds no watcher
    /// lock and never borrows the state across an `.await`: the agent serves other
    /// requests while the command runs.
    async fn exec(&self, cmd: &str, timeout: f64) -> CmdResult<ExecOutput> {
        let (node, allowed) = {
            let settings = self.settings.borrow();
            (settings.node.clone(), settings.allow_exec)
        };
        if !allowed {
            info!(node = %node, cmd, "exec refused: allow_exec is off");
            return Err(ErrorReply::new(
                ErrorKind::Forbidden,
                format!(
                    "exec is off on node {node}: set allow_exec = true in the [agent] section of its config to allow it"
                ),
            ));
        }
        let timeout = exec::check(cmd, timeout)
            .map_err(|message| ErrorReply::new(ErrorKind::BadArguments, message))?;
        exec::run(&node, cmd, timeout).await.map_err(|e| {
            ErrorReply::new(
                ErrorKind::SpawnFailed,
                format!("cannot run /bin/sh on node {node}: {e}"),
            )
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
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        // What the reload will make, saved before anything is done.
        let changes = {
            let state = self.state.borrow();
            let runtime: BTreeMap<String, WatcherConfig> = state
                .watchers
                .iter()
                .map(|(n, w)| (n.clone(), w.config.clone()))
                .collect();
            let changes = plan(&config.watchers, &state.baseline, &runtime);
            let mut planned = runtime;
            apply_plan(&mut planned, changes.clone());
            drop(state);
            self.persist_all(config.watchers.clone(), planned)?;
            changes
        };
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
            settings.allow_exec = new.allow_exec;
        }
        // Sockets first: watchers added now may use new ones.
        let waiting = self.pause_demand_waits().await;
        self.reload_sockets(&config.sockets, &mut report).await;
        self.resume_demand_waits(waiting);
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
            pid: std::process::id(),
            binary: self.binary.display().to_string(),
            upgrades: self.upgrades.get(),
            protocol: PROTOCOL_VERSION,
            uptime: self.uptime().as_secs_f64(),
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
            sealed: settings.keys.is_some(),
            refused: self.refused.borrow().clone(),
            malformed: self.malformed.get(),
            control_connections: self
                .connections
                .borrow()
                .as_ref()
                .map(|c| c.control.load())
                .unwrap_or_default(),
            pubsub_connections: self
                .connections
                .borrow()
                .as_ref()
                .map(|c| c.pubsub.load())
                .unwrap_or_default(),
        }
    }
}
