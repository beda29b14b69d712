//! A process the agent started in a container (an init or an exec): its pids, its exit watch
//! and its stdio. Waiting, signalling and stream I/O on one process live here.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::AgentError;
use crate::reaper::ExitWatch;
use crate::stdio::Stdio;

/// One process started through the container helper.
#[derive(Debug)]
pub struct Process {
    /// The process itself, as a pid of the agent's (the guest's) pid namespace.
    pub pid: i32,
    /// The helper that waits for it; its exit status is the process's.
    pub helper_pid: i32,
    exit: ExitWatch,
    /// The agent's ends of the process's streams.
    pub stdio: Stdio,
}

impl Process {
    /// Assemble a started process.
    pub fn new(pid: i32, helper_pid: i32, exit: ExitWatch, stdio: Stdio) -> Self {
        Process {
            pid,
            helper_pid,
            exit,
            stdio,
        }
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Wait until the process has ended; returns the code, or 128 + signal.
    pub async fn wait(&self) -> Result<i32, AgentError> {
        let mut rx = self.exit.clone();
        let status = rx
            .wait_for(|s| s.is_some())
            .await
            .map_err(|_| AgentError::Internal("the reaper went away".into()))?;
        status.ok_or_else(|| AgentError::Internal("no exit status".into()))
    }

    /// Send `signal` to the process (not to the helper); a no-op once it has exited.
    pub fn signal(&self, signal: Signal) -> Result<(), AgentError> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(AgentError::io("kill", e)),
        }
    }
}

/// Turn a signal number from the host into a signal.
pub fn parse_signal(signal: u32) -> Result<Signal, AgentError> {
    i32::try_from(signal)
        .ok()
        .and_then(|s| Signal::try_from(s).ok())
        .ok_or_else(|| AgentError::InvalidArgument(format!("unknown signal {signal}")))
}
