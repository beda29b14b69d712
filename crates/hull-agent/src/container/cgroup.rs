//! The container's cgroup v2 directory `<root>/hull/<id>`: creation with the spec's resource
//! limits, joining, killing everything in it, and removal.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hull_protocol::ContainerStats;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::error::AgentError;

/// The controllers the agent enables for containers when the kernel has them.
const CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "io", "hugetlb", "misc"];

/// Enable every wanted controller available in `dir` for its children (errors are logged).
pub fn enable_controllers(dir: &Path) {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    for c in available
        .split_whitespace()
        .filter(|c| CONTROLLERS.contains(c))
    {
        if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
            tracing::warn!(dir = %dir.display(), controller = c, error = %e, "cannot enable controller");
        }
    }
}

/// Move process `pid` (0 = the caller) into the cgroup `dir`.
pub fn join(dir: &Path, pid: i32) -> io::Result<()> {
    fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// The cgroup of container `id` under `root`, without touching the filesystem.
    pub fn path(root: &Path, id: &str) -> Self {
        Cgroup {
            dir: root.join("hull").join(id),
        }
    }

    /// Create the directory (failing if it exists) and apply `resources`.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), AgentError> {
        let parent = self
            .dir
            .parent()
            .ok_or_else(|| AgentError::Internal("cgroup without parent".into()))?;
        if let Some(root) = parent.parent() {
            enable_controllers(root);
        }
        fs::create_dir_all(parent).map_err(|e| AgentError::io("create cgroup parent", e))?;
        enable_controllers(parent);
        match fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // A leftover of a container with the same id: reuse it only if empty.
                if !self.procs().is_empty() {
                    return Err(AgentError::AlreadyExists(format!(
                        "cgroup {} is in use",
                        self.dir.display()
                    )));
                }
            }
            Err(e) => return Err(AgentError::io("create cgroup", e)),
        }
        if let Some(r) = resources {
            if let Err(e) = self.apply(r) {
                self.remove();
                return Err(e);
            }
        }
        Ok(())
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> Result<(), AgentError> {
        match fs::write(self.dir.join(file), value) {
            Ok(()) => Ok(()),
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::PermissionDenied =>
            {
                tracing::warn!(
                    file,
                    value,
                    "cgroup controller not available; limit not applied"
                );
                Ok(())
            }
            Err(e) => Err(AgentError::InvalidArgument(format!(
                "cannot set {file} to {value}: {e}"
            ))),
        }
    }

    /// Write the limits of `r` the way runc (1.1, cgroup v2) does: what is unset or 0 is left
    /// alone, -1 is "max"; swap is memory+swap in the spec and swap alone in cgroup v2.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), AgentError> {
        for (file, value) in resource_files(r)? {
            self.write(file, &value)?;
        }
        for (key, value) in r.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') || key.starts_with("cgroup.") {
                return Err(AgentError::InvalidArgument(format!(
                    "bad unified cgroup key {key:?}"
                )));
            }
            self.write(key, value)?;
        }
        Ok(())
    }

    /// Pids of every process in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Write `cgroup.freeze` and wait (polling `cgroup.events`, up to `timeout`) until the
    /// kernel reports the whole cgroup frozen or thawed.
    pub fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<(), AgentError> {
        let want = if frozen { "1" } else { "0" };
        fs::write(self.dir.join("cgroup.freeze"), want)
            .map_err(|e| AgentError::io("write cgroup.freeze", e))?;
        let deadline = std::time::Instant::now() + timeout;
        let mut step = Duration::from_millis(1);
        loop {
            let events = fs::read_to_string(self.dir.join("cgroup.events"))
                .map_err(|e| AgentError::io("read cgroup.events", e))?;
            if events.lines().any(|l| l.trim() == format!("frozen {want}")) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(AgentError::Internal(format!(
                    "cgroup did not reach frozen={want} within {timeout:?}"
                )));
            }
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(50));
        }
    }

    /// How many processes the kernel OOM-killed in this cgroup (memory.events `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Usage counters; what the kernel does not provide reads as 0.
    pub fn stats(&self) -> ContainerStats {
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let cpu = read("cpu.stat");
        let field = |name: &str| {
            cpu.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        let number = |f: &str| read(f).trim().parse::<u64>().unwrap_or(0);
        let mem = read("memory.stat");
        let mem_field = |name: &str| {
            mem.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        ContainerStats {
            cpu_usage_usec: field("usage_usec"),
            cpu_user_usec: field("user_usec"),
            cpu_system_usec: field("system_usec"),
            memory_usage_bytes: number("memory.current"),
            memory_limit_bytes: number("memory.max"),
            pids_current: number("pids.current"),
            pids_limit: number("pids.max"),
            memory_anon_bytes: mem_field("anon"),
            memory_inactive_file_bytes: mem_field("inactive_file"),
            memory_pgfault: mem_field("pgfault"),
            memory_pgmajfault: mem_field("pgmajfault"),
        }
    }

    /// Send `signal` to every process of the cgroup (`cgroup.kill` for SIGKILL when available).
    pub fn signal_all(&self, signal: Signal) {
        if signal == Signal::SIGKILL && fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.procs() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Kill what is left and remove the directory (retrying while dying tasks leave it).
    pub fn remove(&self) {
        for attempt in 0..50 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                Err(e) => {
                    if attempt == 49 {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove cgroup");
                        return;
                    }
                    self.signal_all(Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// The cgroup v2 files and values (in writing order) for the spec's `r`, without `unified`.
pub fn resource_files(r: &LinuxResources) -> Result<Vec<(&'static str, String)>, AgentError> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        let limit = m.limit().unwrap_or(0);
        if let Some(swap) = m.swap() {
            let swap = swap_v2(swap, limit)?;
            if swap != 0 || m.swap().is_some_and(|s| s > 0) {
                out.push(("memory.swap.max", max_or(swap)));
            }
        }
        if limit != 0 {
            out.push(("memory.max", max_or(limit)));
        }
        if let Some(low) = m.reservation().filter(|v| *v != 0) {
            out.push(("memory.low", max_or(low)));
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            out.push(("cpu.weight", shares_to_weight(shares).to_string()));
        }
        let quota = cpu.quota().unwrap_or(0);
        let period = cpu.period().unwrap_or(0);
        if quota != 0 || period != 0 {
            let mut v = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_string()
            };
            if period != 0 {
                v.push_str(&format!(" {period}"));
            }
            out.push(("cpu.max", v));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.push(("cpuset.cpus", cpus.to_string()));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            out.push(("cpuset.mems", mems.to_string()));
        }
    }
    if let Some(pids) = r.pids().filter(|p| p.limit() != 0) {
        out.push(("pids.max", max_or(pids.limit())));
    }
    Ok(out)
}

/// runc's ConvertMemorySwapToCgroupV2Value: the spec's memory+swap to cgroup v2's swap alone.
fn swap_v2(swap: i64, memory: i64) -> Result<i64, AgentError> {
    if memory == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if memory == 0 || memory == -1 {
        return Err(AgentError::InvalidArgument(
            "unable to set swap limit without memory limit".into(),
        ));
    }
    if memory < 0 || swap < memory {
        return Err(AgentError::InvalidArgument(format!(
            "memory+swap limit {swap} must be >= memory limit {memory}"
        )));
    }
    Ok(swap - memory)
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_read_cgroup_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cg = Cgroup::path(dir.path(), "c1");
        fs::create_dir_all(cg.dir()).expect("mkdir");
        let w = |f: &str, v: &str| fs::write(cg.dir().join(f), v).expect("write");
        w(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
        );
        w("memory.current", "4096\n");
        w("memory.max", "max\n");
        w("pids.current", "3\n");
        w("pids.max", "100\n");
        w(
            "memory.stat",
            "anon 8192\nfile 4096\nactive_file 1024\ninactive_file 3072\npgfault 77\npgmajfault 2\n",
        );
        assert_eq!(cg.oom_kills(), 0);
        w("memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n");
        assert_eq!(cg.oom_kills(), 1);
        let s = cg.stats();
        assert_eq!(
            (s.cpu_usage_usec, s.cpu_user_usec, s.cpu_system_usec),
            (1500, 1000, 500)
        );
        assert_eq!((s.memory_usage_bytes, s.memory_limit_bytes), (4096, 0));
        assert_eq!((s.pids_current, s.pids_limit), (3, 100));
        assert_eq!(
            (
                s.memory_anon_bytes,
                s.memory_inactive_file_bytes,
                s.memory_pgfault,
                s.memory_pgmajfault
            ),
            (8192, 3072, 77, 2)
        );
    }

    #[test]
    fn freeze_waits_for_the_kernel_and_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cg = Cgroup::path(dir.path(), "c1");
        fs::create_dir_all(cg.dir()).expect("mkdir");
        fs::write(cg.dir().join("cgroup.events"), "populated 1\nfrozen 1\n").expect("write");
        cg.set_frozen(true, Duration::from_millis(50))
            .expect("frozen");
        let e = cg
            .set_frozen(false, Duration::from_millis(50))
            .expect_err("never thawed");
        assert!(e.to_string().contains("frozen=0"), "{e}");
    }

    fn files(r: &str) -> Vec<(&'static str, String)> {
        let r: LinuxResources = serde_json::from_str(r).expect("resources json");
        resource_files(&r).expect("valid")
    }

    #[test]
    fn resources_map_as_runc_does() {
        let got = files(
            r#"{"memory":{"limit":67108864,"swap":67108864},
                "cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0","mems":"0"},
                "pids":{"limit":100}}"#,
        );
        let want: Vec<(&str, String)> = vec![
            ("memory.swap.max", "0".into()),
            ("memory.max", "67108864".into()),
            ("cpu.weight", "20".into()),
            ("cpu.max", "50000 100000".into()),
            ("cpuset.cpus", "0".into()),
            ("cpuset.mems", "0".into()),
            ("pids.max", "100".into()),
        ];
        assert_eq!(got, want);
        assert_eq!(
            files(r#"{"memory":{"limit":100,"swap":300},"cpu":{"quota":-1}}"#),
            vec![
                ("memory.swap.max", "200".to_string()),
                ("memory.max", "100".into()),
                ("cpu.max", "max".into())
            ]
        );
        assert_eq!(
            files(r#"{"memory":{"limit":-1,"swap":-1},"cpu":{"shares":0,"period":20000}}"#),
            vec![
                ("memory.swap.max", "max".to_string()),
                ("memory.max", "max".into()),
                ("cpu.max", "max 20000".into())
            ]
        );
        // Unset or 0 leaves the kernel's value alone.
        assert!(files(r#"{"memory":{},"cpu":{},"pids":{"limit":0}}"#).is_empty());
        let bad: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":200,"swap":100}}"#).expect("json");
        assert!(resource_files(&bad).is_err());
        let bad: LinuxResources = serde_json::from_str(r#"{"memory":{"swap":100}}"#).expect("json");
        assert!(resource_files(&bad).is_err());
    }

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(max_or(-1), "max");
        assert_eq!(max_or(100), "100");
    }
}
