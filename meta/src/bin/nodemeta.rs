//! `nodemeta`: one publish endpoint for a whole pool (see [`ringmaster_meta::relay`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringmaster_cli::logging::LogFormat;
use ringmaster_meta::pools::{self, PoolsFile};
use ringmaster_meta::relay::{self, Relay, RelayConfig};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

const EXAMPLES: &str = "\
Examples:
  # Relay pool 'prod' of ~/.config/ringmaster/pools.toml on loopback
  nodemeta --pool prod --pubsub tcp://127.0.0.1:5570

  # Watch the whole pool through that one endpoint
  nodetop --pubsub tcp://127.0.0.1:5570

  # Another pools file, pool totals every 2 s, stale after 5 silent intervals
  nodemeta --pools /etc/ringmaster/pools.toml --pool prod \\
           --pubsub ipc:///run/ringmaster/prod.pub --interval 2 --stale-after 5

  # Serve other hosts: with the pool's keys (pools file `key`), frames are sealed
  nodemeta --pool prod --pubsub tcp://10.0.0.2:5570

  # Serve other hosts without keys (keep it on a private network)
  nodemeta --pool dev --pubsub tcp://10.0.0.2:5570 --insecure

Exit codes:
  0  stopped by SIGTERM or SIGINT
  1  runtime failure (the endpoint could not be bound)
  2  bad usage or configuration (pools file, pool, endpoint, options)";

/// Relay every agent of a pool on one publish endpoint.
///
/// nodemeta subscribes to the publish endpoint of every node of a pool (from the
/// pools file) and republishes everything they publish (`stat.*`, `event.*`,
/// `log.*`), unchanged and without delay, on one endpoint (--pubsub), so that
/// `nodetop --pubsub` and any ZeroMQ SUB can follow a whole pool through a single
/// socket.
///
/// Every --interval it also publishes the pool's totals on `stat.pool`: each node
/// with its state (up, stale, or down = never heard from) and how long it has been
/// silent, and, over the nodes that are up, processes, CPUs, CPU use, memory and
/// per-watcher totals. A node that publishes nothing for --stale-after of its stats
/// intervals is marked stale (the agents' host stats are their heartbeat) and its
/// connection is reopened; when it speaks again it is up and re-synced with
/// `status`.
///
/// With keys (the pool's `key` in the pools file, or --key) nodemeta opens what
/// the agents publish and seals what it republishes; without keys it binds only
/// loopback or ipc:// endpoints unless --insecure is given. It stops on SIGTERM or SIGINT.
#[derive(Debug, Parser)]
#[command(name = "nodemeta", version, long_about, after_help = EXAMPLES)]
struct Args {
    /// The pool to relay, by name in the pools file.
    #[arg(long, value_name = "NAME")]
    pool: String,

    /// The pools file [default: $RINGMASTER_POOLS, then
    /// ~/.config/ringmaster/pools.toml, then /etc/ringmaster/pools.toml].
    #[arg(long, value_name = "FILE")]
    pools: Option<PathBuf>,

    /// The endpoint to publish on: tcp://HOST:PORT (loopback unless --insecure)
    /// or ipc:///PATH.
    #[arg(long, value_name = "ENDPOINT")]
    pubsub: String,

    /// Seconds between two `stat.pool` messages; also the stats interval assumed
    /// for a node until it publishes its own.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    interval: f64,

    /// A node silent for this many of its stats intervals is stale.
    #[arg(long, value_name = "N", default_value_t = 3)]
    stale_after: u32,

    /// Key file(s) to open the agents' frames with and to seal what nodemeta
    /// publishes (repeatable, or ':'-separated in $RINGMASTER_KEY) [default: the
    /// pool's `key` in the pools file]. nodemeta seals its own messages with the
    /// last key: list the read key last so that read-only subscribers can open
    /// them.
    #[arg(
        long = "key",
        value_name = "FILE",
        env = "RINGMASTER_KEY",
        value_delimiter = ':'
    )]
    keys: Vec<PathBuf>,

    /// Allow binding a non-loopback TCP address without keys (nothing is encrypted
    /// or authenticated: use a private network).
    #[arg(long)]
    insecure: bool,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// How log lines look: auto (journald's format when stderr is the journal, else
    /// human), human, journald, or json.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Auto,
        env = "RINGMASTER_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// Why nodemeta stops with an error.
enum Failure {
    /// Bad usage or configuration: exit code 2.
    Usage(String),
    /// Something failed while running: exit code 1.
    Runtime(String),
}

fn main() -> ExitCode {
    // As Args::parse(), and the hidden --completions SHELL and --man flags.
    let args: Args = ringmaster_cli::generate::parse();
    ringmaster_cli::logging::init(args.log_format, args.verbose);
    match configure(&args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("nodemeta: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("nodemeta: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the options and reads the pool.
fn configure(args: &Args) -> Result<RelayConfig, Failure> {
    if !(args.interval.is_finite() && (0.01..=3600.0).contains(&args.interval)) {
        return Err(Failure::Usage(format!(
            "--interval {} is not a number of seconds between 0.01 and 3600",
            args.interval
        )));
    }
    if !(1..=1000).contains(&args.stale_after) {
        return Err(Failure::Usage(format!(
            "--stale-after {} is not a number of intervals between 1 and 1000",
            args.stale_after
        )));
    }
    let path = pools::locate(args.pools.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
    let file = PoolsFile::load(&path).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut pool = file
        .pool(&args.pool)
        .map_err(|e| Failure::Usage(e.to_string()))?
        .clone();
    let keys = pool.attach_keys(&args.keys).map_err(Failure::Usage)?;
    relay::check_bind_endpoint(&args.pubsub, args.insecure || keys.is_some())
        .map_err(|e| Failure::Usage(format!("--pubsub: {e}")))?;
    Ok(RelayConfig {
        keys,
        pool,
        endpoint: args.pubsub.clone(),
        interval: Duration::from_secs_f64(args.interval),
        stale_after: args.stale_after,
    })
}

/// Runs the relay on a current-thread runtime until SIGTERM or SIGINT.
fn run(config: RelayConfig) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        // Signals first, so that a SIGTERM while binding is not lost.
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| Failure::Runtime(format!("cannot watch SIGTERM: {e}")))?;
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| Failure::Runtime(format!("cannot watch SIGINT: {e}")))?;
        let relay = Relay::bind(config)
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        relay
            .run(async move {
                tokio::select! {
                    _ = sigterm.recv() => info!("SIGTERM: shutting down"),
                    _ = sigint.recv() => info!("SIGINT: shutting down"),
                }
            })
            .await;
        Ok(())
    })
}
