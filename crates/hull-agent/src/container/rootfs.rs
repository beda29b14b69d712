//! The container's filesystem view, built in the helper's child inside its new mount namespace:
//! spec.mounts, /dev nodes, pivot_root, masked and read-only paths, read-only root, hostname.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use hull_protocol::MountOptions;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use super::devices;
use super::spec::is_bind;
use super::wire::HelperError;

const NONE: Option<&str> = None;

/// Resolve `path` inside `root` as if `root` were `/`: symlinks (absolute or relative) and `..`
/// can never leave `root`.
pub fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    let mut todo: VecDeque<OsString> = path.components().filter_map(|c| normal(c)).collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&part);
        match fs::read_link(&candidate) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    done.clear();
                }
                for c in target.components().rev().filter_map(normal) {
                    todo.push_front(c);
                }
            }
            _ => done.push(part),
        }
    }
    root.join(done.iter().collect::<PathBuf>())
}

fn normal(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(s) => Some(s.to_os_string()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    }
}

fn mount_err(what: &Path, e: Errno) -> HelperError {
    HelperError::internal(format!("mount {}", what.display()), e)
}

fn do_mount(root: &Path, m: &Mount) -> Result<(), HelperError> {
    let dest = resolve_in_root(root, m.destination());
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    if is_bind(m.typ().as_deref(), m.options().as_deref()) {
        let src = m
            .source()
            .as_deref()
            .ok_or_else(|| HelperError::invalid("bind mount without source"))?;
        let meta = fs::metadata(src).map_err(|e| {
            HelperError::not_found(format!("bind mount source {}: {e}", src.display()))
        })?;
        if meta.is_dir() {
            fs::create_dir_all(&dest)
                .map_err(|e| HelperError::internal(format!("mkdir {}", dest.display()), e))?;
        } else if !dest.exists() {
            if let Some(parent) = dest.parent() {
                let _ = fs::create_dir_all(parent);
            }
            fs::File::create(&dest)
                .map_err(|e| HelperError::internal(format!("create {}", dest.display()), e))?;
        }
        let rec = if opts.recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        mount(Some(src), &dest, NONE, MsFlags::MS_BIND | rec, NONE)
            .map_err(|e| mount_err(&dest, e))?;
        let extra = opts.flags - MsFlags::MS_BIND;
        if !extra.is_empty() {
            mount(
                NONE,
                &dest,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rec | extra,
                NONE,
            )
            .map_err(|e| mount_err(&dest, e))?;
        }
    } else {
        fs::create_dir_all(&dest)
            .map_err(|e| HelperError::internal(format!("mkdir {}", dest.display()), e))?;
        let (fstype, source) = match typ {
            "cgroup" | "cgroup2" => ("cgroup2", "cgroup2".to_string()),
            t => (
                t,
                m.source()
                    .as_deref()
                    .map_or(t.to_string(), |s| s.display().to_string()),
            ),
        };
        let data = opts.data_string();
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(source.as_str()), &dest, Some(fstype), opts.flags, data)
            .map_err(|e| mount_err(&dest, e))?;
    }
    if !opts.propagation.is_empty() {
        mount(NONE, &dest, NONE, opts.propagation, NONE).map_err(|e| mount_err(&dest, e))?;
    }
    Ok(())
}

fn make_dev(root: &Path) -> Result<(), HelperError> {
    let dev = root.join("dev");
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        match mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(HelperError::internal(format!("mknod {}", p.display()), e)),
        }
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o666));
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match std::os::unix::fs::symlink(target, dev.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(HelperError::internal(format!("symlink /dev/{name}"), e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Build the container's root and pivot into it. Must run in a fresh mount namespace.
pub fn prepare(spec: &Spec) -> Result<(), HelperError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| HelperError::invalid("no root"))?
        .path()
        .clone();
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| mount_err(Path::new("/"), e))?;
    if !root.is_dir() {
        return Err(HelperError::not_found(format!(
            "rootfs {} is not a directory",
            root.display()
        )));
    }
    mount(
        Some(&root),
        &root,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(|e| mount_err(&root, e))?;
    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        do_mount(&root, m)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        make_dev(&root)?;
    }
    if let Some(linux) = spec.linux() {
        // Before pivot_root: the guest's /dev and /sys are still in view.
        let nodes = devices::wanted(linux, Path::new("/dev"), Path::new("/sys"))?;
        if !dev_is_tmpfs && linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(HelperError::invalid(
                "linux.devices need a tmpfs mounted on /dev",
            ));
        }
        for node in nodes.iter().filter(|_| dev_is_tmpfs) {
            devices::create(&root, node)?;
        }
    }
    chdir(&root).map_err(|e| HelperError::internal("chdir rootfs", e))?;
    pivot_root(".", ".").map_err(|e| HelperError::internal("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| HelperError::internal("detach old root", e))?;
    chdir("/").map_err(|e| HelperError::internal("chdir /", e))?;

    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            let path = Path::new(p);
            let r = if path.is_dir() {
                mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE)
            } else {
                mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
            };
            match r {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(mount_err(path, e)),
            }
        }
        for p in linux.readonly_paths().iter().flatten() {
            let path = Path::new(p);
            match mount(
                Some(path),
                path,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NONE,
            ) {
                Ok(()) => {}
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(mount_err(path, e)),
            }
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
            mount(NONE, path, NONE, ro, NONE).map_err(|e| mount_err(path, e))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(NONE, "/", NONE, ro, NONE).map_err(|e| mount_err(Path::new("/"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).expect("symlink");
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x")),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/a/b/up/y")),
            root.join("y")
        );
        assert_eq!(resolve_in_root(root, Path::new("/../../z")), root.join("z"));
        assert_eq!(resolve_in_root(root, Path::new("/a/b")), root.join("a/b"));
    }
}
