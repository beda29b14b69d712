//! The agent's side of the helper: spawn `/proc/self/exe __hull-container-helper` with the
//! process's stdio and three pipes (config, status, start), and read its status lines.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};

use super::wire::{HelperConfig, HelperError, Status, HELPER_ARG};
use crate::error::AgentError;
use crate::reaper::{self, ExitWatch};
use crate::stdio::{self, ParentFds};

/// A helper that was started and has reported its child's pid.
#[derive(Debug)]
pub struct Launched {
    /// the helper process
    pub helper_pid: i32,
    /// the container process (guest pid)
    pub pid: i32,
    /// the helper's exit status = the process's
    pub exit: ExitWatch,
    /// the agent's stdio ends
    pub stdio: ParentFds,
    /// create: writing a byte releases the process to exec
    pub start: Option<OwnedFd>,
    /// the rest of the status stream
    pub status: BufReader<File>,
}

/// Spawn the helper and wait until it reports the pid and, for create, readiness. Blocking.
pub fn launch(exe: &Path, config: &HelperConfig, wait_ready: bool) -> Result<Launched, AgentError> {
    let io = |ctx: &str| {
        let ctx = ctx.to_string();
        move |e: nix::Error| AgentError::io(&ctx, e)
    };
    let (parent_stdio, child_stdio) =
        stdio::create(config.terminal).map_err(|e| AgentError::io("stdio", e))?;
    let (config_r, config_w) = pipe2(OFlag::O_CLOEXEC).map_err(io("pipe"))?;
    let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC).map_err(io("pipe"))?;
    let (start_r, start_w) = pipe2(OFlag::O_CLOEXEC).map_err(io("pipe"))?;
    let inherit = [
        config_r.as_raw_fd(),
        status_w.as_raw_fd(),
        start_r.as_raw_fd(),
    ];

    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ARG)
        .args(inherit.iter().map(|fd| fd.to_string()))
        .env_clear()
        .stdin(child_stdio.stdin)
        .stdout(child_stdio.stdout)
        .stderr(child_stdio.stderr);
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, on fds that are open
    // in the parent (and so in the forked child) for the duration of spawn.
    unsafe {
        cmd.pre_exec(move || {
            for fd in inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (helper_pid, exit) = reaper::global()
        .spawn(|| {
            cmd.spawn().map(|child| {
                let pid = child.id() as i32;
                (pid, pid)
            })
        })
        .map_err(|e| AgentError::io(&format!("spawn {}", exe.display()), e))?;
    drop(cmd); // closes our copies of the child's stdio
    drop((config_r, status_w, start_r));

    let mut status = BufReader::new(File::from(status_r));
    let json = serde_json::to_vec(config).map_err(|e| AgentError::io("encode helper config", e))?;
    let mut config_w = File::from(config_w);
    let written = config_w.write_all(&json);
    drop(config_w);

    let outcome = written
        .map_err(|e| HelperError::internal("send config to helper", e))
        .and_then(|()| read_until(&mut status, wait_ready))
        .and_then(|pid| {
            let fds = parent_stdio
                .into_fds()
                .map_err(|e| HelperError::internal("container terminal", e))?;
            Ok((pid, fds))
        });
    match outcome {
        Ok((pid, stdio)) => Ok(Launched {
            helper_pid,
            pid,
            exit,
            stdio,
            start: wait_ready.then_some(start_w),
            status,
        }),
        Err(e) => {
            let _ = kill(Pid::from_raw(helper_pid), Signal::SIGKILL);
            Err(e.into())
        }
    }
}

/// Read status lines until the pid is known and (create) the process is ready, or (exec) EOF.
fn read_until(status: &mut BufReader<File>, wait_ready: bool) -> Result<i32, HelperError> {
    let mut pid = None;
    let mut ready = false;
    loop {
        if let Some(pid) = pid {
            if wait_ready && ready {
                return Ok(pid);
            }
        }
        match next_status(status)? {
            Some(Status::Pid(p)) => pid = Some(p),
            Some(Status::Ready) => ready = true,
            Some(Status::Error(e)) => return Err(e),
            None => {
                return match pid {
                    Some(pid) if !wait_ready => Ok(pid),
                    _ => Err(HelperError::internal(
                        "container helper",
                        "exited during setup",
                    )),
                }
            }
        }
    }
}

/// Next status line, None at EOF.
pub fn next_status(status: &mut BufReader<File>) -> Result<Option<Status>, HelperError> {
    let mut line = String::new();
    match Read::by_ref(status).take(64 * 1024).read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => serde_json::from_str(line.trim_end())
            .map(Some)
            .map_err(|e| HelperError::internal("bad status line from helper", e)),
        Err(e) => Err(HelperError::internal("read helper status", e)),
    }
}

/// After the start byte: EOF means the exec succeeded, an error line means it did not.
pub fn wait_exec(status: &mut BufReader<File>) -> Result<(), HelperError> {
    loop {
        match next_status(status)? {
            None => return Ok(()),
            Some(Status::Error(e)) => return Err(e),
            Some(_) => {}
        }
    }
}
