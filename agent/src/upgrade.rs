//! Upgrade in place: the agent re-executes itself (a new binary, the same pid),
//! and every process it supervises keeps running, with its pid, its output pipes
//! and the listening sockets it shares.
//!
//! Because the pid stays, the processes stay the agent's children: the next
//! program image reaps them like any child (their exit codes are not lost), and
//! systemd sees the same main process. What crosses the `exec` is a set of
//! descriptors that are not close-on-exec (the agent's two endpoints, the
//! `[sockets]`, the read end of each process's captured output) and a
//! [`Handover`] file in the state directory that says what each one is.
//!
//! The order, in the old image ([`crate::supervisor`] and `lib.rs`):
//! 1. [`check_binary`]: the new binary exists, is executable and is a
//!    `nodeagent` (its `--version`);
//! 2. every watcher's command lock is taken once (no command is half-done), then
//!    the agent freezes: it spawns nothing and refuses changes, and answers
//!    everything else;
//! 3. the handover is written, and the new binary must accept it together with
//!    the config file and the state directory ([`check_resume`], which runs
//!    `nodeagent --config FILE --check-upgrade HANDOVER`);
//! 4. the reply goes out; the endpoints stop accepting (connections wait in the
//!    kernel's queue of the listening socket, which stays open), libzmq sends
//!    what it has queued, and [`exec`] runs the new binary with
//!    `--resume-from HANDOVER`.
//!
//! When a check fails, nothing was changed: the agent thaws and says why. The
//! new image takes everything over in [`crate::run`]: it reads the handover,
//! skips the handed-over processes when it looks for what a crashed agent left,
//! binds its endpoints on the inherited sockets, and adopts each process.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringmaster_protocol::logs::LogStream;
use ringmaster_protocol::message::WatcherState;
use ringmaster_protocol::seal::ReplayMemory;
use serde::{Deserialize, Serialize};

use crate::sockets::HandedSocket;

/// The version of the handover file's format; an image that does not know it
/// refuses the upgrade at the check, before anything changed.
pub const FORMAT: u32 = 1;

/// How long the new binary may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the new binary may take to check the config, state and handover.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an upgrade was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The binary is not usable.
    #[error("{path}: {reason}")]
    Binary {
        /// The binary.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The new binary refused the config, the state or the handover.
    #[error("{path} refused to take over: {reason}")]
    Refused {
        /// The binary.
        path: PathBuf,
        /// What it said.
        reason: String,
    },
    /// The agent cannot be handed over now.
    #[error("{0}")]
    Busy(String),
    /// Writing or reading the handover failed.
    #[error("{0}")]
    Io(String),
}

/// One of the agent's two endpoints, with its listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedEndpoint {
    /// The endpoint as bound (with the real port).
    pub endpoint: String,
    /// The listening socket's descriptor.
    pub fd: RawFd,
}

/// One process that keeps running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedProcess {
    /// Its pid.
    pub pid: u32,
    /// Its slot.
    pub wid: u32,
    /// When it started (seconds since the epoch).
    pub started: f64,
    /// How long it has run, at the handover (seconds).
    pub ran: f64,
    /// The read end of its captured stdout, when it goes through the agent.
    pub stdout: Option<RawFd>,
    /// The read end of its captured stderr.
    pub stderr: Option<RawFd>,
    /// The mark its descendants carry (see [`crate::lineage`]).
    #[serde(default)]
    pub mark: Option<String>,
}

impl HandedProcess {
    /// The descriptor of `stream`, if it is captured.
    pub fn stream(&self, stream: LogStream) -> Option<RawFd> {
        match stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        }
    }
}

/// One watcher's running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedWatcher {
    /// Its name.
    pub name: String,
    /// Its state (the new image keeps it).
    pub state: WatcherState,
    /// Its processes.
    pub processes: Vec<HandedProcess>,
}

/// Everything the next program image needs to take over (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// [`FORMAT`].
    pub format: u32,
    /// The version that wrote it.
    pub from_version: String,
    /// Upgrades in place before this one.
    pub upgrades: u32,
    /// How long the agent's process had been running (seconds), so that
    /// `uptime` goes on.
    pub uptime: f64,
    /// The next event sequence number, so that subscribers see no reset.
    pub seq: u64,
    /// The control endpoint.
    pub control: HandedEndpoint,
    /// The publish endpoint.
    pub pubsub: HandedEndpoint,
    /// The `[sockets]`.
    pub sockets: Vec<HandedSocket>,
    /// Every watcher with processes, or that is not stopped.
    pub watchers: Vec<HandedWatcher>,
    /// What the control endpoint's replay guard remembers (an agent with keys),
    /// written right before the `exec`.
    #[serde(default)]
    pub replay: Option<ReplayMemory>,
}

impl Handover {
    /// Every descriptor it hands over.
    pub fn descriptors(&self) -> Vec<RawFd> {
        let mut fds = vec![self.control.fd, self.pubsub.fd];
        fds.extend(self.sockets.iter().map(|s| s.fd));
        for w in &self.watchers {
            for p in &w.processes {
                fds.extend(p.stdout);
                fds.extend(p.stderr);
            }
        }
        fds
    }

    /// The pids it hands over.
    pub fn pids(&self) -> BTreeSet<u32> {
        self.watchers
            .iter()
            .flat_map(|w| w.processes.iter().map(|p| p.pid))
            .collect()
    }

    /// Checks what can be checked without touching anything: the format, and
    /// that no descriptor or pid appears twice.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "handover format {} (this nodeagent reads format {FORMAT})",
                self.format
            ));
        }
        let fds = self.descriptors();
        let mut seen = BTreeSet::new();
        for fd in &fds {
            if *fd <= 2 {
                return Err(format!("descriptor {fd} cannot be handed over"));
            }
            if !seen.insert(*fd) {
                return Err(format!("descriptor {fd} is handed over twice"));
            }
        }
        let mut pids = BTreeSet::new();
        for w in &self.watchers {
            for p in &w.processes {
                if p.pid <= 1 || !pids.insert(p.pid) {
                    return Err(format!(
                        "watcher '{}': pid {} is not a process to hand over",
                        w.name, p.pid
                    ));
                }
            }
        }
        Ok(())
    }

    /// Processes handed over.
    pub fn process_count(&self) -> usize {
        self.watchers.iter().map(|w| w.processes.len()).sum()
    }

    /// Writes it to `path` (replacing what is there, atomically).
    pub fn write(&self, path: &Path) -> Result<(), UpgradeError> {
        let text = serde_json::to_vec(self)
            .map_err(|e| UpgradeError::Io(format!("cannot write the handover: {e}")))?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&partial);
                UpgradeError::Io(format!("cannot write the handover {}: {e}", path.display()))
            })
    }

    /// Reads and validates the handover at `path`.
    pub fn read(path: &Path) -> Result<Handover, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let handover: Handover = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a handover: {e}", path.display()))?;
        handover.validate()?;
        Ok(handover)
    }
}

/// The version in what `nodeagent --version` printed (`nodeagent 0.1.0`).
pub fn parse_version(stdout: &str) -> Option<&str> {
    let line = stdout.lines().next()?.trim();
    let version = line.strip_prefix("nodeagent ")?.trim();
    (!version.is_empty() && !version.contains(' ')).then_some(version)
}

/// The binary an upgrade runs: `given` (absolute) or the running one.
pub fn binary_path(given: Option<&str>, running: &Path) -> Result<PathBuf, UpgradeError> {
    match given {
        None => Ok(running.to_path_buf()),
        Some(text) => {
            let path = PathBuf::from(text);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(UpgradeError::Binary {
                    path,
                    reason: "give the new binary as an absolute path on the node".to_string(),
                })
            }
        }
    }
}

/// Checks that `path` is an executable `nodeagent` and returns its version.
pub async fn check_binary(path: &Path) -> Result<String, UpgradeError> {
    let fail = |reason: String| UpgradeError::Binary {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("no such file".to_string()),
        _ => fail(format!("cannot read it: {e}")),
    })?;
    if !meta.is_file() {
        return Err(fail("not a regular file".to_string()));
    }
    if nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_err() {
        return Err(fail(
            "not executable by the agent (chmod +x it, or check its mount's noexec)".to_string(),
        ));
    }
    let output = run(
        tokio::process::Command::new(path).arg("--version"),
        VERSION_TIMEOUT,
    )
    .await
    .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match (output.status.success(), parse_version(&stdout)) {
        (true, Some(version)) => Ok(version.to_string()),
        _ => Err(fail(format!(
            "not a nodeagent binary: `{} --version` {} and printed {:?}",
            path.display(),
            describe(output.status),
            first_line(&stdout)
        ))),
    }
}

/// Runs `binary --config CONFIG --check-upgrade HANDOVER`: the new binary reads
/// the config file, the state directory and the handover as it will at the
/// switch, and must exit 0.
pub async fn check_resume(
    binary: &Path,
    config: &Path,
    handover: &Path,
) -> Result<(), UpgradeError> {
    let output = run(
        tokio::process::Command::new(binary)
            .arg("--config")
            .arg(config)
            .arg("--check-upgrade")
            .arg(handover),
        CHECK_TIMEOUT,
    )
    .await
    .map_err(|e| UpgradeError::Refused {
        path: binary.to_path_buf(),
        reason: format!("cannot run its check: {e}"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(UpgradeError::Refused {
        path: binary.to_path_buf(),
        reason: if said.is_empty() {
            format!("its check {}", describe(output.status))
        } else {
            said
        },
    })
}

/// Runs a short command to its end, its stdin closed, killing it after `limit`.
/// It is spawned through [`crate::reaper`], so that the orphan reaper leaves its
/// status to us.
async fn run(
    command: &mut tokio::process::Command,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    use tokio::io::AsyncReadExt;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = crate::reaper::spawn(command, crate::reaper::OnDrop::Kill)?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let finished = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(pipe) = stdout.as_mut() {
                let _ = pipe.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(pipe) = stderr.as_mut() {
                let _ = pipe.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await?;
        Ok(std::process::Output {
            status,
            stdout: out,
            stderr: err,
        })
    };
    match tokio::time::timeout(limit, finished).await {
        Ok(output) => output,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("it did not finish within {} s", limit.as_secs()),
        )),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// The arguments of the next image: this one's, without an earlier
/// `--resume-from`, then `--resume-from HANDOVER`.
pub fn next_args(current: &[OsString], handover: &Path) -> Vec<OsString> {
    let mut args = Vec::with_capacity(current.len() + 2);
    let mut skip = false;
    for arg in current {
        if skip {
            skip = false;
            continue;
        }
        if arg == "--resume-from" {
            skip = true;
            continue;
        }
        if arg.as_bytes().starts_with(b"--resume-from=") {
            continue;
        }
        args.push(arg.clone());
    }
    args.push("--resume-from".into());
    args.push(handover.as_os_str().to_owned());
    args
}

/// Executes `binary` with `args` in place of this program, `keep` open across
/// the `exec` (every other descriptor of the agent is close-on-exec) and `env`
/// added. Returns only when the `exec` failed.
pub fn exec(
    binary: &Path,
    args: &[OsString],
    env: &[(String, String)],
    keep: &[RawFd],
) -> std::io::Error {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::unix::process::CommandExt;
    for fd in keep {
        let borrowed = unsafe_borrow(*fd);
        if let Err(e) = fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty())) {
            return std::io::Error::other(format!("cannot keep descriptor {fd} open: {e}"));
        }
    }
    let mut command = std::process::Command::new(binary);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let error = command.exec();
    // Still here: close them on a later exec again.
    for fd in keep {
        let _ = fcntl(unsafe_borrow(*fd), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    error
}

/// A borrowed view of a descriptor the agent holds open itself.
fn unsafe_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    #[allow(unsafe_code)]
    // SAFETY: only called on descriptors of the handover, which the agent holds
    // open (as `OwnedFd`s kept in the upgrade plan) until `exec` replaces it.
    unsafe {
        std::os::fd::BorrowedFd::borrow_raw(fd)
    }
}

/// Takes ownership of descriptor `fd`, inherited across the `exec` as the
/// handover says. Checks that it is open; each descriptor of a validated
/// handover is taken once.
pub fn inherit(fd: RawFd) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(unsafe_borrow(fd), FcntlArg::F_GETFD)
        .map_err(|e| std::io::Error::other(format!("descriptor {fd} was not inherited: {e}")))?;
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is open (checked above), the handover names it once
    // (`Handover::validate`), and nothing else in this image owns it: it was not
    // close-on-exec and nothing opened before this call can have received it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    debug_assert_eq!(owned.as_raw_fd(), fd);
    Ok(owned)
}

/// Adds the replay guard's `memory` to the handover at `path`, right before
/// the `exec` (the guard admitted frames until then).
pub fn remember_replays(path: &Path, memory: ReplayMemory) -> Result<(), UpgradeError> {
    let mut handover = Handover::read(path).map_err(UpgradeError::Io)?;
    handover.replay = Some(memory);
    handover.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover() -> Handover {
        Handover {
            format: FORMAT,
            from_version: "0.1.0".into(),
            upgrades: 0,
            uptime: 3.0,
            seq: 7,
            control: HandedEndpoint {
                endpoint: "ipc:///run/ringmaster/control.sock".into(),
                fd: 10,
            },
            pubsub: HandedEndpoint {
                endpoint: "ipc:///run/ringmaster/pubsub.sock".into(),
                fd: 11,
            },
            sockets: Vec::new(),
            replay: None,
            watchers: vec![HandedWatcher {
                name: "web".into(),
                state: WatcherState::Active,
                processes: vec![
                    HandedProcess {
                        pid: 100,
                        wid: 1,
                        started: 1.0,
                        ran: 2.0,
                        stdout: Some(12),
                        stderr: None,
                        mark: None,
                    },
                    HandedProcess {
                        pid: 101,
                        wid: 2,
                        started: 1.0,
                        ran: 2.0,
                        stdout: Some(13),
                        stderr: Some(14),
                        mark: None,
                    },
                ],
            }],
        }
    }

    #[test]
    fn a_handover_names_each_descriptor_once() {
        let h = handover();
        assert_eq!(h.validate(), Ok(()));
        assert_eq!(h.descriptors(), vec![10, 11, 12, 13, 14]);
        assert_eq!(h.pids().into_iter().collect::<Vec<_>>(), vec![100, 101]);
        assert_eq!(h.process_count(), 2);

        let mut twice = handover();
        twice.watchers[0].processes[1].stderr = Some(12);
        assert_eq!(
            twice.validate(),
            Err("descriptor 12 is handed over twice".into())
        );
        let mut stdio = handover();
        stdio.control.fd = 1;
        assert!(stdio.validate().is_err());
        let mut pid = handover();
        pid.watchers[0].processes[1].pid = 100;
        assert!(pid.validate().is_err());
        let mut future = handover();
        future.format = FORMAT + 1;
        assert!(future.validate().is_err_and(|e| e.contains("format")));
    }

    #[test]
    fn a_handover_survives_its_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("n.upgrade.json");
        let h = handover();
        h.write(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Handover::read(&path), Ok(h));
        std::fs::write(&path, b"{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(Handover::read(&path).is_err_and(|e| e.contains("not a handover")));
    }

    #[test]
    fn versions_are_read_from_nodeagent_only() {
        assert_eq!(parse_version("nodeagent 0.1.0\n"), Some("0.1.0"));
        assert_eq!(parse_version("nodeagent 1.2.3-rc1"), Some("1.2.3-rc1"));
        assert_eq!(parse_version("echo 0.1.0"), None);
        assert_eq!(parse_version("--version\n"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("nodeagent "), None);
    }

    #[test]
    fn the_binary_is_absolute_or_the_running_one() {
        let running = Path::new("/usr/bin/nodeagent");
        assert_eq!(binary_path(None, running).ok(), Some(running.to_path_buf()));
        assert_eq!(
            binary_path(Some("/opt/new/nodeagent"), running).ok(),
            Some(PathBuf::from("/opt/new/nodeagent"))
        );
        assert!(binary_path(Some("nodeagent"), running).is_err());
    }

    #[test]
    fn the_next_image_resumes_from_the_new_handover() {
        let path = Path::new("/var/lib/ringmaster/n.upgrade.json");
        let os = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let args = os(&["--config", "/etc/n.toml", "-v"]);
        assert_eq!(
            next_args(&args, path),
            os(&[
                "--config",
                "/etc/n.toml",
                "-v",
                "--resume-from",
                "/var/lib/ringmaster/n.upgrade.json"
            ])
        );
        let again = next_args(&args, Path::new("/old.json"));
        assert_eq!(next_args(&again, path), next_args(&args, path));
        let joined = os(&["--resume-from=/old.json", "-v"]);
        assert_eq!(next_args(&joined, path)[0], OsString::from("-v"));
    }
}
