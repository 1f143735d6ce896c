//! A real `nodemeta` relaying a [`TestPool`], for the relay and hostile-input tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmaster_protocol::transport::Subscriber;

use crate::{bin_path, terminate, TestPool, DEADLINE};

/// A running `nodemeta`, stopped (SIGTERM, then SIGKILL) on drop; its log is
/// printed when the test failed.
pub struct NodeMeta {
    child: Option<Child>,
    /// Where it publishes.
    pub endpoint: String,
    log: PathBuf,
}

impl NodeMeta {
    /// Starts `nodemeta` for `pool`, publishing on an ipc endpoint in the pool's dir.
    pub fn start(pool: &TestPool) -> NodeMeta {
        NodeMeta::start_with(pool, &["--interval", "0.2"])
    }

    /// Starts `nodemeta` for `pool` with `args` (and `-v`).
    pub fn start_with(pool: &TestPool, args: &[&str]) -> NodeMeta {
        let endpoint = format!("ipc://{}/meta.pub", pool.dir().display());
        NodeMeta::start_at(pool, &endpoint, args)
    }

    /// Starts `nodemeta` for `pool` publishing on `endpoint`, with `args`.
    pub fn start_at(pool: &TestPool, endpoint: &str, args: &[&str]) -> NodeMeta {
        let log = pool.dir().join("nodemeta.log");
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = Command::new(bin_path("nodemeta"))
            .arg("--pools")
            .arg(pool.pools_file())
            .args(["--pool", &pool.name, "--pubsub", endpoint])
            .args(args)
            .arg("-v")
            .env_remove("RINGMASTER_POOLS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nodemeta: {e}"));
        NodeMeta {
            child: Some(child),
            endpoint: endpoint.to_string(),
            log,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Subscribes to nodemeta's endpoint, retrying until it is bound.
    pub async fn subscribe(&mut self, prefixes: &[&str]) -> Subscriber {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nodemeta exited ({status}):\n{}", self.log());
            }
            match Subscriber::connect(&self.endpoint, prefixes, Duration::from_millis(500)).await {
                Ok(sub) => return sub,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "cannot subscribe to nodemeta at {} within {DEADLINE:?}: {e}",
                    self.endpoint
                ),
            }
        }
    }
}

impl Drop for NodeMeta {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("---- log of nodemeta ----\n{}", self.log());
        }
    }
}
