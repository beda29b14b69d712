//! Container resource counters as both sides use them, and their wire form (`StatsResponse`):
//! one plain struct, converted in one place.

use crate::agent::StatsResponse;

/// Usage counters of a container's cgroup v2 inside the guest; what the guest kernel does
/// not provide reads 0, and a limit of 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// cpu.stat usage_usec
    pub cpu_usage_usec: u64,
    /// cpu.stat user_usec
    pub cpu_user_usec: u64,
    /// cpu.stat system_usec
    pub cpu_system_usec: u64,
    /// memory.current
    pub memory_usage_bytes: u64,
    /// memory.max (0 = no limit)
    pub memory_limit_bytes: u64,
    /// pids.current
    pub pids_current: u64,
    /// pids.max (0 = no limit)
    pub pids_limit: u64,
    /// memory.stat anon (the RSS of the container's processes)
    pub memory_anon_bytes: u64,
    /// memory.stat inactive_file (page cache a working set leaves out)
    pub memory_inactive_file_bytes: u64,
    /// memory.stat pgfault
    pub memory_pgfault: u64,
    /// memory.stat pgmajfault
    pub memory_pgmajfault: u64,
}

impl From<ContainerStats> for StatsResponse {
    fn from(s: ContainerStats) -> Self {
        let mut r = StatsResponse::new();
        r.cpu_usage_usec = s.cpu_usage_usec;
        r.cpu_user_usec = s.cpu_user_usec;
        r.cpu_system_usec = s.cpu_system_usec;
        r.memory_usage_bytes = s.memory_usage_bytes;
        r.memory_limit_bytes = s.memory_limit_bytes;
        r.pids_current = s.pids_current;
        r.pids_limit = s.pids_limit;
        r.memory_anon_bytes = s.memory_anon_bytes;
        r.memory_inactive_file_bytes = s.memory_inactive_file_bytes;
        r.memory_pgfault = s.memory_pgfault;
        r.memory_pgmajfault = s.memory_pgmajfault;
        r
    }
}

impl From<StatsResponse> for ContainerStats {
    fn from(r: StatsResponse) -> Self {
        ContainerStats {
            cpu_usage_usec: r.cpu_usage_usec,
            cpu_user_usec: r.cpu_user_usec,
            cpu_system_usec: r.cpu_system_usec,
            memory_usage_bytes: r.memory_usage_bytes,
            memory_limit_bytes: r.memory_limit_bytes,
            pids_current: r.pids_current,
            pids_limit: r.pids_limit,
            memory_anon_bytes: r.memory_anon_bytes,
            memory_inactive_file_bytes: r.memory_inactive_file_bytes,
            memory_pgfault: r.memory_pgfault,
            memory_pgmajfault: r.memory_pgmajfault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = ContainerStats {
            cpu_usage_usec: 1,
            cpu_user_usec: 2,
            cpu_system_usec: 3,
            memory_usage_bytes: 4,
            memory_limit_bytes: 5,
            pids_current: 6,
            pids_limit: 7,
            memory_anon_bytes: 8,
            memory_inactive_file_bytes: 9,
            memory_pgfault: 10,
            memory_pgmajfault: 11,
        };
        assert_eq!(ContainerStats::from(StatsResponse::from(s)), s);
    }
}
