//! Which process owns a sandbox's run directory (pid + start time, safe against pid reuse),
//! so directories left by a killed owner can be found and removed by the next one.

use std::path::Path;

use crate::mounts;

/// File in each run directory naming its owner.
pub const OWNER_FILE: &str = "owner";

/// `<pid> <start time in clock ticks since boot>` of a process.
fn identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime) counted after the parenthesised command name, which may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Record this process as the owner of `run_dir`.
pub fn claim(run_dir: &Path) -> std::io::Result<()> {
    let me = identity(std::process::id())
        .ok_or_else(|| std::io::Error::other("cannot read /proc/self/stat"))?;
    std::fs::write(run_dir.join(OWNER_FILE), me)
}

/// Whether the owner recorded in `run_dir` is gone (a missing or unreadable record is not
/// taken as gone: the directory may be being created right now).
fn owner_is_gone(run_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(run_dir.join(OWNER_FILE)) else {
        return false;
    };
    let Some(pid) = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    identity(pid).as_deref() != Some(text.trim())
}

/// The pid of the live process recorded as the owner of `run_dir`, if any.
pub fn live_owner(run_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(run_dir.join(OWNER_FILE)).ok()?;
    let pid = text.split_whitespace().next()?.parse::<u32>().ok()?;
    (identity(pid).as_deref() == Some(text.trim())).then_some(pid)
}

/// Remove the run directories under `root` whose owner died without cleaning up.
pub fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if dir.is_dir() && owner_is_gone(&dir) {
            match mounts::remove_dir_if_unmounted(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed run directory of a dead owner")
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "stale run directory")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_owner_is_kept_dead_owner_is_swept() {
        let root = tempfile::tempdir().expect("tempdir");
        let live = root.path().join("live");
        std::fs::create_dir(&live).expect("mkdir");
        claim(&live).expect("claim");
        let dead = root.path().join("dead");
        std::fs::create_dir(&dead).expect("mkdir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let id = identity(pid);
        child.wait().expect("wait");
        std::fs::write(
            dead.join(OWNER_FILE),
            id.unwrap_or_else(|| format!("{pid} 1")),
        )
        .expect("write");
        let unowned = root.path().join("new");
        std::fs::create_dir(&unowned).expect("mkdir");
        sweep_stale(root.path());
        assert!(live.exists());
        assert!(!dead.exists());
        assert!(
            unowned.exists(),
            "a directory without an owner record may be in creation"
        );
    }
}
