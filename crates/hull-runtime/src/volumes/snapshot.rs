//! Reading a synced volume's host directory into a bounded snapshot, consistent with respect
//! to kubelet's `..data` swap: symlinks are kept as symlinks, never followed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hull_protocol::volume::{
    self, Entry, EntryKind, DATA_LINK, MAX_VOLUME_BYTES, MAX_VOLUME_ENTRIES,
};

use crate::error::{Error, Result};

/// A volume's content: its root's mode and its entries (parents first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Permission bits of the root directory.
    pub mode: u32,
    /// Owner (uid, gid) of the root directory.
    pub owner: (u32, u32),
    /// Every entry, each after its parent directory.
    pub entries: Vec<Entry>,
}

/// How many times a read that raced with a `..data` swap is started again.
const ATTEMPTS: usize = 5;

fn data_link(root: &Path) -> Option<PathBuf> {
    fs::read_link(root.join(DATA_LINK)).ok()
}

/// Read `root`. `..data` is read before and after the walk: kubelet completes a version's
/// directory before it points `..data` at it and removes the old one only afterwards, so
/// when both reads agree the version `..data` names was read whole.
pub fn read(root: &Path) -> Result<Snapshot> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let before = data_link(root);
        let snap = walk(root)?;
        if data_link(root) == before {
            return Ok(snap);
        }
        last = Some(snap);
    }
    tracing::warn!(volume = %root.display(), "..data kept changing while read");
    last.ok_or_else(|| Error::FailedPrecondition(format!("cannot read {}", root.display())))
}

fn bad(root: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("volume {}: {what}", root.display()))
}

fn walk(root: &Path) -> Result<Snapshot> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(format!("read {}", p.display()), e)
    };
    let root_meta = fs::metadata(root).map_err(io(root))?;
    let mode = root_meta.permissions().mode() & 0o7777;
    let owner = (root_meta.uid(), root_meta.gid());
    let mut entries = Vec::new();
    let mut total = 0usize;
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|d| d.ok().map(|d| d.file_name())).collect(),
            // Removed while we read (an old version): what points at it changed too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        names.sort();
        for name in names {
            let name = name
                .into_string()
                .map_err(|n| bad(root, format!("name {n:?} is not UTF-8")))?;
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = root.join(&path);
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(io(&p))?;
                let t = t
                    .into_os_string()
                    .into_string()
                    .map_err(|t| bad(root, format!("link target {t:?} is not UTF-8")))?;
                total += t.len();
                EntryKind::Symlink(t)
            } else if meta.is_dir() {
                todo.push(path.clone());
                EntryKind::Dir
            } else if meta.is_file() {
                if total.saturating_add(meta.len() as usize) > MAX_VOLUME_BYTES {
                    return Err(bad(root, format!("more than {MAX_VOLUME_BYTES} bytes")));
                }
                let data = match read_file(&p) {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&p)(e)),
                };
                total += data.len();
                EntryKind::File(data)
            } else {
                tracing::warn!(path = %p.display(), "volume entry neither file, dir nor symlink: skipped");
                continue;
            };
            if total > MAX_VOLUME_BYTES {
                return Err(bad(root, format!("more than {MAX_VOLUME_BYTES} bytes")));
            }
            entries.push(Entry {
                path,
                mode,
                kind,
                uid: meta.uid(),
                gid: meta.gid(),
            });
            if entries.len() > MAX_VOLUME_ENTRIES {
                return Err(bad(root, format!("more than {MAX_VOLUME_ENTRIES} entries")));
            }
        }
    }
    // Depth-first with a stack visits a directory's children after the directory itself,
    // which is all the order validation asks for.
    volume::validate(&entries).map_err(|e| bad(root, e))?;
    Ok(Snapshot {
        mode,
        owner,
        entries,
    })
}

/// The content of regular file `p`, never through a symlink put there since it was looked at.
fn read_file(p: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
    let mut data = Vec::new();
    // One byte more than may be sent: a file that grew is refused, not read without end.
    f.by_ref()
        .take(MAX_VOLUME_BYTES as u64 + 1)
        .read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_the_kubelet_layout_as_it_is() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        fs::create_dir(r.join("..2026_11_25_15_00_00.1")).expect("mkdir");
        fs::create_dir(r.join("..2026_11_25_15_00_00.1/sub")).expect("mkdir");
        fs::write(r.join("..2026_11_25_15_00_00.1/a"), "1").expect("write");
        fs::write(r.join("..2026_11_25_15_00_00.1/sub/b"), "2").expect("write");
        symlink("..2026_11_25_15_00_00.1", r.join("..data")).expect("symlink");
        symlink("..data/a", r.join("a")).expect("symlink");
        symlink("..data/sub", r.join("sub")).expect("symlink");
        let s = read(r).expect("read");
        let paths: Vec<&str> = s.entries.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"..2026_11_25_15_00_00.1/sub/b"),
            "{paths:?}"
        );
        let a = s.entries.iter().find(|e| e.path == "a").expect("a");
        assert_eq!(a.kind, EntryKind::Symlink("..data/a".into()));
        volume::validate(&s.entries).expect("valid");
    }

    #[test]
    fn too_big_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::write(t.path().join("big"), vec![0u8; MAX_VOLUME_BYTES + 1]).expect("write");
        let e = read(t.path()).expect_err("too big");
        assert!(e.to_string().contains("bytes"), "{e}");
    }
}
