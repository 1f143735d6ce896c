//! `nodectl`: drive a Ringmaster agent from the command line.
//!
//! One sub-command per agent command, aligned tables for people and `--json` for
//! scripts. Exit codes: 0 success; 1 the agent could not be reached or did not
//! answer in time; 2 bad usage; 3 the agent answered with an error (as circusctl).

mod listen;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringmaster_protocol::transport::{Client, ClientError};
use ringmaster_protocol::{Command, OptionMap, OptionValue, Signal};

/// Control a Ringmaster node agent.
///
/// Sends one command to the agent at --endpoint and prints its answer. Commands that
/// change processes reply when their action is done (a graceful stop can take up to
/// the watcher's graceful_timeout); --no-wait returns at once.
#[derive(Debug, Parser)]
#[command(name = "nodectl", version, about, long_about, after_help = EXIT_CODES)]
struct Cli {
    /// The agent's control endpoint.
    #[arg(
        long,
        short,
        global = true,
        env = "RINGMASTER_ENDPOINT",
        default_value = "tcp://127.0.0.1:5555"
    )]
    endpoint: String,

    /// Seconds to wait for the answer [default: 5 for queries, 120 for commands
    /// that start or stop processes].
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
2 bad usage, 3 the agent answered with an error.";

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
    },
    /// Graceful reload: start new processes, then stop the old ones.
    Reload {
        /// The watcher (without a name: every active watcher).
        name: Option<String>,
        /// Replace one process at a time.
        #[arg(long)]
        sequential: bool,
    },
    /// Add processes to a watcher.
    Incr {
        /// The watcher.
        name: String,
        /// How many.
        #[arg(default_value_t = 1)]
        nb: u32,
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
    #[command(
        after_help = "Example: nodectl add web --start -o numprocesses=3 -- python3 -m http.server"
    )]
    Add {
        /// Name of the new watcher.
        name: String,
        /// Program and arguments.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
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
    /// Re-read the agent's config file and apply what changed.
    Reloadconfig,
    /// Stop every watcher and the agent.
    Quit,
    /// Node name, labels, version, uptime, CPUs, memory, load, process count.
    Nodeinfo,
    /// CPU, memory, threads and age of every process (the latest sample).
    Stats {
        /// Only this watcher's processes.
        name: Option<String>,
    },
    /// The agent's own CPU and memory use.
    Dstats,
    /// Print events and statistics as they are published, until interrupted.
    ///
    /// Asks the agent where it publishes, then subscribes. Prefixes filter by
    /// topic: `event.` (all events), `stat.NODE.WATCHER`, `event.NODE.web.reap`...
    Listen {
        /// Topic prefixes (default: everything).
        prefixes: Vec<String>,
        /// Stop after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    if let Sub::Listen { prefixes, count } = &cli.command {
        let timeout = cli
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(QUERY_TIMEOUT, Duration::from_secs_f64);
        return listen::run(&cli.endpoint, timeout, prefixes, *count, json);
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
    let mut client = Client::new(cli.endpoint, timeout);
    let result = runtime.block_on(client.call_with(command.clone(), cli.no_wait));
    match result {
        Ok(response) => {
            output::print(&command, &response, json);
            ExitCode::SUCCESS
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

/// The single-threaded runtime every zmq.rs socket must run on; None (after
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
        Sub::Restart { name } => action(Command::Restart { name }),
        Sub::Reload { name, sequential } => action(Command::Reload { name, sequential }),
        Sub::Incr { name, nb } => action(Command::Incr { name, nb }),
        Sub::Decr { name, nb } => action(Command::Decr { name, nb }),
        Sub::Add {
            name,
            cmd,
            start,
            options,
        } => {
            let mut map = OptionMap::new();
            for pair in options {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("option '{pair}' is not KEY=VALUE"))?;
                map.insert(key.trim().to_string(), parse_value(value));
            }
            let line = cmd
                .iter()
                .map(|w| shlex_quote(w))
                .collect::<Vec<_>>()
                .join(" ");
            action(Command::Add {
                name,
                cmd: line,
                args: Vec::new(),
                options: map,
                start,
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
        Sub::Reloadconfig => action(Command::ReloadConfig {}),
        Sub::Quit => action(Command::Quit {}),
        Sub::Nodeinfo => query(Command::NodeInfo {}),
        Sub::Stats { name } => query(Command::Stats { name }),
        Sub::Dstats => query(Command::DStats {}),
        Sub::Listen { .. } => Err("listen is not a request".into()),
    }
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
    use clap::CommandFactory;

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
