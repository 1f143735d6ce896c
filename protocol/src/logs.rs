//! Output of supervised processes: the lines `logs` returns and the chunks
//! published on `log.<node>.<watcher>.<stream>`.
//!
//! Only output that goes through the agent (a file, or `capture`) is seen here;
//! output a process writes straight to the agent's own stream is not.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`, as in topics.
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LogStream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" | "out" => Ok(LogStream::Stdout),
            "stderr" | "err" => Ok(LogStream::Stderr),
            other => Err(format!("unknown stream '{other}': use stdout or stderr")),
        }
    }
}

/// One line a process wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the agent read it, seconds since the Unix epoch.
    pub time: f64,
    /// The process.
    pub pid: u32,
    /// Its worker id.
    pub wid: u32,
    /// Which stream.
    pub stream: LogStream,
    /// The line, without its newline (lossy UTF-8).
    pub text: String,
}

/// The reply to `logs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogReport {
    /// The watcher.
    pub watcher: String,
    /// Recent lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Bytes of this watcher's output the agent could not keep up with and
    /// dropped since it started (never silently: also in the agent's log).
    pub dropped_bytes: u64,
}
