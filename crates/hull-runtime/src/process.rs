//! A started process of a container (its init or an exec): waiting for its exit with the
//! output drained, signals, terminal size and stdin. Shareable between threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::io::{self, Copies, Stdio};

/// How long output may keep flowing after a process exited before `wait` returns anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: i32,
    /// Whether all of its output was copied before `wait` returned.
    pub drained: bool,
    /// The container's memory limit made the kernel kill a process of it (init only).
    pub oom_killed: bool,
}

/// A running (or exited) process of a container.
#[derive(Debug)]
pub struct Process {
    guest: Arc<Guest>,
    container: String,
    exec_id: String,
    pid: u32,
    copies: Mutex<Option<Copies>>,
}

impl Process {
    pub(crate) fn attached(
        guest: &Arc<Guest>,
        container: &str,
        exec_id: &str,
        pid: u32,
        stdio: Stdio,
    ) -> Process {
        let copies = match guest.agent() {
            Ok(agent) => Some(io::attach(agent, container, exec_id, stdio)),
            Err(e) => {
                tracing::warn!(container, exec = exec_id, error = %e, "stdio not attached");
                None
            }
        };
        Process {
            guest: guest.clone(),
            container: container.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            copies: Mutex::new(copies),
        }
    }

    /// The guest pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exec id ("" for the container's init process).
    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    /// Block until the process exits, then until its output is copied (at most a short while
    /// more). If the sandbox dies first the error names what died.
    pub fn wait(&self) -> Result<Exit> {
        let status = self.guest.call(|a| a.wait(&self.container, &self.exec_id));
        let copies = self.copies.lock().unwrap_or_else(|p| p.into_inner()).take();
        let drained = match copies {
            Some(c) => c.join_output_within(DRAIN_TIMEOUT),
            None => true,
        };
        if !drained {
            tracing::warn!(container = %self.container, exec = %self.exec_id,
                "output still open after exit; returning the exit anyway");
        }
        let (status, oom_killed) = status?;
        Ok(Exit {
            status,
            drained,
            oom_killed,
        })
    }

    /// Send `signal` to the process (`all`: to every process of its container).
    pub fn signal(&self, signal: i32, all: bool) -> Result<()> {
        let sig = u32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        self.guest
            .call(|a| a.signal(&self.container, &self.exec_id, sig, all))
    }

    /// Resize its terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.guest
            .call(|a| a.resize(&self.container, &self.exec_id, rows, cols))
    }

    /// Close its stdin.
    pub fn close_stdin(&self) -> Result<()> {
        self.guest
            .call(|a| a.close_stdin(&self.container, &self.exec_id))
    }

    /// Forget an exited exec process in the guest (its id may then be used again).
    pub fn remove(&self) -> Result<()> {
        if self.exec_id.is_empty() {
            return Err(Error::InvalidArgument(
                "the init process goes with its container".into(),
            ));
        }
        self.guest
            .call(|a| a.remove_process(&self.container, &self.exec_id))
    }
}
