//! Device nodes of the container's /dev: `linux.devices` created as runc creates them, each
//! checked to exist in the guest; for a container whose device rules allow every device (a
//! privileged one: containerd 1.6 adds all *host* devices and an allow-all rule, and host
//! devices mean nothing in a VM) the guest's own devices instead.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{major, makedev, minor, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType};

use super::spec::is_clean_absolute;
use super::wire::HelperError;

/// Directories of the guest's /dev that hold no device of the container's (as containerd
/// skips them when it lists host devices).
const SKIP: &[&str] = &["pts", "shm", "mqueue", "fd", "hugepages"];

/// A device node to create, relative to the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// absolute path inside the container
    pub path: PathBuf,
    /// S_IFCHR, S_IFBLK or S_IFIFO
    pub kind: SFlag,
    /// major number
    pub major: u64,
    /// minor number
    pub minor: u64,
    /// permission bits
    pub mode: u32,
    /// owner
    pub uid: u32,
    /// group
    pub gid: u32,
}

/// True if the device cgroup rules end with one that allows every device: what containerd's
/// WithAllDevicesAllowed (privileged) writes.
pub fn all_allowed(linux: &Linux) -> bool {
    let rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    rules.last().is_some_and(|r| {
        r.allow()
            && matches!(r.typ(), None | Some(LinuxDeviceType::A))
            && r.major().is_none()
            && r.minor().is_none()
    })
}

/// The node of an OCI device entry; `sys` is where sysfs is mounted (`/sys`), to check that a
/// character or block device exists in the guest.
pub fn from_spec(d: &LinuxDevice, sys: &Path) -> Result<Node, HelperError> {
    let name = d.path().display();
    if !is_clean_absolute(d.path()) || !d.path().starts_with("/dev") {
        return Err(HelperError::invalid(format!(
            "device path {name} must be a clean path under /dev"
        )));
    }
    let (kind, class) = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => (SFlag::S_IFCHR, Some("char")),
        LinuxDeviceType::B => (SFlag::S_IFBLK, Some("block")),
        LinuxDeviceType::P => (SFlag::S_IFIFO, None),
        LinuxDeviceType::A => {
            return Err(HelperError::invalid(format!(
                "device {name}: type \"a\" is not a device node"
            )))
        }
    };
    let (maj, min) = (u64::try_from(d.major()).ok(), u64::try_from(d.minor()).ok());
    let (Some(maj), Some(min)) = (maj, min) else {
        return Err(HelperError::invalid(format!(
            "device {name}: bad number {}:{}",
            d.major(),
            d.minor()
        )));
    };
    if let Some(class) = class {
        if !sys.join(format!("dev/{class}/{maj}:{min}")).exists() {
            return Err(HelperError::not_found(format!(
                "device {name} ({} {maj}:{min}) does not exist in the guest",
                d.typ().as_str()
            )));
        }
    }
    Ok(Node {
        path: d.path().clone(),
        kind,
        major: maj,
        minor: min,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Every character and block device under the guest's `dev` (e.g. `/dev`), as nodes of the
/// same path, numbers, mode and owner.
pub fn guest_devices(dev: &Path) -> Vec<Node> {
    let mut out = Vec::new();
    let mut todo = vec![dev.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = meta.file_type();
            let rel = e.path().strip_prefix(dev).map(Path::to_path_buf);
            let Ok(rel) = rel else { continue };
            if ft.is_dir() {
                if !(dir == dev && SKIP.iter().any(|s| e.file_name() == *s)) {
                    todo.push(e.path());
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else {
                continue;
            };
            out.push(Node {
                path: Path::new("/dev").join(rel),
                kind,
                major: major(meta.rdev()),
                minor: minor(meta.rdev()),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Create `node` under `root`; an existing node is left as it is (as runc does).
pub fn create(root: &Path, node: &Node) -> Result<(), HelperError> {
    let rel = node.path.strip_prefix("/").unwrap_or(&node.path);
    let dest = root.join(rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| HelperError::internal(format!("mkdir {}", parent.display()), e))?;
    }
    match mknod(
        &dest,
        node.kind,
        Mode::from_bits_truncate(node.mode),
        makedev(node.major, node.minor),
    ) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(e) => {
            return Err(HelperError::internal(
                format!("mknod {}", node.path.display()),
                e,
            ))
        }
    }
    // mknod applies the umask; the spec's mode is meant exactly.
    nix::sys::stat::fchmodat(
        None,
        &dest,
        Mode::from_bits_truncate(node.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| HelperError::internal(format!("chmod {}", node.path.display()), e))?;
    chown(
        &dest,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
    )
    .map_err(|e| HelperError::internal(format!("chown {}", node.path.display()), e))
}

/// The nodes the container gets: the guest's devices when every device is allowed, else the
/// spec's (each checked to exist in the guest).
pub fn wanted(linux: &Linux, guest_dev: &Path, sys: &Path) -> Result<Vec<Node>, HelperError> {
    if all_allowed(linux) {
        return Ok(guest_devices(guest_dev));
    }
    linux
        .devices()
        .iter()
        .flatten()
        .map(|d| from_spec(d, sys))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(json: &str) -> Linux {
        serde_json::from_str(json).expect("linux json")
    }

    #[test]
    fn privileged_is_an_allow_all_last_rule() {
        let privileged = linux(
            r#"{"resources":{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]}}"#,
        );
        assert!(all_allowed(&privileged));
        let plain = linux(
            r#"{"resources":{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":229,"access":"rwm"}]}}"#,
        );
        assert!(!all_allowed(&plain));
        assert!(!all_allowed(&linux("{}")));
    }

    #[test]
    fn spec_devices_must_exist_in_the_guest() {
        let sys = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(sys.path().join("dev/char/1:3")).expect("mkdir");
        let l = linux(
            r#"{"devices":[{"path":"/dev/mynull","type":"c","major":1,"minor":3,"fileMode":8630,"uid":5,"gid":6},
                           {"path":"/dev/fifo","type":"p","major":0,"minor":0}]}"#,
        );
        let nodes = wanted(&l, Path::new("/nonexistent"), sys.path()).expect("nodes");
        assert_eq!(nodes[0].mode, 0o666);
        assert_eq!((nodes[0].uid, nodes[0].gid), (5, 6));
        assert_eq!(nodes[1].kind, SFlag::S_IFIFO);
        let missing =
            linux(r#"{"devices":[{"path":"/dev/sdz","type":"b","major":8,"minor":400}]}"#);
        let e = wanted(&missing, Path::new("/nonexistent"), sys.path()).expect_err("missing");
        assert_eq!(
            e.message,
            "device /dev/sdz (b 8:400) does not exist in the guest"
        );
        let outside = linux(r#"{"devices":[{"path":"/etc/x","type":"c","major":1,"minor":3}]}"#);
        assert!(wanted(&outside, Path::new("/nonexistent"), sys.path()).is_err());
    }

    #[test]
    fn guest_devices_are_listed_from_dev() {
        // The host's /dev stands in for the guest's: /dev/null is there, /dev/pts is skipped.
        let nodes = guest_devices(Path::new("/dev"));
        let null = nodes
            .iter()
            .find(|n| n.path == Path::new("/dev/null"))
            .expect("/dev/null");
        assert_eq!((null.kind, null.major, null.minor), (SFlag::S_IFCHR, 1, 3));
        assert!(!nodes.iter().any(|n| n.path.starts_with("/dev/pts")));
    }
}
