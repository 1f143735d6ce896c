//! `nodetop`: a live, top-like view of one or more Ringmaster nodes.
//!
//! nodetop subscribes to the `stat.*` and `event.*` topics of every publish
//! endpoint it is given (asking each agent given by `--endpoint` where it
//! publishes), folds the messages into a [`model::Model`], and redraws the screen
//! every `--refresh` seconds, at once when a process or watcher appears or goes,
//! and on every key and resize.
//!
//! With `--pool NAME` (and `--pools`, `--node`, `--where`, chosen as `nodectl
//! --pool` chooses them) it subscribes to the `pubsub` endpoint of every selected
//! node of the pools file directly, and expects each of those nodes, so that one
//! that is down is listed (and retried) while the others show. Through a
//! `nodemeta` relay (`--pubsub` at its endpoint) the relay's `stat.pool` message
//! tells which nodes the pool has.
//!
//! Structure: one subscriber task per endpoint feeds one channel; one
//! `tokio::select!` loop over that channel, the terminal's events, a tick and the
//! termination signals mutates the model and the [`view::View`], then draws. All of
//! it runs on a `current_thread` runtime. A drop guard
//! and a panic hook give the terminal back in its normal state; nothing is logged
//! on the screen (problems with a source show in the view).

mod input;
mod model;
mod view;

use std::io::{IsTerminal, Stdout};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use ringmaster_protocol::seal::Keyring;
use ringmaster_protocol::transport::{Client, ClientError, Published, Subscriber, TransportError};
use ringmaster_protocol::{Command, Response};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::model::{Change, Model};
use crate::view::{Flow, View};

/// Live view of Ringmaster nodes: CPU, memory, watchers and processes.
///
/// Follows the statistics and events that agents publish (their `stats_interval`
/// must not be 0). Give one or more agents with --endpoint (nodetop asks each
/// where it publishes), and/or publish endpoints with --pubsub (an agent's, or a
/// relay of a whole pool: `nodetop --pubsub tcp://HOST:5570` through a nodemeta
/// relay), and/or the nodes of a pool with --pool (nodetop subscribes to each
/// node's publish endpoint from the pools file; --node and --where choose some of
/// them). With none, the pool $RINGMASTER_POOL, else the agent at
/// $RINGMASTER_ENDPOINT, else the local agent at its default ipc:// socket
/// (/run/ringmaster/control.sock as root), is shown.
///
/// With several nodes, the screen lists every node (up, or no data) and shows
/// each watcher once, with its totals across the nodes; Right/Left/Tab show one
/// node's watchers.
///
/// The pools file is --pools FILE, else $RINGMASTER_POOLS, else
/// ~/.config/ringmaster/pools.toml, else /etc/ringmaster/pools.toml.
#[derive(Debug, Parser)]
#[command(name = "nodetop", version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// An agent's control endpoint (repeatable).
    #[arg(long, short, value_name = "URL")]
    endpoint: Vec<String>,

    /// A publish endpoint to subscribe to directly (repeatable): an agent's, or a
    /// nodemeta relay's.
    #[arg(long, value_name = "URL")]
    pubsub: Vec<String>,

    /// Show every node of this pool of the pools file (see --node, --where). From
    /// the environment, it applies only when neither --endpoint nor --pubsub is
    /// given.
    #[arg(long, short = 'p', env = "RINGMASTER_POOL", value_name = "POOL")]
    pool: Option<String>,

    /// Only these nodes of the pool (comma-separated or repeated). Without --pool,
    /// the pool that has them.
    #[arg(long, value_name = "NODE", value_delimiter = ',')]
    node: Vec<String>,

    /// Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all
    /// must hold).
    #[arg(long = "where", value_name = "LABEL=VALUE")]
    filters: Vec<String>,

    /// The pools file.
    #[arg(long, value_name = "FILE")]
    pools: Option<PathBuf>,

    /// Key file for agents with keys: their read or admin key (repeatable, or
    /// ':'-separated in $RINGMASTER_KEY). With --pool, replaces the pool's `key`.
    #[arg(
        long = "key",
        value_name = "FILE",
        env = "RINGMASTER_KEY",
        value_delimiter = ':'
    )]
    keys: Vec<PathBuf>,

    /// Seconds between two refreshes of the screen.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = seconds)]
    refresh: Duration,

    /// Seconds to wait for each agent's answer at start.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    timeout: Duration,
}

const AFTER_HELP: &str = "\
Keys:
  c / m / n            sort by CPU / memory / name
  /                    filter watchers by name (type; Enter keeps, Esc clears)
  Up / Down, k / j     select a watcher (its processes show below)
  Right / Left, Tab    show one node, the next or the previous; a: all nodes
  q, Esc, Ctrl-C       quit

A node that sends nothing for 3 of its stats intervals shows as
\"no data from NODE for N s\".

Exit codes: 0 quit, 1 an agent could not be reached or no terminal, 2 bad usage
(including a bad pools file, pool, node or label filter).

Examples:
  nodetop                                    the agent at $RINGMASTER_ENDPOINT
  nodetop --pool prod                        every node of pool prod
  nodetop --pool prod --where zone=eu-1      its nodes in zone eu-1
  nodetop --pool prod --node web-1,web-2     two of its nodes
  nodetop --pubsub tcp://HOST:5570           a whole pool through a nodemeta relay";

/// Topics nodetop follows.
const PREFIXES: &[&str] = &["stat.", "event."];

/// How long one connection attempt to a publish endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Retry delays after a publish endpoint failed: doubled up to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !value.is_finite() || value < 0.05 {
        return Err(format!("'{text}' is too short: at least 0.05 seconds"));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("'{text}': {e}"))
}

fn main() -> ExitCode {
    let cli = parse();
    let pool_sources = match pool_sources(&cli) {
        Ok(sources) => sources,
        Err(message) => {
            eprintln!("nodetop: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nodetop: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, pool_sources));
    // Subscriber tasks may be waiting to reconnect: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodetop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line; a --pool taken from $RINGMASTER_POOL is dropped when
/// --endpoint or --pubsub says what to show. The hidden --completions SHELL and
/// --man flags print and exit.
fn parse() -> Cli {
    let matches = ringmaster_cli::generate::get_matches(Cli::command());
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let from_env = matches.value_source("pool") == Some(ValueSource::EnvVariable);
    if from_env && (!cli.endpoint.is_empty() || !cli.pubsub.is_empty()) {
        cli.pool = None;
    }
    cli
}

/// The nodes --pool, --node and --where choose (none when not given), as
/// `nodectl --pool` chooses them: the pools file, the pool (named, or the one that
/// has the first --node), then the nodes that are named and match every filter.
/// An error is bad usage.
fn pool_sources(cli: &Cli) -> Result<Vec<Source>, String> {
    if cli.pool.is_none() && cli.node.is_empty() && cli.filters.is_empty() {
        return Ok(Vec::new());
    }
    let (_, nodes) = ringmaster_meta::pools::resolve(
        cli.pools.as_deref(),
        cli.pool.as_deref(),
        &cli.node,
        &cli.filters,
        &cli.keys,
    )?;
    Ok(nodes
        .into_iter()
        .map(|node| Source {
            pubsub: node.pubsub,
            node: Some(node.name),
            keys: node.keys,
        })
        .collect())
}

/// A publish endpoint to follow.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    /// Where it publishes.
    pubsub: String,
    /// The node behind it, when an agent told us.
    node: Option<String>,
    /// The keys its bodies are sealed with (`None`: in clear).
    keys: Option<Keyring>,
}

/// What the subscriber tasks send to the main loop.
#[derive(Debug)]
enum Feed {
    /// A message from some node.
    Message(Published),
    /// A source has a problem (`Some`) or works again (`None`).
    Problem {
        source: String,
        problem: Option<String>,
    },
}

async fn run(cli: Cli, pool_sources: Vec<Source>) -> anyhow::Result<()> {
    let sources = resolve(&cli, pool_sources).await?;
    if !std::io::stdout().is_terminal() {
        bail!("standard output is not a terminal: nodetop draws a full screen (in scripts, use `nodectl stats`)");
    }

    let now = Instant::now();
    let mut model = Model::new();
    for node in sources.iter().filter_map(|s| s.node.as_deref()) {
        model.expect_node(node, now);
    }
    let mut view = View::new(sources.iter().map(|s| s.pubsub.clone()).collect());

    // Keep `feed` alive here, so that the channel never closes.
    let (feed, mut messages) = mpsc::channel::<Feed>(4096);
    for source in &sources {
        tokio::spawn(follow(source.clone(), feed.clone()));
    }

    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut screen = Screen::enter().context("cannot set up the terminal")?;
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(cli.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        let redraw = tokio::select! {
            _ = tick.tick() => {
                model.prune(Instant::now());
                true
            }
            Some(first) = messages.recv() => {
                let now = Instant::now();
                let mut change = take(&mut model, &mut view, first, now);
                // Fold everything already queued before drawing.
                while let Ok(next) = messages.try_recv() {
                    change = change.max(take(&mut model, &mut view, next, now));
                }
                change == Change::Structure
            }
            event = keys.next() => match event {
                Some(Ok(TermEvent::Key(key))) => {
                    match input::action(key, view.mode()) {
                        Some(action) => {
                            if view.apply(action, &model) == Flow::Quit {
                                break;
                            }
                            true
                        }
                        None => false,
                    }
                }
                Some(Ok(TermEvent::Resize(..))) => true,
                Some(Ok(_)) => false,
                Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                None => break,
            },
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
            _ = interrupt.recv() => break,
        };
        if redraw {
            screen
                .terminal
                .draw(|frame| view.render(frame, &model, Instant::now()))
                .context("cannot draw")?;
        }
    }
    drop(feed);
    Ok(())
}

/// Applies one feed item; returns how it changed what is shown.
fn take(model: &mut Model, view: &mut View, feed: Feed, now: Instant) -> Change {
    match feed {
        Feed::Message(message) => model.apply(&message, now),
        Feed::Problem { source, problem } => {
            view.set_problem(&source, problem);
            Change::Structure
        }
    }
}

/// The publish endpoints to follow: the pool's nodes', each `--endpoint` agent's
/// (asked concurrently), then each `--pubsub`, without duplicates.
async fn resolve(cli: &Cli, pool_sources: Vec<Source>) -> anyhow::Result<Vec<Source>> {
    let mut controls = cli.endpoint.clone();
    if controls.is_empty() && cli.pubsub.is_empty() && pool_sources.is_empty() {
        controls.push(
            std::env::var("RINGMASTER_ENDPOINT")
                .ok()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(ringmaster_protocol::endpoint::default_control),
        );
    }
    let keys = Keyring::load(&cli.keys)?;
    let asks: Vec<_> = controls
        .iter()
        .map(|control| tokio::spawn(ask_pubsub(control.clone(), keys.clone(), cli.timeout)))
        .collect();
    let mut sources: Vec<Source> = Vec::new();
    for source in pool_sources {
        add_source(&mut sources, source);
    }
    for ask in asks {
        add_source(&mut sources, ask.await.context("nodeinfo task failed")??);
    }
    for pubsub in &cli.pubsub {
        add_source(
            &mut sources,
            Source {
                pubsub: pubsub.clone(),
                node: None,
                keys: keys.clone(),
            },
        );
    }
    Ok(sources)
}

/// Adds `source` unless its endpoint, or its node, is followed already (a node of
/// the pool also given with --endpoint).
fn add_source(sources: &mut Vec<Source>, source: Source) {
    let known = sources
        .iter()
        .any(|s| s.pubsub == source.pubsub || (source.node.is_some() && s.node == source.node));
    if !known {
        sources.push(source);
    }
}

/// Asks the agent at `control` for its node name and publish endpoint.
async fn ask_pubsub(
    control: String,
    keys: Option<Keyring>,
    timeout: Duration,
) -> anyhow::Result<Source> {
    let mut client = Client::new(control.clone(), timeout).with_keys(keys.clone());
    match client.call(Command::NodeInfo {}).await {
        Ok(Response::NodeInfo(info)) => Ok(Source {
            pubsub: reachable_pubsub(&control, &info.pubsub),
            node: Some(info.node),
            keys,
        }),
        Ok(_) => bail!("agent at {control} answered nodeinfo with an unexpected reply"),
        Err(ClientError::Remote(error)) => {
            bail!("agent at {control} refused nodeinfo: {}", error.message)
        }
        Err(ClientError::Transport(error)) => Err(error.into()),
    }
}

/// The agent's publish endpoint as a client can reach it: an agent bound to every
/// interface (`tcp://*:5556`, `tcp://0.0.0.0:5556`) is reached at the host of its
/// control endpoint.
fn reachable_pubsub(control: &str, pubsub: &str) -> String {
    let Some(rest) = pubsub.strip_prefix("tcp://") else {
        return pubsub.to_string();
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return pubsub.to_string();
    };
    if !matches!(host, "*" | "0.0.0.0" | "[::]" | "::") {
        return pubsub.to_string();
    }
    let control_host = control
        .strip_prefix("tcp://")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(h, _)| h)
        .filter(|h| !matches!(*h, "*" | "0.0.0.0" | "[::]" | "::"))
        .unwrap_or("127.0.0.1");
    format!("tcp://{control_host}:{port}")
}

/// Follows one publish endpoint for as long as nodetop runs: connects (retrying
/// with a capped backoff), then keeps a `recv` pending; the SUB notices a lost
/// publisher (heartbeats) and reconnects by itself. Its problems are reported under the
/// node's name when it is known, else under the endpoint.
async fn follow(source: Source, feed: mpsc::Sender<Feed>) {
    let endpoint = source.pubsub;
    let keys = source.keys;
    let label = source.node.unwrap_or_else(|| endpoint.clone());
    let problem = |problem: Option<String>| Feed::Problem {
        source: label.clone(),
        problem,
    };
    let mut retry = RETRY_FIRST;
    loop {
        match Subscriber::connect(&endpoint, PREFIXES, CONNECT_TIMEOUT).await {
            Ok(subscriber) => {
                let mut subscriber = subscriber.with_keys(keys.clone());
                retry = RETRY_FIRST;
                if feed.send(problem(None)).await.is_err() {
                    return;
                }
                loop {
                    let item = match subscriber.recv_published().await {
                        Ok(message) => Feed::Message(message),
                        // One bad body (another protocol version?) is reported,
                        // and the stream goes on.
                        Err(TransportError::Codec(reason)) => {
                            problem(Some(format!("undecodable message: {reason}")))
                        }
                        Err(e @ TransportError::Refused { .. }) => problem(Some(e.to_string())),
                        Err(e) => {
                            if feed.send(problem(Some(e.to_string()))).await.is_err() {
                                return;
                            }
                            break;
                        }
                    };
                    if feed.send(item).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let text = match e {
                    TransportError::Connect { reason, .. } => {
                        format!("unreachable: {reason} (retrying)")
                    }
                    e => format!("{e} (retrying)"),
                };
                if feed.send(problem(Some(text))).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// The terminal in raw mode on the alternate screen; dropping it (or a panic)
/// restores it.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        crossterm::terminal::enable_raw_mode()?;
        let setup = || -> std::io::Result<Screen> {
            crossterm::execute!(
                std::io::stdout(),
                crossterm::terminal::EnterAlternateScreen,
                crossterm::cursor::Hide
            )?;
            let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
            terminal.clear()?;
            Ok(Screen { terminal })
        };
        setup().inspect_err(|_| restore_terminal())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoints_repeat_and_durations_are_checked() {
        let cli = Cli::try_parse_from([
            "nodetop",
            "--endpoint",
            "ipc:///a",
            "-e",
            "ipc:///b",
            "--pubsub",
            "tcp://meta:5600",
            "--refresh",
            "0.5",
        ])
        .unwrap();
        assert_eq!(cli.endpoint, ["ipc:///a", "ipc:///b"]);
        assert_eq!(cli.pubsub, ["tcp://meta:5600"]);
        assert_eq!(cli.refresh, Duration::from_millis(500));
        assert_eq!(cli.timeout, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["nodetop", "--refresh", "0"]).is_err());
        assert!(Cli::try_parse_from(["nodetop", "--refresh", "soon"]).is_err());
    }

    #[test]
    fn pool_options_parse_and_choose_nodes_like_nodectl() {
        let cli = Cli::try_parse_from([
            "nodetop",
            "--pools",
            "/tmp/p.toml",
            "--pool",
            "prod",
            "--node",
            "web-1,web-2",
            "--node",
            "web-3",
            "--where",
            "zone=eu-1",
            "--where",
            "disk!=hdd",
        ])
        .unwrap();
        assert_eq!(cli.pool.as_deref(), Some("prod"));
        assert_eq!(cli.pools, Some(PathBuf::from("/tmp/p.toml")));
        assert_eq!(cli.node, ["web-1", "web-2", "web-3"]);
        assert_eq!(cli.filters, ["zone=eu-1", "disk!=hdd"]);

        let path = std::env::temp_dir().join(format!("nodetop-pools-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            r#"
[pools.prod]
[[pools.prod.nodes]]
name = "web-1"
control = "tcp://10.0.0.1:5555"
pubsub = "tcp://10.0.0.1:5556"
labels = { zone = "eu-1" }

[[pools.prod.nodes]]
name = "web-2"
control = "tcp://10.0.0.2:5555"
pubsub = "tcp://10.0.0.2:5556"
labels = { zone = "eu-2" }

[pools.dev]
[[pools.dev.nodes]]
name = "laptop"
control = "ipc:///tmp/c.sock"
pubsub = "ipc:///tmp/p.sock"
"#,
        )
        .unwrap();
        let pools = path.to_string_lossy().into_owned();
        let sources = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(["nodetop", "--pools", &pools].iter().chain(args)).unwrap();
            pool_sources(&cli)
        };
        let both = sources(&["--pool", "prod"]).unwrap();
        assert_eq!(
            both,
            [
                Source {
                    pubsub: "tcp://10.0.0.1:5556".into(),
                    node: Some("web-1".into()),
                    keys: None,
                },
                Source {
                    pubsub: "tcp://10.0.0.2:5556".into(),
                    node: Some("web-2".into()),
                    keys: None,
                },
            ]
        );
        let names =
            |found: Vec<Source>| found.into_iter().filter_map(|s| s.node).collect::<Vec<_>>();
        assert_eq!(
            names(sources(&["--pool", "prod", "--where", "zone=eu-2"]).unwrap()),
            ["web-2"]
        );
        assert_eq!(
            names(sources(&["--pool", "prod", "--node", "web-1"]).unwrap()),
            ["web-1"]
        );
        // Without --pool, the pool of the named node.
        assert_eq!(names(sources(&["--node", "laptop"]).unwrap()), ["laptop"]);
        // Nothing pool-related: no pool sources, and no pools file is read.
        assert!(sources(&[]).unwrap().is_empty());

        for (args, expected) in [
            (&["--pool", "staging"][..], "no pool 'staging'"),
            (
                &["--pool", "prod", "--node", "web-9"][..],
                "no node 'web-9'",
            ),
            (
                &["--pool", "prod", "--where", "zone"][..],
                "not LABEL=VALUE",
            ),
            (&["--pool", "prod", "--where", "zone=us-1"][..], "zone=us-1"),
            (&["--where", "zone=eu-1"][..], "--pool NAME"),
        ] {
            let err = sources(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        std::fs::remove_file(&path).unwrap();
        let cli =
            Cli::try_parse_from(["nodetop", "--pools", "/nonexistent/p.toml", "-p", "x"]).unwrap();
        let err = pool_sources(&cli).unwrap_err();
        assert!(err.contains("/nonexistent/p.toml"), "{err}");
    }

    #[test]
    fn a_source_is_followed_once_by_endpoint_and_by_node() {
        let source = |pubsub: &str, node: Option<&str>| Source {
            pubsub: pubsub.into(),
            node: node.map(str::to_string),
            keys: None,
        };
        let mut sources = Vec::new();
        add_source(&mut sources, source("tcp://h:5556", Some("a")));
        add_source(&mut sources, source("tcp://h:5556", None));
        add_source(&mut sources, source("tcp://10.0.0.1:5556", Some("a")));
        add_source(&mut sources, source("tcp://meta:5570", None));
        add_source(&mut sources, source("tcp://k:5556", Some("b")));
        assert_eq!(
            sources,
            [
                source("tcp://h:5556", Some("a")),
                source("tcp://meta:5570", None),
                source("tcp://k:5556", Some("b")),
            ]
        );
    }

    #[test]
    fn a_wildcard_pubsub_is_reached_at_the_control_host() {
        assert_eq!(
            reachable_pubsub("tcp://10.1.2.3:5555", "tcp://0.0.0.0:5556"),
            "tcp://10.1.2.3:5556"
        );
        assert_eq!(
            reachable_pubsub("tcp://10.1.2.3:5555", "tcp://*:5556"),
            "tcp://10.1.2.3:5556"
        );
        assert_eq!(
            reachable_pubsub("ipc:///run/c.sock", "tcp://*:5556"),
            "tcp://127.0.0.1:5556"
        );
        assert_eq!(
            reachable_pubsub("tcp://10.1.2.3:5555", "tcp://10.9.9.9:5556"),
            "tcp://10.9.9.9:5556"
        );
        assert_eq!(reachable_pubsub("ipc:///c", "ipc:///p"), "ipc:///p");
    }
}
