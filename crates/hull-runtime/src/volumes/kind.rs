//! Which way a bind mount's source reaches the guest: over the shared filesystem, as a guest
//! tmpfs of the pod (memory emptyDir, the pod's /dev/shm) or as a synced copy (configmap & co).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// How a bind source is served to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// Through the sandbox's shared directory (hostPath, disk emptyDir, containerd's files).
    Shared,
    /// A guest tmpfs per (pod, source), of the host tmpfs's size (None = guest default).
    Tmpfs {
        /// bytes, from the host mount's `size=` super option
        size: Option<u64>,
        /// permission bits of the host mount point
        mode: u32,
    },
    /// A guest tmpfs kept equal to the host directory by the shim (never on the shared fs).
    Synced,
}

/// kubelet's volume plugins whose content kubelet writes with its AtomicWriter.
const SYNCED_PLUGINS: [&str; 4] = [
    "kubernetes.io~configmap",
    "kubernetes.io~secret",
    "kubernetes.io~projected",
    "kubernetes.io~downward-api",
];

fn parent_name(p: &Path) -> Option<&OsStr> {
    p.parent().and_then(Path::file_name)
}

/// Whether `source` is where a pod-private tmpfs is expected: a kubelet emptyDir
/// (`.../volumes/kubernetes.io~empty-dir/NAME`) or containerd's sandbox shm
/// (`.../io.containerd.grpc.v1.cri/sandboxes/<id>/shm`). A hostPath that happens to be a
/// tmpfs (/tmp, /dev/shm of the host) is shared with the host and must stay shared.
fn pod_tmpfs_path(source: &Path) -> bool {
    if parent_name(source) == Some(OsStr::new("kubernetes.io~empty-dir")) {
        return true;
    }
    let sandboxes = source.parent().and_then(Path::parent);
    source.file_name() == Some(OsStr::new("shm"))
        && sandboxes.and_then(Path::file_name) == Some(OsStr::new("sandboxes"))
        && sandboxes.and_then(parent_name) == Some(OsStr::new("io.containerd.grpc.v1.cri"))
}

/// How `source` (an existing absolute path) reaches the guest, given the host's mount table.
pub fn classify(source: &Path, mountinfo: &[u8]) -> VolumeKind {
    let is_dir = source.is_dir();
    if is_dir
        && parent_name(source)
            .and_then(OsStr::to_str)
            .is_some_and(|p| SYNCED_PLUGINS.contains(&p))
    {
        return VolumeKind::Synced;
    }
    if is_dir && pod_tmpfs_path(source) {
        if let Some(size) = tmpfs_size_at(source, mountinfo) {
            let mode = std::fs::metadata(source)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o1777);
            return VolumeKind::Tmpfs { size, mode };
        }
    }
    VolumeKind::Shared
}

/// If the topmost mount at `path` is a tmpfs: its size in bytes (None without a limit).
pub fn tmpfs_size_at(path: &Path, mountinfo: &[u8]) -> Option<Option<u64>> {
    let mut found = None;
    for line in mountinfo.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if fields.len() < 5 || crate::mounts::unescape(fields[4]) != path.as_os_str() {
            continue;
        }
        // Optional fields end at "-"; then fstype, source, super options.
        let Some(dash) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let fstype = fields.get(dash + 1).copied().unwrap_or_default();
        let opts = fields.get(dash + 3).copied().unwrap_or_default();
        // The last line for a mount point is the one on top.
        found = Some((fstype == b"tmpfs").then(|| size_option(opts)));
    }
    found.flatten()
}

/// `size=` of tmpfs super options (the kernel writes it in `k`), in bytes.
fn size_option(opts: &[u8]) -> Option<u64> {
    let opts = std::str::from_utf8(opts).ok()?;
    let v = opts.split(',').find_map(|o| o.strip_prefix("size="))?;
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[u8] = b"\
22 1 0:20 / /run rw,nosuid - tmpfs tmpfs rw,size=812k,mode=755\n\
90 22 0:50 / /run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm rw,nosuid,nodev,noexec - tmpfs shm rw,size=65536k\n\
91 22 0:51 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/mem rw shared:7 - tmpfs tmpfs rw,size=8192k\n\
92 22 0:52 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/nolimit rw - tmpfs tmpfs rw\n\
93 22 8:1 /x /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/mem rw - ext4 /dev/sda1 rw\n";

    #[test]
    fn tmpfs_sizes_come_from_the_topmost_mount() {
        let shm = Path::new("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm");
        assert_eq!(tmpfs_size_at(shm, TABLE), Some(Some(64 << 20)));
        let none = Path::new("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/nolimit");
        assert_eq!(tmpfs_size_at(none, TABLE), Some(None));
        // Covered by a later ext4 mount: not a tmpfs any more.
        let covered = Path::new("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/mem");
        assert_eq!(tmpfs_size_at(covered, TABLE), None);
        assert_eq!(tmpfs_size_at(Path::new("/nowhere"), TABLE), None);
        assert_eq!(size_option(b"rw,size=1g"), Some(1 << 30));
        assert_eq!(size_option(b"rw,size=4096"), Some(4096));
    }

    #[test]
    fn only_pod_paths_count() {
        assert!(pod_tmpfs_path(Path::new(
            "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm"
        )));
        assert!(pod_tmpfs_path(Path::new(
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/x"
        )));
        assert!(!pod_tmpfs_path(Path::new("/run")));
        assert!(!pod_tmpfs_path(Path::new("/dev/shm")));
        assert!(!pod_tmpfs_path(Path::new("/x/sandboxes/abc/shm")));
        // Not a tmpfs on this host: shared.
        assert_eq!(classify(Path::new("/tmp"), TABLE), VolumeKind::Shared);
    }
}
