//! `nodeagent`: supervise the processes of one host and serve Ringmaster clients.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringmaster_agent::config::Config;
use ringmaster_cli::logging::LogFormat;

/// Ringmaster's per-host supervisor.
///
/// Runs the watchers of a config file (TOML), restarts what crashes, and serves
/// commands from `nodectl` on its control endpoint while it publishes events on its
/// publish endpoint. Stops every watcher gracefully on SIGTERM or SIGINT (a second
/// one kills what is left); reloads the config on SIGHUP.
#[derive(Debug, Parser)]
#[command(name = "nodeagent", version, about, long_about)]
struct Args {
    /// The agent's config file (TOML).
    #[arg(short, long, value_name = "FILE", env = "RINGMASTER_CONFIG")]
    config: PathBuf,

    /// Check the config file, print it as the agent understands it, and exit.
    #[arg(long)]
    check_config: bool,

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
    ringmaster_cli::logging::init(args.log_format, args.verbose);
    // Before any thread starts: the notify variables are ours, not our children's.
    let notifier = ringmaster_agent::notify::Notifier::take_from_env();

    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nodeagent: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print_config(&config);
        return ExitCode::SUCCESS;
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
    match runtime.block_on(ringmaster_agent::run(config, notifier)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodeagent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_config(config: &Config) {
    let agent = &config.agent;
    println!(
        "# {} is valid",
        config
            .path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    );
    println!("[agent]");
    println!("node = {:?}", agent.node);
    println!("control = {:?}", agent.control);
    println!("pubsub = {:?}", agent.pubsub);
    println!("state_dir = {:?}", agent.state_dir.display().to_string());
    println!("warmup_delay = {}", agent.warmup_delay);
    println!("insecure = {}", agent.insecure);
    println!("stats_interval = {}", agent.stats_interval);
    println!("allow_exec = {}", agent.allow_exec);
    if !agent.labels.is_empty() {
        let labels: Vec<String> = agent
            .labels
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect();
        println!("labels = {{ {} }}", labels.join(", "));
    }
    for (name, watcher) in &config.watchers {
        println!();
        println!("[watchers.{name}]");
        for (key, value) in watcher.to_options() {
            match value {
                ringmaster_protocol::OptionValue::Str(s) => println!("{key} = {s:?}"),
                other => println!("{key} = {other}"),
            }
        }
    }
}
