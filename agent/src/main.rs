//! `nodeagent`: supervise the processes of one host and serve Ringmaster clients.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringmaster_agent::config::{Config, SocketConfig, WatcherConfig};
use ringmaster_cli::logging::LogFormat;

/// Ringmaster's per-host supervisor.
///
/// Runs the watchers of a config file (TOML, or a Circus INI file), restarts what crashes, and serves
/// commands from `nodectl` on its control endpoint while it publishes events on its
/// publish endpoint. Stops every watcher gracefully on SIGTERM or SIGINT (a second
/// one kills what is left); reloads the config on SIGHUP; reopens its output
/// files on SIGUSR1 (after an external log rotation); upgrades itself in place on
/// SIGUSR2 (re-executes its binary, every process keeps running; see
/// `nodectl upgrade`).
#[derive(Debug, Parser)]
#[command(name = "nodeagent", version, about, long_about)]
struct Args {
    /// The agent's config file: TOML, or a Circus INI file (circus.ini).
    #[arg(short, long, value_name = "FILE", env = "RINGMASTER_CONFIG")]
    config: Option<PathBuf>,

    /// Check a config file (FILE, else the --config one), print it as the agent
    /// understands it (TOML, warnings first) and exit: 0 when it is valid, 2 when
    /// it is not.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,

    /// Take over from the agent image that wrote this handover (an upgrade in
    /// place executes the new binary with it; not for use by hand).
    #[arg(long, value_name = "HANDOVER", hide = true)]
    resume_from: Option<PathBuf>,

    /// Check that this binary can take over with this handover, the config and
    /// the state directory, and exit: 0 when it can, 2 when it cannot (run by
    /// an upgrade in place before it hands over; not for use by hand).
    #[arg(long, value_name = "HANDOVER", hide = true)]
    check_upgrade: Option<PathBuf>,

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

fn main() -> ExitCode {
    // As Args::parse(), and the hidden --completions SHELL and --man flags.
    let args: Args = ringmaster_cli::generate::parse();
    // Descriptors inherited from whoever started the agent are not for its
    // children.
    ringmaster_agent::child::close_inherited_on_exec();
    // Before any thread: SIGCHLD (watched to reap orphans) must not interrupt
    // the runtime's system calls.
    ringmaster_agent::reaper::route_sigchld();
    ringmaster_cli::logging::init(args.log_format, args.verbose);
    // Before any thread starts: the notify variables are ours, not our children's.
    let notifier = ringmaster_agent::notify::Notifier::take_from_env();

    let path = match (&args.check_config, &args.config) {
        (Some(Some(file)), _) | (_, Some(file)) => file.clone(),
        (Some(None), None) => {
            eprintln!("nodeagent: --check-config needs a FILE (or --config FILE)");
            return ExitCode::from(2);
        }
        (None, None) => {
            eprintln!(
                "nodeagent: no config file: give --config FILE (or set RINGMASTER_CONFIG)\n\n\
                 For more information, try '--help'."
            );
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nodeagent: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config.is_some() {
        print_config(&config);
        return ExitCode::SUCCESS;
    }
    if let Some(handover) = &args.check_upgrade {
        return match ringmaster_agent::check_upgrade(&config, handover) {
            Ok(processes) => {
                println!("nodeagent can take over {processes} process(es)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nodeagent: {e}");
                ExitCode::from(2)
            }
        };
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nodeagent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ringmaster_agent::run(config, notifier, args.resume_from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodeagent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `config` as TOML (the config file's shape, defaults filled in), after
/// its warnings as comments.
fn print_config(config: &Config) {
    #[derive(serde::Serialize)]
    struct Resolved<'a> {
        agent: toml::Table,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        sockets: &'a BTreeMap<String, SocketConfig>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        watchers: &'a BTreeMap<String, WatcherConfig>,
    }
    let agent = &config.agent;
    println!(
        "# {} is valid",
        config
            .path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    );
    for warning in &config.warnings {
        for line in warning.to_string().lines() {
            println!("# warning: {line}");
        }
    }
    if agent.keys.is_some() {
        println!("# (admin_key and read_key are set and not shown)");
    }
    let mut table = toml::Table::new();
    let mut put = |key: &str, value: toml::Value| {
        table.insert(key.to_string(), value);
    };
    put("node", agent.node.clone().into());
    put("control", agent.control.clone().into());
    put("pubsub", agent.pubsub.clone().into());
    put("state_dir", agent.state_dir.display().to_string().into());
    put("warmup_delay", agent.warmup_delay.into());
    put("insecure", agent.insecure.into());
    put("stats_interval", agent.stats_interval.into());
    put("allow_exec", agent.allow_exec.into());
    if !agent.labels.is_empty() {
        let labels: toml::Table = agent
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        put("labels", labels.into());
    }
    let resolved = Resolved {
        agent: table,
        sockets: &config.sockets,
        watchers: &config.watchers,
    };
    match toml::to_string(&resolved) {
        Ok(text) => print!("\n{text}"),
        Err(e) => eprintln!("nodeagent: cannot print the config as TOML: {e}"),
    }
}
