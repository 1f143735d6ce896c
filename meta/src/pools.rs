//! The pools file: named lists of nodes, their endpoints and labels.
//!
//! ```toml
//! [pools.prod]
//! timeout = 3.0                 # seconds per node for a command
//! placement = "least-loaded"    # default strategy for `add` and `incr`
//!
//! key = "/etc/ringmaster/admin.key"   # or a list: ["admin.key", "read.key"]
//!
//! [[pools.prod.nodes]]
//! name = "web-1"
//! control = "tcp://10.0.0.5:5555"
//! pubsub  = "tcp://10.0.0.5:5556"
//! labels  = { zone = "eu-1", disk = "ssd" }
//! ```
//!
//! The file is found with [`locate`]: `--pools FILE`, then `$RINGMASTER_POOLS`, then
//! `~/.config/ringmaster/pools.toml`, then `/etc/ringmaster/pools.toml`. Errors name
//! the file, the line and what to do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ringmaster_protocol::endpoint::Endpoint;
use ringmaster_protocol::names;
use ringmaster_protocol::seal::Keyring;
use serde::Deserialize;
use toml::Spanned;

use crate::placement::Strategy;

/// Environment variable naming the pools file.
pub const POOLS_ENV: &str = "RINGMASTER_POOLS";
/// System-wide pools file.
pub const SYSTEM_POOLS_FILE: &str = "/etc/ringmaster/pools.toml";
/// Per-node command timeout when the pool does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A pools file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct PoolsError {
    /// The file, when known.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl PoolsError {
    fn new(message: impl Into<String>) -> Self {
        PoolsError {
            file: None,
            line: None,
            message: message.into(),
        }
    }

    fn at(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        PoolsError {
            file: Some(file.to_path_buf()),
            line,
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{}:{line}: {}", file.display(), self.message),
            (Some(file), None) => format!("{}: {}", file.display(), self.message),
            _ => self.message.clone(),
        }
    }
}

/// One node of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name, as the agent calls itself (topics carry it).
    pub name: String,
    /// The agent's control endpoint.
    pub control: String,
    /// The agent's publish endpoint.
    pub pubsub: String,
    /// Labels for `--where` and placement (`zone = "eu-1"`).
    pub labels: BTreeMap<String, String>,
    /// The keys to talk to it with (loaded by [`resolve`]; `None`: in clear).
    pub keys: Option<Keyring>,
}

/// A named list of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// How long one node may take to answer one command.
    pub timeout: Duration,
    /// Default placement strategy.
    pub placement: Strategy,
    /// Its nodes, in file order.
    pub nodes: Vec<NodeSpec>,
    /// Key files clients of this pool use (relative paths are relative to the
    /// pools file): requests are sealed with the first, frames opened with any.
    pub key_files: Vec<PathBuf>,
}

/// Every pool of a pools file.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Pools by name.
    pub pools: BTreeMap<String, Pool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    timeout: Option<Spanned<f64>>,
    placement: Option<Spanned<String>>,
    key: Option<OneOrMany>,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    control: Spanned<String>,
    pubsub: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Finds the pools file: `explicit` (from `--pools`), else `$RINGMASTER_POOLS`, else
/// `~/.config/ringmaster/pools.toml`, else `/etc/ringmaster/pools.toml`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, PoolsError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(POOLS_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let mut tried = Vec::new();
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = config_home {
        tried.push(dir.join("ringmaster").join("pools.toml"));
    }
    tried.push(PathBuf::from(SYSTEM_POOLS_FILE));
    if let Some(found) = tried.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let list = tried
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(PoolsError::new(format!(
        "no pools file: give one with --pools FILE or ${POOLS_ENV}, or create one of {list}"
    )))
}

impl PoolsFile {
    /// Reads and checks the pools file at `path`.
    pub fn load(path: &Path) -> Result<PoolsFile, PoolsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PoolsError::at(path, None, format!("cannot read the pools file: {e}")))?;
        Self::parse(&text, path)
    }

    /// Parses and checks pools-file text; `path` is used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PoolsFile, PoolsError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            PoolsError::at(path, line, e.message().trim().to_string())
        })?;
        let mut pools = BTreeMap::new();
        for (name, raw_pool) in raw.pools {
            let pool = check_pool(&name, raw_pool, text, path)?;
            pools.insert(name, pool);
        }
        if pools.is_empty() {
            return Err(PoolsError::at(
                path,
                None,
                "no pools: add a [pools.NAME] table with [[pools.NAME.nodes]] entries",
            ));
        }
        Ok(PoolsFile {
            path: path.to_path_buf(),
            pools,
        })
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Result<&Pool, PoolsError> {
        self.pools.get(name).ok_or_else(|| {
            let known = self.pools.keys().cloned().collect::<Vec<_>>().join(", ");
            PoolsError::at(
                &self.path,
                None,
                format!("no pool '{name}' (pools in this file: {known})"),
            )
        })
    }

    /// The node called `name`, in whichever pool has it; an error when no pool or
    /// several pools have a node of that name.
    pub fn node(&self, name: &str) -> Result<(&Pool, &NodeSpec), PoolsError> {
        let found: Vec<(&Pool, &NodeSpec)> = self
            .pools
            .values()
            .flat_map(|pool| pool.nodes.iter().map(move |node| (pool, node)))
            .filter(|(_, node)| node.name == name)
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(PoolsError::at(
                &self.path,
                None,
                format!("no node '{name}' in any pool"),
            )),
            many => {
                let pools = many
                    .iter()
                    .map(|(p, _)| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(PoolsError::at(
                    &self.path,
                    None,
                    format!("node '{name}' is in several pools ({pools}): say which with --pool"),
                ))
            }
        }
    }
}

fn check_pool(name: &str, raw: RawPool, text: &str, path: &Path) -> Result<Pool, PoolsError> {
    let at =
        |offset: usize, message: String| PoolsError::at(path, Some(line_of(text, offset)), message);
    names::validate("pool", name).map_err(|e| PoolsError::at(path, None, e.to_string()))?;
    let timeout = match raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let secs = *t.get_ref();
            if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
                return Err(at(
                    t.span().start,
                    format!("pools.{name}.timeout: {secs} is not a number of seconds between 0 and 3600"),
                ));
            }
            Duration::from_secs_f64(secs)
        }
    };
    let placement = match raw.placement {
        None => Strategy::LeastLoaded,
        Some(p) => p
            .get_ref()
            .parse()
            .map_err(|e: String| at(p.span().start, format!("pools.{name}.placement: {e}")))?,
    };
    if raw.nodes.is_empty() {
        return Err(PoolsError::at(
            path,
            None,
            format!("pool '{name}' has no nodes: add [[pools.{name}.nodes]] entries"),
        ));
    }
    let mut nodes: Vec<NodeSpec> = Vec::with_capacity(raw.nodes.len());
    for node in raw.nodes {
        let node_name = node.name.get_ref().clone();
        names::validate("node", &node_name)
            .map_err(|e| at(node.name.span().start, e.to_string()))?;
        if nodes.iter().any(|n| n.name == node_name) {
            return Err(at(
                node.name.span().start,
                format!("node '{node_name}' appears twice in pool '{name}'"),
            ));
        }
        for (field, endpoint) in [("control", &node.control), ("pubsub", &node.pubsub)] {
            check_endpoint(endpoint.get_ref()).map_err(|e| {
                at(
                    endpoint.span().start,
                    format!("node '{node_name}': {field} {e}"),
                )
            })?;
        }
        nodes.push(NodeSpec {
            name: node_name,
            control: node.control.into_inner(),
            pubsub: node.pubsub.into_inner(),
            labels: node.labels,
            keys: None,
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let key_files = match raw.key {
        None => Vec::new(),
        Some(OneOrMany::One(file)) => vec![base.join(file)],
        Some(OneOrMany::Many(files)) => files.into_iter().map(|f| base.join(f)).collect(),
    };
    Ok(Pool {
        name: name.to_string(),
        timeout,
        placement,
        nodes,
        key_files,
    })
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    match Endpoint::parse(endpoint) {
        Ok(Endpoint::Tcp { port: 0, .. }) => Err(format!(
            "endpoint '{endpoint}' has port 0: give the agent's real port"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// What a client of a pool targets, as its command line says it: the pools file
/// (`--pools`, else found by [`locate`]), the pool (`--pool`, else the pool that has
/// the first `--node`), some nodes (`--node`) and label conditions (`--where`).
/// Key files given on the command line (`key_files`) replace the pool's. Returns
/// the pool and the selected nodes with their keys loaded, or an error to show the
/// user.
pub fn resolve(
    pools_file: Option<&Path>,
    pool: Option<&str>,
    only: &[String],
    filters: &[String],
    key_files: &[PathBuf],
) -> Result<(Pool, Vec<NodeSpec>), String> {
    let path = locate(pools_file).map_err(|e| e.to_string())?;
    let file = PoolsFile::load(&path).map_err(|e| e.to_string())?;
    let pool = match (pool, only.first()) {
        (Some(name), _) => file.pool(name).map_err(|e| e.to_string())?,
        (None, Some(first)) => file.node(first).map_err(|e| e.to_string())?.0,
        (None, None) => return Err("--where needs --pool NAME or --node NAME".into()),
    };
    let filters = filters
        .iter()
        .map(|f| f.parse::<LabelFilter>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut pool = pool.clone();
    pool.attach_keys(key_files)?;
    let nodes = pool.select(only, &filters).map_err(|e| e.to_string())?;
    Ok((pool, nodes))
}

/// A condition on a node's labels: `zone=eu-1` or `zone!=eu-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    /// The label.
    pub key: String,
    /// The value compared with.
    pub value: String,
    /// True for `!=`.
    pub negate: bool,
}

impl LabelFilter {
    /// True when `labels` satisfy the condition (a missing label is never equal).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let equal = labels.get(&self.key) == Some(&self.value);
        equal != self.negate
    }
}

impl FromStr for LabelFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, value, negate) = if let Some((k, v)) = text.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = text.split_once('=') {
            (k, v, false)
        } else {
            return Err(format!(
                "'{text}' is not LABEL=VALUE or LABEL!=VALUE (e.g. zone=eu-1)"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("'{text}' has no label name before '='"));
        }
        Ok(LabelFilter {
            key: key.to_string(),
            value: value.trim().to_string(),
            negate,
        })
    }
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negate { "!=" } else { "=" };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

impl Pool {
    /// Loads the keys to talk to this pool with, `overrides` (from `--key`) when
    /// given, else the pool's `key` files, and gives them to every node. Returns
    /// them (`None` when there are none).
    pub fn attach_keys(&mut self, overrides: &[PathBuf]) -> Result<Option<Keyring>, String> {
        let files = if overrides.is_empty() {
            &self.key_files
        } else {
            overrides
        };
        let keys = Keyring::load(files).map_err(|e| format!("pool '{}': {e}", self.name))?;
        for node in &mut self.nodes {
            node.keys = keys.clone();
        }
        Ok(keys)
    }

    /// The nodes a command targets: those named in `only` (all when empty) that
    /// satisfy every filter, in file order. Naming a node the pool does not have,
    /// or selecting nothing, is an error that says what the pool has.
    pub fn select(
        &self,
        only: &[String],
        filters: &[LabelFilter],
    ) -> Result<Vec<NodeSpec>, PoolsError> {
        for name in only {
            if !self.nodes.iter().any(|n| &n.name == name) {
                return Err(PoolsError::new(format!(
                    "pool '{}' has no node '{name}' (its nodes: {})",
                    self.name,
                    self.node_names()
                )));
            }
        }
        let chosen: Vec<NodeSpec> = self
            .nodes
            .iter()
            .filter(|n| only.is_empty() || only.contains(&n.name))
            .filter(|n| filters.iter().all(|f| f.matches(&n.labels)))
            .cloned()
            .collect();
        if chosen.is_empty() {
            let conditions = filters
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and ");
            return Err(PoolsError::new(format!(
                "no node of pool '{}' matches {conditions} (its nodes: {})",
                self.name,
                self.describe_nodes()
            )));
        }
        Ok(chosen)
    }

    fn node_names(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn describe_nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let labels = n
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                if labels.is_empty() {
                    n.name.clone()
                } else {
                    format!("{} [{labels}]", n.name)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
[pools.prod]
timeout = 2.5
placement = "spread:zone"

[[pools.prod.nodes]]
name = "web-1"
control = "tcp://10.0.0.5:5555"
pubsub = "tcp://10.0.0.5:5556"
labels = { zone = "eu-1", disk = "ssd" }

[[pools.prod.nodes]]
name = "web-2"
control = "ipc:///run/ringmaster/web-2.sock"
pubsub = "ipc:///run/ringmaster/web-2.pub"
labels = { zone = "eu-2" }

[pools.dev]
[[pools.dev.nodes]]
name = "laptop"
control = "tcp://127.0.0.1:5555"
pubsub = "tcp://127.0.0.1:5556"
"#;

    fn parse(text: &str) -> Result<PoolsFile, PoolsError> {
        PoolsFile::parse(text, Path::new("pools.toml"))
    }

    #[test]
    fn reads_pools_nodes_and_defaults() {
        let file = parse(FILE).unwrap();
        let prod = file.pool("prod").unwrap();
        assert_eq!(prod.timeout, Duration::from_millis(2500));
        assert_eq!(prod.placement, Strategy::Spread("zone".into()));
        assert_eq!(prod.nodes.len(), 2);
        assert_eq!(prod.nodes[0].labels["disk"], "ssd");
        let dev = file.pool("dev").unwrap();
        assert_eq!(dev.timeout, DEFAULT_TIMEOUT);
        assert_eq!(dev.placement, Strategy::LeastLoaded);
        assert_eq!(file.node("laptop").unwrap().0.name, "dev");
        let err = file.pool("staging").unwrap_err().to_string();
        assert!(
            err.contains("no pool 'staging'") && err.contains("dev, prod"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let bad = FILE.replace("tcp://10.0.0.5:5556", "10.0.0.5:5556");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.starts_with("pools.toml:9:"), "{err}");
        assert!(err.contains("node 'web-1': pubsub"), "{err}");

        let dup = FILE.replace("name = \"web-2\"", "name = \"web-1\"");
        let err = parse(&dup).unwrap_err().to_string();
        assert!(
            err.contains(":13:") && err.contains("appears twice"),
            "{err}"
        );

        let unknown = FILE.replace("timeout = 2.5", "timeout = 2.5\nretries = 3");
        let err = parse(&unknown).unwrap_err().to_string();
        assert!(err.contains(":4:") && err.contains("retries"), "{err}");

        let strategy = FILE.replace("spread:zone", "busiest");
        let err = parse(&strategy).unwrap_err().to_string();
        assert!(err.contains("least-loaded"), "{err}");

        let reserved = FILE.replace("name = \"laptop\"", "name = \"pool\"");
        assert!(parse(&reserved)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn selects_by_name_and_label() {
        let file = parse(FILE).unwrap();
        let prod = file.pool("prod").unwrap();
        let names = |nodes: Vec<NodeSpec>| nodes.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(names(prod.select(&[], &[]).unwrap()), ["web-1", "web-2"]);
        let zone: LabelFilter = "zone=eu-2".parse().unwrap();
        assert_eq!(names(prod.select(&[], &[zone]).unwrap()), ["web-2"]);
        let not_ssd: LabelFilter = "disk!=ssd".parse().unwrap();
        assert_eq!(names(prod.select(&[], &[not_ssd]).unwrap()), ["web-2"]);
        let err = prod.select(&["web-9".into()], &[]).unwrap_err().to_string();
        assert!(
            err.contains("no node 'web-9'") && err.contains("web-1, web-2"),
            "{err}"
        );
        let none: LabelFilter = "zone=us-1".parse().unwrap();
        let err = prod.select(&[], &[none]).unwrap_err().to_string();
        assert!(
            err.contains("zone=us-1") && err.contains("web-1 [disk=ssd,zone=eu-1]"),
            "{err}"
        );
        assert!("zone".parse::<LabelFilter>().is_err());
    }

    #[test]
    fn explicit_path_wins() {
        let path = locate(Some(Path::new("/tmp/x.toml"))).unwrap();
        assert_eq!(path, PathBuf::from("/tmp/x.toml"));
    }
}
