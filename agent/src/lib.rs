//! `nodeagent`: Ringmaster's per-host supervisor of processes.
//!
//! The agent reads its config ([`config`]), binds its control (ROUTER) and publish
//! (PUB) endpoints, starts its watchers ([`supervisor`]) and then serves commands
//! until it is told to quit or receives SIGTERM/SIGINT. SIGHUP reloads the config;
//! SIGUSR1 reopens the output files ([`output`]), after an external log rotation.
//!
//! Everything runs on one `current_thread` tokio runtime: one thread is plenty for
//! a supervisor whose work is waiting, and its state needs no locks.
//!
//! The agent knows nothing of pools: it is one node, named in every topic it
//! publishes.

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

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmaster_protocol::message::{ChangeReport, Reply, Response};
use ringmaster_protocol::seal::{Admitted, Gate, Refusal};
use ringmaster_protocol::transport::{ControlServer, Publisher};
use ringmaster_protocol::{Codec, Command, PROTOCOL_VERSION};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::notify::Notifier;
use crate::stats::Sampler;
use crate::supervisor::{Agent, EndpointCounters, Outgoing};

/// Messages waiting to be published; beyond this, new ones are dropped and counted.
const PUBLISH_QUEUE: usize = 65_536;

/// How long the agent keeps its sockets open after the last reply before exiting,
/// so that the reply to `quit` reaches the client.
const LINGER: Duration = Duration::from_millis(100);

/// How often `STATUS=` is refreshed for systemd (only sent when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs the agent until it is told to stop. Must be called on a `current_thread`
/// runtime. With a `notifier` (systemd's `$NOTIFY_SOCKET`), the agent says when it
/// is ready, keeps its status current, pings the watchdog and says when it stops.
pub async fn run(config: Config, notifier: Option<Notifier>) -> anyhow::Result<()> {
    tokio::task::LocalSet::new()
        .run_until(run_local(config, notifier.map(Rc::new)))
        .await
}

async fn run_local(config: Config, notifier: Option<Rc<Notifier>>) -> anyhow::Result<()> {
    // Signals first, so that a SIGTERM during a long start is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    // Before any process is started: what they start stays below the agent, and
    // the orphans it inherits are reaped.
    reaper::become_subreaper();
    tokio::task::spawn_local(reaper::reap_forever());

    // The state directory before anything is bound or spawned: its lock keeps a
    // second agent off this state, and what a crashed agent left running is
    // stopped (it may hold the ports bound next).
    let state = state_dir::open(&config).context("cannot open the state directory")?;
    // The listening sockets next: a port that cannot be bound stops the agent at
    // once, naming the socket.
    let sockets = sockets::Sockets::bind_all(&config.sockets)
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
    endpoints::prepare(&config.agent).context("cannot prepare the runtime directory")?;
    let limits = endpoints::limits(&config.agent);
    let server = ControlServer::bind_with(&config.agent.control, limits)
        .await
        .context("cannot open the control endpoint (set [agent] control)")?;
    let mut publisher = Publisher::bind_with(&config.agent.pubsub, limits)
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
    tokio::task::spawn_local(publish(publisher, queue, agent.output().take_log_queue()));
    tokio::task::spawn_local(serve(Rc::clone(&agent), server, gate));
    if stats_interval > 0.0 {
        tokio::task::spawn_local(sample_stats(Rc::clone(&agent), stats_interval));
    }

    let starter = {
        let agent = Rc::clone(&agent);
        let notifier = notifier.clone();
        tokio::task::spawn_local(async move {
            let report = agent.start_all().await;
            info!(
                "started {} process(es) in {} watcher(s)",
                report.started.len(),
                report.watchers.len()
            );
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
async fn serve(agent: Rc<Agent>, mut server: ControlServer, gate: Gate) {
    let gate = Rc::new(RefCell::new(gate));
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
        tokio::task::spawn_local(async move {
            let Admitted { request, caller } = admitted;
            if let Command::Exec { cmd, .. } = &request.command {
                info!(caller = %caller, cmd = cmd.as_str(), "exec requested");
            }
            let reply = answer(&agent, request).await;
            let body = gate.borrow().answer(&caller, &reply);
            if let Err(e) = replier.send(incoming.envelope(), body).await {
                debug!("reply not delivered: {e}");
            }
        });
    }
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
            if let Err(e) = agent.handle(command).await {
                warn!("{name} (no-wait) failed: {}", e.message);
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
