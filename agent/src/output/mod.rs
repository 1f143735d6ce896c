//! What happens to the output of supervised processes.
//!
//! Each stream of a watcher (`stdout`, `stderr`; see [`spec::StreamConfig`]) goes
//! to one of:
//!
//! - `inherit` (default): the child writes straight to the agent's own stream.
//!   The agent never sees it; it costs nothing.
//! - `null`: discarded.
//! - `capture`: through the agent, which keeps the recent lines for `logs`,
//!   publishes them on `log.<node>.<watcher>.<stream>`, and writes them to its
//!   own stream prefixed with `WATCHER.WID | `.
//! - a file: through the agent, which appends to it with rotation ([`file`]),
//!   and keeps and publishes the lines as for `capture`.
//!
//! Output that goes through the agent is read from a pipe by **one dedicated
//! thread** ([`OutputService`]): its own small `current_thread` runtime, never
//! the control runtime, so that a process writing as fast as it can (`yes`)
//! never delays a command. Reads go into one buffer shared by every stream;
//! lines are assembled per process (a line longer than [`MAX_LINE`] is cut);
//! everything is bounded, and what cannot be kept up with is dropped and
//! counted ([`ringmaster_protocol::logs::LogReport::dropped_bytes`]), never
//! silently:
//!
//! - files get every byte (a process that writes faster than the disk takes it
//!   waits on its pipe, as it would writing the file itself);
//! - each watcher keeps its last [`RING_LINES`] lines ([`RING_BYTES`] at most)
//!   for `logs`;
//! - publishing is limited to [`STREAM_PUBLISH_BYTES_PER_SECOND`] per watcher
//!   stream and [`PUBLISH_BYTES_PER_SECOND`] for the whole agent, and goes
//!   through a queue of [`LOG_QUEUE`] batches; lines beyond any of these are
//!   dropped and counted (a PUB socket does not tell whether anyone subscribed, so lines
//!   are published, and their cost bounded, whether or not anyone listens);
//! - `capture`'s copy to the agent's own stream goes through a thread of its
//!   own and a bounded queue, so that a slow terminal or journal never stalls the
//!   others; what does not fit is dropped and counted.
//!
//! When a process exits, its pipes are read to their end before they are
//! closed, so its last lines always reach the file; at shutdown the agent waits
//! (a little) for every pipe to be drained.

pub mod file;
mod service;
pub mod spec;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use nix::fcntl::OFlag;
use ringmaster_protocol::logs::LogStream;

pub use service::{
    HandedPipe, OutputService, ReopenReport, ReopenedFile, LOG_QUEUE, MAX_LINE,
    PUBLISH_BYTES_PER_SECOND, RING_BYTES, RING_LINES, STREAM_PUBLISH_BYTES_PER_SECOND,
};
pub use spec::StreamConfig;

use crate::config::Output;
use crate::spawn::SpawnError;

/// The agent's end of one captured stream of a process about to start.
#[derive(Debug)]
pub struct CaptureEnd {
    stream: LogStream,
    reader: OwnedFd,
    spec: StreamConfig,
    /// The output file, opened when the process was prepared (to report an
    /// unwritable file as a spawn error).
    file: Option<File>,
}

impl CaptureEnd {
    /// The read end of a stream that a previous program image handed over (an
    /// upgrade in place), for a process of a watcher whose stream is `spec`.
    /// `None` when the watcher no longer captures that stream: then the pipe is
    /// closed.
    pub fn inherited(stream: LogStream, reader: OwnedFd, spec: &StreamConfig) -> Option<Self> {
        matches!(spec.to, Output::Capture | Output::File(_)).then(|| CaptureEnd {
            stream,
            reader,
            spec: spec.clone(),
            file: None,
        })
    }
}

/// The captured streams of one process (none for `inherit` and `null`).
#[derive(Debug, Default)]
pub struct Captured {
    /// Its stdout, when it goes through the agent.
    pub stdout: Option<CaptureEnd>,
    /// Its stderr, when it goes through the agent.
    pub stderr: Option<CaptureEnd>,
}

impl Captured {
    /// True when nothing goes through the agent.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }
}

/// What a child gets as one output stream, and what the agent keeps of it.
#[derive(Debug)]
pub struct PreparedStream {
    /// Given to the child.
    pub stdio: Stdio,
    /// Kept by the agent, when the stream goes through it.
    pub capture: Option<CaptureEnd>,
}

/// Sets up one output stream of a process: the child's end, and for output that
/// goes through the agent a pipe whose read end the agent keeps (close-on-exec, so
/// that no other child inherits it). A file is opened here, so that an unwritable
/// file is a clear spawn error naming it.
pub fn prepare(stream: LogStream, spec: &StreamConfig) -> Result<PreparedStream, SpawnError> {
    let file = match &spec.to {
        Output::Inherit => {
            return Ok(PreparedStream {
                stdio: Stdio::inherit(),
                capture: None,
            })
        }
        Output::Null => {
            return Ok(PreparedStream {
                stdio: Stdio::null(),
                capture: None,
            })
        }
        Output::Capture => None,
        Output::File(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| SpawnError::Output {
                    stream: stream.name(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
        ),
    };
    let (reader, writer) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Output {
            stream: stream.name(),
            path: spec
                .file()
                .map_or_else(|| "capture".into(), |p| p.to_path_buf()),
            reason: format!("cannot make a pipe for it: {e}"),
        })?;
    Ok(PreparedStream {
        stdio: Stdio::from(writer),
        capture: Some(CaptureEnd {
            stream,
            reader,
            spec: spec.clone(),
            file,
        }),
    })
}
