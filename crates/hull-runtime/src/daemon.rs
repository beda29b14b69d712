//! Supervised helper processes (QEMU, virtiofsd, vhost-device-vsock): spawned with
//! PR_SET_PDEATHSIG so they die with us, watched by a thread, stopped by their own pid.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Where helper exits are reported: (helper name, exit status).
pub type Notify = crate::vmm::ExitNotify;

/// A helper process we started and watch.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    pid: Pid,
    state: Arc<(Mutex<Option<ExitStatus>>, Condvar)>,
}

impl Daemon {
    /// Spawn `cmd` as helper `name`. Its stdout/stderr go to `log` (appended) if given.
    /// The child gets SIGKILL when this process dies (see `spawner`).
    pub fn spawn(name: &str, cmd: Command, log: Option<&std::path::Path>) -> Result<Daemon> {
        Self::spawn_notify(name, cmd, log, None)
    }

    /// Like `spawn`, and sends `(name, status)` on `notify` when the process exits.
    pub fn spawn_notify(
        name: &str,
        cmd: Command,
        log: Option<&std::path::Path>,
        notify: Option<Notify>,
    ) -> Result<Daemon> {
        Self::spawn_inner(name, cmd, None, log, notify)
    }

    /// Like `spawn_notify`, with the helper's stdout going to `stdout` (e.g. a pipe) and only
    /// its stderr to `log`.
    pub fn spawn_with_stdout(
        name: &str,
        cmd: Command,
        stdout: OwnedFd,
        log: Option<&std::path::Path>,
        notify: Option<Notify>,
    ) -> Result<Daemon> {
        Self::spawn_inner(name, cmd, Some(stdout), log, notify)
    }

    fn spawn_inner(
        name: &str,
        mut cmd: Command,
        stdout: Option<OwnedFd>,
        log: Option<&std::path::Path>,
        notify: Option<Notify>,
    ) -> Result<Daemon> {
        cmd.stdin(Stdio::null());
        let log_file = match log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io(format!("open {}", path.display()), e))?,
            ),
            None => None,
        };
        let log_out = |f: &Option<std::fs::File>| -> Result<Stdio> {
            match f {
                Some(f) => Ok(f
                    .try_clone()
                    .map_err(|e| Error::io("dup log fd", e))?
                    .into()),
                None => Ok(Stdio::null()),
            }
        };
        match stdout {
            Some(fd) => cmd.stdout(fd),
            None => cmd.stdout(log_out(&log_file)?),
        };
        cmd.stderr(log_out(&log_file)?);
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child: Child = spawner::spawn(cmd).map_err(|e| Error::Daemon {
            name: name.to_string(),
            what: format!("could not be started ({program}): {e}"),
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        tracing::debug!(daemon = name, pid = pid.as_raw(), %program, "started");
        let state = Arc::new((Mutex::new(None), Condvar::new()));
        let watch = state.clone();
        let tname = name.to_string();
        std::thread::Builder::new()
            .name(format!("watch-{name}"))
            .spawn(move || {
                if let Some(status) = watch_child(child, &tname, &watch) {
                    if let Some(n) = notify {
                        let _ = n.send((tname, status));
                    }
                }
            })
            .map_err(|e| Error::io("spawn watcher thread", e))?;
        Ok(Daemon {
            name: name.to_string(),
            pid,
            state,
        })
    }

    /// The helper's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The helper's pid.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        *lock(&self.state.0)
    }

    /// Wait up to `timeout` for it to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let (lockable, cvar) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut guard = lock(lockable);
        while guard.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = match cvar.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *guard
    }

    /// Ask it to stop (SIGTERM), then SIGKILL after `grace`; waits until it is reaped.
    pub fn stop(&self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // Our watcher has not reaped it yet, so the pid still names our child.
        let _ = kill(self.pid, Signal::SIGTERM);
        if self.wait_timeout(grace).is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                tracing::warn!(daemon = %self.name, pid = self.pid.as_raw(), "did not exit after SIGKILL");
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_millis(500));
    }
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, and callers such as
/// the shim's RPC worker threads come and go: so every helper is forked by one thread that
/// lives as long as the process.
mod spawner {
    use std::process::{Child, Command};
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};

    type Job = (Command, Sender<std::io::Result<Child>>);

    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

    pub(super) fn spawn(cmd: Command) -> std::io::Result<Child> {
        let jobs = SPAWNER.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let started = std::thread::Builder::new()
                .name("hull-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "could not start the spawner thread");
            }
            Mutex::new(tx)
        });
        let (reply, result) = channel();
        super::lock(jobs)
            .send((cmd, reply))
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        result
            .recv()
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn watch_child(
    mut child: Child,
    name: &str,
    state: &(Mutex<Option<ExitStatus>>, Condvar),
) -> Option<ExitStatus> {
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(daemon = name, error = %e, "wait failed");
                return None;
            }
        }
    };
    tracing::debug!(daemon = name, %status, "exited");
    *lock(&state.0) = Some(status);
    state.1.notify_all();
    Some(status)
}

/// Poll `cond` every few milliseconds until it holds or `timeout` passes.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut step = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
        step = (step * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_is_observed() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let d = Daemon::spawn("sh", cmd, None).expect("spawn");
        let st = d.wait_timeout(Duration::from_secs(10)).expect("exited");
        assert_eq!(st.code(), Some(3));
    }

    #[test]
    fn stop_kills_by_pid() {
        let mut cmd = Command::new("sleep");
        cmd.arg("100");
        let d = Daemon::spawn("sleep", cmd, None).expect("spawn");
        let pid = d.pid();
        d.stop(Duration::from_millis(200));
        assert!(d.exited().is_some());
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "process {pid} still exists"
        );
    }

    #[test]
    fn helper_outlives_the_thread_that_asked_for_it() {
        let d = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("100");
            Daemon::spawn("sleep", cmd, None).expect("spawn")
        })
        .join()
        .expect("thread");
        // Give a PDEATHSIG tied to the finished thread time to strike.
        assert!(
            d.wait_timeout(Duration::from_millis(300)).is_none(),
            "helper died with its caller thread"
        );
        d.stop(Duration::from_millis(200));
    }

    #[test]
    fn missing_binary_is_named() {
        let e = Daemon::spawn("virtiofsd", Command::new("/nonexistent/virtiofsd"), None)
            .expect_err("must fail");
        assert!(e.to_string().contains("virtiofsd"), "{e}");
    }
}
