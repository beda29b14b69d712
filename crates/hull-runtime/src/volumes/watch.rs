//! Following a synced volume's host directory: inotify on it and its subdirectories, a short
//! debounce, then a fresh snapshot pushed to the guest whenever it differs. One thread per
//! volume; dropping the `Watcher` stops and joins it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hull_protocol::volume::EntryKind;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::snapshot::{self, Snapshot};
use crate::error::{Error, Result};

/// Events are gathered until none came for this long...
const QUIET: Duration = Duration::from_millis(40);
/// ...or for at most this long after the first.
const MAX_GATHER: Duration = Duration::from_millis(300);

/// A failed sync is tried again after this long, doubling...
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// ...up to this.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where a snapshot goes (the agent's SyncVolume).
pub type Push = Box<dyn FnMut(&Snapshot) -> Result<()> + Send>;

/// A running watch of one directory.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
        | AddWatchFlags::IN_ONLYDIR
}

/// Watch every directory of `snap` (the root is watched already); new ones only add a watch,
/// removed ones lost theirs with them.
fn watch_dirs(ino: &Inotify, root: &Path, snap: &Snapshot) {
    for e in &snap.entries {
        if matches!(e.kind, EntryKind::Dir) {
            if let Err(err) = ino.add_watch(&root.join(&e.path), mask()) {
                tracing::debug!(path = %e.path, error = %err, "inotify watch");
            }
        }
    }
}

impl Watcher {
    /// Watch `root`, push its current content once (the error, if any, is returned), then
    /// push again after every change until dropped.
    pub fn start(root: PathBuf, mut push: Push) -> Result<Watcher> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::sys("inotify_init", e))?;
        let root_wd = ino
            .add_watch(&root, mask())
            .map_err(|e| Error::sys(format!("watch {}", root.display()), e))?;
        // Watching first: a change during the first read is seen afterwards.
        let first = snapshot::read(&root)?;
        push(&first)?;
        watch_dirs(&ino, &root, &first);
        let (stop_r, stop_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
        let thread = std::thread::Builder::new()
            .name("volume-watch".into())
            .spawn(move || follow(&ino, &root, root_wd, &stop_r, push, first))
            .map_err(|e| Error::io("spawn volume watcher", e))?;
        Ok(Watcher {
            stop: Some(stop_w),
            thread: Some(thread),
        })
    }
}

/// The watch loop: gather a burst of events, read, push what changed. A failed read or push
/// is tried again after a pause that doubles up to [`MAX_RETRY`], or at the next event.
fn follow(
    ino: &Inotify,
    root: &Path,
    root_wd: WatchDescriptor,
    stop: &OwnedFd,
    mut push: Push,
    mut last: Snapshot,
) {
    let mut retry: Option<Duration> = None;
    loop {
        if !wait(ino, stop, retry) {
            return;
        }
        if readable(ino) {
            let start = Instant::now();
            let mut gone = drain(ino, root_wd);
            while !gone && start.elapsed() < MAX_GATHER {
                if !wait(ino, stop, Some(QUIET)) {
                    return;
                }
                if !readable(ino) {
                    break;
                }
                gone = drain(ino, root_wd);
            }
            if gone {
                tracing::info!(volume = %root.display(), "volume directory removed; watch ends");
                return;
            }
        } else if retry.is_none() {
            continue;
        }
        let failed = match snapshot::read(root) {
            Ok(s) if s == last => None,
            Ok(s) => {
                watch_dirs(ino, root, &s);
                match push(&s) {
                    Ok(()) => {
                        tracing::debug!(volume = %root.display(), entries = s.entries.len(), "volume update pushed");
                        last = s;
                        None
                    }
                    Err(e) => Some(format!("update not applied: {e}")),
                }
            }
            Err(e) => Some(format!("not readable: {e}")),
        };
        retry = match failed {
            None => None,
            Some(why) => {
                let next = retry.map_or(FIRST_RETRY, |r| (r * 2).min(MAX_RETRY));
                tracing::warn!(volume = %root.display(), error = %why, retry_in_ms = next.as_millis() as u64, "volume sync failed");
                Some(next)
            }
        };
    }
}

fn readable(ino: &Inotify) -> bool {
    let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// Wait until `ino` has events (true), `timeout` passes (true), or the stop pipe closes (false).
fn wait(ino: &Inotify, stop: &OwnedFd, timeout: Option<Duration>) -> bool {
    let timeout = match timeout {
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    loop {
        let mut fds = [
            PollFd::new(ino.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) => return fds[1].revents().is_none_or(|r| r.is_empty()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll on volume watch");
                return false;
            }
        }
    }
}

/// Read every pending event; true if the root itself went away.
fn drain(ino: &Inotify, root: WatchDescriptor) -> bool {
    let mut gone = false;
    while let Ok(events) = ino.read_events() {
        if events.is_empty() {
            break;
        }
        gone |= events.iter().any(|e| {
            e.wd == root
                && e.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                )
        });
    }
    gone
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the pipe's write end wakes the thread's poll.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn changes_are_pushed_and_drop_stops_the_thread() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("a"), "1").expect("write");
        let (tx, rx) = mpsc::channel();
        let w = Watcher::start(
            t.path().to_path_buf(),
            Box::new(move |s: &Snapshot| {
                let _ = tx.send(s.entries.clone());
                Ok(())
            }),
        )
        .expect("start");
        let first = rx.recv_timeout(Duration::from_secs(5)).expect("first push");
        assert_eq!(first.len(), 1);
        std::fs::create_dir(t.path().join("d")).expect("mkdir");
        std::fs::write(t.path().join("d/b"), "2").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("an update within 5 s");
            if got.iter().any(|e| e.path == "d/b") {
                break;
            }
        }
        // A change inside the subdirectory alone is seen too.
        std::fs::write(t.path().join("d/b"), "3").expect("write");
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("nested update");
        let b = got.iter().find(|e| e.path == "d/b").expect("d/b");
        assert_eq!(b.kind, EntryKind::File(b"3".to_vec()));
        drop(w);
        assert!(
            rx.recv().is_err(),
            "the thread ended and dropped its sender"
        );
    }

    #[test]
    fn a_failed_push_is_tried_again_without_a_new_event() {
        let t = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::channel();
        let mut calls = 0;
        let _w = Watcher::start(
            t.path().to_path_buf(),
            Box::new(move |s: &Snapshot| {
                calls += 1;
                let _ = tx.send(s.entries.len());
                // The first update fails once (the guest was busy, say).
                if calls == 2 {
                    return Err(Error::Unavailable("busy".into()));
                }
                Ok(())
            }),
        )
        .expect("start");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(0));
        std::fs::write(t.path().join("a"), "1").expect("write");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1), "update");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1), "retried");
    }
}
