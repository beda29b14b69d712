//! Host mounts a sandbox makes (the shared directory and container rootfs binds):
//! creating them, listing what is mounted under a path, and taking them down.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
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
    // Bytes, not a String: a mount point need not be UTF-8, and one that is not must not make
    // the whole table look empty.
    let table = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = mount_points(&table)
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// The mount point (5th field) of every line of a mountinfo table, unescaped.
fn mount_points(table: &[u8]) -> impl Iterator<Item = PathBuf> + '_ {
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
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

/// The kernel writes space, tab, newline and backslash in mountinfo paths as `\\ooo` (three octal
/// digits) and every other byte as it is: decode those escapes back into the path's raw bytes.
pub(crate) fn unescape(field: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if let [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] = field[i..] {
            out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Enter a mount namespace of its own for the rest of this process's life, so every mount
/// it makes disappears with it even if it is killed. Call before starting any thread.
/// Everything is made a slave of the host's mounts: what the host mounts or unmounts later
/// (kubelet's volumes, containerd's shm) is seen here where the host's mount is shared,
/// and nothing mounted here ever reaches the host.
pub fn enter_private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys("unshare mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make / a slave", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(br"/a\040b"), "/a b");
        assert_eq!(unescape(b"/plain"), "/plain");
        assert_eq!(unescape(br"/t\011n\012b\134"), "/t\tn\nb\\");
        // Not an escape: left as it is.
        assert_eq!(unescape(br"/x\09y\4"), r"/x\09y\4");
    }

    #[test]
    fn non_ascii_mount_points_keep_their_bytes() {
        // UTF-8 is written raw by the kernel; so is any other byte but the four it escapes.
        assert_eq!(
            unescape("/run/hull/ctr-é/ß".as_bytes()),
            "/run/hull/ctr-é/ß"
        );
        let latin1 = unescape(b"/run/caf\xe9\\040x");
        assert_eq!(latin1.as_encoded_bytes(), b"/run/caf\xe9 x");
    }

    #[test]
    fn mount_points_come_from_the_fifth_field() {
        let table =
            "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 0:5 / /run/hull/säuberlich/rootfs rw - overlay overlay rw\n\
                     38 35 0:6 / /run/hull/x\\134y rw - tmpfs tmpfs rw\n";
        let mut raw = table.as_bytes().to_vec();
        raw.extend_from_slice(b"39 35 0:7 / /run/hull/\xff rw - tmpfs tmpfs rw\n");
        let points: Vec<PathBuf> = mount_points(&raw).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/run/hull/säuberlich/rootfs"),
                PathBuf::from("/run/hull/x\\y"),
                PathBuf::from(OsString::from_vec(b"/run/hull/\xff".to_vec())),
            ]
        );
    }

    #[test]
    fn refuses_to_remove_mounted_tree() {
        if !crate::test_support::require_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("keep"), b"x").expect("write");
        // A space (escaped by the kernel) and non-ASCII (written raw) in the mount point.
        let dst = dir.path().join("mount point é");
        std::fs::create_dir(&dst).expect("mkdir");
        bind(src.path(), &dst, false).expect("bind");
        assert_eq!(mounted_under(dir.path()), vec![dst.clone()]);
        remove_dir_if_unmounted(dir.path()).expect("unmounts then removes");
        assert!(src.path().join("keep").exists(), "bind source was touched");
        assert!(!dir.path().exists());
    }
}
