//! WatchOom: the long-poll behind containerd's TaskOOM while a container runs. It returns as
//! soon as the container's memory.events `oom_kill` count exceeds what the host has seen, woken
//! by inotify (the kernel notifies memory.events changes), or after [`WATCH_OOM_MAX`].

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Runtime;
use crate::error::AgentError;

/// The longest one WatchOom call blocks before it returns the unchanged count.
pub const WATCH_OOM_MAX: Duration = Duration::from_secs(30);

/// An inotify instance tokio can wait on.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Runtime {
    /// The OOM kill count of container `id` once it exceeds `seen` (or, after at most
    /// [`WATCH_OOM_MAX`], the unchanged count). NotFound once the container is gone.
    pub async fn watch_oom(&self, id: &str, seen: u64) -> Result<u64, AgentError> {
        let cgroup = self.container(id)?.cgroup.clone();
        let events = cgroup.dir().join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| AgentError::io("inotify_init", e))?;
        // The watch is in place before the first read, so no kill falls between the two.
        match inotify.add_watch(&events, AddWatchFlags::IN_MODIFY) {
            Ok(_) => {}
            Err(Errno::ENOENT) if self.container(id).is_err() => {
                return Err(AgentError::NotFound(format!("container {id} not found")))
            }
            Err(Errno::ENOENT) => {
                return Err(AgentError::FailedPrecondition(
                    "the guest kernel has no memory controller".into(),
                ))
            }
            Err(e) => return Err(AgentError::io("inotify_add_watch memory.events", e)),
        }
        // SAFETY: `Watch` owns the inotify fd and always returns that same open fd; it stays
        // open until the AsyncFd (which owns the Watch) is dropped.
        let watch = unsafe { AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE) }
            .map_err(|e| AgentError::io("register inotify", e))?;
        let deadline = tokio::time::Instant::now() + WATCH_OOM_MAX;
        loop {
            // A removed cgroup wakes the watch (IN_IGNORED); the container is gone by then.
            self.container(id)?;
            let kills = cgroup.oom_kills();
            if kills > seen {
                return Ok(kills);
            }
            tokio::select! {
                ready = watch.readable() => {
                    let mut guard = ready.map_err(|e| AgentError::io("inotify wait", e))?;
                    match guard.get_inner().0.read_events() {
                        Ok(_) | Err(Errno::EAGAIN) => guard.clear_ready(),
                        Err(e) => return Err(AgentError::io("inotify read", e)),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(kills),
            }
        }
    }
}
