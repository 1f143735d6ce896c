//! Output of supervised processes: the lines `logs` returns and the chunks
//! published on `log.<node>.<watcher>.<stream>`.
//!
//! Only output that goes through the agent (a file, or `capture`) is seen here;
//! output a process writes straight to the agent's own stream is not.
//!
//! | topic | body |
//! | --- | --- |
//! | `log.<node>.<watcher>.<stream>` | [`LogBatch`] |
//!
//! Lines are numbered per watcher and stream ([`LogLine::seq`]), so that a
//! follower notices lines it did not receive, and `logs` followed by a
//! subscription neither loses nor repeats a line ([`LogReport::next`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Topic prefix of output lines.
pub const LOG_PREFIX: &str = "log";

/// The topic of output lines: `log.<node>.<watcher>.<stream>`.
pub fn log_topic(node: &str, watcher: &str, stream: LogStream) -> String {
    format!("{LOG_PREFIX}.{node}.{watcher}.{stream}")
}

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
    /// Number of the line in its watcher's stream: 1 for the first line the
    /// agent read since it started, +1 for every line after it (whether or not
    /// it was kept or published).
    #[serde(default)]
    pub seq: u64,
}

/// Where the next line of each stream of a watcher will be numbered from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    /// `seq` of the next stdout line.
    pub stdout: u64,
    /// `seq` of the next stderr line.
    pub stderr: u64,
}

impl LogCursor {
    /// The next `seq` of `stream`.
    pub fn get(&self, stream: LogStream) -> u64 {
        match stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        }
    }

    /// Sets the next `seq` of `stream`.
    pub fn set(&mut self, stream: LogStream, seq: u64) {
        match stream {
            LogStream::Stdout => self.stdout = seq,
            LogStream::Stderr => self.stderr = seq,
        }
    }
}

/// Lines of one stream of one watcher, as published on
/// `log.<node>.<watcher>.<stream>` (a few at a time, oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The node that published it.
    pub node: String,
    /// The agent's run (see [`LogReport::run`]).
    pub run: u64,
    /// The watcher.
    pub watcher: String,
    /// The stream of every line.
    pub stream: LogStream,
    /// The lines, oldest first.
    pub lines: Vec<LogLine>,
}

impl LogBatch {
    /// The topic this batch is published under.
    pub fn topic(&self) -> String {
        log_topic(&self.node, &self.watcher, self.stream)
    }
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
    /// Where the next line of each stream will be numbered from: a follower
    /// that subscribed before asking for `logs` prints published lines from
    /// here on.
    #[serde(default)]
    pub next: LogCursor,
    /// Identifies the agent's run (when it started, in milliseconds since the
    /// epoch): line numbers start again at 1 when it restarts.
    #[serde(default)]
    pub run: u64,
}
