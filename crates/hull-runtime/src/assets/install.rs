//! Atomic installation of outputs (temp file in the same directory, fsync, rename) and the
//! stamp files next to them that record which input key an installed asset was built from.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::AssetsError;

/// What `hull assets build` records next to an installed asset (`<asset>.stamp`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The input key the asset was built from.
    pub key: String,
    /// The installed file's size in bytes (a cheap check that nobody replaced it since).
    pub size: u64,
    /// When it was installed, seconds since the Unix epoch.
    pub installed_at: u64,
}

/// The stamp file of an asset installed at `asset`.
pub fn stamp_path(asset: &Path) -> PathBuf {
    let mut name = asset
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".stamp");
    asset.with_file_name(name)
}

/// The stamp of `asset`, if it has a readable one.
pub fn read_stamp(asset: &Path) -> Option<Stamp> {
    let bytes = std::fs::read(stamp_path(asset)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Record that `asset` (now `size` bytes) was built from `key`.
pub fn write_stamp(asset: &Path, key: &str, size: u64) -> Result<(), AssetsError> {
    let stamp = Stamp {
        key: key.to_string(),
        size,
        installed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let text = serde_json::to_vec_pretty(&stamp)
        .map_err(|e| AssetsError::io("encode stamp", std::io::Error::other(e)))?;
    write_atomic(&stamp_path(asset), &text, 0o644).map(|_| ())
}

/// A temp path next to `dest` (same filesystem, so rename is atomic).
fn temp_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp.{}", std::process::id()));
    dest.with_file_name(name)
}

/// Create the parent directory of `path`.
pub fn ensure_parent(path: &Path) -> Result<(), AssetsError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::fs::create_dir_all(p)
            .map_err(|e| AssetsError::io(format!("create {}", p.display()), e)),
        _ => Ok(()),
    }
}

/// Write `dest` atomically by filling a temp file next to it with `fill`, then renaming it.
pub fn write_with<F>(dest: &Path, mode: u32, fill: F) -> Result<u64, AssetsError>
where
    F: FnOnce(&mut File) -> Result<(), AssetsError>,
{
    ensure_parent(dest)?;
    let tmp = temp_path(dest);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| AssetsError::io(format!("create {}", tmp.display()), e))?;
        fill(&mut f)?;
        f.flush()
            .map_err(|e| AssetsError::io(format!("write {}", tmp.display()), e))?;
        f.sync_all()
            .map_err(|e| AssetsError::io(format!("sync {}", tmp.display()), e))?;
        let size = f
            .metadata()
            .map_err(|e| AssetsError::io(format!("stat {}", tmp.display()), e))?
            .len();
        std::fs::rename(&tmp, dest).map_err(|e| {
            AssetsError::io(format!("rename {} to {}", tmp.display(), dest.display()), e)
        })?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<u64, AssetsError> {
    write_with(dest, mode, |f| {
        f.write_all(bytes)
            .map_err(|e| AssetsError::io(format!("write {}", dest.display()), e))
    })
}

/// Copy `src` to `dest` atomically.
pub fn copy_atomic(src: &Path, dest: &Path, mode: u32) -> Result<u64, AssetsError> {
    write_with(dest, mode, |f| {
        let mut from =
            File::open(src).map_err(|e| AssetsError::io(format!("open {}", src.display()), e))?;
        std::io::copy(&mut from, f).map(|_| ()).map_err(|e| {
            AssetsError::io(format!("copy {} to {}", src.display(), dest.display()), e)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("sub/out.img");
        write_atomic(&dest, b"first", 0o644).expect("write");
        write_atomic(&dest, b"second", 0o644).expect("rewrite");
        assert_eq!(std::fs::read(&dest).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(dest.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn stamp_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let asset = dir.path().join("vmlinux");
        assert!(read_stamp(&asset).is_none());
        write_stamp(&asset, "abc", 7).expect("stamp");
        let s = read_stamp(&asset).expect("read stamp");
        assert_eq!((s.key.as_str(), s.size), ("abc", 7));
        assert_eq!(stamp_path(&asset), dir.path().join("vmlinux.stamp"));
    }
}
