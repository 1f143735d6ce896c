//! Processes left running by an agent that died without stopping them
//! (`kill -9`, a crash, the OOM killer).
//!
//! Every spawned process is recorded in `<stem>.pids` in the state directory: its
//! pid, its start time (field 22 of `/proc/<pid>/stat`, which tells it from a
//! later process that got the same pid), its process group, its watcher and the
//! boot id (`/proc/sys/kernel/random/boot_id`). A reaped process is recorded as
//! gone. The file is only appended to, one short line per spawn or reap, and never
//! fsynced: this is on the respawn path, and what it guards against is the death of
//! the agent, not of the host (the page cache survives the agent; a reboot is told
//! by the boot id, and after one nothing recorded can be alive). It is rewritten
//! with the live processes only when it has grown well past them.
//!
//! At start, before it binds a socket or starts a watcher, the agent stops every
//! recorded process that is still alive with the same start time in the same
//! boot: SIGTERM to its process group, up to the watcher's `graceful_timeout`
//! (all of them within [`STOP_CAP`]), then SIGKILL to the group
//! ([`crate::terminate`]). A pid that was reused by another process (another start
//! time) is never touched. What a survivor started outside its group was
//! reparented to init when the agent died, and is not found here.
//!
//! Why stop them rather than adopt them: the output pipes of the dead agent are
//! broken, so those workers would die of SIGPIPE at their next line anyway; the
//! agent cannot wait for processes that are not its children, so it would never
//! learn how they exit; and under systemd (`KillMode=control-group`) the unit's
//! cgroup is killed when the agent dies, so this makes the case without systemd
//! behave the same: after a crash, one fresh set of workers.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{debug, error, warn};

use crate::lineage::Found;
use crate::terminate::{self, Target};

/// The longest the agent's start waits for survivors to stop gracefully.
pub const STOP_CAP: Duration = Duration::from_secs(30);

/// The journal is rewritten when it has this many more lines than twice the live
/// processes.
const COMPACT_SLACK: usize = 1024;

/// One process as the pid journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRecord {
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
    /// Its process group.
    pub pgid: u32,
    /// The boot it was started in.
    pub boot: String,
    /// Its watcher.
    pub watcher: String,
}

impl ProcRecord {
    /// Its journal line: `+ pid start pgid boot watcher`.
    pub fn spawned_line(&self) -> String {
        format!(
            "+ {} {} {} {} {}\n",
            self.pid, self.start, self.pgid, self.boot, self.watcher
        )
    }

    /// The line that says it is gone: `- pid start`.
    pub fn reaped_line(&self) -> String {
        format!("- {} {}\n", self.pid, self.start)
    }
}

/// The processes a pid journal says are alive. A last line without its newline
/// (the agent died while writing it) is ignored, and so is any line that does not
/// parse.
pub fn live_records(text: &str) -> Vec<ProcRecord> {
    let mut live: BTreeMap<(u32, u64), ProcRecord> = BTreeMap::new();
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let mut words = line.splitn(6, ' ');
        let op = words.next();
        let pid = words.next().and_then(|w| w.parse::<u32>().ok());
        let start = words.next().and_then(|w| w.parse::<u64>().ok());
        let (Some(pid), Some(start)) = (pid, start) else {
            continue;
        };
        match op {
            Some("+") => {
                let pgid = words.next().and_then(|w| w.parse::<u32>().ok());
                let boot = words.next();
                let watcher = words.next();
                if let (Some(pgid), Some(boot), Some(watcher)) = (pgid, boot, watcher) {
                    live.insert(
                        (pid, start),
                        ProcRecord {
                            pid,
                            start,
                            pgid,
                            boot: boot.to_string(),
                            watcher: watcher.to_string(),
                        },
                    );
                }
            }
            Some("-") => {
                live.remove(&(pid, start));
            }
            _ => {}
        }
    }
    live.into_values().collect()
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// It has exited and waits to be reaped (or is being reaped).
    pub dead: bool,
    /// Its parent (field 4).
    pub ppid: u32,
    /// Its process group (field 5).
    pub pgrp: u32,
    /// Its start time (field 22).
    pub start: u64,
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    // The name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, which starts at field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    Some(ProcStat {
        dead: matches!(state, "Z" | "X" | "x"),
        ppid: fields.get(4 - 3)?.parse().ok()?,
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        start: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat`.
///
/// One `read` into a buffer on the stack: this is called for every process of
/// the host when the agent looks for descendants ([`crate::lineage`]). The name
/// may hold bytes that are not UTF-8; only the fields after it are parsed.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    use std::io::Read;
    let mut file = File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        // procfs hands the whole line over in one read.
        if buf[..len].ends_with(b"\n") {
            break;
        }
    }
    parse_stat(&String::from_utf8_lossy(&buf[..len]))
}

/// This boot's id, or an empty string when it cannot be read (then nothing
/// recorded is ever taken for a survivor).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// True when the process `record` describes is still running: same boot, and a
/// live process with that pid and the same start time.
pub fn is_survivor(record: &ProcRecord, boot: &str, stat: Option<ProcStat>) -> bool {
    !boot.is_empty()
        && record.boot == boot
        && stat.is_some_and(|s| !s.dead && s.start == record.start)
}

/// The recorded processes still running, by [`is_survivor`].
pub fn survivors(
    records: Vec<ProcRecord>,
    boot: &str,
    stat: impl Fn(u32) -> Option<ProcStat>,
) -> Vec<ProcRecord> {
    records
        .into_iter()
        .filter(|r| is_survivor(r, boot, stat(r.pid)))
        .collect()
}

/// How to stop a survivor: its group when it still leads the group it was
/// recorded with, else it alone.
fn target_of(record: &ProcRecord) -> Target {
    match read_stat(record.pid) {
        Some(stat) if stat.pgrp == record.pgid && record.pgid == record.pid => {
            Target::Group(record.pgid)
        }
        _ => Target::Process(Found {
            pid: record.pid,
            start: record.start,
        }),
    }
}

/// Stops `found` (see the module doc) with [`terminate::stop_blocking`]: SIGTERM
/// to each group, up to `grace(watcher)` (at most [`STOP_CAP`] in all), SIGKILL,
/// then waits until nothing of those groups is left. Returns how many were
/// stopped per watcher.
pub fn stop(found: &[ProcRecord], grace: impl Fn(&str) -> Duration) -> BTreeMap<String, usize> {
    let mut per_watcher: BTreeMap<String, usize> = BTreeMap::new();
    if found.is_empty() {
        return per_watcher;
    }
    let began = Instant::now();
    let targets = found
        .iter()
        .map(|record| {
            *per_watcher.entry(record.watcher.clone()).or_default() += 1;
            (target_of(record), grace(&record.watcher).min(STOP_CAP))
        })
        .collect();
    let outcome = terminate::stop_blocking(targets, Some(Signal::SIGTERM));
    if outcome.left > 0 {
        error!(
            "{} process group(s) or process(es) left by a previous agent are still running \
             after SIGKILL",
            outcome.left
        );
    }
    debug!(
        "stopped {} survivor(s) in {:.2}s ({} needed SIGKILL)",
        found.len(),
        began.elapsed().as_secs_f64(),
        outcome.killed
    );
    per_watcher
}

/// Reads the pid journal at `path` and stops every survivor it names but those
/// in `keep` (handed over by an upgrade in place); logs one warning per watcher.
pub fn recover(
    path: &Path,
    boot: &str,
    keep: &std::collections::BTreeSet<u32>,
    grace: impl Fn(&str) -> Duration,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(
                "cannot read {}: {e}; processes left by a previous agent, if any, are not stopped",
                path.display()
            );
            return;
        }
    };
    let records = live_records(&text)
        .into_iter()
        .filter(|r| !keep.contains(&r.pid))
        .collect();
    let found = survivors(records, boot, read_stat);
    for (watcher, count) in stop(&found, grace) {
        warn!(
            watcher = %watcher,
            "stopped {count} process(es) left by a previous agent"
        );
    }
}

/// The agent's pid journal (see the module doc).
#[derive(Debug)]
pub struct PidJournal {
    path: PathBuf,
    file: Option<File>,
    boot: String,
    live: HashMap<u32, ProcRecord>,
    lines: usize,
    warned: bool,
}

impl PidJournal {
    /// Starts an empty journal at `path` (after [`recover`]). A journal that
    /// cannot be written is reported once; the agent runs without it.
    pub fn start(path: PathBuf, boot: String) -> PidJournal {
        let mut journal = PidJournal {
            path,
            file: None,
            boot,
            live: HashMap::new(),
            lines: 0,
            warned: false,
        };
        journal.rewrite();
        journal
    }

    /// A journal that records nothing.
    pub fn disabled() -> PidJournal {
        PidJournal {
            path: PathBuf::new(),
            file: None,
            boot: String::new(),
            live: HashMap::new(),
            lines: 0,
            warned: true,
        }
    }

    /// How many processes it holds as live.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Records a new process of `watcher`.
    pub fn spawned(&mut self, pid: u32, watcher: &str) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let Some(stat) = read_stat(pid) else {
            debug!(pid, "not recorded: /proc/{pid}/stat is gone already");
            return;
        };
        let record = ProcRecord {
            pid,
            start: stat.start,
            pgid: stat.pgrp,
            boot: self.boot.clone(),
            watcher: watcher.to_string(),
        };
        self.append(record.spawned_line());
        self.live.insert(pid, record);
        self.maybe_compact();
    }

    /// Records that `pid` was reaped.
    pub fn reaped(&mut self, pid: u32) {
        let Some(record) = self.live.remove(&pid) else {
            return;
        };
        self.append(record.reaped_line());
        self.maybe_compact();
    }

    fn append(&mut self, line: String) {
        self.lines += 1;
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(line.as_bytes()) {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        self.file = None;
        if !self.warned {
            self.warned = true;
            warn!(
                "cannot write {}: {e}; if this agent is killed, its processes are not stopped \
                 by the next one",
                self.path.display()
            );
        }
    }

    fn maybe_compact(&mut self) {
        if self.lines > 2 * self.live.len() + COMPACT_SLACK {
            self.rewrite();
        }
    }

    /// Writes the live processes alone to a new file, and appends to that one.
    fn rewrite(&mut self) {
        let tmp = PathBuf::from(format!("{}.tmp", self.path.display()));
        let body: String = self.live.values().map(ProcRecord::spawned_line).collect();
        let written = (|| {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tmp, body.as_bytes())?;
            std::fs::rename(&tmp, &self.path)?;
            OpenOptions::new().append(true).open(&self.path)
        })();
        match written {
            Ok(file) => {
                self.file = Some(file);
                self.lines = self.live.len();
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.fail(&e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, start: u64, watcher: &str) -> ProcRecord {
        ProcRecord {
            pid,
            start,
            pgid: pid,
            boot: "b1".into(),
            watcher: watcher.into(),
        }
    }

    fn stat(start: u64) -> Option<ProcStat> {
        Some(ProcStat {
            dead: false,
            ppid: 1,
            pgrp: 0,
            start,
        })
    }

    #[test]
    fn replay_keeps_the_live_and_ignores_a_torn_line() {
        let a = rec(10, 100, "web");
        let b = rec(11, 101, "web worker");
        let c = rec(12, 102, "db");
        let text = format!(
            "{}{}{}{}garbage\n{}",
            a.spawned_line(),
            b.spawned_line(),
            a.reaped_line(),
            c.spawned_line(),
            "- 12 1"
        );
        assert_eq!(live_records(&text), vec![b, c]);
    }

    #[test]
    fn a_reused_pid_is_not_a_survivor() {
        let r = rec(10, 100, "web");
        assert!(is_survivor(&r, "b1", stat(100)));
        assert!(
            !is_survivor(&r, "b1", stat(999)),
            "pid reused by another process"
        );
        assert!(!is_survivor(&r, "b2", stat(100)), "another boot");
        assert!(!is_survivor(&r, "", stat(100)), "boot unknown");
        assert!(!is_survivor(&r, "b1", None), "gone");
        let zombie = Some(ProcStat {
            dead: true,
            ppid: 1,
            pgrp: 10,
            start: 100,
        });
        assert!(!is_survivor(&r, "b1", zombie), "exited, not reaped yet");
        let found = survivors(vec![r.clone(), rec(11, 5, "x")], "b1", |pid| {
            if pid == 10 {
                stat(100)
            } else {
                stat(6)
            }
        });
        assert_eq!(found, vec![r]);
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let text = "4242 (my (odd) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                dead: false,
                ppid: 1,
                pgrp: 4240,
                start: 98765
            })
        );
        assert!(
            parse_stat("4242 (x) Z 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7")
                .is_some_and(|s| s.dead)
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_journal_records_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.pids");
        let me = std::process::id();
        let mut journal = PidJournal::start(path.clone(), "b1".into());
        for _ in 0..3000 {
            journal.spawned(me, "self");
            journal.reaped(me);
        }
        journal.spawned(me, "self");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().count() <= 2 + COMPACT_SLACK + 2,
            "{}",
            text.lines().count()
        );
        let live = live_records(&text);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].pid, me);
        // This very process is alive with that start time: a survivor.
        assert!(is_survivor(&live[0], "b1", read_stat(me)));
    }
}
