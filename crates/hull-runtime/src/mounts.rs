//! Host mounts a sandbox makes (the shared directory and container rootfs binds):
//! creating them, listing what is mounted under a path, and taking them down.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Bind-mount `src` onto `dst` (recursively); `dst` must exist.
pub fn bind(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!("bind mount {} on {}", src.display(), dst.display()),
            e,
        )
    })?;
    if readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, dst, None::<&str>, flags, None::<&str>) {
            let _ = umount2(dst, MntFlags::MNT_DETACH);
            return Err(Error::sys(
                format!("remount {} read-only", dst.display()),
                e,
            ));
        }
    }
    Ok(())
}

/// Make `dir` a mount point whose later submounts propagate to copies of it
/// (virtiofsd serves the directory from its own mount namespace).
pub fn make_shared_mountpoint(dir: &Path) -> Result<()> {
    bind(dir, dir, false)?;
    if let Err(e) = mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    ) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        return Err(Error::sys(format!("make {} shared", dir.display()), e));
    }
    Ok(())
}

/// Mount points at or below `root`, deepest first, from /proc/self/mountinfo.
pub fn mounted_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Unmount everything at or below `root` (lazily, deepest first).
/// Returns the mount points that are still there afterwards.
pub fn unmount_all_under(root: &Path) -> Vec<PathBuf> {
    for _ in 0..8 {
        let left = mounted_under(root);
        if left.is_empty() {
            return left;
        }
        for m in &left {
            if let Err(e) = umount2(m, MntFlags::MNT_DETACH) {
                tracing::debug!(mount = %m.display(), error = %e, "umount");
            }
        }
    }
    mounted_under(root)
}

/// Remove `dir` recursively, but only if nothing is mounted below it any more:
/// a still-mounted container rootfs must never be deleted through the run directory.
pub fn remove_dir_if_unmounted(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let left = unmount_all_under(dir);
    if !left.is_empty() {
        return Err(Error::io(
            format!(
                "not removing {}: still mounted: {}",
                dir.display(),
                left[0].display()
            ),
            std::io::Error::from(std::io::ErrorKind::ResourceBusy),
        ));
    }
    std::fs::remove_dir_all(dir).map_err(|e| Error::io(format!("remove {}", dir.display()), e))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Enter a private mount namespace for the rest of this process's life, so every mount
/// it makes disappears with it even if it is killed. Call before starting any thread.
pub fn enter_private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys("unshare mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make / private", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn refuses_to_remove_mounted_tree() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("keep"), b"x").expect("write");
        let dst = dir.path().join("m");
        std::fs::create_dir(&dst).expect("mkdir");
        bind(src.path(), &dst, false).expect("bind");
        assert_eq!(mounted_under(dir.path()), vec![dst.clone()]);
        remove_dir_if_unmounted(dir.path()).expect("unmounts then removes");
        assert!(src.path().join("keep").exists(), "bind source was touched");
        assert!(!dir.path().exists());
    }
}
