//! Ringmaster's wire protocol.
//!
//! Everything that crosses a ZeroMQ socket between a `nodeagent` and its clients is
//! defined here, and nowhere else:
//!
//! - [`message`]: typed requests ([`Request`], [`Command`]) and replies ([`Reply`],
//!   [`Response`], [`ErrorReply`]);
//! - [`event`]: what an agent publishes ([`Event`]) and the topics it publishes under;
//! - [`stats`]: the live statistics it publishes ([`stats::Stat`]);
//! - [`logs`]: the output lines of supervised processes, as `logs` returns them
//!   and as they are published on `log.<node>.<watcher>.<stream>`;
//! - [`codec`]: the one place where bodies are encoded and decoded, with the protocol
//!   version and the maximum frame size;
//! - [`seal`]: keys, sealed frames (authenticated encryption bound to a timestamp
//!   and a nonce), the replay window, and the agent's [`seal::Gate`];
//! - [`names`]: the rules for node and watcher names, which appear in topics;
//! - [`endpoint`]: the endpoints Ringmaster binds and connects to, and which stay
//!   on the host;
//! - `transport` (feature `transport`, on by default): async ZeroMQ helpers, a DEALER
//!   [`transport::Client`] with per-request timeouts, the agent's ROUTER
//!   [`transport::ControlServer`], a [`transport::Publisher`] and a
//!   [`transport::Subscriber`].
//!
//! The protocol knows nothing of processes: signals travel as [`Signal`] names and
//! watcher options as [`OptionValue`] maps; only the agent maps them to the OS.

pub mod codec;
pub mod endpoint;
pub mod event;
pub mod logs;
pub mod message;
pub mod names;
pub mod seal;
pub mod stats;
#[cfg(feature = "transport")]
pub mod transport;

pub use codec::{Codec, DecodeError, MAX_FRAME_BYTES};
pub use event::{Event, EventKind, ExitInfo};
pub use message::{
    Command, ErrorKind, ErrorReply, OptionMap, OptionValue, Reply, Request, Response, Signal,
};

/// Version of the wire protocol. A peer speaking another version gets a
/// [`ErrorKind::VersionMismatch`] error naming both versions.
pub const PROTOCOL_VERSION: u16 = 1;

/// Version of the Ringmaster release this crate belongs to.
pub const RINGMASTER_VERSION: &str = env!("CARGO_PKG_VERSION");
