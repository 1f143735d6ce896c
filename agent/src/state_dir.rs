//! The agent's state directory: the names of its files, the lock that keeps a
//! second agent off them, and what the agent does with them when it starts
//! (restore the runtime changes, stop what a crashed agent left running).
//!
//! Files, in `state_dir`, for node `N` and a config file whose canonical path
//! hashes (FNV-1a, 32 bits) to `H` (`<stem>` is `N-H`, or `N` without a config
//! file), so that two agents with different configs on one host never share a
//! file:
//!
//! | file | what |
//! |------|------|
//! | `<stem>.lock` | held (`flock`) by the running agent for its whole life; holds its pid |
//! | `<stem>.state.json` | snapshot of the desired state ([`crate::persist`]) |
//! | `<stem>.journal` | changes since the snapshot ([`crate::persist`]) |
//! | `<stem>.pids` | the live processes ([`crate::survivors`]) |
//!
//! An older agent wrote `N.state.json`; when only that exists it is read once and
//! written in the new form (then renamed `N.state.json.migrated`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use crate::config::{Config, WatcherConfig};
use crate::persist::{fnv32, plan, sanitize, Change, StateStore};
use crate::survivors::{self, PidJournal};

/// The name every state file of an agent starts with: the node, and a hash of
/// the canonical path of its config file when it has one.
pub fn stem(node: &str, config: Option<&Path>) -> String {
    match config {
        Some(path) => format!("{node}-{:08x}", fnv32(path.as_os_str().as_bytes())),
        None => node.to_string(),
    }
}

/// `path` made absolute with its links resolved, as far as it exists.
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Where the files of one agent are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    dir: PathBuf,
    node: String,
    stem: String,
}

impl StatePaths {
    /// The files of node `node` with config file `config` in `dir`.
    pub fn new(dir: &Path, node: &str, config: Option<&Path>) -> Self {
        let config = config.map(canonical);
        StatePaths {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            stem: stem(node, config.as_deref()),
        }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.stem))
    }

    /// The lock file.
    pub fn lock(&self) -> PathBuf {
        self.file("lock")
    }

    /// The snapshot.
    pub fn snapshot(&self) -> PathBuf {
        self.file("state.json")
    }

    /// The journal of changes.
    pub fn journal(&self) -> PathBuf {
        self.file("journal")
    }

    /// The pid journal.
    pub fn pids(&self) -> PathBuf {
        self.file("pids")
    }

    /// What an upgrade in place hands to the next program image.
    pub fn handover(&self) -> PathBuf {
        self.file("upgrade.json")
    }

    /// The state file of an older agent.
    pub fn legacy(&self) -> PathBuf {
        self.dir.join(format!("{}.state.json", self.node))
    }
}

/// The lock on an agent's state, held until it is dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

/// Takes the lock at `path`, writing this process's pid into it. Refused, naming
/// the file and the holder's pid, when another agent holds it. A lock file that
/// cannot be created (read-only state directory) is reported and the agent runs
/// without it: it could not write its state there anyway.
pub fn take_lock(path: &Path) -> anyhow::Result<Option<StateLock>> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let (file, writable) = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
    {
        Ok(file) => (file, true),
        Err(first) => match File::open(path) {
            Ok(file) => (file, false),
            Err(_) => {
                warn!(
                    "cannot create the lock file {}: {first}; running without it, so a second \
                     agent on this state would not be noticed",
                    path.display()
                );
                return Ok(None);
            }
        },
    };
    let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, nix::Error::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .map_or_else(
                    || "another nodeagent (pid unknown)".to_string(),
                    |pid| format!("another nodeagent (pid {pid})"),
                );
            anyhow::bail!(
                "the state of this agent is in use: {holder} holds the lock {}. Two agents on one \
                 state would overwrite each other's state and processes: stop that agent first, \
                 or give this one another state_dir or node name",
                path.display()
            );
        }
        Err((_, e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display());
        }
    };
    if writable {
        let pid = format!("{}\n", std::process::id());
        let written = locked
            .set_len(0)
            .and_then(|()| locked.write_all_at(pid.as_bytes(), 0));
        if let Err(e) = written {
            warn!("cannot write the pid into {}: {e}", path.display());
        }
    }
    Ok(Some(StateLock { _file: locked }))
}

/// An agent's state directory, opened at start.
#[derive(Debug)]
pub struct StateDir {
    /// Its files.
    pub paths: StatePaths,
    /// The lock, held for the agent's life.
    pub lock: Option<StateLock>,
    /// The desired state.
    pub store: StateStore,
    /// The watchers to run: the config merged with the runtime changes.
    pub runtime: BTreeMap<String, WatcherConfig>,
    /// Where live processes are recorded.
    pub pids: PidJournal,
}

/// Opens the state directory of `config`: takes the lock (refused when another
/// agent holds it), restores the runtime changes (validated: an invalid entry
/// gives way to the config file's), writes a fresh snapshot, and stops the
/// processes a previous agent left running. Call it before binding anything.
pub fn open(config: &Config) -> anyhow::Result<StateDir> {
    open_keeping(config, &BTreeSet::new())
}

/// [`open`] for the program image after an upgrade in place: the processes in
/// `handed` are this agent's own (handed over), not a crashed agent's.
pub fn open_keeping(config: &Config, handed: &BTreeSet<u32>) -> anyhow::Result<StateDir> {
    let node = &config.agent.node;
    let paths = StatePaths::new(&config.agent.state_dir, node, config.path.as_deref());
    let lock = take_lock(&paths.lock())?;
    let mut store = StateStore::new(
        paths.snapshot(),
        paths.journal(),
        Some(paths.legacy()),
        node,
    );
    let runtime = restore(&mut store, &config.watchers);
    if let Err(e) = store.begin(config.watchers.clone(), runtime.clone()) {
        warn!(
            "{e}; changes (add, rm, set, incr, decr, reloadconfig) will be refused until the \
             state directory is writable"
        );
    }
    let boot = survivors::boot_id();
    if lock.is_some() {
        survivors::recover(&paths.pids(), &boot, handed, |watcher| {
            runtime.get(watcher).map_or(survivors::STOP_CAP, |w| {
                Duration::try_from_secs_f64(w.graceful_timeout).unwrap_or(survivors::STOP_CAP)
            })
        });
    } else {
        // Without the lock, those processes may be another live agent's.
        warn!(
            "not looking for processes left by a previous agent: this agent holds no lock on {}",
            paths.lock().display()
        );
    }
    let pids = PidJournal::start(paths.pids(), boot);
    Ok(StateDir {
        paths,
        lock,
        store,
        runtime,
        pids,
    })
}

/// What the agent of `config` would run, read from its state directory without
/// the lock and without writing anything: the check a new binary makes before
/// an upgrade in place takes over.
pub fn inspect(config: &Config) -> BTreeMap<String, WatcherConfig> {
    let node = &config.agent.node;
    let paths = StatePaths::new(&config.agent.state_dir, node, config.path.as_deref());
    let mut store = StateStore::new(
        paths.snapshot(),
        paths.journal(),
        Some(paths.legacy()),
        node,
    );
    restore(&mut store, &config.watchers)
}

/// The state in `store`, checked and merged with the config file's watchers
/// (`file`) by [`plan`].
fn restore(
    store: &mut StateStore,
    file: &BTreeMap<String, WatcherConfig>,
) -> BTreeMap<String, WatcherConfig> {
    let loaded = store.load();
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    for note in &loaded.notes {
        info!("{note}");
    }
    let Some(mut saved) = loaded.state else {
        return file.clone();
    };
    for warning in sanitize(&mut saved, file, store.path()) {
        warn!("{warning}");
    }
    let changes = plan(file, &saved.baseline, &saved.watchers);
    let mut runtime = saved.watchers;
    apply_plan(&mut runtime, changes);
    info!(
        file = %store.path().display(),
        "restored runtime changes: {} watcher(s)",
        runtime.len()
    );
    runtime
}

/// Makes the changes of [`plan`] in `runtime`.
pub fn apply_plan(
    runtime: &mut BTreeMap<String, WatcherConfig>,
    changes: BTreeMap<String, Change>,
) {
    for (name, change) in changes {
        match change {
            Change::Add(cfg) | Change::Replace(cfg) => {
                runtime.insert(name, cfg);
            }
            Change::Remove => {
                runtime.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_node_and_a_stable_hash_of_the_config_path() {
        let a = stem("web", Some(Path::new("/etc/ringmaster/a.toml")));
        let b = stem("web", Some(Path::new("/etc/ringmaster/b.toml")));
        assert_ne!(a, b);
        assert_eq!(a, stem("web", Some(Path::new("/etc/ringmaster/a.toml"))));
        assert!(a.starts_with("web-") && a.len() == "web-".len() + 8, "{a}");
        // FNV-1a of the bytes: the same in every build and version.
        assert_eq!(stem("n", Some(Path::new("a"))), "n-e40c292c");
        assert_eq!(stem("web", None), "web");
        let paths = StatePaths::new(Path::new("/s"), "web", None);
        assert_eq!(paths.snapshot(), PathBuf::from("/s/web.state.json"));
        assert_eq!(paths.legacy(), paths.snapshot());
        assert_eq!(paths.lock(), PathBuf::from("/s/web.lock"));
    }

    #[test]
    fn the_canonical_path_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "").unwrap();
        let direct = StatePaths::new(dir.path(), "n", Some(&file));
        std::fs::create_dir(dir.path().join("x")).unwrap();
        let via_dir = StatePaths::new(dir.path(), "n", Some(&dir.path().join("x/../agent.toml")));
        assert_eq!(direct, via_dir);
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_file_and_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.lock");
        let first = take_lock(&path).unwrap();
        assert!(first.is_some());
        let err = take_lock(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(take_lock(&path).unwrap().is_some());
    }
}
