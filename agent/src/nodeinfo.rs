//! Facts about the host for `nodeinfo`: CPUs, memory, load and process count.
//! Cheap enough to answer on every request (a few small reads of `/proc`).

use sysinfo::{MemoryRefreshKind, RefreshKind, System};

/// A reusable reader of host facts.
pub struct HostProbe {
    system: Option<System>,
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostFacts {
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_total: u64,
    /// Available memory in bytes.
    pub memory_available: u64,
    /// Load averages (1, 5, 15 minutes).
    pub load: [f64; 3],
    /// Processes on the host.
    pub processes: u32,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            system: System::new_with_specifics(
                RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
            )
            .ok(),
        }
    }
}

impl HostProbe {
    /// Reads the host's current facts.
    pub fn read(&mut self) -> HostFacts {
        let (memory_total, memory_available) = match self.system.as_mut() {
            Some(system) => {
                system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                (system.total_memory(), system.available_memory())
            }
            None => (0, 0),
        };
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        HostFacts {
            cpus,
            memory_total,
            memory_available,
            load,
            processes: count_processes(),
        }
    }
}

/// Processes on the host (entries of `/proc`).
pub(crate) fn count_processes() -> u32 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let count = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_facts() {
        let facts = HostProbe::default().read();
        assert!(facts.cpus >= 1);
        assert!(facts.memory_total > 0 && facts.memory_available <= facts.memory_total);
        assert!(facts.processes >= 1);
    }
}
