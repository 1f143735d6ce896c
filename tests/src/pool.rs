//! A pool of real agents on one machine, for the pool tests: each agent in its own
//! temp dir with `ipc://` endpoints, its own node name and labels, and a pools file
//! naming them all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::{bin_path, TestAgent};

/// One node of a [`TestPool`]: its name and its `[agent]` lines (labels, options).
#[derive(Debug, Clone, Copy)]
pub struct NodeDef<'a> {
    /// Node name.
    pub name: &'a str,
    /// Labels, as the inside of a TOML inline table: `zone = "eu-1"`.
    pub labels: &'a str,
}

/// Several agents and the pools file that names them.
pub struct TestPool {
    dir: TempDir,
    /// Pool name in the pools file.
    pub name: String,
    /// The agents, in the order given.
    pub agents: Vec<TestAgent>,
}

impl TestPool {
    /// Starts one agent per node, each with `[agent]` `extra` lines (e.g.
    /// `allow_exec = true`) and the `watchers` tables, and writes a pools file for
    /// pool `name` with `timeout` seconds per node.
    pub fn start(name: &str, nodes: &[NodeDef<'_>], extra: &str, watchers: &str) -> TestPool {
        let dir = tempfile::Builder::new()
            .prefix("ringmaster-pool-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let agents = nodes
            .iter()
            .map(|node| {
                TestAgent::start(
                    node.name,
                    &format!("labels = {{ {} }}\n{extra}\n{watchers}", node.labels),
                )
            })
            .collect();
        let pool = TestPool {
            dir,
            name: name.to_string(),
            agents,
        };
        pool.write_pools_file(nodes, 2.0);
        pool
    }

    /// Rewrites the pools file with `timeout` seconds per node.
    pub fn write_pools_file(&self, nodes: &[NodeDef<'_>], timeout: f64) {
        let mut text = format!("[pools.{}]\ntimeout = {timeout}\n", self.name);
        for (node, agent) in nodes.iter().zip(&self.agents) {
            text.push_str(&format!(
                "\n[[pools.{}.nodes]]\nname = \"{}\"\ncontrol = \"{}\"\npubsub = \"{}\"\nlabels = {{ {} }}\n",
                self.name, node.name, agent.control, agent.pubsub, node.labels
            ));
        }
        std::fs::write(self.pools_file(), text)
            .unwrap_or_else(|e| panic!("cannot write the pools file: {e}"));
    }

    /// Path of the pools file.
    pub fn pools_file(&self) -> PathBuf {
        self.dir.path().join("pools.toml")
    }

    /// The pool's temp dir (pools file, anything else a test wants to keep).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent of node `name`.
    pub fn agent(&self, name: &str) -> &TestAgent {
        self.agents
            .iter()
            .find(|a| a.node == name)
            .unwrap_or_else(|| panic!("no node {name} in the test pool"))
    }

    /// The agent of node `name`, to stop or restart it.
    pub fn agent_mut(&mut self, name: &str) -> &mut TestAgent {
        self.agents
            .iter_mut()
            .find(|a| a.node == name)
            .unwrap_or_else(|| panic!("no node {name} in the test pool"))
    }

    /// Runs `nodectl --pools FILE --pool NAME ARGS...`.
    pub fn nodectl(&self, args: &[&str]) -> Output {
        Command::new(bin_path("nodectl"))
            .arg("--pools")
            .arg(self.pools_file())
            .arg("--pool")
            .arg(&self.name)
            .args(args)
            .env_remove("RINGMASTER_POOLS")
            .output()
            .unwrap_or_else(|e| panic!("cannot run nodectl: {e}"))
    }
}
