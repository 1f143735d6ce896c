//! `nodectl`: drive a Ringmaster agent from the command line.
//!
//! One sub-command per agent command, aligned tables for people and `--json` for
//! scripts, against one agent (`--endpoint`) or the nodes of a pool (`--pool`,
//! `--node`, `--where`; see [`pool`]). Exit codes: 0 success; 1 the agent could not
//! be reached or did not answer in time; 2 bad usage; 3 the agent answered with an
//! error (as circusctl); 4 some nodes of a pool succeeded and others failed.

mod listen;
mod logs;
mod output;
mod pool;
mod upgrade;

use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ringmaster_meta::Strategy;
use ringmaster_protocol::seal::{Key, Keyring};
use ringmaster_protocol::transport::{Client, ClientError};
use ringmaster_protocol::{Command, OptionMap, OptionValue, Signal};

/// Control Ringmaster node agents: one, or every node of a pool.
///
/// Sends one command to the agent at --endpoint and prints its answer; with --pool
/// (or --node), sends it to every targeted node of the pool at once and prints one
/// table with a NODE column, naming each node that failed and why. Commands that
/// change processes reply when their action is done (a graceful stop can take up to
/// the watcher's graceful_timeout); --no-wait returns at once.
///
/// The pools file is --pools FILE, else $RINGMASTER_POOLS, else
/// ~/.config/ringmaster/pools.toml, else /etc/ringmaster/pools.toml.
#[derive(Debug, Parser)]
#[command(name = "nodectl", version, about, long_about, after_help = EXIT_CODES)]
struct Cli {
    /// The agent's control endpoint [default: the agent's own ipc:// socket in
    /// its runtime directory: /run/ringmaster/control.sock as root, else
    /// $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it].
    #[arg(
        long,
        short,
        global = true,
        env = "RINGMASTER_ENDPOINT",
        default_value_t = ringmaster_protocol::endpoint::default_control(),
        hide_default_value = true
    )]
    endpoint: String,

    /// Run the command on every node of this pool (see --node, --where).
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "RINGMASTER_POOL",
        value_name = "POOL"
    )]
    pool: Option<String>,

    /// Only these nodes of the pool (comma-separated or repeated). Without --pool,
    /// the pool that has them.
    #[arg(long, global = true, value_name = "NODE", value_delimiter = ',')]
    node: Vec<String>,

    /// Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all
    /// must hold).
    #[arg(long = "where", global = true, value_name = "LABEL=VALUE")]
    filters: Vec<String>,

    /// The pools file.
    #[arg(long, global = true, value_name = "FILE")]
    pools: Option<std::path::PathBuf>,

    /// Key file for an agent with keys: its admin key, or its read key to only
    /// read (repeatable, or ':'-separated in $RINGMASTER_KEY; the first seals
    /// requests, any opens what comes back). On a pool, replaces the pool's `key`.
    #[arg(
        long = "key",
        global = true,
        value_name = "FILE",
        env = "RINGMASTER_KEY",
        value_delimiter = ':'
    )]
    key_files: Vec<std::path::PathBuf>,

    /// Seconds to wait for the answer [default: 5 for queries, 120 for commands
    /// that start or stop processes; on a pool, the pool's timeout to reach each
    /// node].
    #[arg(long, global = true, value_name = "SECONDS")]
    timeout: Option<f64>,

    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,

    /// Return as soon as the agent accepted the command, without waiting for it
    /// to finish.
    #[arg(long, global = true)]
    no_wait: bool,

    #[command(subcommand)]
    command: Sub,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 agent unreachable or no answer in time, \
2 bad usage, 3 the agent answered with an error, 4 on a pool: some nodes succeeded and \
others failed (each is named on stderr).\n\n\
Examples:\n  nodectl status\n  nodectl --pool prod status\n  \
nodectl --pool prod --where zone=eu-1 restart web --batch 1\n  \
nodectl --pool prod add worker -n 6 --strategy spread:zone --start --cmd 'python3 worker.py'\n  \
nodectl --pool prod exec -- 'uptime; echo {{node}} {{label.zone}}'";

/// `--batch` and `--settle` of restart/reload on a pool.
#[derive(Debug, Clone, clap::Args)]
struct RollingArgs {
    /// On a pool: N nodes at a time; the next batch starts only once the previous
    /// one runs again, and the first failing batch stops the rollout.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// With --batch: seconds a batch must keep running, with the same pids, before
    /// the next one starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    settle: f64,
}

/// `--strategy` and `--dry-run` of add/incr on a pool.
#[derive(Debug, Clone, clap::Args)]
struct PlaceArgs {
    /// On a pool: how to choose nodes: least-loaded, round-robin,
    /// fewest-processes or spread:LABEL.
    #[arg(long, value_name = "STRATEGY", value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// On a pool: show where processes would go, and why, without changing
    /// anything.
    #[arg(long)]
    dry_run: bool,
}

fn parse_strategy(text: &str) -> Result<Strategy, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// State of every watcher, or of one.
    Status {
        /// The watcher.
        name: Option<String>,
    },
    /// Watcher names, or the processes of one watcher.
    List {
        /// The watcher whose processes to list.
        name: Option<String>,
    },
    /// Start a watcher (without a name: every autostart watcher, by priority).
    Start {
        /// The watcher.
        name: Option<String>,
    },
    /// Stop a watcher gracefully (without a name: every watcher).
    Stop {
        /// The watcher.
        name: Option<String>,
    },
    /// Stop, then start a watcher (without a name: every active watcher).
    Restart {
        /// The watcher.
        name: Option<String>,
        #[command(flatten)]
        rolling: RollingArgs,
    },
    /// Graceful reload: start new processes, then stop the old ones.
    Reload {
        /// The watcher (without a name: every active watcher).
        name: Option<String>,
        /// Replace one process at a time.
        #[arg(long)]
        sequential: bool,
        #[command(flatten)]
        rolling: RollingArgs,
    },
    /// Add processes to a watcher.
    ///
    /// On a pool: adds NB on every node that has the watcher; with --strategy (or
    /// --dry-run), places NB processes in all on the nodes the strategy chooses.
    Incr {
        /// The watcher.
        name: String,
        /// How many.
        #[arg(default_value_t = 1)]
        nb: u32,
        #[command(flatten)]
        place: PlaceArgs,
    },
    /// Remove processes from a watcher (the oldest first).
    Decr {
        /// The watcher.
        name: String,
        /// How many.
        #[arg(default_value_t = 1)]
        nb: u32,
    },
    /// Add a watcher at run time (kept across agent restarts).
    ///
    /// On a pool: places -n processes in all with a strategy (--strategy, else the
    /// pool's placement, else least-loaded) or on --node; adds the watcher where it
    /// is missing and adds processes where it exists. --dry-run shows the plan.
    #[command(
        after_help = "Examples:\n  nodectl add web --start -n 3 -- python3 -m http.server\n  \
nodectl --pool prod add worker --start -n 6 --strategy spread:zone --cmd 'python3 worker.py'"
    )]
    Add {
        /// Name of the new watcher.
        name: String,
        /// Program and arguments.
        #[arg(required_unless_present = "cmd_line", num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
        /// The command line as one string (instead of trailing arguments).
        #[arg(long = "cmd", value_name = "COMMAND LINE", conflicts_with = "cmd")]
        cmd_line: Option<String>,
        /// Number of processes (on a pool: in all, spread by the strategy).
        #[arg(short = 'n', long, value_name = "N")]
        numprocesses: Option<u32>,
        #[command(flatten)]
        place: PlaceArgs,
        /// Start it at once.
        #[arg(long)]
        start: bool,
        /// Any watcher option, as KEY=VALUE (repeatable).
        #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// Remove a watcher, stopping its processes.
    Rm {
        /// The watcher.
        name: String,
        /// Leave its processes running, unsupervised.
        #[arg(long)]
        nostop: bool,
    },
    /// Change watcher options: `set NAME KEY VALUE [KEY VALUE ...]`.
    ///
    /// Values are numbers, true/false, JSON lists or tables, or strings. Options
    /// that change how processes are started reload the watcher gracefully.
    Set {
        /// The watcher.
        name: String,
        /// KEY VALUE pairs.
        #[arg(required = true, num_args = 2.., value_name = "KEY VALUE")]
        pairs: Vec<String>,
    },
    /// Read watcher options.
    Get {
        /// The watcher.
        name: String,
        /// Option names.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Every option of a watcher.
    Options {
        /// The watcher.
        name: String,
    },
    /// The agent's own options.
    Globaloptions {
        /// One option.
        key: Option<String>,
    },
    /// Send a signal: `signal NAME [PID] SIGNAL`.
    Signal {
        /// The watcher.
        name: String,
        /// [PID] SIGNAL: a process of the watcher (all when absent), then the
        /// signal, by name (TERM, SIGHUP) or number.
        #[arg(required = true, num_args = 1..=2, value_name = "[PID] SIGNAL")]
        target: Vec<String>,
        /// Send it to the process group (the process and its children).
        #[arg(long)]
        children: bool,
    },
    /// Number of processes alive, of one watcher or of all.
    Numprocesses {
        /// The watcher.
        name: Option<String>,
    },
    /// Number of watchers.
    Numwatchers,
    /// The agent's listening sockets: name, descriptor, address, backlog and the
    /// watchers that use them.
    ///
    /// The agent binds every [sockets.NAME] of its config once, at start, and
    /// keeps it open across restarts and reloads of the watchers; their processes
    /// receive the sockets on descriptors 3, 4, ... (in name order), which
    /// $(circus.sockets.NAME) expands to (and LISTEN_FDS tells, with use_sockets
    /// = true). FD is the agent's own descriptor; a port 0 shows the port the
    /// system picked.
    #[command(after_help = "Examples:\n  nodectl listsockets\n  nodectl listsockets --json")]
    Listsockets,
    /// Re-read the agent's config file and apply what changed.
    Reloadconfig,
    /// Stop every watcher and the agent.
    Quit,
    /// Upgrade the agent in place: it re-executes itself (BINARY, else the
    /// binary it runs) with the same pid, and every process keeps running.
    ///
    /// The processes keep their pids, their output pipes and the listening
    /// sockets they share; requests sent during the switch wait in the agent's
    /// listening socket and are answered by the new binary. The new binary is
    /// checked first (it must be executable, be a nodeagent, and accept the
    /// config, the state directory and what is handed over); when a check fails
    /// nothing changes and the reason is printed. nodectl waits until the new
    /// binary answers and prints the versions and the time it took. SIGUSR2 to
    /// the agent does the same with the binary it runs (e.g. after a package
    /// upgrade replaced it). On a pool, --batch N upgrades N nodes at a time and
    /// stops at the first batch that fails.
    #[command(after_help = "Examples:\n  nodectl upgrade\n  \
nodectl upgrade --binary /opt/ringmaster-0.2/bin/nodeagent\n  \
nodectl --pool prod upgrade --batch 5")]
    Upgrade {
        /// The new nodeagent binary: a path on the node (absolute, or relative to
        /// this directory when nodectl runs there too).
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// On a pool: N nodes at a time (default: all at once).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        batch: Option<u32>,
    },
    /// Node name, labels, version, uptime, CPUs, memory, load, process count.
    Nodeinfo,
    /// CPU, memory, threads and age of every process (the latest sample).
    Stats {
        /// Only this watcher's processes.
        name: Option<String>,
    },
    /// The agent's own CPU and memory use.
    Dstats,
    /// On a pool: each node's reachability, version, labels, load, memory,
    /// processes and round-trip time.
    Nodes,
    /// Run a shell command line on the node (`/bin/sh -c`); needs `allow_exec =
    /// true` in the agent's config. Exits with the command's exit code.
    ///
    /// On a pool: runs on every targeted node, prints each output line prefixed with
    /// the node's name and a table of exit codes; `{{node}}`, `{{first}}` (the
    /// first targeted node) and `{{label.NAME}}` are replaced per node.
    #[command(
        after_help = "Examples:\n  nodectl exec --exec-timeout 10 -- df -h /\n  \
nodectl --pool prod exec -- 'echo {{node}} in {{label.zone}}; uptime'"
    )]
    Exec {
        /// Seconds the command may run before its process group is killed.
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        exec_timeout: f64,
        /// The command line (words are joined with spaces for the shell).
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Print a watcher's recent output lines; with -f, then new ones as they come.
    ///
    /// Only output that goes through the agent is seen: a watcher whose stdout or
    /// stderr goes to a file or to "capture". Output that goes to "inherit" (the
    /// default: straight to the agent's own stdout/stderr) or "null" is not. Lines
    /// are printed as TIME WATCHER.WID STREAM | TEXT (local time); with --json, the
    /// answer as JSON, or with -f one JSON object per line. With -f, nodectl
    /// subscribes before asking for the recent lines, so that no line is lost or
    /// printed twice in between; lines the agent dropped (it publishes a bounded
    /// rate) are reported on stderr with their count.
    #[command(after_help = "Examples:\n  nodectl logs web\n  \
nodectl logs -f -n 0 --stream stderr web\n  \
nodectl --node web-3 logs -f worker")]
    Logs {
        /// The watcher.
        name: String,
        /// Keep printing new lines until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many recent lines to print first (the agent keeps up to 1000 per
        /// watcher).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 50)]
        lines: u32,
        /// Only this stream.
        #[arg(long, value_enum, value_name = "STREAM")]
        stream: Option<logs::StreamArg>,
    },
    /// Reopen every output file the agent writes, after an external log rotation
    /// (SIGUSR1 to the agent does the same).
    ///
    /// Files moved away or truncated are also noticed by the agent on its own,
    /// within about a second of the next write; reopen makes it immediate, e.g.
    /// in logrotate's postrotate.
    Reopen,
    /// Print events, statistics and captured output lines as they are published,
    /// until interrupted.
    ///
    /// Asks the agent where it publishes, then subscribes (on a pool: to every
    /// targeted node; with --pubsub: to those publish endpoints, e.g. a nodemeta
    /// relay). Prefixes filter by topic: `event.` (all events), `stat.NODE.WATCHER`,
    /// `event.NODE.web.reap`, `log.NODE.web.stderr` (lines a captured stream
    /// wrote), `stat.pool` (nodemeta's pool totals)...
    Listen {
        /// Topic prefixes (default: everything).
        prefixes: Vec<String>,
        /// Stop after this many printed lines (one per event, statistic or output
        /// line).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Subscribe to this publish endpoint directly (repeatable), e.g. a
        /// nodemeta relay, instead of asking --endpoint.
        #[arg(long, value_name = "URL")]
        pubsub: Vec<String>,
    },
    /// Print nodectl's completion script for a shell.
    ///
    /// Bash, zsh, fish, elvish or PowerShell; the script completes sub-commands,
    /// options and their fixed values. Nothing is sent to any agent. Scripts for
    /// every binary are also in packaging/completions/.
    #[command(after_help = "Examples:\n  \
source <(nodectl completions bash)                       this shell\n  \
nodectl completions bash > ~/.local/share/bash-completion/completions/nodectl\n  \
nodectl completions zsh > ~/.zfunc/_nodectl              (with fpath+=~/.zfunc)\n  \
nodectl completions fish > ~/.config/fish/completions/nodectl.fish")]
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: ringmaster_cli::generate::Shell,
    },
    /// Print nodectl's man page, or write all its pages into a directory.
    ///
    /// Without --dir, prints the page of nodectl (roff) on stdout. With --dir,
    /// writes nodectl.1 and one page per sub-command, nodectl-COMMAND.1 (as git
    /// does), into DIR. Nothing is sent to any agent. The pages of every binary
    /// are also in packaging/man/.
    #[command(after_help = "Examples:\n  \
nodectl man | man -l -\n  \
nodectl man --dir ~/.local/share/man/man1 && man nodectl-start")]
    Man {
        /// Write nodectl.1 and nodectl-COMMAND.1 pages into this directory
        /// (created if missing) instead of printing nodectl.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },

    /// Write a new random key to FILE (mode 0600; never overwrites).
    ///
    /// Name the file in an agent's config as `admin_key` (may do everything) or
    /// `read_key` (may only read: status, list, stats, nodeinfo, listen), and give
    /// clients the same file: `key` in the pools file, or --key FILE. With keys,
    /// every request, reply and published body is sealed (XChaCha20-Poly1305, with
    /// a timestamp and nonce checked against replay). Nothing is sent to any agent.
    #[command(after_help = "Examples:\n  \
sudo nodectl keygen /etc/ringmaster/admin.key\n  \
sudo nodectl keygen /etc/ringmaster/read.key\n  \
nodectl --key /etc/ringmaster/admin.key --endpoint tcp://10.0.0.5:5555 status")]
    Keygen {
        /// Where to write the key; it must not exist yet.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Before anything reads the pool or the endpoint: these contact no agent.
    if let Some(code) = generate(&cli.command) {
        return code;
    }
    // An explicit --endpoint wins over a pool that only comes from $RINGMASTER_POOL.
    if matches.value_source("pool") == Some(ValueSource::EnvVariable)
        && matches.value_source("endpoint") == Some(ValueSource::CommandLine)
    {
        cli.pool = None;
    }
    if let Sub::Keygen { file } = &cli.command {
        return keygen(file);
    }
    if let Some(target) = pool_target(&cli) {
        return run_pool(target, cli);
    }
    let json = cli.json;
    let keys = match Keyring::load(&cli.key_files) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("nodectl: {e}");
            return ExitCode::from(2);
        }
    };
    if let Sub::Listen {
        prefixes,
        count,
        pubsub,
    } = &cli.command
    {
        let timeout = cli
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(QUERY_TIMEOUT, Duration::from_secs_f64);
        if !pubsub.is_empty() {
            let endpoints = pubsub
                .iter()
                .map(|p| listen::Source {
                    name: p.clone(),
                    pubsub: p.clone(),
                    keys: keys.clone(),
                })
                .collect();
            return listen::run_pool(endpoints, timeout, prefixes, *count, json);
        }
        return listen::run(&cli.endpoint, keys, timeout, prefixes, *count, json);
    }
    if let Sub::Logs { .. } = &cli.command {
        let timeout = cli
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(QUERY_TIMEOUT, Duration::from_secs_f64);
        let Some(request) = logs_request(cli.command, json) else {
            return ExitCode::from(2);
        };
        return logs::run(&cli.endpoint, keys, timeout, request);
    }
    if let Sub::Upgrade { binary, batch } = &cli.command {
        if batch.is_some() {
            eprintln!("nodectl: --batch applies to a pool: give --pool NAME");
            return ExitCode::from(2);
        }
        let timeout = cli
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(Duration::from_secs_f64);
        return upgrade::run(
            &cli.endpoint,
            keys,
            upgrade::binary_arg(binary.as_deref()),
            timeout,
            json,
        );
    }
    let (command, default_timeout) = match to_command(cli.command) {
        Ok(pair) => pair,
        Err(message) => {
            eprintln!("nodectl: {message}");
            return ExitCode::from(2);
        }
    };
    let timeout = cli
        .timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(default_timeout, Duration::from_secs_f64);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut client = Client::new(cli.endpoint, timeout).with_keys(keys);
    let result = runtime.block_on(client.call_with(command.clone(), cli.no_wait));
    match result {
        Ok(response) => {
            output::print(&command, &response, json);
            output::exit_code(&response)
        }
        Err(ClientError::Remote(error)) => {
            if json {
                output::print_json(&serde_json::json!({ "error": error }));
            } else {
                eprintln!("nodectl: {}", error.message);
            }
            ExitCode::from(3)
        }
        Err(ClientError::Transport(error)) => {
            if json {
                output::print_json(
                    &serde_json::json!({ "error": { "kind": "unreachable", "message": error.to_string() } }),
                );
            } else {
                eprintln!("nodectl: {error}");
            }
            ExitCode::from(1)
        }
    }
}

/// `completions` and `man`: what they print or write, and the exit code; None for
/// the sub-commands that talk to agents.
fn generate(sub: &Sub) -> Option<ExitCode> {
    use ringmaster_cli::generate;
    let result = match sub {
        Sub::Completions { shell } => {
            generate::completions(Cli::command(), *shell, &mut std::io::stdout().lock())
        }
        Sub::Man { dir: None } => generate::man_page(Cli::command(), &mut std::io::stdout().lock()),
        Sub::Man { dir: Some(dir) } => generate::write_man_pages(Cli::command(), dir)
            .map(drop)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        _ => return None,
    };
    Some(ExitCode::from(generate::exit_status("nodectl", result)))
}

/// The single-threaded runtime nodectl's one request needs; None (after
/// saying why) when it cannot be built.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("nodectl: cannot start the runtime: {e}");
            None
        }
    }
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

fn to_command(sub: Sub) -> Result<(Command, Duration), String> {
    let query = |c| Ok((c, QUERY_TIMEOUT));
    let action = |c| Ok((c, ACTION_TIMEOUT));
    match sub {
        Sub::Status { name } => query(Command::Status { name }),
        Sub::List { name } => query(Command::List { name }),
        Sub::Start { name } => action(Command::Start { name }),
        Sub::Stop { name } => action(Command::Stop { name }),
        Sub::Restart { name, rolling } => {
            single_node_only(rolling.batch.is_some(), "--batch")?;
            action(Command::Restart { name })
        }
        Sub::Reload {
            name,
            sequential,
            rolling,
        } => {
            single_node_only(rolling.batch.is_some(), "--batch")?;
            action(Command::Reload { name, sequential })
        }
        Sub::Incr { name, nb, place } => {
            single_node_only(place.strategy.is_some(), "--strategy")?;
            single_node_only(place.dry_run, "--dry-run")?;
            action(Command::Incr { name, nb })
        }
        Sub::Decr { name, nb } => action(Command::Decr { name, nb }),
        Sub::Add {
            name,
            cmd,
            cmd_line,
            numprocesses,
            place,
            start,
            options,
        } => {
            single_node_only(place.strategy.is_some(), "--strategy")?;
            single_node_only(place.dry_run, "--dry-run")?;
            let spec = add_spec(cmd, cmd_line, numprocesses, start, options)?;
            action(Command::Add {
                name,
                cmd: spec.cmd,
                args: Vec::new(),
                options: spec.options,
                start: spec.start,
            })
        }
        Sub::Rm { name, nostop } => action(Command::Rm { name, nostop }),
        Sub::Set { name, pairs } => {
            if pairs.len() % 2 != 0 {
                return Err(format!(
                    "set takes KEY VALUE pairs; '{}' has no value",
                    pairs.last().map_or("", String::as_str)
                ));
            }
            let options = pairs
                .chunks(2)
                .map(|kv| (kv[0].clone(), parse_value(&kv[1])))
                .collect();
            action(Command::Set { name, options })
        }
        Sub::Get { name, keys } => query(Command::Get { name, keys }),
        Sub::Options { name } => query(Command::Options { name }),
        Sub::Globaloptions { key } => query(Command::GlobalOptions { key }),
        Sub::Signal {
            name,
            target,
            children,
        } => {
            let (pid, signal) = match target.as_slice() {
                [signal] => (None, signal),
                [pid, signal] => (
                    Some(
                        pid.parse::<u32>()
                            .map_err(|_| format!("'{pid}' is not a process id"))?,
                    ),
                    signal,
                ),
                _ => return Err("signal takes NAME [PID] SIGNAL".into()),
            };
            let signal: Signal = signal.parse().map_err(|e| format!("{e}"))?;
            query(Command::Signal {
                name,
                pid,
                signal,
                children,
            })
        }
        Sub::Numprocesses { name } => query(Command::NumProcesses { name }),
        Sub::Numwatchers => query(Command::NumWatchers {}),
        Sub::Listsockets => query(Command::ListSockets {}),
        Sub::Reloadconfig => action(Command::ReloadConfig {}),
        Sub::Quit => action(Command::Quit {}),
        Sub::Upgrade { .. } => Err("upgrade is not a single request".into()),
        Sub::Nodeinfo => query(Command::NodeInfo {}),
        Sub::Stats { name } => query(Command::Stats { name }),
        Sub::Dstats => query(Command::DStats {}),
        Sub::Exec { exec_timeout, cmd } => {
            // The answer comes when the command is done: wait a little longer.
            let wait =
                Duration::try_from_secs_f64(exec_timeout.max(0.0) + 5.0).unwrap_or(ACTION_TIMEOUT);
            Ok((
                Command::Exec {
                    cmd: cmd.join(" "),
                    timeout: exec_timeout,
                },
                wait,
            ))
        }
        Sub::Nodes => Err("nodes lists the nodes of a pool: give --pool NAME".into()),
        Sub::Listen { .. } => Err("listen is not a request".into()),
        Sub::Logs { .. } => Err("logs is not a single request".into()),
        Sub::Reopen => action(Command::Reopen {}),
        Sub::Completions { .. } | Sub::Man { .. } | Sub::Keygen { .. } => {
            Err("completions, man and keygen are not requests".into())
        }
    }
}

/// The `logs` sub-command as a request (`None` for any other sub-command).
fn logs_request(sub: Sub, json: bool) -> Option<logs::LogsRequest> {
    match sub {
        Sub::Logs {
            name,
            follow,
            lines,
            stream,
        } => Some(logs::LogsRequest {
            watcher: name,
            lines,
            follow,
            stream: stream.map(Into::into),
            json,
        }),
        _ => None,
    }
}

fn single_node_only(given: bool, flag: &str) -> Result<(), String> {
    if given {
        Err(format!("{flag} applies to a pool: give --pool NAME"))
    } else {
        Ok(())
    }
}

/// The watcher `add` creates: its command line (trailing words, quoted, or
/// --cmd), its options, and -n as numprocesses.
fn add_spec(
    words: Vec<String>,
    line: Option<String>,
    numprocesses: Option<u32>,
    start: bool,
    options: Vec<String>,
) -> Result<pool::AddSpec, String> {
    let mut map = OptionMap::new();
    for pair in options {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("option '{pair}' is not KEY=VALUE"))?;
        map.insert(key.trim().to_string(), parse_value(value));
    }
    if let Some(n) = numprocesses {
        map.insert("numprocesses".into(), OptionValue::Int(i64::from(n)));
    }
    let cmd = match line {
        Some(line) => line,
        None => words
            .iter()
            .map(|w| shlex_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
    };
    Ok(pool::AddSpec {
        cmd,
        options: map,
        start,
    })
}

/// Whether the command line targets a pool rather than one endpoint.
/// `nodectl keygen FILE`.
fn keygen(file: &std::path::Path) -> ExitCode {
    let written = Key::generate().and_then(|key| key.write_new(file).map(|()| key.id()));
    match written {
        Ok(id) => {
            println!("wrote key {id} to {} (mode 0600)", file.display());
            println!(
                "name it in the agents' [agent] section (admin_key = \"{0}\", or read_key), \
                 and in the pools file (key = \"{0}\") or pass --key {0}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nodectl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pool_target(cli: &Cli) -> Option<pool::Target> {
    if cli.pool.is_none() && cli.node.is_empty() && cli.filters.is_empty() {
        return None;
    }
    Some(pool::Target {
        pools_file: cli.pools.clone(),
        pool: cli.pool.clone(),
        nodes: cli.node.clone(),
        filters: cli.filters.clone(),
        keys: cli.key_files.clone(),
    })
}

/// Runs the command line on a pool.
fn run_pool(target: pool::Target, cli: Cli) -> ExitCode {
    let flags = pool::Flags {
        json: cli.json,
        no_wait: cli.no_wait,
        timeout: cli
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(Duration::from_secs_f64),
    };
    let job = match cli.command {
        Sub::Listen {
            prefixes, count, ..
        } => {
            let nodes = match pool::resolve(&target) {
                Ok((_, nodes)) => nodes,
                Err(message) => {
                    eprintln!("nodectl: {message}");
                    return ExitCode::from(2);
                }
            };
            let endpoints = nodes
                .into_iter()
                .map(|n| listen::Source {
                    name: n.name,
                    pubsub: n.pubsub,
                    keys: n.keys,
                })
                .collect();
            let timeout = flags.timeout.unwrap_or(QUERY_TIMEOUT);
            return listen::run_pool(endpoints, timeout, &prefixes, count, cli.json);
        }
        Sub::Logs { .. } => {
            let nodes = match pool::resolve(&target) {
                Ok((_, nodes)) => nodes,
                Err(message) => {
                    eprintln!("nodectl: {message}");
                    return ExitCode::from(2);
                }
            };
            let [node] = nodes.as_slice() else {
                eprintln!(
                    "nodectl: logs reads one node, and {} are targeted: name one with --node \
                     (or use --endpoint)",
                    nodes.len()
                );
                return ExitCode::from(2);
            };
            let timeout = flags.timeout.unwrap_or(QUERY_TIMEOUT);
            let Some(request) = logs_request(cli.command, cli.json) else {
                return ExitCode::from(2);
            };
            return logs::run(&node.control, node.keys.clone(), timeout, request);
        }
        Sub::Nodes => pool::Job::Nodes,
        Sub::Upgrade { binary, batch } => pool::Job::Upgrade {
            binary: upgrade::binary_arg(binary.as_deref()),
            batch: batch.map_or(usize::MAX, |b| b as usize),
        },
        Sub::Stats { name } => pool::Job::Stats { name },
        Sub::Exec { exec_timeout, cmd } => pool::Job::Exec {
            template: cmd.join(" "),
            timeout: exec_timeout,
        },
        Sub::Restart {
            name,
            rolling:
                RollingArgs {
                    batch: Some(batch),
                    settle,
                },
        } => pool::Job::Rolling {
            command: Command::Restart { name },
            batch: batch as usize,
            settle: Duration::try_from_secs_f64(settle).unwrap_or_default(),
        },
        Sub::Reload {
            name,
            sequential,
            rolling:
                RollingArgs {
                    batch: Some(batch),
                    settle,
                },
        } => pool::Job::Rolling {
            command: Command::Reload { name, sequential },
            batch: batch as usize,
            settle: Duration::try_from_secs_f64(settle).unwrap_or_default(),
        },
        Sub::Incr { name, nb, place } if place.strategy.is_some() || place.dry_run => {
            pool::Job::Place {
                watcher: name,
                count: nb,
                strategy: place.strategy,
                add: None,
                dry_run: place.dry_run,
            }
        }
        Sub::Add {
            name,
            cmd,
            cmd_line,
            numprocesses,
            place,
            start,
            options,
        } => match add_spec(cmd, cmd_line, None, start, options) {
            Ok(spec) => pool::Job::Place {
                watcher: name,
                count: numprocesses.unwrap_or(1),
                strategy: place.strategy,
                add: Some(spec),
                dry_run: place.dry_run,
            },
            Err(message) => {
                eprintln!("nodectl: {message}");
                return ExitCode::from(2);
            }
        },
        other => match to_command(other) {
            Ok((command, timeout)) => pool::Job::Command {
                command,
                long: timeout >= ACTION_TIMEOUT,
            },
            Err(message) => {
                eprintln!("nodectl: {message}");
                return ExitCode::from(2);
            }
        },
    };
    pool::run(&target, job, flags)
}

/// A command-line value as an option value: JSON lists and tables, numbers,
/// booleans, else the string itself.
fn parse_value(text: &str) -> OptionValue {
    let trimmed = text.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        if let Ok(value) = serde_json::from_str::<OptionValue>(trimmed) {
            return value;
        }
    }
    if let Ok(i) = trimmed.parse::<i64>() {
        return OptionValue::Int(i);
    }
    if let Ok(x) = trimmed.parse::<f64>() {
        if x.is_finite() {
            return OptionValue::Float(x);
        }
    }
    match trimmed {
        "true" => OptionValue::Bool(true),
        "false" => OptionValue::Bool(false),
        _ => OptionValue::Str(text.to_string()),
    }
}

fn shlex_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+$()".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_are_typed() {
        assert_eq!(parse_value("3"), OptionValue::Int(3));
        assert_eq!(parse_value("2.5"), OptionValue::Float(2.5));
        assert_eq!(parse_value("true"), OptionValue::Bool(true));
        assert_eq!(parse_value("SIGINT"), OptionValue::Str("SIGINT".into()));
        assert_eq!(
            parse_value("[\"a\", 1]"),
            OptionValue::List(vec![OptionValue::Str("a".into()), OptionValue::Int(1)])
        );
    }

    #[test]
    fn signal_takes_an_optional_pid() {
        let cli = Cli::try_parse_from(["nodectl", "signal", "web", "123", "HUP"]).unwrap();
        let (command, _) = to_command(cli.command).unwrap();
        assert_eq!(
            command,
            Command::Signal {
                name: "web".into(),
                pid: Some(123),
                signal: Signal::Hup,
                children: false
            }
        );
        let cli = Cli::try_parse_from(["nodectl", "signal", "web", "nope", "HUP"]).unwrap();
        assert!(to_command(cli.command).unwrap_err().contains("'nope'"));
    }

    #[test]
    fn add_keeps_arguments_quoted() {
        let cli = Cli::try_parse_from([
            "nodectl",
            "add",
            "web",
            "--start",
            "-o",
            "numprocesses=2",
            "--",
            "sh",
            "-c",
            "echo 'hi there'",
        ])
        .unwrap();
        let (command, _) = to_command(cli.command).unwrap();
        let Command::Add {
            cmd,
            options,
            start,
            ..
        } = command
        else {
            panic!("not add");
        };
        assert!(start);
        assert_eq!(options["numprocesses"], OptionValue::Int(2));
        assert_eq!(cmd, r#"sh -c 'echo '\''hi there'\'''"#);
    }
}
