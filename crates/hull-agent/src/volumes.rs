//! The pod's guest volumes: one tmpfs per volume id under GUEST_VOLUMES_DIR (memory-backed
//! emptyDirs, the pod's /dev/shm, synced configmaps and secrets), and applying a snapshot.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hull_protocol::volume::{Entry, EntryKind, DATA_LINK, SYNCED_VOLUME_TMPFS_BYTES};
use hull_protocol::GUEST_VOLUMES_DIR;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::AgentError;

/// The volumes mounted so far, by id.
#[derive(Debug, Default)]
pub struct Volumes {
    mounted: Mutex<HashMap<String, PathBuf>>,
}

fn check_id(id: &str) -> Result<(), AgentError> {
    hull_protocol::validate_id(id).map_err(|e| AgentError::InvalidArgument(format!("volume {e}")))
}

fn mount_tmpfs(dir: &Path, size: u64, mode: u32) -> Result<(), AgentError> {
    fs::create_dir_all(dir).map_err(|e| AgentError::io(&format!("mkdir {}", dir.display()), e))?;
    let mut data = format!("mode={:o}", mode & 0o7777);
    if size > 0 {
        data.push_str(&format!(",size={size}"));
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| AgentError::io(&format!("mount tmpfs on {} ({data})", dir.display()), e))
}

impl Volumes {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.mounted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mount volume `id` (a tmpfs of `size` bytes, 0 = the kernel's default) unless it is there.
    pub fn ensure(&self, id: &str, size: u64, mode: u32) -> Result<(), AgentError> {
        check_id(id)?;
        let mut table = self.table();
        if table.contains_key(id) {
            return Ok(());
        }
        let dir = Path::new(GUEST_VOLUMES_DIR).join(id);
        mount_tmpfs(&dir, size, mode)?;
        tracing::info!(volume = id, size, "volume mounted");
        table.insert(id.to_string(), dir);
        Ok(())
    }

    /// Make volume `id` (mounted on first use) hold exactly `entries`, in AtomicWriter order.
    pub fn sync(
        &self,
        id: &str,
        mode: u32,
        owner: (u32, u32),
        entries: &[Entry],
    ) -> Result<(), AgentError> {
        check_id(id)?;
        let mut table = self.table();
        let dir = match table.get(id) {
            Some(d) => d.clone(),
            None => {
                let dir = Path::new(GUEST_VOLUMES_DIR).join(id);
                mount_tmpfs(&dir, SYNCED_VOLUME_TMPFS_BYTES, mode)?;
                table.insert(id.to_string(), dir.clone());
                dir
            }
        };
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o7777));
        chown(&dir, owner.0, owner.1)
            .map_err(|e| AgentError::io(&format!("chown volume {id}"), e))?;
        apply(&dir, entries).map_err(|e| AgentError::io(&format!("volume {id}"), e))?;
        tracing::debug!(volume = id, entries = entries.len(), "volume synced");
        Ok(())
    }

    /// Unmount and remove volume `id`; nothing to do if it is not mounted.
    pub fn remove(&self, id: &str) -> Result<(), AgentError> {
        check_id(id)?;
        let Some(dir) = self.table().remove(id) else {
            return Ok(());
        };
        // Detached: a container that still has it bound keeps its view until it goes.
        umount2(&dir, MntFlags::MNT_DETACH)
            .map_err(|e| AgentError::io(&format!("umount {}", dir.display()), e))?;
        fs::remove_dir(&dir).map_err(|e| AgentError::io(&format!("rmdir {}", dir.display()), e))?;
        tracing::info!(volume = id, "volume removed");
        Ok(())
    }
}

/// Give `p` (not what a symlink there points at) the owner `uid`:`gid`.
fn chown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    nix::unistd::fchownat(
        None,
        p,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
}

fn owned_by(m: &fs::Metadata, e: &Entry) -> bool {
    m.uid() == e.uid && m.gid() == e.gid
}

/// What is at `p`, not following a symlink there.
fn lstat(p: &Path) -> Option<fs::Metadata> {
    fs::symlink_metadata(p).ok()
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match lstat(p) {
        Some(m) if m.is_dir() => fs::remove_dir_all(p),
        Some(_) => fs::remove_file(p),
        None => Ok(()),
    }
}

/// A temporary name next to `p` for a write that is then renamed over it.
fn temp_of(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let mut t = format!(".{name}.hull-tmp");
    // Keep within NAME_MAX whatever the name.
    if t.len() > 255 {
        t = format!(".{:x}.hull-tmp", name.len());
    }
    p.with_file_name(t)
}

/// Create or update one entry; a file or symlink is written aside and renamed into place, so
/// a reader sees the old or the new one, never a part.
fn put(root: &Path, e: &Entry) -> std::io::Result<()> {
    let p = root.join(&e.path);
    let now = lstat(&p);
    match &e.kind {
        EntryKind::Dir => {
            match &now {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&p)?;
                    fs::create_dir(&p)?;
                }
                None => fs::create_dir(&p)?,
            }
            if now.as_ref().map(|m| m.permissions().mode() & 0o7777) != Some(e.mode) {
                fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))?;
            }
            if !now.as_ref().is_some_and(|m| owned_by(m, e)) {
                chown(&p, e.uid, e.gid)?;
            }
        }
        EntryKind::File(data) => {
            if let Some(m) = &now {
                if m.is_file()
                    && m.permissions().mode() & 0o7777 == e.mode
                    && owned_by(m, e)
                    && m.len() == data.len() as u64
                    && fs::read(&p).is_ok_and(|d| &d == data)
                {
                    return Ok(());
                }
            }
            let tmp = temp_of(&p);
            remove_any(&tmp)?;
            fs::write(&tmp, data)?;
            chown(&tmp, e.uid, e.gid)?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(e.mode))?;
            if now.is_some_and(|m| m.is_dir()) {
                fs::remove_dir_all(&p)?;
            }
            fs::rename(&tmp, &p)?;
        }
        EntryKind::Symlink(target) => {
            if now
                .as_ref()
                .is_some_and(|m| m.file_type().is_symlink() && owned_by(m, e))
                && fs::read_link(&p).is_ok_and(|t| t == Path::new(target))
            {
                return Ok(());
            }
            let tmp = temp_of(&p);
            remove_any(&tmp)?;
            symlink(target, &tmp)?;
            chown(&tmp, e.uid, e.gid)?;
            if now.is_some_and(|m| m.is_dir()) {
                fs::remove_dir_all(&p)?;
            }
            fs::rename(&tmp, &p)?;
        }
    }
    Ok(())
}

/// Every path under `root` (relative), parents before children, not following symlinks.
fn existing(root: &Path) -> std::io::Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for d in fs::read_dir(root.join(&rel))? {
            let d = d?;
            let r = rel.join(d.file_name());
            let is_dir = d.file_type()?.is_dir();
            if is_dir {
                todo.push(r.clone());
            }
            out.push((r.to_string_lossy().into_owned(), is_dir));
        }
    }
    Ok(out)
}

/// Make `root` hold exactly `entries` (validated), in kubelet's AtomicWriter order: every
/// directory, file and nested symlink first (a new version's timestamped directory is complete
/// before anything points at it), then `..data` (swapped by rename), then the other top-level
/// symlinks (the user-visible names), then removal of what is no longer there: stale
/// user-visible names first, then old directories.
pub fn apply(root: &Path, entries: &[Entry]) -> std::io::Result<()> {
    for e in entries.iter().filter(|e| !e.is_top_level_symlink()) {
        put(root, e)?;
    }
    let links = entries.iter().filter(|e| e.is_top_level_symlink());
    for e in links.clone().filter(|e| e.path == DATA_LINK) {
        put(root, e)?;
    }
    for e in links.filter(|e| e.path != DATA_LINK) {
        put(root, e)?;
    }
    let wanted: HashMap<&str, &Entry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut stale: Vec<(String, bool)> = existing(root)?
        .into_iter()
        .filter(|(p, _)| !wanted.contains_key(p.as_str()))
        .collect();
    // Top-level non-directories (user-visible names) first, then the rest, parents before
    // children so that a removed directory takes its content with it.
    stale.sort_by_key(|(p, is_dir)| (p.contains('/') || *is_dir, p.matches('/').count()));
    for (p, _) in stale {
        match remove_any(&root.join(&p)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry::dir(p)
    }
    fn file(p: &str, d: &str) -> Entry {
        Entry::file(p, d.as_bytes())
    }
    fn link(p: &str, t: &str) -> Entry {
        Entry::symlink(p, t)
    }
    fn version(ts: &str, keys: &[(&str, &str)]) -> Vec<Entry> {
        let mut v = vec![dir(ts)];
        v.extend(keys.iter().map(|(k, d)| file(&format!("{ts}/{k}"), d)));
        v.push(link(DATA_LINK, ts));
        v.extend(keys.iter().map(|(k, _)| link(k, &format!("..data/{k}"))));
        v
    }

    #[test]
    fn updates_keep_the_kubelet_layout() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        apply(root, &version("..v1", &[("a", "1"), ("b", "1")])).expect("v1");
        assert_eq!(fs::read_to_string(root.join("a")).expect("a"), "1");
        assert_eq!(
            fs::read_link(root.join("a")).expect("link"),
            Path::new("..data/a")
        );
        apply(root, &version("..v2", &[("a", "2"), ("c", "2")])).expect("v2");
        assert_eq!(fs::read_to_string(root.join("a")).expect("a"), "2");
        assert_eq!(fs::read_to_string(root.join("c")).expect("c"), "2");
        assert!(lstat(&root.join("b")).is_none(), "removed key stays");
        assert!(lstat(&root.join("..v1")).is_none(), "old version stays");
        assert_eq!(
            fs::read_link(root.join(DATA_LINK)).expect("..data"),
            Path::new("..v2")
        );
        let mut names: Vec<String> = fs::read_dir(root)
            .expect("ls")
            .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["..data", "..v2", "a", "c"], "no temporary left");
    }

    #[test]
    fn types_change_and_files_update_in_place() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        apply(root, &[dir("x"), file("x/f", "1"), file("y", "1")]).expect("first");
        apply(
            root,
            &[file("x", "now a file"), dir("y"), link("y/l", "/etc")],
        )
        .expect("second");
        assert_eq!(fs::read_to_string(root.join("x")).expect("x"), "now a file");
        assert_eq!(
            fs::read_link(root.join("y/l")).expect("l"),
            Path::new("/etc")
        );
        apply(root, &[]).expect("empty");
        assert_eq!(fs::read_dir(root).expect("ls").count(), 0);
    }

    #[test]
    fn owners_follow_the_host_and_changes_apply() {
        if !hull_protocol::test_support::require_root() {
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        let fs_group = |mut e: Entry| {
            e.gid = 3000;
            e
        };
        let v1: Vec<Entry> = version("..v1", &[("k", "secret")])
            .into_iter()
            .map(fs_group)
            .collect();
        apply(root, &v1).expect("v1");
        for p in ["..v1", "..v1/k", "..data", "k"] {
            let m = lstat(&root.join(p)).expect(p);
            assert_eq!((m.uid(), m.gid()), (0, 3000), "{p}");
        }
        // The same content with another owner is applied too.
        let v1_other: Vec<Entry> = version("..v1", &[("k", "secret")])
            .into_iter()
            .map(|mut e| {
                e.gid = 4000;
                e
            })
            .collect();
        apply(root, &v1_other).expect("owner change");
        assert_eq!(lstat(&root.join("..v1/k")).expect("k").gid(), 4000);
    }
}
