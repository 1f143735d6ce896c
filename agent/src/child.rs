//! What a child process needs between `fork` and `exec`: resource limits, a umask,
//! another user and group, the agent's listening sockets on fixed descriptor
//! numbers, and `LISTEN_PID`.
//!
//! # Why this module holds Ringmaster's only `unsafe` code
//!
//! These steps can only run in the child, after `fork` and before `exec`, which is
//! what `Command::pre_exec` offers; it is `unsafe` by nature, because the closure
//! runs in a copy of a multi-threaded process in which only async-signal-safe
//! operations are allowed: no allocation, no locks (another thread of the agent may
//! have held the allocator's lock at the moment of the fork). So everything is
//! computed in the agent *before* the fork ([`Setup`]): user and group ids, the
//! supplementary groups (`getgrouplist`), the limits, the descriptor plan, and the
//! complete `argv`/`envp` arrays, NUL-terminated, with a fixed-width `LISTEN_PID=`
//! slot. The child then only makes system calls (`setrlimit`, `umask`,
//! `setgroups`, `setgid`, `setuid`, `dup2`, `getpid`, `write`, `execve`, `_exit`) and
//! writes the pid's digits into the slot; it executes the program itself, because
//! `LISTEN_PID` (the child's own pid) is only known after the fork.
//!
//! Watchers that need none of this never come here: they keep the standard
//! library's fast spawn path.
//!
//! # Errors
//!
//! A failing step must be reported with *what* failed (the standard library's own
//! error pipe carries only an errno). Before the fork the agent opens a pipe; a
//! failing child writes `[step, index, errno]` into it, and the agent reads it
//! after the spawn (EOF when `exec` closes it), so the error names the limit, the
//! user or the socket. The steps run in this order: limits (while still root, so
//! that hard limits may be raised), umask, supplementary groups, group, user,
//! sockets onto descriptors 3, 4, ..., `exec`.

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::resource::{self, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};
use tokio::process::Command;

use crate::config::{IdSpec, Limit, WatcherConfig};
use crate::reaper::{self, OnDrop, OwnChild};
use crate::sockets::{Handout, FIRST_CHILD_FD};
use crate::spawn::SpawnError;

/// Room for the digits of any pid (a `u32`) in `LISTEN_PID=`.
const PID_DIGITS: usize = 10;

/// Marks every descriptor the agent inherited from whoever started it (above
/// stderr) close-on-exec, so that none leaks into the processes it starts: a
/// child gets its standard streams and, when its watcher uses them, the agent's
/// sockets; nothing else. Call it first thing in `main`, before any thread.
pub fn close_inherited_on_exec() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl(F_SETFD) only sets the close-on-exec flag of a
        // descriptor number; on a number that is not open (the listing's own,
        // closed by now) it fails with EBADF, which is ignored. Nothing else
        // opens descriptors this early (one thread), so no number is reused.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
        }
    }
}

/// True when watcher `config` needs a step between fork and exec (other than
/// sockets, which [`crate::sockets::Sockets::handout`] tells).
pub fn needed(config: &WatcherConfig) -> bool {
    config.uid.is_some()
        || config.gid.is_some()
        || config.umask.is_some()
        || !config.rlimits().is_empty()
}

/// The user and groups a child switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: Uid,
    /// Group id.
    pub gid: Gid,
    /// Supplementary groups (the user's, from the group database; or only `gid`).
    pub groups: Vec<Gid>,
    /// How error messages name it: `user 'nobody' (uid 65534, gid 65534)`.
    pub who: String,
}

/// Resolves `uid` and `gid` (names or numbers) into the ids a child switches to,
/// when the agent runs as `euid`/`egid`. `uid` without `gid` means the user's
/// primary group. None when nothing is to change; an error when a name is
/// unknown, or when a non-root agent is asked for another user or group.
pub fn resolve_ids(
    uid: Option<&IdSpec>,
    gid: Option<&IdSpec>,
    euid: Uid,
    egid: Gid,
) -> Result<Option<Ids>, SpawnError> {
    if uid.is_none() && gid.is_none() {
        return Ok(None);
    }
    let lookup_error = |what: &str, e: Errno| SpawnError::UnknownUser {
        user: what.to_string(),
        reason: format!("the user database cannot be read: {e}"),
    };
    let user = match uid {
        Some(IdSpec::Name(name)) => Some(
            User::from_name(name)
                .map_err(|e| lookup_error(name, e))?
                .ok_or_else(|| SpawnError::UnknownUser {
                    user: name.clone(),
                    reason: "no such user on this host (check the name, or give a numeric uid)"
                        .into(),
                })?,
        ),
        Some(IdSpec::Id(id)) => {
            User::from_uid(Uid::from_raw(*id)).map_err(|e| lookup_error(&id.to_string(), e))?
        }
        None => None,
    };
    let target_uid = match (uid, &user) {
        (_, Some(user)) => user.uid,
        (Some(IdSpec::Id(id)), None) => Uid::from_raw(*id),
        _ => euid,
    };
    let target_gid = match gid {
        Some(IdSpec::Name(name)) => {
            Group::from_name(name)
                .map_err(|e| SpawnError::UnknownGroup {
                    group: name.clone(),
                    reason: format!("the group database cannot be read: {e}"),
                })?
                .ok_or_else(|| SpawnError::UnknownGroup {
                    group: name.clone(),
                    reason: "no such group on this host (check the name, or give a numeric gid)"
                        .into(),
                })?
                .gid
        }
        Some(IdSpec::Id(id)) => Gid::from_raw(*id),
        None => match (&user, uid) {
            (Some(user), _) => user.gid,
            (None, Some(spec)) => {
                return Err(SpawnError::UnknownUser {
                    user: spec.to_string(),
                    reason: "no user has this uid, so it has no primary group: give gid too".into(),
                })
            }
            (None, None) => egid,
        },
    };
    let who = match (&user, uid) {
        (Some(user), _) => format!("user '{}' (uid {target_uid}, gid {target_gid})", user.name),
        (None, Some(_)) => format!("uid {target_uid} (gid {target_gid})"),
        (None, None) => format!("gid {target_gid}"),
    };
    if !euid.is_root() {
        if target_uid == euid && target_gid == egid {
            // Already who it should be: nothing to switch.
            return Ok(None);
        }
        return Err(SpawnError::NeedsRoot {
            what: who,
            euid: euid.as_raw(),
        });
    }
    let groups = match &user {
        Some(user) => {
            let name = CString::new(user.name.as_bytes()).map_err(|_| SpawnError::UnknownUser {
                user: user.name.clone(),
                reason: "the name contains a NUL byte".into(),
            })?;
            nix::unistd::getgrouplist(&name, target_gid).map_err(|e| SpawnError::UnknownUser {
                user: user.name.clone(),
                reason: format!("cannot list its groups: {e}"),
            })?
        }
        None => vec![target_gid],
    };
    Ok(Some(Ids {
        uid: target_uid,
        gid: target_gid,
        groups,
        who,
    }))
}

/// One resource limit a child sets (soft = hard = value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStep {
    /// The name after `rlimit_`.
    pub name: &'static str,
    resource: Resource,
    value: nix::libc::rlim_t,
    /// The value as configured (for messages).
    pub shown: String,
}

fn resource_of(name: &str) -> Option<Resource> {
    Some(match name {
        "as" => Resource::RLIMIT_AS,
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        _ => return None,
    })
}

/// The limits of `list` (from `WatcherConfig::rlimits`) as the child sets them.
/// `unlimited` is `RLIM_INFINITY`, except for `nofile`, which the kernel never
/// allows to be infinite: there it means the agent's own hard limit.
pub fn limits(list: &[(&'static str, Limit)]) -> Result<Vec<LimitStep>, SpawnError> {
    list.iter()
        .map(|&(name, limit)| {
            let resource = resource_of(name).ok_or_else(|| SpawnError::BadLimit {
                name,
                value: limit_text(limit),
                reason: "not a resource limit of this system".into(),
            })?;
            let value = match limit {
                Limit::Value(v) => v as nix::libc::rlim_t,
                Limit::Unlimited if resource == Resource::RLIMIT_NOFILE => {
                    resource::getrlimit(resource)
                        .map(|(_, hard)| hard)
                        .map_err(|e| SpawnError::BadLimit {
                            name,
                            value: limit_text(limit),
                            reason: format!("cannot read the agent's own limit: {e}"),
                        })?
                }
                Limit::Unlimited => nix::libc::RLIM_INFINITY,
            };
            Ok(LimitStep {
                name,
                resource,
                value,
                shown: limit_text(limit),
            })
        })
        .collect()
}

fn limit_text(limit: Limit) -> String {
    match limit {
        Limit::Value(v) => v.to_string(),
        Limit::Unlimited => "unlimited".into(),
    }
}

/// The program a child executes: all resolved (see `spawn::prepare`).
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    /// The file to execute.
    pub path: &'a Path,
    /// `argv`, from `argv[0]` on.
    pub argv: &'a [String],
    /// The complete environment.
    pub env: &'a BTreeMap<String, String>,
}

/// Everything a child of one watcher does between fork and exec, computed in the
/// agent before the fork.
#[derive(Debug)]
pub struct Setup {
    limits: Vec<LimitStep>,
    umask: Option<u32>,
    ids: Option<Ids>,
    /// Socket names, in the order of their descriptors in the child.
    sockets: Vec<String>,
    /// Duplicates of the agent's sockets, numbered at or above the last target
    /// descriptor, so that no `dup2` can overwrite a socket not yet handed over.
    fds: Vec<OwnedFd>,
    listen_pid: bool,
}

impl Setup {
    /// The set-up of watcher `config`'s processes, with the sockets of `handout`;
    /// None when they need none.
    pub fn new(
        config: &WatcherConfig,
        handout: Option<Handout<'_>>,
    ) -> Result<Option<Setup>, SpawnError> {
        if !needed(config) && handout.is_none() {
            return Ok(None);
        }
        let limits = limits(&config.rlimits())?;
        let ids = resolve_ids(
            config.uid.as_ref(),
            config.gid.as_ref(),
            nix::unistd::geteuid(),
            nix::unistd::getegid(),
        )?;
        let (sockets, fds) = match handout {
            Some(handout) => {
                let sources = handout.fds();
                let above = first_free_after(sources.len());
                let fds = sources
                    .iter()
                    .map(|fd| dup_at_least(*fd, above))
                    .collect::<io::Result<Vec<_>>>()
                    .map_err(|source| SpawnError::ChildSetup {
                        program: config.cmd.clone(),
                        step: "cannot duplicate the agent's sockets for it".into(),
                        source,
                    })?;
                let names = handout.names().into_iter().map(String::from).collect();
                (names, fds)
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(Some(Setup {
            limits,
            umask: config.umask.map(|u| u.0),
            ids,
            sockets,
            fds,
            listen_pid: handout.is_some_and(|h| h.systemd()),
        }))
    }

    /// Installs the set-up on `command`, which will execute `program`: the child
    /// runs the steps, then executes `program` itself.
    pub fn arm(self, command: &mut Command, program: Program<'_>) -> Result<Armed, SpawnError> {
        let os = |source: io::Error| SpawnError::Os {
            program: program.path.display().to_string(),
            source,
        };
        let image = ExecImage::new(program, self.listen_pid).map_err(os)?;
        let (reader, writer) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os(io::Error::from(e)))?;
        // Above every target descriptor too, so that the report still reaches
        // the agent after the sockets are in place.
        let writer = dup_at_least(writer.as_fd(), first_free_after(self.fds.len())).map_err(os)?;
        let mut child = ChildSteps {
            limits: self.limits.iter().map(|l| (l.resource, l.value)).collect(),
            umask: self
                .umask
                .map(|m| Mode::from_bits_truncate(m as nix::libc::mode_t)),
            ids: self
                .ids
                .as_ref()
                .map(|ids| (ids.uid, ids.gid, ids.groups.clone())),
            fds: self.fds.iter().map(AsRawFd::as_raw_fd).collect(),
            report: writer.as_raw_fd(),
            image,
        };
        // SAFETY: the closure runs in the forked child only, where it calls
        // `ChildSteps::run`, which makes only async-signal-safe system calls on
        // data prepared here (no allocation, no lock); see the module docs.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || child.run());
        }
        Ok(Armed {
            setup: self,
            reader,
            writer,
        })
    }
}

/// A command with its [`Setup`] installed, ready to spawn.
#[derive(Debug)]
pub struct Armed {
    setup: Setup,
    reader: OwnedFd,
    writer: OwnedFd,
}

impl Armed {
    /// Spawns `command` (registered with the reaper) and reads what its child
    /// reported: a child that failed a step becomes an error naming the step (and
    /// exits with 127, reaped in the background).
    pub fn spawn(self, command: &mut Command, program: &str) -> Result<OwnChild, SpawnError> {
        let spawned = reaper::spawn(command, OnDrop::Keep);
        let Armed {
            setup,
            reader,
            writer,
        } = self;
        // The agent's copies: with them closed, the pipe reads EOF as soon as the
        // child has executed its program (close-on-exec) or exited.
        drop(writer);
        let report = read_report(reader);
        match (spawned, report) {
            (_, Some(report)) => Err(report.error(&setup, program)),
            (Ok(child), None) => Ok(child),
            (Err(source), None) => Err(SpawnError::Os {
                program: program.to_string(),
                source,
            }),
        }
    }
}

/// The step a child failed at, as written into the report pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Limit = 1,
    Groups = 2,
    Gid = 3,
    Uid = 4,
    Fd = 5,
    Exec = 6,
}

impl Step {
    fn from_code(code: u32) -> Option<Step> {
        [
            Step::Limit,
            Step::Groups,
            Step::Gid,
            Step::Uid,
            Step::Fd,
            Step::Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == code)
    }
}

/// What a child wrote before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    step: Step,
    index: usize,
    errno: i32,
}

const REPORT_LEN: usize = 12;

fn encode_report(step: Step, index: usize, errno: i32) -> [u8; REPORT_LEN] {
    let mut out = [0u8; REPORT_LEN];
    out[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    out[4..8].copy_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_ne_bytes());
    out[8..].copy_from_slice(&errno.to_ne_bytes());
    out
}

fn decode_report(bytes: &[u8]) -> Option<Report> {
    let word = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
    Some(Report {
        step: Step::from_code(u32::from_ne_bytes(word(0)?))?,
        index: u32::from_ne_bytes(word(4)?) as usize,
        errno: i32::from_ne_bytes(word(8)?),
    })
}

/// Reads the child's report until EOF (the child executed its program or
/// exited; this is as long as `spawn` itself waits).
fn read_report(reader: OwnedFd) -> Option<Report> {
    let mut bytes = Vec::with_capacity(REPORT_LEN);
    let mut file = std::fs::File::from(reader);
    match file.read_to_end(&mut bytes) {
        Ok(_) => decode_report(&bytes),
        Err(_) => None,
    }
}

impl Report {
    fn error(&self, setup: &Setup, program: &str) -> SpawnError {
        let source = io::Error::from_raw_os_error(self.errno);
        let who = setup
            .ids
            .as_ref()
            .map_or_else(|| "another user".to_string(), |ids| ids.who.clone());
        let setup_error = |step: String| SpawnError::ChildSetup {
            program: program.to_string(),
            step,
            source: io::Error::from_raw_os_error(self.errno),
        };
        match self.step {
            Step::Limit => {
                let (name, value) = setup
                    .limits
                    .get(self.index)
                    .map_or(("?", String::new()), |l| (l.name, l.shown.clone()));
                let hint = match Errno::from_raw(self.errno) {
                    Errno::EPERM => {
                        " (above what the agent may set: only root raises a hard limit, and \
                         rlimit_nofile can never exceed /proc/sys/fs/nr_open)"
                    }
                    Errno::EINVAL => " (not a valid value for this limit)",
                    _ => "",
                };
                SpawnError::BadLimit {
                    name,
                    value,
                    reason: format!("the kernel refuses it: {source}{hint}"),
                }
            }
            Step::Groups => setup_error(format!("cannot set the groups of {who}")),
            Step::Gid => setup_error(format!("cannot switch to the group of {who}")),
            Step::Uid => setup_error(format!("cannot switch to {who}")),
            Step::Fd => {
                let name = setup.sockets.get(self.index).map_or("?", String::as_str);
                let number = FIRST_CHILD_FD + RawFd::try_from(self.index).unwrap_or(0);
                let hint = if Errno::from_raw(self.errno) == Errno::EBADF {
                    " (is rlimit_nofile lower than the number of sockets + 3?)"
                } else {
                    ""
                };
                setup_error(format!(
                    "cannot hand socket '{name}' over as descriptor {number}{hint}"
                ))
            }
            Step::Exec => match &setup.ids {
                Some(ids) => setup_error(format!("cannot execute it as {}", ids.who)),
                None => setup_error("cannot execute it".into()),
            },
        }
    }
}

/// The lowest descriptor number a child's own descriptors can be moved to so
/// that `count` sockets fit on `FIRST_CHILD_FD..` below it.
fn first_free_after(count: usize) -> RawFd {
    FIRST_CHILD_FD + RawFd::try_from(count).unwrap_or(RawFd::MAX / 2)
}

/// A close-on-exec duplicate of `fd` numbered `min` or above.
fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else
    // owns it.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(owned)
}

/// `argv` and `envp` as `execve` takes them: NUL-terminated strings and
/// null-terminated pointer arrays, built before the fork. With `LISTEN_PID`, the
/// environment holds a `LISTEN_PID=` entry with room for the digits, which the
/// child fills in.
#[derive(Debug)]
struct ExecImage {
    path: CString,
    /// Owns the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    /// Owns `LISTEN_PID=` and its room (all NULs), when present.
    _pid_entry: Vec<u8>,
    /// Where the digits go (inside `_pid_entry`), or null.
    pid_slot: *mut u8,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

// SAFETY: the raw pointers point into heap buffers that the `ExecImage` itself
// owns and never changes or frees while it lives (moving the owning `Vec`s and
// `CString`s does not move their buffers). They are only dereferenced in the
// forked child (a single thread) and by `execve`.
#[allow(unsafe_code)]
unsafe impl Send for ExecImage {}
// SAFETY: as for `Send`; shared references never touch the pointers.
#[allow(unsafe_code)]
unsafe impl Sync for ExecImage {}

impl ExecImage {
    fn new(program: Program<'_>, listen_pid: bool) -> io::Result<ExecImage> {
        let nul = |_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "an argument or an environment variable contains a NUL byte",
            )
        };
        let path = CString::new(program.path.as_os_str().as_bytes()).map_err(nul)?;
        let argv: Vec<CString> = program
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(nul)?;
        let env: Vec<CString> = program
            .env
            .iter()
            .filter(|(key, _)| !(listen_pid && key.as_str() == "LISTEN_PID"))
            .map(|(key, value)| CString::new(format!("{key}={value}")))
            .collect::<Result<_, _>>()
            .map_err(nul)?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = env.iter().map(|s| s.as_ptr()).collect();
        let mut pid_entry = Vec::new();
        let mut pid_slot = std::ptr::null_mut();
        if listen_pid {
            const PREFIX: &[u8] = b"LISTEN_PID=";
            pid_entry.extend_from_slice(PREFIX);
            // Digits, then at least one NUL.
            pid_entry.resize(PREFIX.len() + PID_DIGITS + 1, 0);
            let base = pid_entry.as_mut_ptr();
            envp.push(base.cast_const().cast());
            pid_slot = base.wrapping_add(PREFIX.len());
        }
        envp.push(std::ptr::null());
        let mut strings = argv;
        strings.extend(env);
        Ok(ExecImage {
            path,
            _strings: strings,
            _pid_entry: pid_entry,
            pid_slot,
            argv: argv_ptrs,
            envp,
        })
    }
}

/// What the child runs, with nothing left to compute.
struct ChildSteps {
    limits: Vec<(Resource, nix::libc::rlim_t)>,
    umask: Option<Mode>,
    ids: Option<(Uid, Gid, Vec<Gid>)>,
    /// Sources of the descriptors `FIRST_CHILD_FD`, +1, ...
    fds: Vec<RawFd>,
    /// Write end of the report pipe.
    report: RawFd,
    image: ExecImage,
}

impl ChildSteps {
    /// Runs in the forked child: the steps, then `execve`. Returns only on
    /// failure, having written the report. Failures before any descriptor is
    /// moved return the error to the standard library (which reports it on its
    /// own pipe and reaps the child); later ones exit with 127, because a `dup2`
    /// may have replaced that pipe's descriptor.
    fn run(&mut self) -> io::Result<()> {
        for (index, (resource, value)) in self.limits.iter().enumerate() {
            if let Err(errno) = resource::setrlimit(*resource, *value, *value) {
                return Err(self.fail(Step::Limit, index, errno));
            }
        }
        if let Some(mask) = self.umask {
            nix::sys::stat::umask(mask);
        }
        if let Some((uid, gid, groups)) = &self.ids {
            nix::unistd::setgroups(groups).map_err(|e| self.fail(Step::Groups, 0, e))?;
            nix::unistd::setgid(*gid).map_err(|e| self.fail(Step::Gid, 0, e))?;
            nix::unistd::setuid(*uid).map_err(|e| self.fail(Step::Uid, 0, e))?;
        }
        for (index, source) in self.fds.iter().enumerate() {
            let target = FIRST_CHILD_FD + RawFd::try_from(index).unwrap_or(0);
            // SAFETY: dup2 on descriptors of this process; async-signal-safe.
            #[allow(unsafe_code)]
            let moved = unsafe { nix::libc::dup2(*source, target) };
            if moved < 0 {
                self.fail_exit(Step::Fd, index, Errno::last());
            }
        }
        if !self.image.pid_slot.is_null() {
            self.write_pid();
        }
        // SAFETY: path, argv and envp are NUL-terminated strings and
        // null-terminated arrays owned by `self.image`, alive until execve.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::execve(
                self.image.path.as_ptr(),
                self.image.argv.as_ptr(),
                self.image.envp.as_ptr(),
            );
        }
        self.fail_exit(Step::Exec, 0, Errno::last())
    }

    /// Writes this process's pid into the `LISTEN_PID=` slot, NUL-terminated.
    fn write_pid(&mut self) {
        let mut pid = u32::try_from(nix::unistd::getpid().as_raw()).unwrap_or(0);
        let mut digits = [0u8; PID_DIGITS];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (pid % 10) as u8;
            pid /= 10;
            count += 1;
            if pid == 0 || count == PID_DIGITS {
                break;
            }
        }
        for i in 0..count {
            // SAFETY: the slot has PID_DIGITS + 1 bytes (ExecImage::new), and
            // count <= PID_DIGITS, so every write (and the NUL) is in bounds.
            #[allow(unsafe_code)]
            unsafe {
                self.image.pid_slot.add(i).write(digits[count - 1 - i]);
            }
        }
        // SAFETY: as above; index count <= PID_DIGITS.
        #[allow(unsafe_code)]
        unsafe {
            self.image.pid_slot.add(count).write(0);
        }
    }

    /// Writes the report; the error to hand back to the standard library.
    fn fail(&self, step: Step, index: usize, errno: Errno) -> io::Error {
        let report = encode_report(step, index, errno as i32);
        // SAFETY: write(2) of a stack buffer to our own pipe; async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::write(self.report, report.as_ptr().cast(), report.len());
        }
        io::Error::from_raw_os_error(errno as i32)
    }

    /// Writes the report and exits at once (127, as a shell for a command that
    /// cannot run).
    fn fail_exit(&self, step: Step, index: usize, errno: Errno) -> ! {
        let _ = self.fail(step, index, errno);
        // SAFETY: _exit(2) ends the child without running the agent's atexit
        // handlers or destructors; async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::_exit(127)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let bytes = encode_report(Step::Fd, 2, 9);
        assert_eq!(
            decode_report(&bytes),
            Some(Report {
                step: Step::Fd,
                index: 2,
                errno: 9
            })
        );
        assert_eq!(decode_report(&bytes[..5]), None);
        assert_eq!(decode_report(&[]), None);
    }

    #[test]
    fn limits_map_names_and_unlimited() {
        let steps = limits(&[("core", Limit::Unlimited), ("nofile", Limit::Value(1024))]).unwrap();
        assert_eq!(steps[0].resource, Resource::RLIMIT_CORE);
        assert_eq!(steps[0].value, nix::libc::RLIM_INFINITY);
        assert_eq!(steps[1].value, 1024);
        let steps = limits(&[("nofile", Limit::Unlimited)]).unwrap();
        let (_, hard) = resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(steps[0].value, hard, "nofile cannot be infinite");
        for name in crate::config::RLIMIT_NAMES {
            assert!(resource_of(name).is_some(), "{name}");
        }
    }

    #[test]
    fn ids_need_root_to_change() {
        let me = nix::unistd::geteuid();
        let my_group = nix::unistd::getegid();
        let unprivileged = Uid::from_raw(12_345);
        let err = resolve_ids(
            Some(&IdSpec::Id(0)),
            Some(&IdSpec::Id(0)),
            unprivileged,
            Gid::from_raw(12_345),
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs root"), "{err}");
        // Asking for who the agent already is changes nothing.
        let same = resolve_ids(
            Some(&IdSpec::Id(12_345)),
            Some(&IdSpec::Id(12_345)),
            unprivileged,
            Gid::from_raw(12_345),
        )
        .unwrap();
        assert_eq!(same, None);
        let err = resolve_ids(
            Some(&IdSpec::Name("no-such-user-xyz".into())),
            None,
            me,
            my_group,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no-such-user-xyz"), "{err}");
        let err = resolve_ids(
            None,
            Some(&IdSpec::Name("no-such-group-xyz".into())),
            me,
            my_group,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no-such-group-xyz"), "{err}");
        let err = resolve_ids(Some(&IdSpec::Id(3_999_999)), None, me, my_group).unwrap_err();
        assert!(err.to_string().contains("give gid"), "{err}");
    }

    #[test]
    fn root_resolves_names_to_ids_and_groups() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let Ok(Some(nobody)) = User::from_name("nobody") else {
            eprintln!("skipped: no user 'nobody'");
            return;
        };
        let ids = resolve_ids(
            Some(&IdSpec::Name("nobody".into())),
            None,
            Uid::from_raw(0),
            Gid::from_raw(0),
        )
        .unwrap()
        .unwrap();
        assert_eq!((ids.uid, ids.gid), (nobody.uid, nobody.gid));
        assert!(ids.groups.contains(&nobody.gid));
        assert!(ids.who.contains("nobody"), "{}", ids.who);
    }

    #[test]
    fn exec_image_has_room_for_the_pid() {
        let env = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("LISTEN_PID".to_string(), "stale".to_string()),
        ]);
        let argv = vec!["prog".to_string(), "x".to_string()];
        let image = ExecImage::new(
            Program {
                path: Path::new("/bin/prog"),
                argv: &argv,
                env: &env,
            },
            true,
        )
        .unwrap();
        assert_eq!(image.argv.len(), 3);
        assert!(image.argv[2].is_null());
        // A=1, the LISTEN_PID slot (the configured one is dropped), null.
        assert_eq!(image.envp.len(), 3);
        assert!(!image.pid_slot.is_null());
        let err = ExecImage::new(
            Program {
                path: Path::new("/bin/prog"),
                argv: &["a\0b".to_string()],
                env: &env,
            },
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }
}
