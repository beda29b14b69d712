//! The sandbox's cgroup on the host: containerd names one for the pod (the sandbox spec's
//! `linux.cgroupsPath`, under kubelet's pod cgroup); the VMM and its helper daemons are moved
//! into it, so kubelet's pod limits and accounting (cadvisor, PodSandboxStats: CPU, memory and
//! the pod netns's network counters) cover the VM, as they cover runc's processes. Both
//! cgroupfs paths (`/kubepods/pod<uid>/<id>`) and systemd ones (`slice:prefix:name`) are
//! honoured, on cgroup v1 (every mounted hierarchy) and v2. Only directories made here are
//! removed again.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where the host's cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long removal waits for the last processes to leave.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The file in a sandbox's run directory that lists the cgroup directories it made, so that
/// `delete` after a shim crash removes them too.
const RECORD: &str = "host-cgroups";

/// A cgroup made (or joined) for one sandbox, in each hierarchy.
#[derive(Debug)]
pub struct HostCgroup {
    /// The cgroup in each hierarchy.
    dirs: Vec<PathBuf>,
    /// Directories this made, deepest first: the only ones removed.
    created: Vec<PathBuf>,
}

/// The cgroup path, relative to a hierarchy's root, of an OCI `cgroupsPath`.
pub fn relative_path(cgroups_path: &str) -> Result<PathBuf> {
    let bad =
        |why: &str| Error::InvalidArgument(format!("linux.cgroupsPath {cgroups_path:?}: {why}"));
    let rel = if let Some((slice, rest)) = cgroups_path.split_once(':') {
        let (prefix, name) = rest
            .split_once(':')
            .ok_or_else(|| bad("a systemd path is slice:prefix:name"))?;
        if name.is_empty() || name.contains('/') || prefix.contains('/') || slice.contains('/') {
            return Err(bad("a systemd path is slice:prefix:name"));
        }
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        expand_slice(if slice.is_empty() {
            "system.slice"
        } else {
            slice
        })
        .ok_or_else(|| bad("bad slice name"))?
        .join(unit)
    } else {
        PathBuf::from(cgroups_path.trim_start_matches('/'))
    };
    let clean = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !clean || rel.as_os_str().is_empty() {
        return Err(bad("must be a clean path"));
    }
    Ok(rel)
}

/// systemd's slice nesting: `a-b-c.slice` lives in `a.slice/a-b.slice/a-b-c.slice`.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let base = slice.strip_suffix(".slice")?;
    if base == "-" {
        return Some(PathBuf::new());
    }
    if base.is_empty() || base.starts_with('-') || base.ends_with('-') || base.contains("--") {
        return None;
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in base.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Some(path)
}

/// The cgroup hierarchies mounted under `root`: `root` itself on cgroup v2, else each
/// hierarchy directory (co-mounted controllers once).
fn hierarchies(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(true);
        if !is_link && path.join("cgroup.procs").exists() {
            out.push(path);
        }
    }
    out.sort();
    out
}

impl HostCgroup {
    /// Make (or join) the cgroup `cgroups_path` in every hierarchy under `root`.
    pub fn create(root: &Path, cgroups_path: &str) -> Result<HostCgroup> {
        let rel = relative_path(cgroups_path)?;
        let mut cg = HostCgroup {
            dirs: Vec::new(),
            created: Vec::new(),
        };
        for h in hierarchies(root) {
            let dir = h.join(&rel);
            let mut missing: Vec<PathBuf> = dir
                .ancestors()
                .take_while(|a| *a != h && !a.exists())
                .map(Path::to_path_buf)
                .collect();
            if let Err(e) = fs::create_dir_all(&dir) {
                cg.remove();
                return Err(Error::io(format!("create cgroup {}", dir.display()), e));
            }
            // cgroup v1's cpuset starts a new cgroup with no CPUs and no memory nodes, where
            // no process may join: inherit the parent's, as runc does.
            for made in missing.iter().rev() {
                if let Err(e) = inherit_cpuset(made) {
                    cg.created.append(&mut missing);
                    cg.remove();
                    return Err(e);
                }
            }
            // Deepest first, the order they are removed in.
            cg.created.append(&mut missing);
            cg.dirs.push(dir);
        }
        if cg.dirs.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "no cgroup hierarchy mounted under {}",
                root.display()
            )));
        }
        Ok(cg)
    }

    /// Move process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        for dir in &self.dirs {
            fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| {
                Error::io(format!("move pid {pid} into cgroup {}", dir.display()), e)
            })?;
        }
        Ok(())
    }

    /// The cgroup directories, one per hierarchy.
    #[cfg(test)]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Write the directories made by `create` to `<run_dir>/host-cgroups`.
    pub fn record(&self, run_dir: &Path) -> Result<()> {
        let list: String = self
            .created
            .iter()
            .map(|d| format!("{}\n", d.display()))
            .collect();
        let path = run_dir.join(RECORD);
        fs::write(&path, list).map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    /// Remove the directories made by `create` (after the processes in them have exited:
    /// retried while the kernel still counts them).
    pub fn remove(&mut self) {
        remove_dirs(self.created.drain(..));
        self.dirs.clear();
    }
}

/// Remove the cgroups a sandbox whose shim died recorded in `run_dir` (see
/// [`HostCgroup::record`]); only clean paths under [`CGROUP_ROOT`] are touched.
pub fn remove_recorded(run_dir: &Path) {
    let Ok(list) = fs::read_to_string(run_dir.join(RECORD)) else {
        return;
    };
    let root = Path::new(CGROUP_ROOT);
    let dirs = list.lines().map(PathBuf::from).filter(|d| {
        d.starts_with(root)
            && d != root
            && d.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    });
    remove_dirs(dirs);
}

/// rmdir each of `dirs` (deepest first), waiting while processes still leave them. A directory
/// that holds other cgroups (a parent another sandbox uses too) is left alone.
fn remove_dirs(dirs: impl Iterator<Item = PathBuf>) {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    for dir in dirs {
        if has_child_cgroups(&dir) {
            continue;
        }
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                // Processes still in it are on their way out.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
                    break;
                }
            }
        }
    }
}

fn has_child_cgroups(dir: &Path) -> bool {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
}

/// Copy an empty `cpuset.cpus` / `cpuset.mems` of `dir` from its parent (cgroup v1 only).
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let Ok(mine) = fs::read_to_string(dir.join(file)) else {
            continue;
        };
        if !mine.trim().is_empty() {
            continue;
        }
        let theirs = fs::read_to_string(parent.join(file))
            .map_err(|e| Error::io(format!("read {}", parent.join(file).display()), e))?;
        fs::write(dir.join(file), theirs.trim())
            .map_err(|e| Error::io(format!("write {}", dir.join(file).display()), e))?;
    }
    Ok(())
}

/// The host OOM killer's bias of `pid` (None if it is gone).
pub fn oom_score_adj(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Set the host OOM killer's bias for `pid` (what kubelet gave the pod's sandbox).
pub fn set_oom_score_adj(pid: i32, adj: i32) -> Result<()> {
    if !(-1000..=1000).contains(&adj) {
        return Err(Error::InvalidArgument(format!(
            "oomScoreAdj {adj} is outside -1000..=1000"
        )));
    }
    let path = format!("/proc/{pid}/oom_score_adj");
    fs::write(&path, adj.to_string()).map_err(|e| Error::io(format!("write {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_and_systemd_paths() {
        assert_eq!(
            relative_path("/k8s.io/abc").expect("cgroupfs"),
            PathBuf::from("k8s.io/abc")
        );
        assert_eq!(
            relative_path("kubepods-burstable-pod12.slice:cri-containerd:abc").expect("systemd"),
            PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            relative_path(":cri-containerd:abc").expect("default slice"),
            PathBuf::from("system.slice/cri-containerd-abc.scope")
        );
        for bad in [
            "",
            "/",
            "/a/../b",
            "a.slice:x",
            "a.slice:x:",
            "x:y:z",
            "a--b.slice:p:n",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn creates_in_each_hierarchy_and_removes_only_its_own() {
        let root = tempfile::tempdir().expect("tempdir");
        for h in ["memory", "cpu,cpuacct", "pids"] {
            let d = root.path().join(h);
            fs::create_dir_all(d.join("kubepods")).expect("mkdir");
            fs::write(d.join("cgroup.procs"), "").expect("procs");
        }
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).expect("symlink");
        let mut cg = HostCgroup::create(root.path(), "/kubepods/pod1/sb").expect("create");
        assert_eq!(cg.dirs().len(), 3, "{:?}", cg.dirs());
        for d in cg.dirs() {
            assert!(d.is_dir(), "{}", d.display());
        }
        cg.remove();
        for h in ["memory", "cpu,cpuacct", "pids"] {
            let d = root.path().join(h);
            assert!(!d.join("kubepods/pod1").exists(), "{h}: made dirs removed");
            assert!(d.join("kubepods").is_dir(), "{h}: kubelet's dir kept");
        }
    }

    #[test]
    fn a_record_names_only_cgroups() {
        let run = tempfile::tempdir().expect("tempdir");
        let outside = run.path().join("not-a-cgroup");
        fs::create_dir(&outside).expect("mkdir");
        let list = format!(
            "{}\n/sys/fs/cgroup/../tmp\n/sys/fs/cgroup\n",
            outside.display()
        );
        fs::write(run.path().join(RECORD), list).expect("record");
        remove_recorded(run.path());
        assert!(
            outside.is_dir(),
            "a path outside /sys/fs/cgroup was removed"
        );
    }

    #[test]
    fn oom_score_adj_is_bounded() {
        let me = std::process::id() as i32;
        assert!(set_oom_score_adj(me, 1001).is_err());
        assert!(oom_score_adj(me).is_some_and(|a| (-1000..=1000).contains(&a)));
    }
}
