//! Sampling the resource use of supervised processes and of the host.
//!
//! Only the pids the agent supervises are sampled (never the whole process table):
//! one read of `/proc/<pid>/stat` per process gives its CPU time, threads and
//! resident memory; CPU % is the CPU time used since the previous sample. The host
//! figures come from `sysinfo` (CPU and memory) and the load average. Sampling runs
//! on a blocking thread (see `lib.rs`), so a slow `/proc` never holds back
//! supervision; the [`Sampler`] is moved there and back each tick.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use ringmaster_protocol::stats::{HostStats, ProcessStats, WatcherStats};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// A process to sample.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its watcher.
    pub watcher: String,
    /// Its pid.
    pub pid: u32,
    /// Its worker id.
    pub wid: u32,
    /// Seconds since it started.
    pub age: f64,
}

/// One complete sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When it was taken, seconds since the Unix epoch.
    pub time: f64,
    /// Every sampled process.
    pub processes: Vec<ProcessStats>,
    /// Totals per watcher (every watcher, even without processes).
    pub watchers: Vec<WatcherStats>,
    /// The host.
    pub host: Option<HostStats>,
    /// The agent itself.
    pub own: Option<ProcessStats>,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcStat {
    /// utime + stime, in clock ticks.
    ticks: u64,
    threads: u32,
    rss_pages: u64,
}

/// Parses the fields Ringmaster needs from the text of `/proc/<pid>/stat`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may contain anything,
    // so split after the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        ticks: field(14)? + field(15)?,
        threads: u32::try_from(field(20)?).unwrap_or(u32::MAX),
        rss_pages: field(24)?,
    })
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| parse_stat(&text))
}

/// Keeps what is needed between samples.
pub struct Sampler {
    previous: HashMap<u32, (u64, Instant)>,
    host: Option<System>,
    ticks_per_second: f64,
    page_size: u64,
    own_pid: u32,
    started: Instant,
}

impl Default for Sampler {
    fn default() -> Self {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100);
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        Sampler {
            previous: HashMap::new(),
            host: System::new_with_specifics(
                RefreshKind::nothing()
                    .with_cpu(CpuRefreshKind::nothing().with_usage())
                    .with_memory(MemoryRefreshKind::nothing().with_ram()),
            )
            .ok(),
            ticks_per_second: ticks as f64,
            page_size: page as u64,
            own_pid: std::process::id(),
            started: Instant::now(),
        }
    }
}

impl Sampler {
    /// Samples `targets` (processes of `watchers`) and the host; `interval` is
    /// reported to subscribers so that they can tell when the node goes quiet.
    pub fn sample(&mut self, watchers: &[String], targets: &[Target], interval: f64) -> Sample {
        let now = Instant::now();
        let (memory_total, memory_used, host_cpu, cpus) = match self.host.as_mut() {
            Some(system) => {
                system.refresh_cpu_usage();
                system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                (
                    system.total_memory(),
                    system.used_memory(),
                    system.global_cpu_usage(),
                    u32::try_from(system.cpus().len()).unwrap_or(u32::MAX),
                )
            }
            None => (0, 0, 0.0, 0),
        };
        let mut previous = HashMap::with_capacity(targets.len() + 1);
        let mut measure = |watcher: &str, pid: u32, wid: u32, age: f64| {
            let stat = read_stat(pid)?;
            let cpu_time = stat.ticks as f64 / self.ticks_per_second;
            let cpu = match self.previous.get(&pid) {
                Some((ticks, at)) => {
                    let elapsed = now.duration_since(*at).as_secs_f64();
                    let used = stat.ticks.saturating_sub(*ticks) as f64 / self.ticks_per_second;
                    if elapsed > 0.0 {
                        used / elapsed * 100.0
                    } else {
                        0.0
                    }
                }
                // First sight: the average since it started.
                None if age > 0.0 => cpu_time / age * 100.0,
                None => 0.0,
            };
            previous.insert(pid, (stat.ticks, now));
            let rss = stat.rss_pages * self.page_size;
            Some(ProcessStats {
                watcher: watcher.to_string(),
                pid,
                wid,
                cpu: cpu as f32,
                rss,
                mem: if memory_total > 0 {
                    (rss as f64 / memory_total as f64 * 100.0) as f32
                } else {
                    0.0
                },
                age,
                cpu_time,
                threads: stat.threads,
            })
        };
        let processes: Vec<ProcessStats> = targets
            .iter()
            .filter_map(|t| measure(&t.watcher, t.pid, t.wid, t.age))
            .collect();
        let own_age = self.started.elapsed().as_secs_f64();
        let own = measure("nodeagent", self.own_pid, 0, own_age);
        self.previous = previous;

        let mut totals: BTreeMap<&str, WatcherStats> = watchers
            .iter()
            .map(|name| {
                (
                    name.as_str(),
                    WatcherStats {
                        name: name.clone(),
                        processes: 0,
                        cpu: 0.0,
                        rss: 0,
                        mem: 0.0,
                        max_age: 0.0,
                    },
                )
            })
            .collect();
        for p in &processes {
            if let Some(total) = totals.get_mut(p.watcher.as_str()) {
                total.processes += 1;
                total.cpu += p.cpu;
                total.rss += p.rss;
                total.mem += p.mem;
                total.max_age = total.max_age.max(p.age);
            }
        }
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let host = HostStats {
            cpu: host_cpu,
            cpus,
            load,
            memory_used,
            memory_total,
            host_processes: crate::nodeinfo::count_processes(),
            processes: u32::try_from(targets.len()).unwrap_or(u32::MAX),
            watchers: u32::try_from(watchers.len()).unwrap_or(u32::MAX),
            interval,
            refused: 0,
        };
        Sample {
            time: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            processes,
            watchers: totals.into_values().collect(),
            host: Some(host),
            own,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_even_with_odd_names() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 1000000 512 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.ticks, 300);
        assert_eq!(stat.threads, 3);
        assert_eq!(stat.rss_pages, 512);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn samples_itself_and_a_busy_child() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let targets = vec![Target {
            watcher: "busy".into(),
            pid: child.id(),
            wid: 1,
            age: 0.0,
        }];
        let watchers = vec!["busy".to_string(), "idle".to_string()];
        let mut sampler = Sampler::default();
        sampler.sample(&watchers, &targets, 1.0);
        let mut busy = 0.0;
        // CPU % is relative to the previous sample: poll until the loop shows up.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while busy < 20.0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let sample = sampler.sample(&watchers, &targets, 1.0);
            busy = sample.processes[0].cpu;
            assert_eq!(sample.watchers.len(), 2);
            assert_eq!(sample.watchers[0].processes, 1);
            assert_eq!(sample.watchers[1].processes, 0);
            assert!(sample.own.as_ref().is_some_and(|o| o.rss > 0));
            assert!(sample.host.as_ref().is_some_and(|h| h.memory_total > 0));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(busy >= 20.0, "a busy loop showed {busy}% CPU");
    }
}
