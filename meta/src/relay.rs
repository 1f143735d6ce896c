//! The `nodemeta` relay: every agent of a pool republished on one endpoint, with
//! pool totals and stale-node detection.
//!
//! ```text
//!  nodeagent r-a ──PUB──▶ task "r-a" ─┐
//!  nodeagent r-b ──PUB──▶ task "r-b" ─┼─ mpsc ─▶ main task ──PUB (--pubsub)──▶ nodetop, …
//!  nodeagent r-c ──PUB──▶ task "r-c" ─┘            │  every message, unchanged, at once
//!                                                   └─ every --interval: `stat.pool`
//! ```
//!
//! - **One task per node** keeps a [`Subscriber`] on the node's publish endpoint
//!   (`stat.`, `event.` and `log.`), connecting with a short timeout and retrying
//!   with a backoff (100 ms, doubling, capped at 2 s) while the node is away. Each
//!   receive waits at most `stale_after` × the node's stats interval: when nothing
//!   came in that time, the task tells the main task the node is silent and
//!   connects afresh. That is what copes with half-open TCP connections and with
//!   agents that restart faster than a SUB's own reconnection would. The old
//!   subscriber is read until the fresh one is subscribed (make before break), and the copies of what both received are
//!   dropped, so a node that was only slow repeats nothing and loses nothing the
//!   old subscription still received. What a node publishes while neither
//!   subscription delivers (the old one broken, the new one not yet registered by
//!   the node's PUB, which acknowledges nothing) is lost.
//! - **The main task** owns the [`Publisher`] and republishes every message exactly
//!   as it came (topic and body), as soon as it comes: nothing is batched, so the
//!   relay adds no delay beyond a channel hop. It keeps a [`PoolTracker`]: when each
//!   node was last heard, its [`NodeState`], its stats interval, its latest host
//!   stats and its watcher totals. Only host (`stat.<node>`) and watcher
//!   (`stat.<node>.<watcher>`) bodies are decoded; per-process stats, events and
//!   log lines are passed on unread (a pool of 50 agents with 100 processes each at
//!   1 s is some 5000 messages a second).
//! - A node not heard from for `stale_after` × its stats interval becomes
//!   [`NodeState::Stale`] (with a warning in the log). When a stale or never-heard
//!   node speaks again it is up again and is **re-synced**: a `status` request to its
//!   control endpoint says which watchers it still has, and the cached totals of the
//!   others are dropped.
//! - Every `interval`, the main task publishes the pool's totals on
//!   [`POOL_TOPIC`] (`stat.pool`): a [`Stat`] whose `node` is the pool's name and whose
//!   kind is [`StatKind::Pool`], totals taken over the nodes that are up.
//!
//! Everything runs on the caller's `current_thread` tokio runtime.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringmaster_protocol::stats::{
    HostStats, NodeState, PoolNode, PoolStats, Stat, StatKind, WatcherStats, POOL_TOPIC,
};
use ringmaster_protocol::transport::{Client, Publisher, Subscriber, TransportError};
use ringmaster_protocol::{Codec, Command, Response};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::pools::{NodeSpec, Pool};
use ringmaster_protocol::seal::Keyring;

/// Topic prefixes the relay subscribes to on every agent.
pub const SUBSCRIBED_PREFIXES: [&str; 3] = ["stat.", "event.", "log."];

/// How long one attempt to connect to a node's publish endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// First wait after a failed connection attempt; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(100);

/// Longest wait between two connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Messages from the node tasks waiting for the main task. When it is full, node
/// tasks wait, and their agents' PUB sockets drop (and count) what overflows.
const QUEUE: usize = 8192;

/// Bounds on a stats interval learned from an agent, in seconds.
const INTERVAL_BOUNDS: (f64, f64) = (0.001, 86_400.0);

/// How `nodemeta` runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The pool whose agents are relayed.
    pub pool: Pool,
    /// The endpoint to publish on (`--pubsub`).
    pub endpoint: String,
    /// Time between two `stat.pool` messages, and the stats interval assumed for a
    /// node until its first host message says otherwise (`--interval`).
    pub interval: Duration,
    /// A node silent for this many of its stats intervals is stale
    /// (`--stale-after`).
    pub stale_after: u32,
    /// The keys the pool's agents seal with; nodemeta seals what it publishes
    /// with the last one (`None`: everything in clear).
    pub keys: Option<Keyring>,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The publish endpoint could not be bound.
    #[error("cannot open the publish endpoint: {0}")]
    Bind(#[from] TransportError),
}

/// Checks an endpoint `nodemeta` is asked to bind: `ipc://PATH`, or `tcp://HOST:PORT`
/// on a loopback address (127.0.0.0/8, `::1`, `localhost`) unless `routable`
/// (the pool has keys, or --insecure). The
/// error says what is wrong and how to proceed.
pub fn check_bind_endpoint(endpoint: &str, routable: bool) -> Result<(), String> {
    ringmaster_protocol::endpoint::check_bind(
        endpoint,
        routable,
        "give the pool a key (`key` in the pools file, or --key FILE; make one with: \
         nodectl keygen FILE), or, on a private network only, pass --insecure",
    )
    .map(|_| ())
}

/// What a topic is, read from the topic alone (bodies are not looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind<'a> {
    /// `stat.<node>`: host stats, the node's heartbeat.
    Host,
    /// `stat.<node>.<watcher>`: a watcher's totals.
    Watcher,
    /// `stat.<node>.<watcher>.<pid>`: one process.
    Process,
    /// `stat.pool`: pool totals (not something an agent publishes).
    Pool,
    /// `event.<node>.<watcher>.<action>`.
    Event {
        /// The watcher it is about.
        watcher: &'a str,
        /// What happened (`spawn`, `rm`, ...).
        action: &'a str,
    },
    /// `log.<node>.<watcher>.<stream>`.
    Log,
    /// Anything else.
    Other,
}

/// Classifies `topic` by its kind and its number of dots.
pub fn classify_topic(topic: &str) -> TopicKind<'_> {
    if let Some(rest) = topic.strip_prefix("stat.") {
        if topic == POOL_TOPIC {
            return TopicKind::Pool;
        }
        return match rest.bytes().filter(|b| *b == b'.').count() {
            0 => TopicKind::Host,
            1 => TopicKind::Watcher,
            _ => TopicKind::Process,
        };
    }
    if let Some(rest) = topic.strip_prefix("event.") {
        let mut parts = rest.splitn(3, '.');
        if let (Some(_node), Some(watcher), Some(action)) =
            (parts.next(), parts.next(), parts.next())
        {
            return TopicKind::Event { watcher, action };
        }
        return TopicKind::Other;
    }
    if topic.starts_with("log.") {
        return TopicKind::Log;
    }
    TopicKind::Other
}

/// The parts of a node's host stats that the pool totals need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostTotals {
    /// Logical CPUs.
    pub cpus: u32,
    /// Host CPU use, in % of all its cores.
    pub cpu: f32,
    /// Memory in use, in bytes.
    pub memory_used: u64,
    /// Memory in all, in bytes.
    pub memory_total: u64,
    /// Processes the agent supervises.
    pub processes: u32,
}

impl From<&HostStats> for HostTotals {
    fn from(host: &HostStats) -> Self {
        HostTotals {
            cpus: host.cpus,
            cpu: host.cpu,
            memory_used: host.memory_used,
            memory_total: host.memory_total,
            processes: host.processes,
        }
    }
}

/// A watcher's latest totals on one node, and when they came.
#[derive(Debug, Clone)]
struct CachedWatcher {
    stats: WatcherStats,
    updated: Instant,
}

/// What the relay knows of one node.
#[derive(Debug, Clone)]
struct NodeView {
    name: String,
    state: NodeState,
    last_heard: Option<Instant>,
    interval: Duration,
    host: Option<HostTotals>,
    watchers: BTreeMap<String, CachedWatcher>,
    name_mismatch_reported: bool,
}

/// A node that was down or stale and has just been heard from.
#[derive(Debug, Clone, PartialEq)]
pub struct Comeback {
    /// Node name.
    pub name: String,
    /// Its state before: [`NodeState::Down`] or [`NodeState::Stale`].
    pub was: NodeState,
    /// How long it had been silent (None: never heard before).
    pub silent_for: Option<Duration>,
}

/// A node that has just become stale.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleNode {
    /// Node name.
    pub name: String,
    /// How long it has been silent.
    pub silent_for: Duration,
}

/// What one message changed for its node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heard {
    /// Set when the node was down or stale and is up again: re-sync it.
    pub comeback: Option<Comeback>,
    /// True when the node's silence limit changed (a new stats interval).
    pub limit_changed: bool,
}

/// The pool as the relay sees it: node states, stats intervals, latest host stats
/// and watcher totals, and the totals published on `stat.pool`. Pure bookkeeping:
/// the caller passes the time in.
#[derive(Debug, Clone)]
pub struct PoolTracker {
    pool: String,
    nodes: Vec<NodeView>,
    stale_after: u32,
    codec: Codec,
}

impl PoolTracker {
    /// A tracker of `nodes` (all [`NodeState::Down`]), assuming a stats interval of
    /// `default_interval` until a node's host stats tell its own.
    pub fn new(
        pool: &str,
        nodes: &[NodeSpec],
        default_interval: Duration,
        stale_after: u32,
    ) -> Self {
        PoolTracker {
            pool: pool.to_string(),
            nodes: nodes
                .iter()
                .map(|node| NodeView {
                    name: node.name.clone(),
                    state: NodeState::Down,
                    last_heard: None,
                    interval: default_interval,
                    host: None,
                    watchers: BTreeMap::new(),
                    name_mismatch_reported: false,
                })
                .collect(),
            stale_after: stale_after.max(1),
            codec: Codec::default(),
        }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The state of node `index` (Unknown for an index out of range).
    pub fn state(&self, index: usize) -> NodeState {
        self.nodes
            .get(index)
            .map_or(NodeState::Unknown, |node| node.state)
    }

    /// How long node `index` may stay silent before it is stale: `stale_after` ×
    /// its stats interval.
    pub fn silence_limit(&self, index: usize) -> Duration {
        self.nodes.get(index).map_or(Duration::ZERO, |node| {
            node.interval.saturating_mul(self.stale_after)
        })
    }

    /// Records a message from node `index` received at `now`. Only host and watcher
    /// stats bodies are decoded; `event.<node>.<watcher>.rm` drops the watcher's
    /// totals (read from the topic alone).
    pub fn heard(&mut self, index: usize, topic: &str, body: &[u8], now: Instant) -> Heard {
        let codec = &self.codec;
        let Some(node) = self.nodes.get_mut(index) else {
            return Heard::default();
        };
        let mut heard = Heard::default();
        if node.state != NodeState::Up {
            heard.comeback = Some(Comeback {
                name: node.name.clone(),
                was: node.state,
                silent_for: node.last_heard.map(|at| now.saturating_duration_since(at)),
            });
            node.state = NodeState::Up;
        }
        node.last_heard = Some(now);
        match classify_topic(topic) {
            TopicKind::Host => match codec.decode::<Stat>(body) {
                Ok(Stat {
                    node: published_as,
                    kind: StatKind::Host(host),
                    ..
                }) => {
                    if published_as != node.name && !node.name_mismatch_reported {
                        node.name_mismatch_reported = true;
                        warn!(
                            "node '{}' of the pools file publishes as '{published_as}': \
                             fix the name in the pools file or the agent's config",
                            node.name
                        );
                    }
                    node.host = Some(HostTotals::from(&host));
                    if host.interval.is_finite() && host.interval > 0.0 {
                        let secs = host.interval.clamp(INTERVAL_BOUNDS.0, INTERVAL_BOUNDS.1);
                        let interval = Duration::from_secs_f64(secs);
                        if interval != node.interval {
                            node.interval = interval;
                            heard.limit_changed = true;
                        }
                    }
                }
                Ok(_) => debug!("{topic}: not host stats; ignored"),
                Err(e) => debug!("{topic}: {e}"),
            },
            TopicKind::Watcher => match codec.decode::<Stat>(body) {
                Ok(Stat {
                    kind: StatKind::Watcher(stats),
                    ..
                }) => {
                    node.watchers.insert(
                        stats.name.clone(),
                        CachedWatcher {
                            stats,
                            updated: now,
                        },
                    );
                }
                Ok(_) => debug!("{topic}: not watcher totals; ignored"),
                Err(e) => debug!("{topic}: {e}"),
            },
            TopicKind::Event {
                watcher,
                action: "rm",
            } => {
                node.watchers.remove(watcher);
            }
            _ => {}
        }
        heard
    }

    /// Node `index`'s task heard nothing for its silence limit: an up node becomes
    /// stale. Returns the node when it changed state.
    pub fn silent(&mut self, index: usize, now: Instant) -> Option<StaleNode> {
        let node = self.nodes.get_mut(index)?;
        if node.state != NodeState::Up {
            return None;
        }
        node.state = NodeState::Stale;
        Some(StaleNode {
            name: node.name.clone(),
            silent_for: node
                .last_heard
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
        })
    }

    /// Marks stale every up node silent for its silence limit, and forgets watcher
    /// totals that have not been refreshed for as long (a watcher removed while its
    /// `rm` event was lost). Returns the nodes that became stale.
    pub fn expire(&mut self, now: Instant) -> Vec<StaleNode> {
        let stale_after = self.stale_after;
        let mut stale = Vec::new();
        for node in &mut self.nodes {
            if node.state != NodeState::Up {
                continue;
            }
            let limit = node.interval.saturating_mul(stale_after);
            let silent_for = node
                .last_heard
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            if silent_for >= limit {
                node.state = NodeState::Stale;
                stale.push(StaleNode {
                    name: node.name.clone(),
                    silent_for,
                });
                continue;
            }
            node.watchers
                .retain(|_, w| now.saturating_duration_since(w.updated) < limit);
        }
        stale
    }

    /// Node `index` answered `status` with `watchers`: forget the totals of every
    /// other watcher.
    pub fn synced(&mut self, index: usize, watchers: &[String]) {
        if let Some(node) = self.nodes.get_mut(index) {
            node.watchers.retain(|name, _| watchers.contains(name));
        }
    }

    /// The pool's totals at `now`, over the nodes that are up; `interval` is the time
    /// between two such reports.
    pub fn pool_stats(&self, now: Instant, interval: Duration) -> PoolStats {
        let nodes = self
            .nodes
            .iter()
            .map(|node| PoolNode {
                name: node.name.clone(),
                state: node.state,
                silent_for: node
                    .last_heard
                    .map(|at| now.saturating_duration_since(at).as_secs_f64()),
            })
            .collect();
        let mut totals = PoolStats {
            nodes,
            processes: 0,
            cpus: 0,
            cpu: 0.0,
            memory_used: 0,
            memory_total: 0,
            watchers: Vec::new(),
            interval: interval.as_secs_f64(),
        };
        let mut weighted_cpu = 0.0_f64;
        let mut watchers: BTreeMap<&str, WatcherStats> = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.state == NodeState::Up) {
            if let Some(host) = &node.host {
                totals.processes = totals.processes.saturating_add(host.processes);
                totals.cpus = totals.cpus.saturating_add(host.cpus);
                totals.memory_used = totals.memory_used.saturating_add(host.memory_used);
                totals.memory_total = totals.memory_total.saturating_add(host.memory_total);
                weighted_cpu += f64::from(host.cpu) * f64::from(host.cpus);
            }
            for (name, cached) in &node.watchers {
                let w = &cached.stats;
                let sum = watchers.entry(name).or_insert_with(|| WatcherStats {
                    name: name.clone(),
                    processes: 0,
                    cpu: 0.0,
                    rss: 0,
                    mem: 0.0,
                    max_age: 0.0,
                });
                sum.processes = sum.processes.saturating_add(w.processes);
                sum.cpu += w.cpu;
                sum.rss = sum.rss.saturating_add(w.rss);
                sum.mem += w.mem;
                sum.max_age = sum.max_age.max(w.max_age);
            }
        }
        if totals.cpus > 0 {
            totals.cpu = (weighted_cpu / f64::from(totals.cpus)) as f32;
        }
        totals.watchers = watchers.into_values().collect();
        totals
    }
}

/// A node's silence limit, shared by the main task (which learns the node's stats
/// interval) and the node's task (which waits that long for each message).
#[derive(Debug, Clone)]
struct SilenceLimit(Arc<AtomicU64>);

impl SilenceLimit {
    fn new(limit: Duration) -> Self {
        let shared = SilenceLimit(Arc::new(AtomicU64::new(0)));
        shared.set(limit);
        shared
    }

    fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, limit: Duration) {
        let micros = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        self.0.store(micros.max(1000), Ordering::Relaxed);
    }
}

/// A message from one node, as received.
#[derive(Debug)]
struct Relayed {
    node: usize,
    topic: String,
    body: Bytes,
}

/// What the node tasks and the re-sync tasks tell the main task.
#[derive(Debug)]
enum Report {
    /// A message to republish.
    Message(Relayed),
    /// Nothing came from the node for `after`; its task reconnects.
    Silent { node: usize, after: Duration },
    /// The node answered `status`: it has these watchers.
    Synced { node: usize, watchers: Vec<String> },
}

/// The relay, bound and ready to run.
pub struct Relay {
    config: RelayConfig,
    publisher: Publisher,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("pool", &self.config.pool.name)
            .field("endpoint", &self.publisher.endpoint())
            .finish()
    }
}

impl Relay {
    /// Binds the publish endpoint (removing a stale ipc socket file first). Must be
    /// called on a `current_thread` tokio runtime.
    pub async fn bind(config: RelayConfig) -> Result<Relay, RelayError> {
        let mut publisher = Publisher::bind(&config.endpoint).await?;
        publisher.seal_with(config.keys.as_ref().map(|k| k.publication_key().clone()));
        Ok(Relay { config, publisher })
    }

    /// The bound endpoint (with the real port when port 0 was asked for).
    pub fn endpoint(&self) -> &str {
        self.publisher.endpoint()
    }

    /// Relays until `shutdown` completes. Node tasks are stopped before it returns,
    /// and the publish endpoint is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Relay {
            config,
            mut publisher,
        } = self;
        let pool = &config.pool;
        let interval = config.interval.max(Duration::from_millis(1));
        let codec = Codec::default();
        let mut tracker = PoolTracker::new(&pool.name, &pool.nodes, interval, config.stale_after);
        let (reports, mut queue) = mpsc::channel(QUEUE);
        let mut tasks = JoinSet::new();
        let limits: Vec<SilenceLimit> = pool
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let limit = SilenceLimit::new(tracker.silence_limit(index));
                tasks.spawn(follow_node(
                    index,
                    node.clone(),
                    limit.clone(),
                    reports.clone(),
                ));
                limit
            })
            .collect();
        info!(
            pool = %pool.name,
            nodes = pool.nodes.len(),
            pubsub = publisher.endpoint(),
            "nodemeta {} relaying",
            ringmaster_protocol::RINGMASTER_VERSION
        );

        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                report = queue.recv() => {
                    // `reports` is held here, so the queue never closes.
                    let Some(report) = report else { break };
                    match report {
                        Report::Message(Relayed { node, topic, body }) => {
                            if let Err(e) = publisher.publish(&topic, body.to_vec()).await {
                                debug!("cannot republish {topic}: {e}");
                            }
                            let heard = tracker.heard(node, &topic, &body, Instant::now());
                            if heard.limit_changed {
                                if let Some(limit) = limits.get(node) {
                                    limit.set(tracker.silence_limit(node));
                                }
                            }
                            if let Some(comeback) = heard.comeback {
                                log_comeback(&comeback);
                                if let Some(spec) = pool.nodes.get(node) {
                                    tasks.spawn(resync(
                                        node,
                                        spec.clone(),
                                        pool.timeout,
                                        reports.clone(),
                                    ));
                                }
                            }
                        }
                        Report::Silent { node, after } => {
                            debug!(
                                node = tracker.nodes.get(node).map_or("?", |n| n.name.as_str()),
                                "nothing received for {:.1}s: reconnecting",
                                after.as_secs_f64()
                            );
                            if let Some(stale) = tracker.silent(node, Instant::now()) {
                                log_stale(&stale);
                            }
                        }
                        Report::Synced { node, watchers } => {
                            debug!(
                                node = tracker.nodes.get(node).map_or("?", |n| n.name.as_str()),
                                "re-synced: watchers {watchers:?}"
                            );
                            tracker.synced(node, &watchers);
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for stale in tracker.expire(now) {
                        log_stale(&stale);
                    }
                    seq += 1;
                    let stat = Stat {
                        node: pool.name.clone(),
                        seq,
                        time: unix_now(),
                        kind: StatKind::Pool(tracker.pool_stats(now, interval)),
                    };
                    match codec.encode(&stat) {
                        Ok(body) => {
                            if let Err(e) = publisher.publish(POOL_TOPIC, body).await {
                                debug!("cannot publish {POOL_TOPIC}: {e}");
                            }
                        }
                        Err(e) => warn!("cannot encode the pool totals: {e}"),
                    }
                    // Forget finished re-sync tasks.
                    while tasks.try_join_next().is_some() {}
                }
            }
        }
        tasks.shutdown().await;
        drop(publisher);
        remove_ipc_socket(&config.endpoint);
        info!("nodemeta stopped");
    }
}

/// Removes the socket file of an `ipc://` endpoint this process bound, so that a
/// stopped relay leaves nothing behind (zmq.rs does not always remove it).
fn remove_ipc_socket(endpoint: &str) {
    use std::os::unix::fs::FileTypeExt;
    let Some(path) = endpoint.strip_prefix("ipc://") else {
        return;
    };
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket {
        if let Err(e) = std::fs::remove_file(path) {
            debug!("cannot remove {path}: {e}");
        }
    }
}

fn log_comeback(comeback: &Comeback) {
    match (comeback.was, comeback.silent_for) {
        (NodeState::Stale, Some(silent)) => info!(
            node = %comeback.name,
            "node '{}' is up again after {:.1}s of silence; re-syncing",
            comeback.name,
            silent.as_secs_f64()
        ),
        _ => info!(node = %comeback.name, "node '{}' is up", comeback.name),
    }
}

fn log_stale(stale: &StaleNode) {
    warn!(
        node = %stale.name,
        "node '{}' silent for {:.1}s: marked stale",
        stale.name,
        stale.silent_for.as_secs_f64()
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Follows one node: connects, forwards every message, reconnects after a silence
/// or an error. Ends when the main task is gone.
async fn follow_node(
    index: usize,
    node: NodeSpec,
    limit: SilenceLimit,
    reports: mpsc::Sender<Report>,
) {
    let mut handover = Handover::default();
    let Some(mut subscriber) = connect(&node, &reports).await else {
        return;
    };
    loop {
        let wait = limit.get();
        match tokio::time::timeout(wait, subscriber.recv()).await {
            Ok(Ok((topic, body))) => {
                if handover.is_copy(&topic, &body) {
                    continue;
                }
                if reports.send(relayed(index, topic, body)).await.is_err() {
                    return;
                }
            }
            Ok(Err(e @ TransportError::Refused { .. })) => {
                warn!(node = %node.name, "{e}");
            }
            Ok(Err(e)) => {
                debug!(node = %node.name, "receive failed: {e}; reconnecting");
                drop(subscriber);
                tokio::time::sleep(BACKOFF_START).await;
                subscriber = match connect(&node, &reports).await {
                    Some(fresh) => fresh,
                    None => return,
                };
            }
            Err(_) => {
                let silent = Report::Silent {
                    node: index,
                    after: wait,
                };
                if reports.send(silent).await.is_err() {
                    return;
                }
                // A fresh connection is what gets past a half-open TCP connection
                // or an agent that restarted; the old one is read until the fresh
                // one is subscribed, so a node that was only slow loses nothing.
                let replaced = replace(index, &node, subscriber, wait, &reports, &mut handover);
                subscriber = match replaced.await {
                    Some(fresh) => fresh,
                    None => return,
                };
            }
        }
    }
}

/// Connects to `node`, retrying with a backoff until it answers. `None` when the
/// main task is gone.
async fn connect(node: &NodeSpec, reports: &mpsc::Sender<Report>) -> Option<Subscriber> {
    let mut backoff = BACKOFF_START;
    while !reports.is_closed() {
        match Subscriber::connect(&node.pubsub, &SUBSCRIBED_PREFIXES, CONNECT_TIMEOUT).await {
            Ok(subscriber) => {
                debug!(node = %node.name, "subscribed to {}", node.pubsub);
                return Some(subscriber.with_keys(node.keys.clone()));
            }
            Err(e) => {
                debug!(node = %node.name, "{e}; retrying in {}ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
            }
        }
    }
    None
}

/// Connects a fresh subscriber to `node` while `old` is still read and forwarded,
/// and drops `old` once the fresh one has proved its subscription (make before
/// break). What `old` delivered meanwhile is remembered in `handover`, so that its
/// copies on the fresh subscriber are dropped. `None` when the main task is gone.
///
/// A PUB socket registers a subscription when it reads it, some time after the
/// subscriber connected, and says nothing: the first message on the fresh
/// subscriber is the proof. While the old subscriber still delivers, the wait goes
/// on; when neither delivers anything for `wait` (the node is silent or gone), the
/// fresh subscriber is kept anyway.
async fn replace(
    index: usize,
    node: &NodeSpec,
    mut old: Subscriber,
    wait: Duration,
    reports: &mpsc::Sender<Report>,
    handover: &mut Handover,
) -> Option<Subscriber> {
    handover.begin();
    let mut old_alive = true;
    let mut fresh = {
        let fresh = connect(node, reports);
        tokio::pin!(fresh);
        loop {
            tokio::select! {
                fresh = &mut fresh => break fresh?,
                received = old.recv(), if old_alive => {
                    old_alive = pass_on_old(received, handover, index, reports).await?;
                }
            }
        }
    };
    let proof = tokio::time::sleep(wait);
    tokio::pin!(proof);
    let first = loop {
        tokio::select! {
            received = fresh.recv() => break Some(received),
            received = old.recv(), if old_alive => {
                let delivered = received.is_ok();
                old_alive = pass_on_old(received, handover, index, reports).await?;
                if delivered {
                    // The node is there; only the fresh subscription is not
                    // registered yet (a busy agent reads it late): wait on.
                    proof.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            () = &mut proof => break None,
        }
    };
    // What already reached the old subscriber goes on too, before it is dropped,
    // and only then the fresh subscriber's first message, unless it is a copy.
    while old_alive {
        match tokio::time::timeout(Duration::ZERO, old.recv()).await {
            Ok(received) => old_alive = pass_on_old(received, handover, index, reports).await?,
            Err(_) => break,
        }
    }
    drop(old);
    match first {
        Some(Ok((topic, body))) if !handover.is_copy(&topic, &body) => {
            reports.send(relayed(index, topic, body)).await.ok()?;
        }
        Some(Ok(_)) | None => {}
        Some(Err(e @ TransportError::Refused { .. })) => warn!(node = %node.name, "{e}"),
        Some(Err(e)) => debug!(node = %node.name, "receive failed: {e}"),
    }
    Some(fresh)
}

/// Forwards what the old subscriber received during a handover, and remembers it.
/// Returns whether the old subscriber still works; `None` when the main task is
/// gone.
async fn pass_on_old(
    received: Result<(String, Bytes), TransportError>,
    handover: &mut Handover,
    index: usize,
    reports: &mpsc::Sender<Report>,
) -> Option<bool> {
    match received {
        Ok((topic, body)) => {
            handover.remember(&topic, &body);
            reports.send(relayed(index, topic, body)).await.ok()?;
            Some(true)
        }
        Err(TransportError::Refused { .. }) => Some(true),
        Err(_) => Some(false),
    }
}

fn relayed(node: usize, topic: String, body: Bytes) -> Report {
    Report::Message(Relayed { node, topic, body })
}

/// How many forwarded messages a node's task remembers while it replaces its
/// subscription.
const HANDOVER_MEMORY: usize = 4096;

/// The messages an old subscription delivered while a fresh one was connecting.
///
/// The fresh subscription first receives copies of those published after it
/// subscribed, in the order they were published, and then only new ones: copies
/// are dropped, and the memory is cleared at the first message that is new.
#[derive(Debug, Default)]
struct Handover {
    delivered: VecDeque<u64>,
}

impl Handover {
    fn begin(&mut self) {
        self.delivered.clear();
    }

    fn remember(&mut self, topic: &str, body: &[u8]) {
        if self.delivered.len() == HANDOVER_MEMORY {
            self.delivered.pop_front();
        }
        self.delivered.push_back(digest(topic, body));
    }

    /// True when this message was already delivered by the old subscription.
    fn is_copy(&mut self, topic: &str, body: &[u8]) -> bool {
        if self.delivered.is_empty() {
            return false;
        }
        let digest = digest(topic, body);
        match self.delivered.iter().position(|d| *d == digest) {
            Some(at) => {
                // Earlier ones were published before the fresh subscription.
                self.delivered.drain(..=at);
                true
            }
            None => {
                self.delivered.clear();
                false
            }
        }
    }
}

/// A 64-bit digest of a message. Every agent message carries its own sequence
/// number and time, so equal digests mean the same message.
fn digest(topic: &str, body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut hasher);
    body.hash(&mut hasher);
    hasher.finish()
}

/// Asks a node that came back which watchers it has, and tells the main task.
async fn resync(index: usize, node: NodeSpec, timeout: Duration, reports: mpsc::Sender<Report>) {
    let mut client = Client::new(node.control.clone(), timeout).with_keys(node.keys.clone());
    match client.call(Command::Status { name: None }).await {
        Ok(Response::Status(list)) => {
            let watchers = list.into_iter().map(|w| w.name).collect();
            let _ = reports
                .send(Report::Synced {
                    node: index,
                    watchers,
                })
                .await;
        }
        Ok(other) => warn!(
            node = %node.name,
            "unexpected answer to status while re-syncing: {other:?}"
        ),
        Err(e) => warn!(node = %node.name, "cannot re-sync node '{}': {e}", node.name),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(name: &str, dir: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            control: format!("ipc://{dir}/{name}.ctl"),
            pubsub: format!("ipc://{dir}/{name}.pub"),
            labels: BTreeMap::new(),
            keys: None,
        }
    }

    fn host_body(node: &str, processes: u32, cpus: u32, cpu: f32, interval: f64) -> Vec<u8> {
        Codec::default()
            .encode(&Stat {
                node: node.into(),
                seq: 1,
                time: 1.0,
                kind: StatKind::Host(HostStats {
                    cpu,
                    cpus,
                    load: [0.0; 3],
                    memory_used: 100,
                    memory_total: 1000,
                    host_processes: 50,
                    processes,
                    watchers: 1,
                    interval,
                    refused: 0,
                }),
            })
            .unwrap()
    }

    fn watcher_body(node: &str, name: &str, processes: u32, max_age: f64) -> Vec<u8> {
        Codec::default()
            .encode(&Stat {
                node: node.into(),
                seq: 2,
                time: 1.0,
                kind: StatKind::Watcher(WatcherStats {
                    name: name.into(),
                    processes,
                    cpu: 1.5,
                    rss: 10,
                    mem: 0.5,
                    max_age,
                }),
            })
            .unwrap()
    }

    #[test]
    fn topics_are_classified_by_kind_and_dots() {
        assert_eq!(classify_topic("stat.a"), TopicKind::Host);
        assert_eq!(classify_topic("stat.a.w"), TopicKind::Watcher);
        assert_eq!(classify_topic("stat.a.w.123"), TopicKind::Process);
        assert_eq!(classify_topic("stat.pool"), TopicKind::Pool);
        assert_eq!(
            classify_topic("event.a.w.spawn"),
            TopicKind::Event {
                watcher: "w",
                action: "spawn"
            }
        );
        assert_eq!(classify_topic("event.a"), TopicKind::Other);
        assert_eq!(classify_topic("log.a.w.stdout"), TopicKind::Log);
        assert_eq!(classify_topic("status"), TopicKind::Other);
    }

    #[test]
    fn bind_endpoints_must_be_loopback_or_ipc_unless_insecure() {
        for ok in [
            "ipc:///tmp/x.sock",
            "tcp://127.0.0.1:5570",
            "tcp://127.3.2.1:5570",
            "tcp://[::1]:5570",
            "tcp://localhost:5570",
        ] {
            assert!(check_bind_endpoint(ok, false).is_ok(), "{ok}");
        }
        for routable in ["tcp://0.0.0.0:5570", "tcp://10.0.0.5:5570", "tcp://*:5570"] {
            let err = check_bind_endpoint(routable, false).unwrap_err();
            assert!(
                err.contains("--insecure") && err.contains("loopback"),
                "{err}"
            );
            assert!(check_bind_endpoint(routable, true).is_ok(), "{routable}");
        }
        for bad in [
            "ipc://",
            "udp://x:1",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:x",
            "tcp://:1",
        ] {
            assert!(check_bind_endpoint(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn totals_cover_up_nodes_and_weight_cpu_by_cores() {
        let nodes = [spec("a", "/t"), spec("b", "/t"), spec("c", "/t")];
        let mut tracker = PoolTracker::new("p", &nodes, Duration::from_secs(1), 3);
        let t0 = Instant::now();
        let heard = tracker.heard(0, "stat.a", &host_body("a", 2, 2, 10.0, 0.5), t0);
        assert_eq!(
            heard.comeback.as_ref().map(|c| c.was),
            Some(NodeState::Down)
        );
        assert!(heard.limit_changed);
        assert_eq!(tracker.silence_limit(0), Duration::from_millis(1500));
        tracker.heard(0, "stat.a.w", &watcher_body("a", "w", 2, 5.0), t0);
        tracker.heard(1, "stat.b", &host_body("b", 4, 6, 50.0, 1.0), t0);
        tracker.heard(1, "stat.b.w", &watcher_body("b", "w", 3, 9.0), t0);
        tracker.heard(1, "stat.b.x", &watcher_body("b", "x", 1, 1.0), t0);
        // Process stats and events are not decoded: garbage bodies are fine.
        let again = tracker.heard(1, "stat.b.w.42", b"\xc1garbage", t0);
        assert_eq!(again, Heard::default());
        tracker.heard(1, "event.b.w.spawn", b"\xc1", t0);

        let stats = tracker.pool_stats(t0, Duration::from_secs(1));
        assert_eq!(
            stats
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.state))
                .collect::<Vec<_>>(),
            [
                ("a", NodeState::Up),
                ("b", NodeState::Up),
                ("c", NodeState::Down)
            ]
        );
        assert_eq!(stats.nodes[2].silent_for, None);
        assert_eq!(stats.processes, 6);
        assert_eq!(stats.cpus, 8);
        assert!((stats.cpu - 40.0).abs() < 1e-4, "{}", stats.cpu); // (10*2 + 50*6) / 8
        assert_eq!(stats.memory_used, 200);
        assert_eq!(stats.memory_total, 2000);
        assert_eq!(stats.watchers.len(), 2);
        let w = &stats.watchers[0];
        assert_eq!((w.name.as_str(), w.processes, w.rss), ("w", 5, 20));
        assert!((w.cpu - 3.0).abs() < 1e-6 && (w.max_age - 9.0).abs() < 1e-9);
        assert_eq!(stats.watchers[1].name, "x");
    }

    #[test]
    fn silent_nodes_go_stale_and_come_back_to_be_resynced() {
        let nodes = [spec("a", "/t"), spec("b", "/t")];
        let mut tracker = PoolTracker::new("p", &nodes, Duration::from_secs(1), 3);
        let t0 = Instant::now();
        tracker.heard(0, "stat.a", &host_body("a", 2, 1, 0.0, 0.2), t0);
        tracker.heard(0, "stat.a.w", &watcher_body("a", "w", 2, 1.0), t0);
        tracker.heard(0, "stat.a.old", &watcher_body("a", "old", 1, 1.0), t0);
        tracker.heard(1, "stat.b", &host_body("b", 1, 1, 0.0, 1.0), t0);
        // Within the limit (3 × 0.2 s) nothing changes.
        assert!(tracker.expire(t0 + Duration::from_millis(500)).is_empty());
        let stale = tracker.expire(t0 + Duration::from_millis(700));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].name, "a");
        assert_eq!(tracker.state(0), NodeState::Stale);
        assert_eq!(tracker.state(1), NodeState::Up);
        assert!(tracker.expire(t0 + Duration::from_millis(800)).is_empty());
        let stats = tracker.pool_stats(t0 + Duration::from_millis(800), Duration::from_secs(1));
        assert_eq!(stats.processes, 1, "only b counts");
        assert!(stats.watchers.is_empty());
        assert!((stats.nodes[0].silent_for.unwrap() - 0.8).abs() < 1e-6);

        let t1 = t0 + Duration::from_secs(2);
        let back = tracker
            .heard(0, "event.a.w.spawn", b"", t1)
            .comeback
            .unwrap();
        assert_eq!(back.was, NodeState::Stale);
        assert_eq!(back.silent_for, Some(Duration::from_secs(2)));
        tracker.synced(0, &["w".to_string()]);
        tracker.heard(0, "stat.a", &host_body("a", 2, 1, 0.0, 0.2), t1);
        tracker.heard(1, "stat.b", &host_body("b", 1, 1, 0.0, 1.0), t1);
        let stats = tracker.pool_stats(t1, Duration::from_secs(1));
        assert_eq!(
            stats.watchers.iter().map(|w| &w.name).collect::<Vec<_>>(),
            ["w"],
            "'old' is gone after the re-sync"
        );
        // The node task's own timeout marks it stale too, once.
        assert!(tracker.silent(0, t1 + Duration::from_secs(1)).is_some());
        assert!(tracker.silent(0, t1 + Duration::from_secs(2)).is_none());
        // An `rm` event drops the watcher's totals at once.
        tracker.heard(1, "stat.b.z", &watcher_body("b", "z", 1, 1.0), t1);
        tracker.heard(1, "event.b.z.rm", b"", t1);
        assert!(tracker
            .pool_stats(t1, Duration::from_secs(1))
            .watchers
            .is_empty());
    }

    /// A fake agent (a bare PUB) relayed through a real relay on this runtime.
    #[tokio::test]
    async fn relays_a_fake_agent_and_reports_it_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let node = spec("fake", &path);
        let mut agent = Publisher::bind(&node.pubsub).await.unwrap();
        let pool = Pool {
            name: "p".into(),
            timeout: Duration::from_millis(200),
            placement: crate::Strategy::LeastLoaded,
            nodes: vec![node],
            key_files: Vec::new(),
        };
        let endpoint = format!("ipc://{path}/meta.pub");
        let relay = Relay::bind(RelayConfig {
            pool,
            endpoint: endpoint.clone(),
            interval: Duration::from_millis(50),
            stale_after: 3,
            keys: None,
        })
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(relay.run(async move {
            let _ = stopped.await;
        }));
        let mut sub = Subscriber::connect(&endpoint, &["stat."], Duration::from_secs(5))
            .await
            .unwrap();
        let codec = Codec::default();
        let host = host_body("fake", 3, 2, 25.0, 0.05);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Publish a heartbeat until it comes back relayed, unchanged, and the pool
        // totals count the node.
        let mut relayed = false;
        let mut counted = false;
        while !(relayed && counted) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "relayed {relayed}, counted {counted}"
            );
            agent.publish("stat.fake", host.clone()).await.unwrap();
            while let Ok(Ok((topic, body))) =
                tokio::time::timeout(Duration::from_millis(20), sub.recv()).await
            {
                if topic == "stat.fake" {
                    assert_eq!(&body[..], &host[..]);
                    relayed = true;
                } else if topic == POOL_TOPIC {
                    let stat: Stat = codec.decode(&body).unwrap();
                    assert_eq!(stat.node, "p");
                    let StatKind::Pool(pool) = stat.kind else {
                        panic!("{stat:?}")
                    };
                    counted |= pool.nodes[0].state == NodeState::Up && pool.processes == 3;
                }
            }
        }
        // Silence: the node goes stale within a few of its intervals.
        loop {
            let (topic, body) = tokio::time::timeout_at(deadline, sub.recv())
                .await
                .expect("the fake node never went stale")
                .unwrap();
            if topic != POOL_TOPIC {
                continue;
            }
            let stat: Stat = codec.decode(&body).unwrap();
            let StatKind::Pool(pool) = stat.kind else {
                panic!()
            };
            if pool.nodes[0].state == NodeState::Stale {
                assert_eq!(pool.processes, 0);
                break;
            }
        }
        stop.send(()).unwrap();
        running.await.unwrap();
        assert!(
            !dir.path().join("meta.pub").exists(),
            "the relay's socket file is removed when it stops"
        );
    }

    #[test]
    fn a_handover_drops_the_copies_and_only_them() {
        let mut handover = Handover::default();
        assert!(!handover.is_copy("event.a", b"1"), "nothing remembered yet");
        handover.begin();
        for body in [b"1", b"2", b"3", b"4"] {
            handover.remember("event.a", body);
        }
        // The fresh subscription started between 2 and 3: it sees 3, 4, then 5.
        assert!(handover.is_copy("event.a", b"3"));
        assert!(handover.is_copy("event.a", b"4"));
        assert!(!handover.is_copy("event.a", b"5"));
        // Once a new message came, nothing is dropped any more.
        assert!(!handover.is_copy("event.a", b"1"));
        assert!(!handover.is_copy("event.a", b"4"));
    }

    #[test]
    fn a_handover_tells_topics_apart_and_forgets_the_oldest() {
        let mut handover = Handover::default();
        handover.begin();
        handover.remember("event.a", b"x");
        assert!(!handover.is_copy("event.b", b"x"), "same body, other topic");
        handover.begin();
        for i in 0..=HANDOVER_MEMORY {
            handover.remember("log.a", i.to_string().as_bytes());
        }
        assert_eq!(handover.delivered.len(), HANDOVER_MEMORY);
        assert!(!handover.is_copy("log.a", b"0"), "the oldest was forgotten");
    }
}
