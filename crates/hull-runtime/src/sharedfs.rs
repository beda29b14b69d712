//! The sandbox's shared directory on the host and the daemon that exports it to the guest:
//! virtiofsd for virtio-fs, nothing for 9p (QEMU serves it itself).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::config::{SharedFsConfig, SharedFsKind};
use crate::daemon::{Daemon, Notify};
use crate::error::{Error, Result};
use crate::vmm::SharedFsDevice;

/// The socket QEMU connects to, in the sandbox's run directory.
const SOCKET_NAME: &str = "virtiofsd.sock";

/// The shared-fs device of a sandbox and its daemon, if any.
#[derive(Debug)]
pub struct SharedFs {
    /// What QEMU gets.
    pub device: SharedFsDevice,
    /// virtiofsd, for virtio-fs.
    pub daemon: Option<Daemon>,
}

impl SharedFs {
    /// Stop the daemon, if any, and the worker it forked: virtiofsd's sandbox runs in a child
    /// that its parent's death only asks to end (PDEATHSIG), and that is nobody's child we can
    /// wait for, so its end is polled for, then forced.
    pub fn stop(self) {
        if let Some(d) = self.daemon {
            let workers: Vec<OwnedFd> = children_of(d.pid())
                .into_iter()
                .filter_map(pidfd_of_virtiofsd)
                .collect();
            d.stop(Duration::from_secs(1));
            for w in workers {
                if !exited(&w, Duration::from_secs(2)) {
                    // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo; a pidfd names
                    // exactly this process, so a reused pid can never be hit.
                    unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            w.as_raw_fd(),
                            libc::SIGKILL,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        );
                    }
                    if !exited(&w, Duration::from_secs(2)) {
                        tracing::warn!("virtiofsd worker did not exit after SIGKILL");
                    }
                }
            }
        }
    }
}

/// A pidfd of process `pid` if it is a virtiofsd.
fn pidfd_of_virtiofsd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Checked after opening: the pidfd holds on to this very process.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    (comm.trim() == "virtiofsd").then_some(fd)
}

/// Wait up to `timeout` for the process of pidfd `fd` to exit.
fn exited(fd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    poll(&mut fds, t).is_ok_and(|n| n > 0)
}

/// Pids of the children of `pid` (every thread's `children` list).
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

/// Export `dir` (an existing directory) to the guest.
pub fn start(
    cfg: &SharedFsConfig,
    dir: &Path,
    run_dir: &Path,
    log: &Path,
    notify: Option<Notify>,
) -> Result<SharedFs> {
    match cfg.kind {
        SharedFsKind::NineP => Ok(SharedFs {
            device: SharedFsDevice::NineP {
                dir: dir.to_path_buf(),
            },
            daemon: None,
        }),
        SharedFsKind::VirtioFs => {
            // We listen and hand virtiofsd the socket (--fd) rather than a path: given
            // --socket-path, virtiofsd also writes /run/virtiofsd/<path>.pid, outside our run
            // directory, and never removes it. QEMU's connection waits in the backlog until
            // virtiofsd accepts it; if virtiofsd dies first, the socket dies with it.
            let socket = run_dir.join(SOCKET_NAME);
            let listener = UnixListener::bind(&socket)
                .map_err(|e| Error::io(format!("listen on {}", socket.display()), e))?;
            let fd = listener.as_raw_fd();
            let mut cmd = Command::new(&cfg.virtiofsd);
            cmd.arg(format!("--fd={fd}"))
                .arg("-o")
                .arg(format!("source={}", dir.display()))
                .arg("-o")
                .arg(format!("cache={}", cfg.cache))
                .arg("-o")
                .arg("xattr");
            // SAFETY: the closure runs in the forked child and only calls fcntl, which is
            // async-signal-safe, on `fd`, which `listener` keeps open in the parent until the
            // spawn below has returned: it clears FD_CLOEXEC so that virtiofsd inherits it.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let daemon = Daemon::spawn_notify("virtiofsd", cmd, Some(log), notify)?;
            drop(listener);
            Ok(SharedFs {
                device: SharedFsDevice::VirtioFs { socket },
                daemon: Some(daemon),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::test_support::{require_file, require_root};

    /// Files virtiofsd left in its pid directory that name `dir`.
    fn pid_files_naming(dir: &Path) -> Vec<PathBuf> {
        let mangled = dir.to_string_lossy().replace('/', ".");
        std::fs::read_dir("/run/virtiofsd")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(&mangled))
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn virtiofsd_serves_our_socket_and_writes_no_pid_file() {
        let mut cfg = crate::Config::defaults().shared_fs;
        if !require_root() || !require_file(&cfg.virtiofsd, "qemu-system-common") {
            return;
        }
        cfg.kind = SharedFsKind::VirtioFs;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (shared, run) = (tmp.path().join("shared"), tmp.path().join("run"));
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::create_dir(&run).expect("mkdir");
        let fs = start(&cfg, &shared, &run, &run.join("helpers.log"), None).expect("start");
        let socket = match &fs.device {
            SharedFsDevice::VirtioFs { socket } => socket.clone(),
            other => panic!("not virtio-fs: {other:?}"),
        };
        assert_eq!(socket, run.join(SOCKET_NAME));
        let conn = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        let log = || std::fs::read_to_string(run.join("helpers.log")).unwrap_or_default();
        let accepted = crate::daemon::poll_until(Duration::from_secs(10), || {
            log().contains("Received vhost-user socket connection")
        });
        drop(conn);
        let daemon = fs.daemon.expect("virtiofsd");
        // virtiofsd ends when its one connection goes; stop it in case it did not.
        daemon.stop(Duration::from_secs(2));
        assert!(
            accepted,
            "virtiofsd did not accept on our socket: {}",
            log()
        );
        assert_eq!(pid_files_naming(&run), Vec::<PathBuf>::new());
    }
}
