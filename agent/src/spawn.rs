//! Turning a watcher's config into a running child process.
//!
//! Everything that can be checked before `fork` is checked here, so that a missing
//! program, a missing working directory or an unwritable log file becomes a clear
//! error naming the thing that is wrong instead of a mysterious exit code. Each child
//! leads its own process group, so that a stop can reach its whole tree, and gets a
//! mark of its own in its environment ([`crate::lineage::MARK_VAR`]), so that what
//! it starts can be found even after leaving the group. The child is registered
//! with the reaper as it is forked ([`crate::reaper::spawn`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ringmaster_protocol::logs::LogStream;
use tokio::process::Command;

use crate::child;
use crate::config::WatcherConfig;
use crate::lineage::{Mark, MARK_VAR};
use crate::output::{self, Captured};
use crate::reaper::{self, OnDrop, OwnChild};
use crate::sockets::Sockets;

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program is nowhere to be found.
    #[error("command '{program}' not found{}", searched.as_ref().map(|p| format!(" in PATH ({p})")).unwrap_or_default())]
    NotFound {
        /// The program as written.
        program: String,
        /// The PATH searched, when it was searched.
        searched: Option<String>,
    },
    /// The program exists but cannot be executed.
    #[error("'{}' is not executable: {reason}", path.display())]
    NotExecutable {
        /// The resolved path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The working directory is missing or unusable.
    #[error("working_dir '{}' {reason}", path.display())]
    WorkingDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An output file cannot be opened.
    #[error("cannot open {stream} file '{}': {reason}", path.display())]
    Output {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The command line is malformed.
    #[error("cmd {0:?} has unbalanced quotes")]
    BadCommandLine(String),
    /// fork/exec failed.
    #[error("cannot start '{program}': {source}")]
    Os {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `uid` names no usable user.
    #[error("uid '{user}': {reason}")]
    UnknownUser {
        /// The user as configured.
        user: String,
        /// Why, and what to do.
        reason: String,
    },
    /// `gid` names no usable group.
    #[error("gid '{group}': {reason}")]
    UnknownGroup {
        /// The group as configured.
        group: String,
        /// Why, and what to do.
        reason: String,
    },
    /// Another user or group was asked for, and the agent is not root.
    #[error(
        "running processes as {what} needs root, and the agent runs as uid {euid}: \
         run nodeagent as root, or remove uid/gid from the watcher"
    )]
    NeedsRoot {
        /// The user and group asked for.
        what: String,
        /// The agent's effective uid.
        euid: u32,
    },
    /// A resource limit cannot be set.
    #[error("rlimit_{name} = {value}: {reason}")]
    BadLimit {
        /// The limit (after `rlimit_`).
        name: &'static str,
        /// Its configured value.
        value: String,
        /// Why, and what to do.
        reason: String,
    },
    /// `$(circus.sockets.NAME)` names a socket the agent does not have.
    #[error("cmd, args or env refer to socket '{name}', which is not configured ({known})")]
    UnknownSocket {
        /// The name as written.
        name: String,
        /// The sockets there are.
        known: String,
    },
    /// A step between fork and exec failed (see `crate::child`).
    #[error("cannot start '{program}': {step}: {source}")]
    ChildSetup {
        /// The program.
        program: String,
        /// The step that failed.
        step: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What identifies the process being started, for variable expansion.
#[derive(Debug, Clone, Copy)]
pub struct SpawnVars<'a> {
    /// Node name.
    pub node: &'a str,
    /// Watcher name.
    pub watcher: &'a str,
    /// Worker id of the new process.
    pub wid: u32,
}

/// Expands `$(wid)`, `$(circus.wid)`, `$(name)`, `$(node)`, `$(env.NAME)`,
/// `$(circus.env.NAME)` (and the deprecated `$WID`) in `text`. Keys are
/// case-insensitive; an unknown variable is left as written, as in Circus.
pub fn expand(text: &str, vars: &SpawnVars<'_>, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &after[..end];
        let lower = key.to_ascii_lowercase();
        let short = lower.strip_prefix("circus.").unwrap_or(&lower);
        let value = match short {
            "wid" => Some(vars.wid.to_string()),
            "name" | "watcher" => Some(vars.watcher.to_string()),
            "node" => Some(vars.node.to_string()),
            other => other.strip_prefix("env.").and_then(|_| {
                // Environment names keep their case: take it from the original key.
                let name = &key[key.len() - (other.len() - 4)..];
                env.get(name).cloned().or_else(|| std::env::var(name).ok())
            }),
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.replace("$WID", &vars.wid.to_string())
}

/// The environment of one process of a watcher (and of its hooks): the agent's
/// whole environment with `copy_env`, else only its `PATH` with `copy_path`, else
/// nothing; then the watcher's `env` (which holds the top-level `[env]` too).
///
/// An `env` value may use `$(wid)`, `$(env.NAME)`/`$(circus.env.NAME)` and the
/// other variables of [`expand`]. `NAME` is looked up in the watcher's other `env`
/// keys (as written), then in the environment above, then in the agent's; a value
/// naming its own key gets the value from before it (`PATH = "$(env.PATH):/opt/bin"`).
pub fn environment(config: &WatcherConfig, vars: &SpawnVars<'_>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = if config.copy_env {
        std::env::vars().collect()
    } else if config.copy_path {
        std::env::var("PATH")
            .map(|path| BTreeMap::from([("PATH".to_string(), path)]))
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let needs_expansion = |value: &String| value.contains("$(") || value.contains("$WID");
    if !config.env.values().any(needs_expansion) {
        env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        return env;
    }
    // What `$(env.NAME)` sees: the base environment, overlaid with the other keys.
    let mut scope = env.clone();
    scope.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut expanded = Vec::with_capacity(config.env.len());
    for (key, value) in &config.env {
        if !needs_expansion(value) {
            expanded.push((key.clone(), value.clone()));
            continue;
        }
        let raw = match env.get(key) {
            Some(before) => scope.insert(key.clone(), before.clone()),
            None => scope.remove(key),
        };
        expanded.push((key.clone(), expand(value, vars, &scope)));
        if let Some(raw) = raw {
            scope.insert(key.clone(), raw);
        }
    }
    env.extend(expanded);
    env
}

/// A process about to be started: program, arguments, environment, all resolved.
#[derive(Debug)]
pub struct Prepared {
    command: Command,
    program: String,
    /// Steps between fork and exec (sockets, user, limits, umask), if any.
    setup: Option<child::Armed>,
    /// The agent's ends of the streams that go through it.
    output: Captured,
    /// The mark in its environment.
    mark: Mark,
}

/// Prepares the command for one process of a watcher that uses no socket.
pub fn prepare(config: &WatcherConfig, vars: &SpawnVars<'_>) -> Result<Prepared, SpawnError> {
    prepare_with(config, vars, &Sockets::default())
}

/// Prepares the command for one process of a watcher; `sockets` are the agent's
/// listening sockets, which the process gets when the watcher uses them.
pub fn prepare_with(
    config: &WatcherConfig,
    vars: &SpawnVars<'_>,
    sockets: &Sockets,
) -> Result<Prepared, SpawnError> {
    let mut env = environment(config, vars);

    let mut words =
        shlex::split(&config.cmd).ok_or_else(|| SpawnError::BadCommandLine(config.cmd.clone()))?;
    words.extend(config.args.0.iter().cloned());
    let mut words: Vec<String> = words.iter().map(|w| expand(w, vars, &env)).collect();
    if config.shell {
        let line = words
            .iter()
            .map(|w| shlex::try_quote(w).map_or_else(|_| w.clone(), |q| q.into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        // Keep the command line readable: a cmd written for the shell is passed
        // as written, only the extra args are quoted.
        let script = if config.args.0.is_empty() {
            expand(&config.cmd, vars, &env)
        } else {
            line
        };
        words = vec!["/bin/sh".into(), "-c".into(), script];
    }
    let handout = sockets.handout(config);
    if let Some(handout) = &handout {
        for text in words.iter_mut().chain(env.values_mut()) {
            *text = handout.expand(text)?;
        }
        handout.add_listen_env(&mut env);
    }
    let Some(program) = words.first().cloned() else {
        return Err(SpawnError::BadCommandLine(config.cmd.clone()));
    };
    // Last, so that no `env` entry can hide it.
    let mark = Mark::new(vars.watcher, vars.wid);
    env.insert(MARK_VAR.to_string(), mark.value());

    if let Some(dir) = &config.working_dir {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(SpawnError::WorkingDir {
                    path: dir.clone(),
                    reason: "is not a directory".into(),
                })
            }
            Err(e) => {
                return Err(SpawnError::WorkingDir {
                    path: dir.clone(),
                    reason: format!("cannot be used: {e}"),
                })
            }
        }
    }
    let search_path = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let resolved = resolve_program(&program, config.working_dir.as_deref(), &search_path)?;

    let mut command = Command::new(&resolved);
    command.arg0(&program);
    command.args(&words[1..]);
    command.env_clear();
    command.envs(&env);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    command.process_group(0);
    command.kill_on_drop(false);
    command.stdin(if config.close_child_stdin {
        Stdio::null()
    } else {
        Stdio::inherit()
    });
    let stdout = output::prepare(LogStream::Stdout, &config.stdout)?;
    let stderr = output::prepare(LogStream::Stderr, &config.stderr)?;
    command.stdout(stdout.stdio);
    command.stderr(stderr.stdio);
    let setup = match child::Setup::new(config, handout)? {
        Some(setup) => Some(setup.arm(
            &mut command,
            child::Program {
                path: &resolved,
                argv: &words,
                env: &env,
            },
        )?),
        None => None,
    };
    Ok(Prepared {
        command,
        program,
        setup,
        output: Captured {
            stdout: stdout.capture,
            stderr: stderr.capture,
        },
        mark,
    })
}

impl Prepared {
    /// The agent's ends of the output that goes through it (pipes), to hand to
    /// the output service once the process runs.
    pub fn take_output(&mut self) -> Captured {
        std::mem::take(&mut self.output)
    }

    /// The mark the process gets.
    pub fn mark(&self) -> &Mark {
        &self.mark
    }

    /// Forks and executes the process, registered with the reaper.
    pub fn spawn(mut self) -> Result<OwnChild, SpawnError> {
        if let Some(setup) = self.setup.take() {
            return setup.spawn(&mut self.command, &self.program);
        }
        reaper::spawn(&mut self.command, OnDrop::Keep).map_err(|source| SpawnError::Os {
            program: self.program,
            source,
        })
    }
}

/// Finds the file `program` names: a path (relative to `working_dir`), or a name
/// looked up in `search_path`.
pub fn resolve_program(
    program: &str,
    working_dir: Option<&Path>,
    search_path: &str,
) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let path = Path::new(program);
        let path = match working_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        return check_executable(&path).map(|()| path);
    }
    let mut last_refusal = None;
    for dir in search_path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if !candidate.exists() {
            continue;
        }
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) => last_refusal = Some(e),
        }
    }
    Err(last_refusal.unwrap_or_else(|| SpawnError::NotFound {
        program: program.to_string(),
        searched: Some(search_path.to_string()),
    }))
}

fn check_executable(path: &Path) -> Result<(), SpawnError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpawnError::NotFound {
                program: path.display().to_string(),
                searched: None,
            })
        }
        Err(e) => {
            return Err(SpawnError::NotExecutable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    if meta.is_dir() {
        return Err(SpawnError::NotExecutable {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(SpawnError::NotExecutable {
            path: path.to_path_buf(),
            reason: "no execute permission (chmod +x it)".into(),
        });
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(|e| {
        SpawnError::NotExecutable {
            path: path.to_path_buf(),
            reason: format!("the agent may not execute it ({e})"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> SpawnVars<'static> {
        SpawnVars {
            node: "n1",
            watcher: "web",
            wid: 3,
        }
    }

    #[test]
    fn expands_known_variables_and_keeps_unknown_ones() {
        let mut env = BTreeMap::new();
        env.insert("PORT".to_string(), "8080".to_string());
        let out = expand(
            "--wid $(wid) $(circus.wid) $(Circus.WID) $(name)@$(node) $(env.PORT) $(circus.env.PORT) $(nope) $WID",
            &vars(),
            &env,
        );
        assert_eq!(out, "--wid 3 3 3 web@n1 8080 8080 $(nope) 3");
        assert_eq!(
            expand("unterminated $(wid", &vars(), &env),
            "unterminated $(wid"
        );
    }

    #[test]
    fn resolves_programs_with_clear_errors() {
        assert!(resolve_program("sh", None, "/usr/bin:/bin").is_ok());
        let err = resolve_program("no-such-program-xyz", None, "/usr/bin").unwrap_err();
        assert!(err.to_string().contains("not found in PATH"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let err = resolve_program(file.to_str().unwrap(), None, "").unwrap_err();
        assert!(err.to_string().contains("not executable"), "{err}");
        let err = resolve_program(dir.path().to_str().unwrap(), None, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("directory"), "{err}");
    }
}
