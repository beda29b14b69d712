//! Snapshots of a synced volume (configmap, secret, projected, downward API) as they travel
//! from the host to the guest: the entries, their bounds, and the validation both sides run.

use std::collections::HashMap;

use crate::agent::{SyncVolumeRequest, VolumeEntry, VolumeEntryKind};

/// At most this many bytes of file content and symlink targets in one snapshot (below ttrpc's
/// 4 MiB frame; kubelet itself caps a configmap at 1 MiB).
pub const MAX_VOLUME_BYTES: usize = 3 * 1024 * 1024;
/// At most this many entries in one snapshot.
pub const MAX_VOLUME_ENTRIES: usize = 1024;
/// Longest relative path or symlink target.
pub const MAX_VOLUME_PATH: usize = 4096;
/// Size of a synced volume's guest tmpfs: room for the old and the new version side by side
/// while an update is applied.
pub const SYNCED_VOLUME_TMPFS_BYTES: u64 = 2 * MAX_VOLUME_BYTES as u64 + 1024 * 1024;
/// The symlink kubelet's AtomicWriter swaps to publish a new version.
pub const DATA_LINK: &str = "..data";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file and its content.
    File(Vec<u8>),
    /// A symlink and its target, kept as it is.
    Symlink(String),
}

/// One entry of a volume, at `path` relative to the volume's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Clean relative path: `a/b`, never empty, `.`, `..` or absolute.
    pub path: String,
    /// Permission bits (ignored for symlinks).
    pub mode: u32,
    /// Directory, file or symlink.
    pub kind: EntryKind,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl Entry {
    /// A directory at `path` (mode 0755).
    pub fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o755,
            kind: EntryKind::Dir,
            uid: 0,
            gid: 0,
        }
    }

    /// A file at `path` holding `data` (mode 0644).
    pub fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            kind: EntryKind::File(data.to_vec()),
            uid: 0,
            gid: 0,
        }
    }

    /// A symlink at `path` to `target`.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o777,
            kind: EntryKind::Symlink(target.into()),
            uid: 0,
            gid: 0,
        }
    }

    /// A symlink directly in the volume's root (kubelet's user-visible names and `..data`).
    pub fn is_top_level_symlink(&self) -> bool {
        matches!(self.kind, EntryKind::Symlink(_)) && !self.path.contains('/')
    }
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// More than [`MAX_VOLUME_ENTRIES`] entries.
    #[error("volume has {0} entries, limit {MAX_VOLUME_ENTRIES}")]
    TooManyEntries(usize),
    /// More than [`MAX_VOLUME_BYTES`] of content.
    #[error("volume holds more than {MAX_VOLUME_BYTES} bytes")]
    TooLarge,
    /// A path that is not clean and relative, or too long.
    #[error("volume path {0:?}: {1}")]
    BadPath(String, &'static str),
    /// The same path twice.
    #[error("volume path {0:?} appears twice")]
    Duplicate(String),
    /// An entry whose parent is not a directory listed before it.
    #[error("volume path {0:?}: its parent is not a directory listed before it")]
    Orphan(String),
    /// A symlink target that is empty, too long or holds NUL.
    #[error("symlink {0:?}: bad target")]
    BadTarget(String),
    /// Mode bits beyond 0o7777.
    #[error("volume path {0:?}: mode {1:o} is not permission bits")]
    BadMode(String, u32),
    /// An entry kind this side does not know.
    #[error("volume path {0:?}: unknown entry kind")]
    UnknownKind(String),
}

fn check_path(p: &str) -> Result<(), VolumeError> {
    let bad = |why| Err(VolumeError::BadPath(p.to_string(), why));
    if p.is_empty() {
        return bad("empty");
    }
    if p.len() > MAX_VOLUME_PATH {
        return bad("too long");
    }
    if p.contains('\0') {
        return bad("holds NUL");
    }
    if p.starts_with('/') {
        return bad("absolute");
    }
    for c in p.split('/') {
        match c {
            "" => return bad("empty component"),
            "." | ".." => return bad("dot component"),
            c if c.len() > 255 => return bad("component too long"),
            _ => {}
        }
    }
    Ok(())
}

/// Check a snapshot: bounded, every path clean and relative, each once, every entry after
/// its parent directory (so nothing is ever written through a symlink), sane modes and targets.
pub fn validate(entries: &[Entry]) -> Result<(), VolumeError> {
    if entries.len() > MAX_VOLUME_ENTRIES {
        return Err(VolumeError::TooManyEntries(entries.len()));
    }
    let mut total = 0usize;
    let mut seen: HashMap<&str, bool> = HashMap::with_capacity(entries.len());
    for e in entries {
        check_path(&e.path)?;
        if e.mode & !0o7777 != 0 {
            return Err(VolumeError::BadMode(e.path.clone(), e.mode));
        }
        total = total.saturating_add(match &e.kind {
            EntryKind::Dir => 0,
            EntryKind::File(d) => d.len(),
            EntryKind::Symlink(t) => {
                if t.is_empty() || t.len() > MAX_VOLUME_PATH || t.contains('\0') {
                    return Err(VolumeError::BadTarget(e.path.clone()));
                }
                t.len()
            }
        });
        if total > MAX_VOLUME_BYTES {
            return Err(VolumeError::TooLarge);
        }
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            if seen.get(parent) != Some(&true) {
                return Err(VolumeError::Orphan(e.path.clone()));
            }
        }
        if seen
            .insert(&e.path, matches!(e.kind, EntryKind::Dir))
            .is_some()
        {
            return Err(VolumeError::Duplicate(e.path.clone()));
        }
    }
    Ok(())
}

/// The request carrying `entries` (validated first) into volume `id` whose root has mode
/// `mode` and owner `owner` (uid, gid).
pub fn to_request(
    id: &str,
    mode: u32,
    owner: (u32, u32),
    entries: &[Entry],
) -> Result<SyncVolumeRequest, VolumeError> {
    validate(entries)?;
    let mut req = SyncVolumeRequest::new();
    req.volume_id = id.to_string();
    req.mode = mode & 0o7777;
    (req.uid, req.gid) = owner;
    req.entries = entries
        .iter()
        .map(|e| {
            let mut v = VolumeEntry::new();
            v.path = e.path.clone();
            v.mode = e.mode;
            (v.uid, v.gid) = (e.uid, e.gid);
            match &e.kind {
                EntryKind::Dir => v.kind = VolumeEntryKind::DIR.into(),
                EntryKind::File(d) => {
                    v.kind = VolumeEntryKind::FILE.into();
                    v.data = d.clone();
                }
                EntryKind::Symlink(t) => {
                    v.kind = VolumeEntryKind::SYMLINK.into();
                    v.target = t.clone();
                }
            }
            v
        })
        .collect();
    Ok(req)
}

/// The entries of a received request, validated.
pub fn from_request(req: SyncVolumeRequest) -> Result<Vec<Entry>, VolumeError> {
    if req.entries.len() > MAX_VOLUME_ENTRIES {
        return Err(VolumeError::TooManyEntries(req.entries.len()));
    }
    let entries = req
        .entries
        .into_iter()
        .map(|v| {
            let kind = match v.kind.enum_value() {
                Ok(VolumeEntryKind::DIR) => EntryKind::Dir,
                Ok(VolumeEntryKind::FILE) => EntryKind::File(v.data),
                Ok(VolumeEntryKind::SYMLINK) => EntryKind::Symlink(v.target),
                Err(_) => return Err(VolumeError::UnknownKind(v.path)),
            };
            Ok(Entry {
                path: v.path,
                mode: v.mode,
                kind,
                uid: v.uid,
                gid: v.gid,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    validate(&entries)?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry::dir(p)
    }
    fn file(p: &str, d: &[u8]) -> Entry {
        Entry::file(p, d)
    }
    fn link(p: &str, t: &str) -> Entry {
        Entry::symlink(p, t)
    }

    #[test]
    fn kubelet_layout_round_trips() {
        let mut secret = file("..2026_11_25_15_00_00.1/a", b"1");
        secret.gid = 3000;
        let entries = vec![
            dir("..2026_11_25_15_00_00.1"),
            secret,
            link("..data", "..2026_11_25_15_00_00.1"),
            link("a", "..data/a"),
        ];
        let req = to_request("v1", 0o777, (0, 3000), &entries).expect("valid");
        assert_eq!((req.uid, req.gid), (0, 3000));
        assert_eq!(from_request(req).expect("valid"), entries);
        assert!(entries[2].is_top_level_symlink());
        assert!(!entries[1].is_top_level_symlink());
    }

    #[test]
    fn escapes_and_bad_shapes_are_refused() {
        for p in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/"] {
            assert!(
                matches!(validate(&[file(p, b"")]), Err(VolumeError::BadPath(..))),
                "{p:?}"
            );
        }
        // A file below a symlink (or below nothing) would be written through it.
        assert_eq!(
            validate(&[link("d", "/"), file("d/passwd", b"x")]),
            Err(VolumeError::Orphan("d/passwd".into()))
        );
        assert_eq!(
            validate(&[file("x/y", b"")]),
            Err(VolumeError::Orphan("x/y".into()))
        );
        assert_eq!(
            validate(&[file("a", b""), file("a", b"")]),
            Err(VolumeError::Duplicate("a".into()))
        );
        assert!(validate(&[link("l", "")]).is_err());
        let mut m = file("a", b"");
        m.mode = 0o100644;
        assert!(matches!(validate(&[m]), Err(VolumeError::BadMode(..))));
    }

    #[test]
    fn bounds_hold() {
        let many: Vec<Entry> = (0..=MAX_VOLUME_ENTRIES)
            .map(|i| file(&i.to_string(), b""))
            .collect();
        assert_eq!(
            validate(&many),
            Err(VolumeError::TooManyEntries(MAX_VOLUME_ENTRIES + 1))
        );
        let big = vec![file("a", &vec![0; MAX_VOLUME_BYTES]), file("b", b"1")];
        assert_eq!(validate(&big), Err(VolumeError::TooLarge));
    }
}
