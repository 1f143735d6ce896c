//! What every Ringmaster binary shares at its edge, and nothing else:
//!
//! - [`logging`]: where log lines go and how they look (human-readable on a terminal,
//!   syslog-style priority prefixes under journald, or JSON lines);
//! - [`generate`]: shell completions and man pages generated from each binary's clap
//!   definition, for `packaging/`.
//!
//! It knows nothing of the protocol, processes or pools.

pub mod generate;
pub mod logging;
