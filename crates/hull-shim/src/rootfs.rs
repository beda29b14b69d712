//! A task's root filesystem on the host: containerd's snapshot mounts (overlayfs) mounted at
//! `<bundle>/rootfs` in the shim's private mount namespace, unmounted when the task goes.

use std::path::{Path, PathBuf};

use hull_protocol::MountOptions;
use nix::mount::{mount as sys_mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;

use crate::error::{Result, ShimError};

/// One mount from a Create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Filesystem type ("overlay", "bind", ...).
    pub typ: String,
    /// Source.
    pub source: String,
    /// Options, as containerd gives them.
    pub options: Vec<String>,
}

/// The mounted rootfs; unmounted on drop.
#[derive(Debug)]
pub struct RootfsMount {
    path: PathBuf,
    layers: usize,
}

impl RootfsMount {
    /// Where the rootfs is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootfsMount {
    fn drop(&mut self) {
        for _ in 0..self.layers {
            if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot unmount task rootfs");
                return;
            }
        }
    }
}

/// Mount `mounts` (in order) at `<bundle>/rootfs`; None when there are none (the spec's
/// root is then used as it is).
pub fn mount(bundle: &Path, mounts: &[MountSpec]) -> Result<Option<RootfsMount>> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let path = bundle.join("rootfs");
    std::fs::create_dir_all(&path)
        .map_err(|e| ShimError::Internal(format!("create {}: {e}", path.display())))?;
    let mut done = RootfsMount { path, layers: 0 };
    for m in mounts {
        mount_one(m, &done.path)?;
        done.layers += 1;
    }
    Ok(Some(done))
}

/// One mount. (containerd-shim's own helper forks and relies on its SIGCHLD reaper, which
/// would also steal the exit statuses of our QEMU and helper daemons, so it is not used.)
fn mount_one(m: &MountSpec, target: &Path) -> Result<()> {
    let opts = MountOptions::parse(&m.options);
    let (flags, data) = (opts.mount_flags(), opts.data_string());
    let fail = |e: nix::Error| {
        ShimError::InvalidArgument(format!(
            "mount {} rootfs from {} at {}: {e}",
            m.typ,
            m.source,
            target.display()
        ))
    };
    if data.len() >= 4096 {
        return Err(ShimError::InvalidArgument(format!(
            "mount {} rootfs: options are {} bytes, more than a page (too many layers)",
            m.typ,
            data.len()
        )));
    }
    let bind = flags.contains(MsFlags::MS_BIND);
    let fstype = (!bind).then_some(m.typ.as_str());
    // A bind mount ignores MS_RDONLY on the first call; it is applied by a remount below.
    let first = if bind {
        flags - MsFlags::MS_RDONLY
    } else {
        flags
    };
    sys_mount(
        Some(m.source.as_str()),
        target,
        fstype,
        first,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(fail)?;
    if bind && flags.contains(MsFlags::MS_RDONLY) {
        sys_mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    if !opts.propagation.is_empty() {
        sys_mount(
            None::<&str>,
            target,
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// The spec's root directory (relative paths are relative to the bundle); it must exist.
pub fn spec_root(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| {
            ShimError::InvalidArgument(
                "config.json has no root and no rootfs mounts were given".into(),
            )
        })?;
    let root = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    if !root.is_dir() {
        return Err(ShimError::InvalidArgument(format!(
            "rootfs {} is not a directory",
            root.display()
        )));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_root_is_relative_to_the_bundle() {
        let bundle = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(bundle.path().join("rootfs")).expect("mkdir");
        let spec: Spec = serde_json::from_str(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#)
            .expect("spec");
        assert_eq!(
            spec_root(bundle.path(), &spec).expect("root"),
            bundle.path().join("rootfs")
        );
        let spec: Spec =
            serde_json::from_str(r#"{"ociVersion":"1.0.2","root":{"path":"missing"}}"#)
                .expect("spec");
        let e = spec_root(bundle.path(), &spec).expect_err("missing root");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn bind_rootfs_is_mounted_and_unmounted() {
        if !crate::test_support::require_root() {
            return;
        }
        let bundle = tempfile::tempdir().expect("tempdir");
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("marker"), b"x").expect("write");
        let m = MountSpec {
            typ: "bind".into(),
            source: src.path().display().to_string(),
            options: vec!["rbind".into(), "rw".into()],
        };
        let mounted = mount(bundle.path(), &[m]).expect("mount").expect("some");
        assert!(mounted.path().join("marker").exists());
        let path = mounted.path().to_path_buf();
        drop(mounted);
        assert!(!path.join("marker").exists(), "still mounted");
    }
}
