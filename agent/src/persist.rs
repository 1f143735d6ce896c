//! Runtime changes survive an agent restart.
//!
//! After every `add`, `rm`, `set`, `incr`, `decr` and `reloadconfig` the agent writes
//! its watchers to `<state_dir>/<node>.state.json` atomically (temp file, fsync,
//! rename). The file also keeps the *baseline*: the watchers as the config file
//! defined them when the runtime changes were made. That is what lets a restarted
//! agent, or a `reloadconfig`, merge the two with one rule ([`plan`]):
//!
//! > what changed in the config file since it was last loaded wins; runtime
//! > changes to anything the file did not change are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::WatcherConfig;

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// What is written to the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// The node it belongs to.
    pub node: String,
    /// Watchers as the config file defined them.
    pub baseline: BTreeMap<String, WatcherConfig>,
    /// Watchers as they are at run time.
    pub watchers: BTreeMap<String, WatcherConfig>,
}

/// Where the state file lives.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// The store of node `node` in `dir`.
    pub fn new(dir: &Path, node: &str) -> Self {
        StateStore {
            path: dir.join(format!("{node}.state.json")),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state, if there is one. A file that cannot be read is moved
    /// aside (`.corrupt`) and reported, so that the agent still starts from its
    /// config.
    pub fn load(&self) -> Result<Option<StateFile>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(state) if state.version == STATE_VERSION => Ok(Some(state)),
            Ok(state) => Err(format!(
                "{} has format version {}, this agent writes {STATE_VERSION}; ignoring it",
                self.path.display(),
                state.version
            )),
            Err(e) => {
                let aside = self.path.with_extension("json.corrupt");
                let _ = std::fs::rename(&self.path, &aside);
                Err(format!(
                    "{} is not a valid state file ({e}); moved it to {} and starting from the config",
                    self.path.display(),
                    aside.display()
                ))
            }
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &StateFile) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
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

    #[test]
    fn state_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("nested"), "n1");
        assert_eq!(store.load().unwrap(), None);
        let state = StateFile {
            version: STATE_VERSION,
            node: "n1".into(),
            baseline: map(&[("a", &w("a"))]),
            watchers: map(&[("b", &w("b 'c d'"))]),
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        std::fs::write(store.path(), b"{ not json").unwrap();
        let err = store.load().unwrap_err();
        assert!(err.contains("moved it to"), "{err}");
        assert_eq!(store.load().unwrap(), None);
    }
}
