//! What every Ringmaster binary shares at its edge, and nothing else:
//!
//! - [`logging`]: where log lines go and how they look (human-readable on a terminal,
//!   syslog-style priority prefixes under journald, or JSON lines);
//! - [`generate`]: shell completions and man pages generated from each binary's clap
//!   definition, for `packaging/`;
//! - [`clock`]: wall-clock times as people read them (the host's time zone, read
//!   from its zone files, and a small `strftime`), for stamping and rotating
//!   process output.
//!
//! It knows nothing of the protocol, processes or pools.

pub mod clock;
pub mod generate;
pub mod logging;
