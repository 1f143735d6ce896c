//! `nodeagent`: Ringmaster's per-host supervisor of processes.
//!
//! The agent reads its config ([`config`]), binds its control (ROUTER) and publish
//! (PUB) endpoints, starts its watchers ([`supervisor`]) and then serves commands
//! until it is told to quit or receives SIGTERM/SIGINT. SIGHUP reloads the config;
//! SIGUSR1 reopens the output files ([`output`]), after an external log rotation;
//! SIGUSR2 upgrades the agent in place ([`upgrade`]): it re-executes its binary
//! and every process keeps running.
//!
//! Everything runs on one `current_thread` tokio runtime: one thread is plenty for
//! a supervisor whose work is waiting, and its state needs no locks.
//!
//! The agent knows nothing of pools: it is one node, named in every topic it
//! publishes.

pub mod adopted;
pub mod child;
pub mod circus;
pub mod circus_ini;
pub mod circus_shape;
pub mod config;
pub mod endpoints;
pub mod exec;
pub mod fnmatch;
pub mod hooks;
pub mod lineage;
pub mod machine;
pub mod nodeinfo;
pub mod notify;
pub mod output;
pub mod persist;
pub mod policy;
pub mod reaper;
pub mod sockets;
pub mod spawn;
pub mod state_dir;
pub mod stats;
pub mod supervisor;
pub mod survivors;
pub mod terminate;
pub mod upgrade;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmaster_protocol::logs::LogStream;
use ringmaster_protocol::message::{ChangeReport, Reply, Response};
use ringmaster_protocol::seal::{Admitted, Gate, Refusal};
use ringmaster_protocol::transport::{ControlServer, Listener, Publisher};
use ringmaster_protocol::{Codec, Command, PROTOCOL_VERSION};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::notify::Notifier;
use crate::sockets::HandedSocket;
use crate::stats::Sampler;
use crate::supervisor::{Agent, EndpointCounters, Outgoing};
use crate::upgrade::Handover;

/// Messages waiting to be published; beyond this, new ones are dropped and counted.
const PUBLISH_QUEUE: usize = 65_536;

/// How long the agent keeps its sockets open after the last reply before exiting,
/// so that the reply to `quit` reaches the client.
const LINGER: Duration = Duration::from_millis(100);

/// How long an upgrade in place waits for libzmq to send its last reply.
const EXEC_FLUSH: Duration = Duration::from_secs(1);

/// How often `STATUS=` is refreshed for systemd (only sent when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs the agent until it is told to stop. Must be called on a `current_thread`
/// runtime. With a `notifier` (systemd's `$NOTIFY_SOCKET`), the agent says when it
/// is ready, keeps its status current, pings the watchdog and says when it stops.
pub async fn run(
    config: Config,
    notifier: Option<Notifier>,
    resume: Option<PathBuf>,
) -> anyhow::Result<()> {
    tokio::task::LocalSet::new()
        .run_until(run_local(config, notifier.map(Rc::new), resume))
        .await
}

/// What an upgrade in place handed to this program image (see [`upgrade`]).
struct Inherited {
    handover: Handover,
    control: Listener,
    pubsub: Listener,
    sockets: Vec<(HandedSocket, OwnedFd)>,
    pipes: HashMap<(u32, LogStream), OwnedFd>,
}

impl Inherited {
    /// Reads the handover at `path` (and removes it) and takes each descriptor it
    /// names.
    fn take(path: &Path) -> anyhow::Result<Inherited> {
        let handover = Handover::read(path).map_err(anyhow::Error::msg)?;
        let _ = std::fs::remove_file(path);
        let listener = |handed: &upgrade::HandedEndpoint| -> anyhow::Result<Listener> {
            let fd = upgrade::inherit(handed.fd)?;
            Ok(Listener::inherited(handed.endpoint.clone(), fd)?)
        };
        let control = listener(&handover.control).context("the control endpoint")?;
        let pubsub = listener(&handover.pubsub).context("the publish endpoint")?;
        let mut sockets = Vec::with_capacity(handover.sockets.len());
        for socket in &handover.sockets {
            let fd =
                upgrade::inherit(socket.fd).with_context(|| format!("socket '{}'", socket.name))?;
            sockets.push((socket.clone(), fd));
        }
        let mut pipes = HashMap::new();
        for watcher in &handover.watchers {
            for process in &watcher.processes {
                for stream in [LogStream::Stdout, LogStream::Stderr] {
                    let Some(raw) = process.stream(stream) else {
                        continue;
                    };
                    match upgrade::inherit(raw) {
                        Ok(fd) => {
                            pipes.insert((process.pid, stream), fd);
                        }
                        Err(e) => warn!(
                            watcher = %watcher.name,
                            pid = process.pid,
                            "the {stream} of process {} is lost: {e}",
                            process.pid
                        ),
                    }
                }
            }
        }
        Ok(Inherited {
            handover,
            control,
            pubsub,
            sockets,
            pipes,
        })
    }
}

/// `nodeagent --check-upgrade HANDOVER`: what a new binary checks before an
/// upgrade in place hands over to it. The config is already loaded (and valid);
/// the state directory and the handover must be readable, and every watcher
/// with processes must be one this binary would run.
pub fn check_upgrade(config: &Config, handover: &Path) -> Result<usize, String> {
    let handover = Handover::read(handover)?;
    let runtime = state_dir::inspect(config);
    for watcher in &handover.watchers {
        if !watcher.processes.is_empty() && !runtime.contains_key(&watcher.name) {
            return Err(format!(
                "watcher '{}' runs {} process(es), and neither the config file nor the state                  directory has it: add it back to the config, or stop it first",
                watcher.name,
                watcher.processes.len()
            ));
        }
    }
    Ok(handover.process_count())
}

async fn run_local(
    config: Config,
    notifier: Option<Rc<Notifier>>,
    resume: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Signals first, so that a SIGTERM during a long start is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?;

    // Before any process is started: what they start stays below the agent, and
    // the orphans it inherits are reaped.
    reaper::become_subreaper();
    tokio::task::spawn_local(reaper::reap_forever());

    // After an upgrade in place: what the previous image handed over.
    let inherited = match &resume {
        Some(path) => Some(
            Inherited::take(path)
                .with_context(|| format!("cannot take over from {}", path.display()))?,
        ),
        None => None,
    };
    let handed_pids = inherited
        .as_ref()
        .map(|i| i.handover.pids())
        .unwrap_or_default();
    // They are this agent's to wait for (see `adopted`), not orphans to reap.
    for pid in &handed_pids {
        reaper::track(*pid);
    }

    // The state directory before anything is bound or spawned: its lock keeps a
    // second agent off this state, and what a crashed agent left running is
    // stopped (it may hold the ports bound next).
    let state = state_dir::open_keeping(&config, &handed_pids)
        .context("cannot open the state directory")?;
    // The listening sockets next: a port that cannot be bound stops the agent at
    // once, naming the socket.
    let (inherited, handed_sockets) = match inherited {
        Some(mut i) => {
            let sockets = std::mem::take(&mut i.sockets);
            (Some(i), sockets)
        }
        None => (None, Vec::new()),
    };
    let sockets = sockets::Sockets::take_over_or_bind(&config.sockets, handed_sockets)
        .await
        .context("cannot bind a listening socket (see its [sockets.NAME] table)")?;
    for socket in sockets.iter() {
        info!(
            socket = socket.name(),
            fd = socket.raw_fd(),
            "listening on {}",
            socket.endpoint()
        );
    }
    // The gate first: it refuses frames sealed before it exists, and a client may
    // send one as soon as the endpoint is bound.
    let gate = match &config.agent.keys {
        Some(keys) => {
            info!(
                admin_key = %keys.admin.id(),
                read_key = %keys.read.as_ref().map_or_else(|| "-".to_string(), |k| k.id().to_string()),
                "frames are sealed"
            );
            Gate::keyed(
                Codec::default(),
                keys.admin.clone(),
                keys.read.clone(),
                keys.replay_window,
            )
        }
        None => {
            info!("no keys: frames travel in clear");
            Gate::open(Codec::default())
        }
    };
    let mut gate = gate;
    if let Some(memory) = inherited.as_ref().and_then(|i| i.handover.replay.as_ref()) {
        gate.resume_replay(memory);
    }
    endpoints::prepare(&config.agent).context("cannot prepare the runtime directory")?;
    let limits = endpoints::limits(&config.agent);
    // The agent makes its listening sockets itself and libzmq serves them, so
    // that an upgrade in place can hand them over open.
    let (control, pubsub, inherited) = match inherited {
        Some(Inherited {
            handover,
            control,
            pubsub,
            pipes,
            ..
        }) => (control, pubsub, Some((handover, pipes))),
        None => (
            Listener::open(&config.agent.control, &limits)
                .context("cannot open the control endpoint (set [agent] control)")?,
            Listener::open(&config.agent.pubsub, &limits)
                .context("cannot open the publish endpoint (set [agent] pubsub)")?,
            None,
        ),
    };
    let server = ControlServer::bind_listener(&control, limits)
        .await
        .context("cannot open the control endpoint (set [agent] control)")?;
    let mut publisher = Publisher::bind_listener(&pubsub, limits)
        .await
        .context("cannot open the publish endpoint (set [agent] pubsub)")?;
    endpoints::warn_if_open(&config.agent);
    publisher.seal_with(gate.publication_key().cloned());
    let (events, queue) = mpsc::channel(PUBLISH_QUEUE);
    let stats_interval = config.agent.stats_interval;
    let agent = Agent::new(
        config,
        state,
        server.endpoint().to_string(),
        publisher.endpoint().to_string(),
        events,
    );
    agent.adopt_sockets(sockets);
    agent.set_endpoint_fds(control.as_raw_fd(), pubsub.as_raw_fd());
    // Handed-over processes are the agent's before it answers anything.
    let handed = inherited.map(|(handover, pipes)| {
        let taken = agent.take_over(&handover, pipes);
        info!(
            "upgraded in place from {}: took over {} process(es) in {} watcher(s)",
            handover.from_version,
            taken.processes,
            taken.watchers.len()
        );
        taken
    });
    agent.watch_connections(EndpointCounters {
        control: server.counter(),
        pubsub: publisher.counter(),
    });
    info!(
        node = %agent.node(),
        control = server.endpoint(),
        pubsub = publisher.endpoint(),
        "nodeagent {} listening",
        ringmaster_protocol::RINGMASTER_VERSION
    );
    let publishing =
        tokio::task::spawn_local(publish(publisher, queue, agent.output().take_log_queue()));
    let gate = Rc::new(RefCell::new(gate));
    let serving = tokio::task::spawn_local(serve(Rc::clone(&agent), server, Rc::clone(&gate)));
    if stats_interval > 0.0 {
        tokio::task::spawn_local(sample_stats(Rc::clone(&agent), stats_interval));
    }

    let starter = {
        let agent = Rc::clone(&agent);
        let notifier = notifier.clone();
        tokio::task::spawn_local(async move {
            match handed {
                Some(taken) => agent.start_new(&taken).await,
                None => {
                    let report = agent.start_all().await;
                    info!(
                        "started {} process(es) in {} watcher(s)",
                        report.started.len(),
                        report.watchers.len()
                    );
                }
            }
            if let Some(notifier) = notifier {
                // Endpoints bound, autostart watchers spawned: ready.
                notifier.send(&format!("READY=1\nSTATUS={}", agent.summary()));
                tokio::task::spawn_local(keep_systemd_informed(agent, notifier));
            }
        })
    };

    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the config");
                let agent = Rc::clone(&agent);
                tokio::task::spawn_local(async move {
                    if let Err(e) = agent.handle(ringmaster_protocol::Command::ReloadConfig {}).await {
                        error!("reload failed: {}", e.message);
                    }
                });
            }
            _ = sigusr2.recv() => {
                info!("SIGUSR2: upgrading in place with {}", agent.binary().display());
                let agent = Rc::clone(&agent);
                tokio::task::spawn_local(async move {
                    match agent.handle(Command::Upgrade { binary: None }).await {
                        Ok(_) => agent.upgrade_reply_sent(),
                        Err(e) => error!("{}", e.message),
                    }
                });
            }
            plan = agent.upgrade_ready() => {
                if let Some(notifier) = &notifier {
                    notifier.send("RELOADING=1\nSTATUS=upgrading in place");
                }
                // Connections wait in the listening sockets' queues from here on.
                serving.abort();
                let _ = serving.await;
                publishing.abort();
                let _ = publishing.await;
                for _ in 0..8 {
                    // Lets the endpoints' connection monitors close too.
                    tokio::task::yield_now().await;
                }
                // The next image goes on refusing what this one admitted.
                if let Some(memory) = gate.borrow().replay_memory() {
                    if let Err(e) = upgrade::remember_replays(&plan.handover, memory) {
                        warn!("{e}; the next image refuses every frame sealed before it starts");
                    }
                }
                if !ringmaster_protocol::transport::finish_for_exec(EXEC_FLUSH) {
                    warn!("libzmq did not send everything queued within {EXEC_FLUSH:?}");
                }
                let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
                let args = upgrade::next_args(&args, &plan.handover);
                let env = notifier.as_ref().map(|n| n.env().to_vec()).unwrap_or_default();
                info!("executing {}", plan.binary.display());
                let e = upgrade::exec(&plan.binary, &args, &env, &plan.descriptors);
                error!(
                    "cannot execute {}: {e}; taking over again with the running binary",
                    plan.binary.display()
                );
                let again = upgrade::exec(agent.binary(), &args, &env, &plan.descriptors);
                anyhow::bail!(
                    "cannot execute {} either: {again}; the processes keep running, and the \
                     next start of the agent stops them",
                    agent.binary().display()
                );
            }
            _ = sigusr1.recv() => {
                info!("SIGUSR1: reopening the output files");
                let agent = Rc::clone(&agent);
                tokio::task::spawn_local(async move {
                    if let Err(e) = agent.handle(ringmaster_protocol::Command::Reopen {}).await {
                        error!("{}", e.message);
                    }
                });
            }
            _ = agent.quit_requested() => {
                info!("quit: every watcher stopped");
                agent.close_sockets();
                drain_output(&agent).await;
                tokio::time::sleep(LINGER).await;
                return Ok(());
            }
        }
    }

    starter.abort();
    if let Some(notifier) = &notifier {
        notifier.send("STOPPING=1\nSTATUS=stopping every watcher");
    }
    let shutdown = {
        let agent = Rc::clone(&agent);
        tokio::task::spawn_local(async move { agent.shutdown().await })
    };
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = sigterm.recv() => { agent.kill_all(); let _ = shutdown.await; }
        _ = sigint.recv() => { agent.kill_all(); let _ = shutdown.await; }
    }
    info!("every watcher stopped; bye");
    agent.close_sockets();
    drain_output(&agent).await;
    tokio::time::sleep(LINGER).await;
    Ok(())
}

/// Refreshes `STATUS=` when it changes and pings the watchdog, from the agent's
/// own runtime: if the runtime stops turning, the pings stop and systemd acts.
async fn keep_systemd_informed(agent: Rc<Agent>, notifier: Rc<Notifier>) {
    let mut status = tokio::time::interval(STATUS_EVERY);
    let mut watchdog = notifier
        .watchdog_interval()
        .map(|every| tokio::time::interval(every.max(Duration::from_millis(10))));
    let mut last = agent.summary();
    loop {
        tokio::select! {
            _ = status.tick() => {
                let now = agent.summary();
                if now != last {
                    notifier.send(&format!("STATUS={now}"));
                    last = now;
                }
            }
            _ = async {
                match watchdog.as_mut() {
                    Some(tick) => { tick.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => notifier.send("WATCHDOG=1"),
        }
    }
}

/// Publishes queued messages. A PUB send never blocks (slow subscribers lose
/// messages), so this keeps up with anything the supervisor produces.
///
/// Output lines (`logs`) come through a queue of their own, bounded and filled by
/// the output thread: events and statistics go first, and after each batch of
/// lines the task yields, so that a process printing as fast as it can never
/// delays a reply.
async fn publish(
    mut publisher: Publisher,
    mut queue: mpsc::Receiver<Outgoing>,
    mut logs: Option<mpsc::Receiver<Outgoing>>,
) {
    loop {
        let (topic, body, is_log) = tokio::select! {
            biased;
            message = queue.recv() => match message {
                Some((topic, body)) => (topic, body, false),
                None => return,
            },
            message = async {
                match logs.as_mut() {
                    Some(logs) => logs.recv().await,
                    None => std::future::pending().await,
                }
            } => match message {
                Some((topic, body)) => (topic, body, true),
                None => {
                    logs = None;
                    continue;
                }
            },
        };
        if let Err(e) = publisher.publish(&topic, body).await {
            debug!("publish failed: {e}");
        }
        if is_log {
            tokio::task::yield_now().await;
        }
    }
}

/// How long the agent waits at exit for the output of its last processes.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Waits (a little) until the output of every process has been read to its end,
/// so that the last lines of the last processes reach their files.
async fn drain_output(agent: &Agent) {
    if !agent.output().drain(OUTPUT_DRAIN).await {
        warn!(
            "some process output was still open {}s after the last process stopped \
             (a child that outlived its parent?); not waiting for it",
            OUTPUT_DRAIN.as_secs()
        );
    }
}

/// Reads requests and answers each one from its own task, so that a slow command
/// never holds back the next request. Every frame goes through the [`Gate`] first:
/// it is opened and checked there, and refused frames are answered, counted and
/// logged (a few per second at most) without reaching the supervisor.
async fn serve(agent: Rc<Agent>, mut server: ControlServer, gate: Rc<RefCell<Gate>>) {
    let mut refusal_log = RefusalLog::default();
    loop {
        let incoming = match server.recv().await {
            Ok(incoming) => incoming,
            Err(e) => {
                warn!("control endpoint: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Circus JSON (first byte `{`) on an agent without keys: answered in
        // Circus's terms (a keyed agent's gate refuses it, since it cannot be sealed).
        if incoming.body.first() == Some(&b'{') && !gate.borrow().is_keyed() {
            circus::spawn(Rc::clone(&agent), incoming, server.replier());
            continue;
        }
        let admitted = gate.borrow_mut().admit(&incoming.body);
        let mut replier = server.replier();
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                if let Some(refusal) = &refused.refusal {
                    agent.record_refusals(gate.borrow().refusals());
                    refusal_log.note(refusal);
                } else {
                    agent.record_malformed();
                    debug!("refused a malformed request");
                }
                tokio::task::spawn_local(async move {
                    if let Err(e) = replier.send(incoming.envelope(), refused.reply).await {
                        debug!("reply not delivered: {e}");
                    }
                });
                continue;
            }
        };
        let agent = Rc::clone(&agent);
        let gate = Rc::clone(&gate);
        let mut reply = Box::pin(async move {
            let Admitted { request, caller } = admitted;
            if let Command::Exec { cmd, .. } = &request.command {
                info!(caller = %caller, cmd = cmd.as_str(), "exec requested");
            }
            let reply = answer(&agent, request).await;
            let upgrading = matches!(reply.result, Ok(Response::Upgrade(_)));
            let body = gate.borrow().answer(&caller, &reply);
            if let Err(e) = replier.send(incoming.envelope(), body).await {
                debug!("reply not delivered: {e}");
            }
            if upgrading {
                agent.upgrade_reply_sent();
            }
        });
        // Most commands (status, list, get, stats...) are answered without waiting
        // for anything: answer those here, before the next request is read, with
        // no task to spawn and wake. What has to wait goes on in a task of its own.
        if poll_once(reply.as_mut()).is_pending() {
            tokio::task::spawn_local(reply);
        }
    }
}

/// Polls `future` once, outside any task: it makes what progress it can without
/// waiting. A future that returns `Pending` is polled again by whoever takes it
/// next (its waker registrations are renewed at every poll).
fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut context)
}

/// Logs refused frames: the first few of every second, then how many were not
/// logged, so that a flood of bad frames cannot flood the log.
#[derive(Default)]
struct RefusalLog {
    second: Option<Instant>,
    logged: u32,
    silenced: u64,
}

impl RefusalLog {
    const PER_SECOND: u32 = 5;

    fn note(&mut self, refusal: &Refusal) {
        let now = Instant::now();
        if self
            .second
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            if self.silenced > 0 {
                warn!("{} more refused frame(s) were not logged", self.silenced);
            }
            *self = RefusalLog {
                second: Some(now),
                logged: 0,
                silenced: 0,
            };
        }
        if self.logged < Self::PER_SECOND {
            self.logged += 1;
            warn!("refused a control frame: {refusal}");
        } else {
            self.silenced += 1;
        }
    }
}

async fn answer(agent: &Rc<Agent>, request: ringmaster_protocol::Request) -> Reply {
    let id = request.id;
    let result = if request.no_wait && request.command.changes_state() {
        let agent = Rc::clone(agent);
        let command = request.command;
        tokio::task::spawn_local(async move {
            let name = command.name();
            match agent.handle(command).await {
                // Its reply went out when it was accepted.
                Ok(Response::Upgrade(_)) => agent.upgrade_reply_sent(),
                Ok(_) => {}
                Err(e) => warn!("{name} (no-wait) failed: {}", e.message),
            }
        });
        Ok(Response::Changes(ChangeReport::default()))
    } else {
        agent.handle(request.command).await
    };
    Reply {
        v: PROTOCOL_VERSION,
        id,
        result,
    }
}

/// Samples the supervised processes every `interval` seconds and publishes the
/// result. The sampling itself runs on a blocking thread: a slow `/proc` never
/// delays a respawn or a command.
async fn sample_stats(agent: Rc<Agent>, interval: f64) {
    let mut sampler = Some(Sampler::default());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mut current) = sampler.take() else {
            return;
        };
        let (watchers, targets) = agent.stats_targets();
        let work = tokio::task::spawn_blocking(move || {
            let sample = current.sample(&watchers, &targets, interval);
            (current, sample)
        });
        match work.await {
            Ok((back, sample)) => {
                sampler = Some(back);
                agent.publish_stats(sample);
            }
            Err(e) => {
                error!("statistics sampling failed, statistics stop: {e}");
                return;
            }
        }
    }
}
