//! Runtime changes survive an agent restart.
//!
//! The agent keeps the desired state of its watchers in its state directory
//! (file names: [`crate::state_dir`]) as two files:
//!
//! - a **snapshot**, `<stem>.state.json`: every watcher, written atomically (temp
//!   file, fsync, rename, fsync of the directory);
//! - a **journal**, `<stem>.journal`: one line per change since that snapshot
//!   (`put` a watcher's config, `del` a watcher), appended and `fdatasync`ed before
//!   the agent acts on the change.
//!
//! A change costs one small append whatever the number of watchers (a journal,
//! not a file per watcher: one `fdatasync` per change and no directory fsync,
//! and `reloadconfig`, which changes the baseline of every watcher at once, is one
//! snapshot). When the journal grows past [`COMPACT_FACTOR`] times the snapshot
//! (and at every start), the snapshot is rewritten and the journal started afresh;
//! that keeps the cost per change amortised O(1).
//!
//! Every journal line carries a checksum. Replay stops at the first line that is
//! not whole and correct: a record torn by a crash mid-write is ignored, never the
//! file. The journal names the snapshot generation it follows, so a journal left
//! behind by a compaction that crashed half-way is recognised and ignored.
//!
//! A change that cannot be written (read-only or full disk) is an error for the
//! caller, who then does not act on it: the store's own copy ([`StateStore::state`])
//! is rolled back, nothing half-written stays in the journal.
//!
//! The snapshot also keeps the *baseline*: the watchers as the config file
//! defined them when the runtime changes were made. That is what lets a restarted
//! agent, or a `reloadconfig`, merge the two with one rule ([`plan`]):
//!
//! > what changed in the config file since it was last loaded wins; runtime
//! > changes to anything the file did not change are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::WatcherConfig;

/// Version of the snapshot format (1: no generation, read as generation 0).
pub const STATE_VERSION: u32 = 2;

/// The journal is compacted when it is larger than this many times the snapshot.
pub const COMPACT_FACTOR: u64 = 4;

/// ... and larger than this, so that a small state is not rewritten at every change.
pub const COMPACT_MIN: u64 = 64 * 1024;

/// What is written to the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// The node it belongs to.
    pub node: String,
    /// Bumped by every snapshot; the journal names the one it follows.
    #[serde(default)]
    pub generation: u64,
    /// Watchers as the config file defined them.
    pub baseline: BTreeMap<String, WatcherConfig>,
    /// Watchers as they are at run time.
    pub watchers: BTreeMap<String, WatcherConfig>,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// The first line: the snapshot generation the journal follows.
    Begin {
        /// That generation.
        generation: u64,
    },
    /// A watcher was added or changed: its whole config.
    Put {
        /// The watcher.
        name: String,
        /// Its config.
        config: Box<WatcherConfig>,
    },
    /// A watcher was removed.
    Del {
        /// The watcher.
        name: String,
    },
}

/// FNV-1a, 64 bits: the journal's line checksum (not cryptographic: it finds
/// torn and garbled lines).
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a, 32 bits (names the state files after the config path).
pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// One journal line: `<checksum, 16 hex> <json>\n`.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(entry)?;
    let mut line = format!("{:016x} ", fnv64(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// What a journal holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// The generation its `Begin` line names (None: empty, or no `Begin` first).
    pub generation: Option<u64>,
    /// The changes, in order.
    pub entries: Vec<Entry>,
    /// Bytes up to the end of the last good line.
    pub good_len: u64,
    /// Why replay stopped before the end, if it did.
    pub stopped: Option<String>,
}

/// Reads a journal: every whole, correct line up to the first that is not.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    let mut offset = 0usize;
    let mut number = 0usize;
    while offset < bytes.len() {
        number += 1;
        let rest = &bytes[offset..];
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            out.stopped = Some(format!(
                "line {number} is incomplete (torn by a crash while it was written); ignored"
            ));
            break;
        };
        match decode_line(&rest[..end]) {
            Ok(Entry::Begin { generation }) if number == 1 => out.generation = Some(generation),
            Ok(Entry::Begin { .. }) => {
                out.stopped = Some(format!(
                    "line {number} is a second Begin; ignored from there"
                ));
                break;
            }
            Ok(_) if number == 1 => {
                out.stopped = Some("line 1 is not a Begin line; journal ignored".into());
                break;
            }
            Ok(entry) => out.entries.push(entry),
            Err(why) => {
                out.stopped = Some(format!("line {number} {why}; ignored from there"));
                break;
            }
        }
        offset += end + 1;
        out.good_len = offset as u64;
    }
    out
}

fn decode_line(line: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(line).map_err(|_| "is not UTF-8".to_string())?;
    let (sum, json) = text
        .split_once(' ')
        .ok_or_else(|| "has no checksum".to_string())?;
    let sum = u64::from_str_radix(sum, 16).map_err(|_| "has a bad checksum field".to_string())?;
    if sum != fnv64(json.as_bytes()) {
        return Err("fails its checksum".into());
    }
    serde_json::from_str(json).map_err(|e| format!("is not a journal entry ({e})"))
}

/// Applies one journal entry to a state. Returns what it replaced (for a rollback).
fn apply(state: &mut StateFile, entry: &Entry) -> Option<WatcherConfig> {
    match entry {
        Entry::Begin { .. } => None,
        Entry::Put { name, config } => state.watchers.insert(name.clone(), (**config).clone()),
        Entry::Del { name } => state.watchers.remove(name),
    }
}

fn undo(state: &mut StateFile, entry: &Entry, previous: Option<WatcherConfig>) {
    let name = match entry {
        Entry::Begin { .. } => return,
        Entry::Put { name, .. } | Entry::Del { name } => name,
    };
    match previous {
        Some(config) => state.watchers.insert(name.clone(), config),
        None => state.watchers.remove(name),
    };
}

/// Replaces every invalid watcher of a loaded `state` by the config file's
/// definition (`file`), or drops it when the file has none; an invalid baseline
/// entry is dropped (the file's definition then counts as changed, and wins).
/// Returns one warning per entry, naming `origin`, the watcher and the key.
pub fn sanitize(
    state: &mut StateFile,
    file: &BTreeMap<String, WatcherConfig>,
    origin: &Path,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let bad: Vec<(String, String)> = state
        .watchers
        .iter()
        .filter_map(|(name, w)| w.validate().err().map(|e| (name.clone(), e.to_string())))
        .collect();
    for (name, why) in bad {
        let instead = match file.get(&name) {
            Some(config) => {
                state.watchers.insert(name.clone(), config.clone());
                "using the config file's definition"
            }
            None => {
                state.watchers.remove(&name);
                "the config file has none, so the watcher is dropped"
            }
        };
        warnings.push(format!(
            "{}: watcher '{name}': {why}; {instead}",
            origin.display()
        ));
    }
    let bad_baseline: Vec<String> = state
        .baseline
        .iter()
        .filter(|(_, w)| w.validate().is_err())
        .map(|(name, _)| name.clone())
        .collect();
    for name in bad_baseline {
        state.baseline.remove(&name);
        warnings.push(format!(
            "{}: the baseline of watcher '{name}' is invalid; the config file's definition wins",
            origin.display()
        ));
    }
    warnings
}

/// A change that could not be written.
#[derive(Debug)]
pub struct PersistError {
    /// The file it was written to.
    pub file: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write {}: {}", self.file.display(), self.source)
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What [`StateStore::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The state, if there was one.
    pub state: Option<StateFile>,
    /// What to log as warnings (corrupt files, a torn journal line).
    pub warnings: Vec<String>,
    /// What to log as information (a migration, the journal replayed).
    pub notes: Vec<String>,
}

/// The state files of one agent, and the desired state they hold.
#[derive(Debug)]
pub struct StateStore {
    snapshot: PathBuf,
    journal: PathBuf,
    /// The file an older agent wrote (`<node>.state.json`), to migrate from.
    legacy: Option<PathBuf>,
    /// Read from `legacy`: renamed once the new form is written.
    migrating: bool,
    /// The desired state, as the files hold it.
    state: StateFile,
    /// The journal, open for appending.
    handle: Option<File>,
    /// The journal's length up to its last good line.
    journal_len: u64,
    snapshot_len: u64,
    /// The files do not hold `state`: the next change writes a snapshot.
    dirty: bool,
}

impl StateStore {
    /// The store whose snapshot is `snapshot` and journal `journal`, migrating
    /// from `legacy` when only that exists.
    pub fn new(snapshot: PathBuf, journal: PathBuf, legacy: Option<PathBuf>, node: &str) -> Self {
        let legacy = legacy.filter(|l| *l != snapshot);
        StateStore {
            snapshot,
            journal,
            legacy,
            migrating: false,
            state: StateFile {
                version: STATE_VERSION,
                node: node.to_string(),
                ..StateFile::default()
            },
            handle: None,
            journal_len: 0,
            snapshot_len: 0,
            dirty: true,
        }
    }

    /// The snapshot's path.
    pub fn path(&self) -> &Path {
        &self.snapshot
    }

    /// The journal's path.
    pub fn journal_path(&self) -> &Path {
        &self.journal
    }

    /// The desired state as written.
    pub fn state(&self) -> &StateFile {
        &self.state
    }

    /// Reads the snapshot and replays the journal. A snapshot that cannot be
    /// read is moved aside (`.corrupt`) and reported, so that the agent still
    /// starts from its config. The next change (the agent's start) writes a new
    /// snapshot.
    pub fn load(&mut self) -> Loaded {
        let mut loaded = Loaded::default();
        let mut from = self.snapshot.clone();
        let mut text = read_optional(&self.snapshot, &mut loaded);
        if text.is_none() {
            if let Some(legacy) = &self.legacy {
                text = read_optional(legacy, &mut loaded);
                if text.is_some() {
                    from = legacy.clone();
                    self.migrating = true;
                    loaded.notes.push(format!(
                        "migrating the state of an older agent from {} to {}",
                        legacy.display(),
                        self.snapshot.display()
                    ));
                }
            }
        }
        let Some(text) = text else {
            self.dirty = true;
            return loaded;
        };
        let mut state = match serde_json::from_str::<StateFile>(&text) {
            Ok(state) if state.version == 1 || state.version == STATE_VERSION => state,
            Ok(state) => {
                loaded.warnings.push(format!(
                    "{} has format version {}, this agent reads 1 and {STATE_VERSION}; ignoring it",
                    from.display(),
                    state.version
                ));
                self.migrating = false;
                return loaded;
            }
            Err(e) => {
                let aside = PathBuf::from(format!("{}.corrupt", from.display()));
                let _ = std::fs::rename(&from, &aside);
                loaded.warnings.push(format!(
                    "{} is not a valid state file ({e}); moved it to {} and starting from the config",
                    from.display(),
                    aside.display()
                ));
                self.migrating = false;
                return loaded;
            }
        };
        self.snapshot_len = text.len() as u64;
        if !self.migrating {
            self.replay_journal(&mut state, &mut loaded);
        }
        state.version = STATE_VERSION;
        self.state = state.clone();
        self.dirty = true;
        loaded.state = Some(state);
        loaded
    }

    fn replay_journal(&self, state: &mut StateFile, loaded: &mut Loaded) {
        let bytes = match std::fs::read(&self.journal) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                loaded.warnings.push(format!(
                    "cannot read {}: {e}; the changes since the last snapshot are lost",
                    self.journal.display()
                ));
                return;
            }
        };
        let replayed = replay(&bytes);
        match replayed.generation {
            Some(g) if g == state.generation => {}
            Some(_) => {
                // Left by a compaction that stopped after its snapshot: that
                // snapshot holds these changes already.
                loaded.notes.push(format!(
                    "{} follows an older snapshot; ignored",
                    self.journal.display()
                ));
                return;
            }
            None => {
                if let Some(why) = &replayed.stopped {
                    loaded
                        .warnings
                        .push(format!("{}: {why}", self.journal.display()));
                }
                return;
            }
        }
        for entry in &replayed.entries {
            apply(state, entry);
        }
        if let Some(why) = &replayed.stopped {
            loaded
                .warnings
                .push(format!("{}: {why}", self.journal.display()));
        }
        if !replayed.entries.is_empty() {
            loaded.notes.push(format!(
                "replayed {} change(s) from {}",
                replayed.entries.len(),
                self.journal.display()
            ));
        }
    }

    /// Records that watcher `name` now has `config`.
    pub fn put(&mut self, name: &str, config: &WatcherConfig) -> Result<(), PersistError> {
        self.change(Entry::Put {
            name: name.to_string(),
            config: Box::new(config.clone()),
        })
    }

    /// Records that watcher `name` is gone.
    pub fn del(&mut self, name: &str) -> Result<(), PersistError> {
        self.change(Entry::Del {
            name: name.to_string(),
        })
    }

    /// Replaces the whole state (the agent's start, `reloadconfig`) by a new
    /// snapshot. On failure nothing changed, on disk or here.
    pub fn reset(
        &mut self,
        baseline: BTreeMap<String, WatcherConfig>,
        watchers: BTreeMap<String, WatcherConfig>,
    ) -> Result<(), PersistError> {
        let old_baseline = std::mem::replace(&mut self.state.baseline, baseline);
        let old_watchers = std::mem::replace(&mut self.state.watchers, watchers);
        let written = self.compact();
        if written.is_err() {
            self.state.baseline = old_baseline;
            self.state.watchers = old_watchers;
        }
        written
    }

    /// The agent's start: `baseline` and `watchers` become the state, and are
    /// written as a new snapshot. When that fails the state is kept all the same
    /// (it is what runs), and the next change tries the snapshot again.
    pub fn begin(
        &mut self,
        baseline: BTreeMap<String, WatcherConfig>,
        watchers: BTreeMap<String, WatcherConfig>,
    ) -> Result<(), PersistError> {
        self.state.baseline = baseline;
        self.state.watchers = watchers;
        self.dirty = true;
        self.compact()
    }

    fn change(&mut self, entry: Entry) -> Result<(), PersistError> {
        let previous = apply(&mut self.state, &entry);
        let written = if self.dirty {
            self.compact()
        } else {
            self.append(&entry)
        };
        if let Err(e) = written {
            undo(&mut self.state, &entry, previous);
            return Err(e);
        }
        if !self.dirty && self.journal_len > COMPACT_MIN.max(COMPACT_FACTOR * self.snapshot_len) {
            if let Err(e) = self.compact() {
                tracing::warn!("{e}; the changes stay in {}", self.journal.display());
            }
        }
        Ok(())
    }

    fn journal_error(&self, source: std::io::Error) -> PersistError {
        PersistError {
            file: self.journal.clone(),
            source,
        }
    }

    /// Appends one line and makes it durable; on failure the journal is cut back
    /// to its last good line.
    fn append(&mut self, entry: &Entry) -> Result<(), PersistError> {
        let line = encode_entry(entry).map_err(|e| self.journal_error(std::io::Error::other(e)))?;
        if self.handle.is_none() {
            match OpenOptions::new().append(true).open(&self.journal) {
                Ok(file) => self.handle = Some(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.dirty = true;
                    return self.compact();
                }
                Err(e) => return Err(self.journal_error(e)),
            }
        }
        let Some(file) = self.handle.as_mut() else {
            return Err(self.journal_error(std::io::Error::other("journal not open")));
        };
        match file.write_all(&line).and_then(|()| file.sync_data()) {
            Ok(()) => {
                self.journal_len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let cut = file
                    .set_len(self.journal_len)
                    .and_then(|()| file.sync_data());
                if cut.is_err() {
                    // A torn line may stay at the end: start a new journal next time.
                    self.handle = None;
                    self.dirty = true;
                }
                Err(self.journal_error(e))
            }
        }
    }

    /// Writes `state` as a new snapshot and starts an empty journal after it. It
    /// has failed (and changed nothing) unless the snapshot was installed; a
    /// journal that cannot be started only makes the next change a snapshot too.
    fn compact(&mut self) -> Result<(), PersistError> {
        let generation = self.state.generation + 1;
        self.state.generation = generation;
        let body = match serde_json::to_vec_pretty(&self.state) {
            Ok(body) => body,
            Err(e) => {
                self.state.generation -= 1;
                return Err(PersistError {
                    file: self.snapshot.clone(),
                    source: std::io::Error::other(e),
                });
            }
        };
        if let Err(source) = write_atomically(&self.snapshot, &body) {
            self.state.generation -= 1;
            return Err(PersistError {
                file: self.snapshot.clone(),
                source,
            });
        }
        self.snapshot_len = body.len() as u64;
        self.handle = None;
        match self.start_journal(generation) {
            Ok(len) => {
                self.journal_len = len;
                self.dirty = false;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot start {}: {e}; the next change writes a snapshot again",
                    self.journal.display()
                );
                self.dirty = true;
            }
        }
        if self.migrating {
            self.migrating = false;
            if let Some(legacy) = &self.legacy {
                let done = PathBuf::from(format!("{}.migrated", legacy.display()));
                match std::fs::rename(legacy, &done) {
                    Ok(()) => tracing::info!(
                        "migrated {} to {} (the old file is now {})",
                        legacy.display(),
                        self.snapshot.display(),
                        done.display()
                    ),
                    Err(e) => tracing::warn!(
                        "migrated {} to {}, but cannot rename the old file: {e}",
                        legacy.display(),
                        self.snapshot.display()
                    ),
                }
            }
        }
        Ok(())
    }

    fn start_journal(&mut self, generation: u64) -> std::io::Result<u64> {
        let line = encode_entry(&Entry::Begin { generation }).map_err(std::io::Error::other)?;
        write_atomically(&self.journal, &line)?;
        self.handle = Some(OpenOptions::new().append(true).open(&self.journal)?);
        Ok(line.len() as u64)
    }
}

fn read_optional(path: &Path, loaded: &mut Loaded) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            loaded
                .warnings
                .push(format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Writes `body` to `path` through a temp file (fsync, rename, fsync of the
/// directory). The temp file is removed on failure.
fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// What to do with one watcher when the config file is (re)applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new watcher.
    Add(WatcherConfig),
    /// The watcher's definition changed in the file.
    Replace(WatcherConfig),
    /// The watcher was removed from the file.
    Remove,
}

/// Merges a config file into the running watchers. `file` is the new file,
/// `baseline` the file as last applied, `runtime` the watchers as they are now.
/// Returns the changes to make, by watcher name; watchers not listed stay as they
/// are.
pub fn plan(
    file: &BTreeMap<String, WatcherConfig>,
    baseline: &BTreeMap<String, WatcherConfig>,
    runtime: &BTreeMap<String, WatcherConfig>,
) -> BTreeMap<String, Change> {
    let names: BTreeSet<&String> = file.keys().chain(baseline.keys()).collect();
    let mut changes = BTreeMap::new();
    for name in names {
        let change = match (file.get(name), baseline.get(name), runtime.get(name)) {
            // Unchanged in the file: the runtime state stands, even if it was removed.
            (Some(new), Some(old), _) if new == old => None,
            (Some(new), _, Some(current)) if new == current => None,
            (Some(new), _, Some(_)) => Some(Change::Replace(new.clone())),
            (Some(new), _, None) => Some(Change::Add(new.clone())),
            (None, Some(_), Some(_)) => Some(Change::Remove),
            (None, _, None) | (None, None, Some(_)) => None,
        };
        if let Some(change) = change {
            changes.insert(name.clone(), change);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(cmd: &str) -> WatcherConfig {
        WatcherConfig::with_cmd(cmd).unwrap()
    }

    fn map(items: &[(&str, &WatcherConfig)]) -> BTreeMap<String, WatcherConfig> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).clone()))
            .collect()
    }

    #[test]
    fn unchanged_file_keeps_runtime_changes() {
        let a = w("a");
        let mut a5 = a.clone();
        a5.numprocesses = 5;
        let added = w("added");
        let file = map(&[("a", &a), ("gone", &a)]);
        let runtime = map(&[("a", &a5), ("added", &added)]);
        // 'a' was scaled at run time, 'gone' removed at run time, 'added' added.
        assert!(plan(&file, &file, &runtime).is_empty());
    }

    #[test]
    fn file_changes_win() {
        let a = w("a");
        let a2 = w("a2");
        let b = w("b");
        let mut a5 = a.clone();
        a5.numprocesses = 5;
        let baseline = map(&[("a", &a), ("old", &b)]);
        let file = map(&[("a", &a2), ("new", &b)]);
        let runtime = map(&[("a", &a5), ("old", &b)]);
        let changes = plan(&file, &baseline, &runtime);
        assert_eq!(changes.get("a"), Some(&Change::Replace(a2.clone())));
        assert_eq!(changes.get("new"), Some(&Change::Add(b.clone())));
        assert_eq!(changes.get("old"), Some(&Change::Remove));
        assert_eq!(changes.len(), 3);
    }

    fn store(dir: &Path) -> StateStore {
        StateStore::new(
            dir.join("n1-0000abcd.state.json"),
            dir.join("n1-0000abcd.journal"),
            Some(dir.join("n1.state.json")),
            "n1",
        )
    }

    #[test]
    fn changes_go_to_the_journal_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir.path().join("nested"));
        assert_eq!(s.load().state, None);
        s.reset(map(&[("a", &w("a"))]), map(&[("a", &w("a"))]))
            .unwrap();
        let snapshot = std::fs::read(s.path()).unwrap();
        s.put("b", &w("b 'c d'")).unwrap();
        s.del("a").unwrap();
        // The snapshot was not rewritten: the changes are journal lines.
        assert_eq!(std::fs::read(s.path()).unwrap(), snapshot);
        let mut again = store(&dir.path().join("nested"));
        let loaded = again.load();
        let state = loaded.state.unwrap();
        assert_eq!(state.baseline, map(&[("a", &w("a"))]));
        assert_eq!(state.watchers, map(&[("b", &w("b 'c d'"))]));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn a_torn_last_line_is_ignored_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.load();
        s.reset(BTreeMap::new(), BTreeMap::new()).unwrap();
        s.put("a", &w("a")).unwrap();
        s.put("b", &w("b")).unwrap();
        // Cut the last line in the middle, as a crash mid-write would.
        let bytes = std::fs::read(s.journal_path()).unwrap();
        std::fs::write(s.journal_path(), &bytes[..bytes.len() - 10]).unwrap();
        let mut again = store(dir.path());
        let loaded = again.load();
        assert_eq!(loaded.state.unwrap().watchers, map(&[("a", &w("a"))]));
        assert!(
            loaded.warnings[0].contains("incomplete"),
            "{:?}",
            loaded.warnings
        );
        // The agent goes on from there: the next start compacts, changes append.
        again
            .reset(BTreeMap::new(), again.state().watchers.clone())
            .unwrap();
        again.put("c", &w("c")).unwrap();
        let names: Vec<String> = store(dir.path())
            .load()
            .state
            .unwrap()
            .watchers
            .into_keys()
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn replay_stops_at_a_garbled_line() {
        let mut bytes = encode_entry(&Entry::Begin { generation: 3 }).unwrap();
        let good = bytes.len() as u64;
        let mut bad = encode_entry(&Entry::Del { name: "x".into() }).unwrap();
        bad[20] ^= 1;
        bytes.extend_from_slice(&bad);
        bytes.extend(encode_entry(&Entry::Del { name: "y".into() }).unwrap());
        let r = replay(&bytes);
        assert_eq!(r.generation, Some(3));
        assert!(r.entries.is_empty());
        assert_eq!(r.good_len, good);
        assert!(r.stopped.unwrap().contains("checksum"));
        assert_eq!(replay(b"").generation, None);
    }

    #[test]
    fn a_journal_of_an_older_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.load();
        s.reset(BTreeMap::new(), map(&[("a", &w("a"))])).unwrap();
        s.put("b", &w("b")).unwrap();
        let old_journal = std::fs::read(s.journal_path()).unwrap();
        // A compaction that installed its snapshot, then crashed.
        s.reset(BTreeMap::new(), map(&[("c", &w("c"))])).unwrap();
        std::fs::write(s.journal_path(), old_journal).unwrap();
        let state = store(dir.path()).load().state.unwrap();
        assert_eq!(state.watchers, map(&[("c", &w("c"))]));
    }

    #[test]
    fn the_journal_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        s.load();
        s.reset(BTreeMap::new(), BTreeMap::new()).unwrap();
        for i in 0..500 {
            s.put(&format!("w{i}"), &w("sleep 1")).unwrap();
        }
        let journal = std::fs::metadata(s.journal_path()).unwrap().len();
        let snapshot = std::fs::metadata(s.path()).unwrap().len();
        assert!(journal <= COMPACT_MIN.max(COMPACT_FACTOR * snapshot) + 4096);
        assert_eq!(store(dir.path()).load().state.unwrap().watchers.len(), 500);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // The state directory's place is taken by a file: nothing can be written.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let mut s = store(&blocked);
        s.load();
        assert!(s.reset(BTreeMap::new(), map(&[("a", &w("a"))])).is_err());
        assert!(s.state().watchers.is_empty());
        let err = s.put("b", &w("b")).unwrap_err();
        assert!(err.to_string().contains("blocked"), "{err}");
        assert!(s.state().watchers.is_empty());
    }

    #[test]
    fn a_legacy_state_file_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = StateFile {
            version: 1,
            node: "n1".into(),
            generation: 0,
            baseline: map(&[("a", &w("a"))]),
            watchers: map(&[("b", &w("b"))]),
        };
        std::fs::write(
            dir.path().join("n1.state.json"),
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
        let mut s = store(dir.path());
        let loaded = s.load();
        assert!(loaded.notes[0].contains("migrating"), "{:?}", loaded.notes);
        let state = loaded.state.unwrap();
        assert_eq!(state.watchers, legacy.watchers);
        s.reset(state.baseline, state.watchers).unwrap();
        assert!(!dir.path().join("n1.state.json").exists());
        assert!(dir.path().join("n1.state.json.migrated").exists());
        assert_eq!(
            store(dir.path()).load().state.unwrap().watchers,
            legacy.watchers
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        std::fs::write(s.path(), b"{ not json").unwrap();
        let loaded = s.load();
        assert!(
            loaded.warnings[0].contains("moved it to"),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(store(dir.path()).load().state, None);
    }

    #[test]
    fn invalid_loaded_watchers_give_way_to_the_file() {
        let mut bad = w("a");
        bad.graceful_timeout = -1.0;
        let mut state = StateFile {
            watchers: map(&[("a", &bad), ("b", &bad), ("c", &w("c"))]),
            baseline: map(&[("a", &bad)]),
            ..StateFile::default()
        };
        let file = map(&[("a", &w("a"))]);
        let warnings = sanitize(&mut state, &file, Path::new("/s/n.state.json"));
        assert_eq!(state.watchers, map(&[("a", &w("a")), ("c", &w("c"))]));
        assert!(state.baseline.is_empty());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("/s/n.state.json")
                && warnings[0].contains("watcher 'a'")
                && warnings[0].contains("graceful_timeout"),
            "{warnings:?}"
        );
    }
}
