//! The pod's guest volumes, host side: which bind sources become a guest tmpfs (memory
//! emptyDir, /dev/shm) or a synced copy (configmap, secret, projected, downward API), and
//! their lifetimes: tmpfs until the pod goes, synced copies (and their watch) until their
//! last container goes.

mod kind;
mod snapshot;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use kind::{classify, VolumeKind};

use crate::agent::Agent;
use crate::error::Result;
use watch::Watcher;

/// A bind source the guest serves itself, as `for_guest` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestVolume {
    /// The guest volume id (also its directory name under GUEST_VOLUMES_DIR).
    pub id: String,
    /// The host source.
    pub source: PathBuf,
    /// Tmpfs or Synced (never Shared).
    pub kind: VolumeKind,
}

/// The guest volume id of host source `source`: stable for the pod's life (FNV-1a of the path).
pub fn volume_id(source: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("vol-{h:016x}")
}

/// The guest path of volume `id`.
pub fn guest_path(id: &str) -> PathBuf {
    Path::new(hull_protocol::GUEST_VOLUMES_DIR).join(id)
}

#[derive(Debug)]
struct Vol {
    kind: VolumeKind,
    users: HashSet<String>,
    watcher: Option<Watcher>,
}

#[derive(Debug, Default)]
struct Table {
    closed: bool,
    vols: HashMap<String, Vol>,
}

/// The guest volumes of one sandbox.
#[derive(Debug)]
pub(crate) struct Volumes {
    agent: Arc<Agent>,
    table: Mutex<Table>,
}

impl Volumes {
    pub fn new(agent: Arc<Agent>) -> Volumes {
        Volumes {
            agent,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `vols` ready in the guest for container `cid`; all or nothing for `cid`.
    pub fn attach(&self, cid: &str, vols: &[GuestVolume]) -> Result<()> {
        for v in vols {
            if let Err(e) = self.attach_one(cid, v) {
                self.detach(cid);
                return Err(e);
            }
        }
        Ok(())
    }

    fn attach_one(&self, cid: &str, v: &GuestVolume) -> Result<()> {
        let mut table = self.table();
        if table.closed {
            return Err(crate::Error::FailedPrecondition(
                "sandbox is stopped".into(),
            ));
        }
        if let Some(known) = table.vols.get_mut(&v.id) {
            known.users.insert(cid.to_string());
            return Ok(());
        }
        let watcher = match v.kind {
            VolumeKind::Tmpfs { size, mode } => {
                self.agent.ensure_volume(&v.id, size.unwrap_or(0), mode)?;
                tracing::info!(volume = %v.id, source = %v.source.display(), size = ?size, "guest tmpfs for the pod");
                None
            }
            VolumeKind::Synced => {
                let agent = self.agent.clone();
                let id = v.id.clone();
                let w = Watcher::start(
                    v.source.clone(),
                    Box::new(move |s| agent.sync_volume(&id, s.mode, s.owner, &s.entries)),
                )?;
                tracing::info!(volume = %v.id, source = %v.source.display(), "volume synced into the guest");
                Some(w)
            }
            VolumeKind::Shared => return Ok(()),
        };
        table.vols.insert(
            v.id.clone(),
            Vol {
                kind: v.kind,
                users: HashSet::from([cid.to_string()]),
                watcher,
            },
        );
        Ok(())
    }

    /// Container `cid` is gone: a synced volume it was the last user of stops being followed
    /// and leaves the guest. A tmpfs stays until the pod goes (an emptyDir outlives restarts).
    pub fn detach(&self, cid: &str) {
        let mut done = Vec::new();
        {
            let mut table = self.table();
            let closed = table.closed;
            table.vols.retain(|id, v| {
                v.users.remove(cid);
                let last = v.users.is_empty() && v.kind == VolumeKind::Synced;
                if last {
                    done.push((id.clone(), v.watcher.take(), closed));
                }
                !last
            });
        }
        for (id, watcher, closed) in done {
            drop(watcher);
            if !closed {
                if let Err(e) = self.agent.remove_volume(&id) {
                    tracing::warn!(volume = %id, error = %e, "guest volume not removed");
                }
            }
        }
    }

    /// The sandbox stops: every watch ends; the guest goes with its volumes.
    pub fn close(&self) {
        let watchers: Vec<Watcher> = {
            let mut table = self.table();
            table.closed = true;
            table
                .vols
                .drain()
                .filter_map(|(_, mut v)| v.watcher.take())
                .collect()
        };
        drop(watchers);
    }
}
