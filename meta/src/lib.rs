//! Ringmaster pools: one interface for many nodes.
//!
//! A pool is a named list of agents (see [`pools`]). This crate keeps no state of
//! its own between calls: every operation connects to the agents it needs, asks,
//! acts, and reports per node.
//!
//! - [`pools`]: the pools file, node selection by name and label;
//! - [`fanout`]: one command on many nodes at once, with a per-node timeout and a
//!   per-node outcome ([`fanout::Verdict`] sums them up);
//! - [`batch`]: rolling restarts and reloads, N nodes at a time;
//! - [`placement`]: choosing nodes for new processes from live node snapshots;
//! - [`template`]: `{{node}}`, `{{first}}`, `{{label.NAME}}` in `exec` commands;
//! - [`upgrade`]: upgrading agents in place, one or a pool batch by batch;
//! - [`relay`]: what `nodemeta` runs: every agent's stream republished on one
//!   endpoint, with pool totals and stale-node detection.
//!
//! Like every Ringmaster client, it runs its ZeroMQ sockets on a current-thread
//! tokio runtime (zmq.rs is not safe on the multi-thread one).

pub mod batch;
pub mod fanout;
pub mod placement;
pub mod pools;
pub mod relay;
pub mod template;
pub mod upgrade;

pub use fanout::{NodeError, NodeResult, Outcome, Verdict};
pub use placement::Strategy;
pub use pools::{LabelFilter, NodeSpec, Pool, PoolsFile};
