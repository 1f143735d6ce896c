//! Which processes came from which worker, including the ones that left its
//! process group or session.
//!
//! The agent is a child subreaper ([`crate::reaper`]): whatever its workers start
//! stays below it in the process tree, and a process whose parent dies is handed
//! to the agent instead of to init. So every descendant of a worker is in the
//! agent's subtree, and one of two links ties it to its worker:
//!
//! - **its ancestry**, while the worker lives: the chain of parents from the
//!   process up to the agent passes through the worker's pid;
//! - **its mark**, once that chain is broken (a double fork, `setsid -f`, a parent
//!   that exited: the process was reparented to the agent): every worker gets
//!   [`MARK_VAR`] in its environment, naming its watcher, its slot and a token
//!   of its own, which its descendants inherit; the agent reads it back from
//!   `/proc/<pid>/environ`. A process of an orphaned subtree belongs to the
//!   nearest marked process on its chain (itself first).
//!
//! A process still in the worker's process group belongs to it too. Ancestry
//! wins over a mark: a process below a live worker of another watcher is that
//! worker's, whatever its environment says, so a stop never reaches another
//! watcher's processes.
//!
//! Not covered: an orphan that dropped or rewrote the mark (`env -i`, a daemon
//! that clears its environment, a setuid program the agent may not read) and is
//! not in the worker's group; a process that left the agent's subtree (one that
//! a descendant subreaper outside it adopted, or that was started while no agent
//! ran).
//!
//! [`Snapshot::take`] reads `/proc` (every `stat`; `environ` only for orphaned
//! subtrees, which are rare); everything else here is pure and decides from a
//! snapshot which pids a stop must signal.

use std::collections::{BTreeSet, HashMap};

use crate::survivors::{self, ProcStat};

/// The environment variable that marks a worker and its descendants.
pub const MARK_VAR: &str = "RINGMASTER_LINEAGE";

/// The deepest chain of parents followed (a guard against a malformed snapshot).
const MAX_DEPTH: usize = 4096;

/// What a worker's [`MARK_VAR`] says: `TOKEN:WID:WATCHER` (token in hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mark {
    token: u64,
    wid: u32,
    watcher: String,
}

impl Mark {
    /// A new mark, with a token of its own, for a process of `watcher` in slot
    /// `wid`.
    pub fn new(watcher: &str, wid: u32) -> Mark {
        Mark {
            token: fastrand::u64(..),
            wid,
            watcher: watcher.to_string(),
        }
    }

    /// The watcher it names.
    pub fn watcher(&self) -> &str {
        &self.watcher
    }

    /// The value of [`MARK_VAR`].
    pub fn value(&self) -> String {
        format!("{:016x}:{}:{}", self.token, self.wid, self.watcher)
    }

    /// Reads a value of [`MARK_VAR`]; `None` when it is not one.
    pub fn parse(value: &str) -> Option<Mark> {
        let mut parts = value.splitn(3, ':');
        let token = u64::from_str_radix(parts.next()?, 16).ok()?;
        let wid = parts.next()?.parse().ok()?;
        let watcher = parts.next()?.to_string();
        Some(Mark {
            token,
            wid,
            watcher,
        })
    }

    /// The mark in the text of a `/proc/<pid>/environ` (NUL-separated).
    pub fn in_environ(environ: &[u8]) -> Option<Mark> {
        let prefix = format!("{MARK_VAR}=");
        environ
            .split(|b| *b == 0)
            .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(Mark::parse)
    }
}

/// A process to signal: its pid and start time (so that a reused pid is never
/// taken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Its pid.
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub start: u64,
}

/// Who a process in the agent's subtree belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// It is, or descends from, this live child of the agent that someone waits
    /// for (a worker, a hook, an `exec`).
    Leader(u32),
    /// It is in an orphaned subtree, under (or is) a process with this mark.
    Marked(Mark),
    /// It is in an orphaned subtree without a mark.
    Unknown,
}

/// A worker whose descendants are looked for: its pid, its mark, and whether it
/// is still running (not reaped).
///
/// The pid of a worker that is gone may have been given to another process
/// already, of another watcher: for such a worker only its mark counts.
#[derive(Debug, Clone, Copy)]
pub struct Worker<'a> {
    pid: u32,
    mark: &'a Mark,
    live: bool,
}

impl<'a> Worker<'a> {
    /// A worker the agent has not reaped yet (its pid is still its own).
    pub fn live(pid: u32, mark: &'a Mark) -> Self {
        Worker {
            pid,
            mark,
            live: true,
        }
    }

    /// A worker that was reaped.
    pub fn gone(pid: u32, mark: &'a Mark) -> Self {
        Worker {
            pid,
            mark,
            live: false,
        }
    }
}

/// The agent's subtree at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    agent: u32,
    /// The live children of the agent that someone waits for (see [`crate::reaper`]).
    leaders: BTreeSet<u32>,
    procs: HashMap<u32, ProcStat>,
    marks: HashMap<u32, Mark>,
}

impl Snapshot {
    /// Reads `/proc`: the processes below `agent`, with the marks of those in
    /// orphaned subtrees. `leaders` are the agent's children someone waits for.
    pub fn take(agent: u32, leaders: BTreeSet<u32>) -> Snapshot {
        let procs = read_all_stats();
        Snapshot::build(agent, leaders, procs, |pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .ok()
                .and_then(|environ| Mark::in_environ(&environ))
        })
    }

    /// A snapshot of `procs` (every process, by pid), reading the marks it needs
    /// with `read_mark`.
    pub fn build(
        agent: u32,
        leaders: BTreeSet<u32>,
        procs: HashMap<u32, ProcStat>,
        read_mark: impl Fn(u32) -> Option<Mark>,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            agent,
            leaders,
            procs,
            marks: HashMap::new(),
        };
        let orphaned: Vec<u32> = snapshot
            .procs
            .keys()
            .copied()
            .filter(|pid| matches!(snapshot.root(*pid), Some(Root::Orphaned(_))))
            .collect();
        snapshot.marks = orphaned
            .into_iter()
            .filter_map(|pid| read_mark(pid).map(|mark| (pid, mark)))
            .collect();
        snapshot
    }

    /// Where the chain of parents of `pid` meets the agent: at a leader, or at
    /// an orphaned child of the agent (then the chain, `pid` first). `None` when
    /// `pid` is not below the agent.
    fn root(&self, pid: u32) -> Option<Root> {
        let mut chain = Vec::new();
        let mut current = pid;
        for _ in 0..MAX_DEPTH {
            if current == self.agent {
                return None;
            }
            if self.leaders.contains(&current) {
                return Some(Root::Leader(current));
            }
            let stat = self.procs.get(&current)?;
            chain.push(current);
            if stat.ppid == self.agent {
                return Some(Root::Orphaned(chain));
            }
            if stat.ppid == 0 {
                return None;
            }
            current = stat.ppid;
        }
        None
    }

    /// Who `pid` belongs to; `None` when it is not below the agent.
    pub fn owner(&self, pid: u32) -> Option<Owner> {
        match self.root(pid)? {
            Root::Leader(leader) => Some(Owner::Leader(leader)),
            Root::Orphaned(chain) => Some(
                chain
                    .iter()
                    .find_map(|p| self.marks.get(p))
                    .map_or(Owner::Unknown, |mark| Owner::Marked(mark.clone())),
            ),
        }
    }

    /// Every live process below the agent, leaders excepted, with its owner.
    fn live(&self) -> impl Iterator<Item = (u32, &ProcStat, Owner)> + '_ {
        self.procs.iter().filter_map(|(pid, stat)| {
            if stat.dead || self.leaders.contains(pid) {
                return None;
            }
            self.owner(*pid).map(|owner| (*pid, stat, owner))
        })
    }

    fn select(&self, keep: impl Fn(u32, &ProcStat, &Owner) -> bool) -> Vec<Found> {
        let mut found: Vec<Found> = self
            .live()
            .filter(|(pid, stat, owner)| keep(*pid, stat, owner))
            .map(|(pid, stat, _)| Found {
                pid,
                start: stat.start,
            })
            .collect();
        found.sort();
        found
    }

    /// The live descendants of `workers` (the workers themselves excepted):
    /// those in an orphaned subtree with a worker's mark and, for a live worker,
    /// those below it and unmarked orphans still in its process group.
    pub fn descendants(&self, workers: &[Worker<'_>]) -> Vec<Found> {
        self.select(|_, stat, owner| {
            workers.iter().any(|w| match owner {
                Owner::Leader(leader) => w.live && *leader == w.pid,
                Owner::Marked(mark) => mark == w.mark,
                Owner::Unknown => w.live && stat.pgrp == w.pid,
            })
        })
    }

    /// [`Snapshot::descendants`] outside the workers' own process groups (the
    /// group is signalled as one).
    pub fn escaped(&self, workers: &[Worker<'_>]) -> Vec<Found> {
        let groups: BTreeSet<u32> = workers.iter().map(|w| w.pid).collect();
        self.descendants(workers)
            .into_iter()
            .filter(|f| {
                self.procs
                    .get(&f.pid)
                    .is_some_and(|s| !groups.contains(&s.pgrp))
            })
            .collect()
    }

    /// The live orphans marked as processes of `watcher` (whichever slot).
    pub fn of_watcher(&self, watcher: &str) -> Vec<Found> {
        self.select(|_, _, owner| matches!(owner, Owner::Marked(m) if m.watcher() == watcher))
    }

    /// The live processes below the agent that nobody waits for and that are
    /// below no leader: every orphaned subtree, marked or not.
    pub fn strays(&self) -> Vec<Found> {
        self.select(|_, _, owner| !matches!(owner, Owner::Leader(_)))
    }

    /// Every live process below the agent, leaders excepted.
    pub fn everything(&self) -> Vec<Found> {
        self.select(|_, _, _| true)
    }

    /// The agent's children that have exited and that nobody waits for.
    pub fn unclaimed_zombies(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .procs
            .iter()
            .filter(|(pid, s)| s.dead && s.ppid == self.agent && !self.leaders.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        pids.sort_unstable();
        pids
    }
}

/// Where a chain of parents meets the agent.
enum Root {
    Leader(u32),
    Orphaned(Vec<u32>),
}

/// `/proc/<pid>/stat` of every process.
pub fn read_all_stats() -> HashMap<u32, ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| survivors::read_stat(pid).map(|s| (pid, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: u32 = 100;

    fn stat(ppid: u32, pgrp: u32) -> ProcStat {
        ProcStat {
            dead: false,
            ppid,
            pgrp,
            start: 7,
        }
    }

    fn pids(found: &[Found]) -> Vec<u32> {
        found.iter().map(|f| f.pid).collect()
    }

    /// Two watchers, `web` (worker 200) and `db` (worker 300), each with a child
    /// in its group and a process in a session of its own; orphans of an earlier
    /// `web` worker, of `db`, of a hook, and an unrelated process.
    fn tree() -> (Snapshot, Mark, Mark, Mark) {
        let web = Mark::new("web", 1);
        let old_web = Mark::new("web", 1);
        let db = Mark::new("db", 1);
        let procs = HashMap::from([
            (1, stat(0, 1)),
            (AGENT, stat(1, AGENT)),
            (50, stat(1, 50)), // not below the agent
            // web's worker, its group child, its setsid child and grandchild
            (200, stat(AGENT, 200)),
            (201, stat(200, 200)),
            (202, stat(200, 202)),
            (203, stat(202, 202)),
            // db's worker and its setsid child
            (300, stat(AGENT, 300)),
            (301, stat(300, 301)),
            // orphans (parent died): of the old web worker (one in its group,
            // one that dropped the mark below a marked one), of the current web
            // worker, of db, and one without a mark
            (400, stat(AGENT, 400)),
            (401, stat(400, 400)),
            (410, stat(AGENT, 410)),
            (420, stat(AGENT, 300)),
            (430, stat(AGENT, 430)),
            // an unmarked orphan still in web's group
            (205, stat(AGENT, 200)),
            // a dead orphan and a dead worker
            (
                440,
                ProcStat {
                    dead: true,
                    ..stat(AGENT, 440)
                },
            ),
            (
                500,
                ProcStat {
                    dead: true,
                    ..stat(AGENT, 500)
                },
            ),
        ]);
        let marks = HashMap::from([
            (200, web.clone()),
            (201, web.clone()),
            (202, web.clone()),
            (203, web.clone()),
            (300, db.clone()),
            (301, db.clone()),
            (400, old_web.clone()),
            (410, web.clone()),
            (420, db.clone()),
            (440, web.clone()),
        ]);
        let leaders = BTreeSet::from([200, 300, 500]);
        let snapshot = Snapshot::build(AGENT, leaders, procs, |pid| marks.get(&pid).cloned());
        (snapshot, web, old_web, db)
    }

    #[test]
    fn marks_round_trip_through_the_environment() {
        let mark = Mark::new("web: front", 3);
        let environ = format!("PATH=/bin\0{MARK_VAR}={}\0HOME=/\0", mark.value());
        assert_eq!(Mark::in_environ(environ.as_bytes()), Some(mark.clone()));
        assert_eq!(mark.watcher(), "web: front");
        assert_eq!(Mark::in_environ(b"PATH=/bin\0"), None);
        assert_eq!(Mark::parse("zz:1:web"), None);
        assert_eq!(Mark::parse("12"), None);
        assert_ne!(
            Mark::new("web", 1),
            Mark::new("web", 1),
            "each gets its own token"
        );
    }

    #[test]
    fn ancestry_decides_and_marks_are_read_for_orphans_only() {
        let (snapshot, web, old_web, _) = tree();
        assert_eq!(snapshot.owner(203), Some(Owner::Leader(200)));
        assert_eq!(snapshot.owner(301), Some(Owner::Leader(300)));
        assert_eq!(snapshot.owner(401), Some(Owner::Marked(old_web)));
        assert_eq!(snapshot.owner(410), Some(Owner::Marked(web)));
        assert_eq!(snapshot.owner(430), Some(Owner::Unknown));
        assert_eq!(snapshot.owner(50), None, "not below the agent");
        assert_eq!(snapshot.owner(AGENT), None);
        let mut read: Vec<u32> = snapshot.marks.keys().copied().collect();
        read.sort_unstable();
        assert_eq!(read, vec![400, 410, 420, 440], "205, 401, 430 have none");
    }

    #[test]
    fn a_live_workers_descendants_are_its_tree_and_its_marked_orphans() {
        let (snapshot, web, _, _) = tree();
        let worker = Worker::live(200, &web);
        assert_eq!(
            pids(&snapshot.descendants(&[worker])),
            vec![201, 202, 203, 205, 410]
        );
        assert_eq!(
            pids(&snapshot.descendants(&[Worker::gone(200, &web)])),
            vec![410],
            "once it is gone, only its mark counts"
        );
        assert_eq!(
            pids(&snapshot.escaped(&[worker])),
            vec![202, 203, 410],
            "outside its group"
        );
    }

    #[test]
    fn a_gone_workers_descendants_are_found_by_mark_and_by_group() {
        let (snapshot, _, old_web, db) = tree();
        // The earlier worker (399) is gone: its orphans carry its mark.
        let old = Worker::gone(399, &old_web);
        assert_eq!(pids(&snapshot.descendants(&[old])), vec![400, 401]);
        // db's worker is alive: its tree, plus the orphan with its mark.
        let db_worker = Worker::live(300, &db);
        assert_eq!(pids(&snapshot.descendants(&[db_worker])), vec![301, 420]);
    }

    #[test]
    fn a_gone_workers_reused_pid_takes_nothing_of_its_new_owner() {
        let (snapshot, _, old_web, _) = tree();
        // Pretend 300 (db's live worker, group 300) once was a web worker.
        let reused = Worker::gone(300, &old_web);
        assert_eq!(pids(&snapshot.descendants(&[reused])), vec![400, 401]);
    }

    #[test]
    fn another_watchers_processes_are_never_selected() {
        let (snapshot, web, old_web, _) = tree();
        let web_worker = Worker::live(200, &web);
        let old = Worker::gone(399, &old_web);
        for found in [
            snapshot.descendants(&[web_worker, old]),
            snapshot.of_watcher("web"),
        ] {
            for pid in pids(&found) {
                assert!(
                    ![300, 301, 420, 430, 50].contains(&pid),
                    "{pid} in {found:?}"
                );
            }
        }
        assert_eq!(pids(&snapshot.of_watcher("web")), vec![400, 401, 410]);
        assert_eq!(pids(&snapshot.of_watcher("db")), vec![420]);
    }

    #[test]
    fn strays_are_every_orphaned_subtree_and_zombies_nobody_waits_for() {
        let (snapshot, ..) = tree();
        assert_eq!(pids(&snapshot.strays()), vec![205, 400, 401, 410, 420, 430]);
        assert_eq!(
            pids(&snapshot.everything()),
            vec![201, 202, 203, 205, 301, 400, 401, 410, 420, 430]
        );
        assert_eq!(snapshot.unclaimed_zombies(), vec![440], "500 is waited for");
    }

    #[test]
    fn a_cycle_in_a_bad_snapshot_ends() {
        let procs = HashMap::from([(10, stat(11, 10)), (11, stat(10, 10))]);
        let snapshot = Snapshot::build(AGENT, BTreeSet::new(), procs, |_| None);
        assert_eq!(snapshot.owner(10), None);
        assert!(snapshot.everything().is_empty());
    }

    #[test]
    fn this_process_is_found_below_its_parent() {
        let me = std::process::id();
        let parent = survivors::read_stat(me).map(|s| s.ppid).unwrap_or(0);
        let snapshot = Snapshot::take(parent, BTreeSet::new());
        assert!(
            pids(&snapshot.everything()).contains(&me),
            "{me} below {parent}"
        );
    }
}
