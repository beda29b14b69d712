//! The child reaper: as PID 1 the agent inherits every orphan of the guest. One thread reaps
//! every child; exits of processes the agent started are handed to their waiters, others dropped.
//!
//! The reaper thread blocks in `waitid(P_ALL, WEXITED | WNOWAIT)`, which only *observes* that
//! some child is a zombie, then takes the table lock and reaps with `waitpid(-1, WNOHANG)`.
//! [`Reaper::spawn`] holds the same lock across fork and registration, so an exit can never be
//! reaped before its waiter is registered; and the status is kept in a `watch` channel, so a
//! waiter that arrives after the exit still sees it. This needs no SIGCHLD handler, so it works
//! the same in PID 1, in tests and on any tokio runtime.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::exit;

/// Receives the exit status (see [`crate::exit::encode`]) of one process once it has been reaped.
pub type ExitWatch = watch::Receiver<Option<i32>>;

/// Which pids have waiters. Pure bookkeeping, no system calls.
#[derive(Debug, Default)]
pub struct Table {
    watched: HashMap<i32, watch::Sender<Option<i32>>>,
    spawns: u64,
}

impl Table {
    /// Start watching `pid`; must be called before `pid` can be reaped.
    pub fn register(&mut self, pid: i32) -> ExitWatch {
        let (tx, rx) = watch::channel(None);
        self.watched.insert(pid, tx);
        self.spawns = self.spawns.wrapping_add(1);
        rx
    }

    /// Record that `pid` ended with `status`. Returns false if nobody was watching it (an orphan).
    pub fn deliver(&mut self, pid: i32, status: i32) -> bool {
        match self.watched.remove(&pid) {
            Some(tx) => {
                // A dropped receiver only means nobody cares any more.
                let _ = tx.send(Some(status));
                true
            }
            None => false,
        }
    }

    /// Number of pids still watched.
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    /// True when no pid is watched.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

/// The process-wide reaper.
#[derive(Debug)]
pub struct Reaper {
    table: Mutex<Table>,
    spawned: Condvar,
}

static GLOBAL: OnceLock<&'static Reaper> = OnceLock::new();

/// The reaper of this process; its thread is started on first use.
pub fn global() -> &'static Reaper {
    GLOBAL.get_or_init(|| {
        let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
            table: Mutex::new(Table::default()),
            spawned: Condvar::new(),
        }));
        if let Err(e) = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reaper.run())
        {
            tracing::error!(error = %e, "cannot start the reaper thread");
        }
        reaper
    })
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent (single inserts/removes).
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `start` (which forks a child and returns its pid with some value) with the table
    /// locked, and register the pid before anything can reap it.
    pub fn spawn<T, E>(
        &self,
        start: impl FnOnce() -> Result<(T, i32), E>,
    ) -> Result<(T, ExitWatch), E> {
        let mut table = self.lock();
        let (value, pid) = start()?;
        let watch = table.register(pid);
        drop(table);
        self.spawned.notify_all();
        Ok((value, watch))
    }

    fn run(&self) {
        loop {
            let spawns = self.lock().spawns;
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => self.reap_all(),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    // No children: sleep until something is spawned (or orphans may appear).
                    let table = self.lock();
                    if table.spawns == spawns {
                        let _ = self.spawned.wait_timeout(table, Duration::from_secs(1));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "waitid failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn reap_all(&self) {
        let mut table = self.lock();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    let (Some(pid), Some(code)) = (status.pid(), exit::encode(status)) else {
                        continue;
                    };
                    if table.deliver(pid.as_raw(), code) {
                        tracing::debug!(pid = pid.as_raw(), status = code, "process exited");
                    } else {
                        tracing::debug!(pid = pid.as_raw(), status = code, "reaped orphan");
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn exit_before_wait_is_kept() {
        let mut t = Table::default();
        let rx = t.register(10);
        assert!(t.deliver(10, 3));
        // the waiter looks only now
        assert_eq!(*rx.borrow(), Some(3));
        assert!(t.is_empty());
    }

    #[test]
    fn orphans_are_dropped() {
        let mut t = Table::default();
        let _rx = t.register(10);
        assert!(!t.deliver(11, 0));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn dropped_waiter_is_fine() {
        let mut t = Table::default();
        drop(t.register(5));
        assert!(t.deliver(5, 1));
    }

    #[test]
    fn real_child_is_delivered() {
        let (_, mut rx) = super::global()
            .spawn(|| {
                std::process::Command::new("/bin/sh")
                    .args(["-c", "exit 5"])
                    .spawn()
                    .map(|c| ((), c.id() as i32))
            })
            .expect("spawn sh");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let status = rt.block_on(async { rx.wait_for(|s| s.is_some()).await.map(|s| *s) });
        assert_eq!(status.ok().flatten(), Some(5));
    }
}
