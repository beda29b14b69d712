//! StartContainer: release the parked init process (one byte on the start pipe) and wait for
//! its exec to succeed (EOF on the status pipe) or fail (an error line).

use std::io::Write;

use super::launch::wait_exec;
use super::{blocking, lock, Runtime};
use crate::error::AgentError;

impl Runtime {
    /// Start container `id`; returns the init process's guest pid.
    pub async fn start(&self, id: &str) -> Result<u32, AgentError> {
        let c = self.container(id)?;
        let pending = lock(&c.pending).take().ok_or_else(|| {
            AgentError::FailedPrecondition(format!("container {id} was already started"))
        })?;
        let result = blocking(move || {
            let mut status = pending.status;
            let mut start = std::fs::File::from(pending.start);
            start.write_all(b"s").map_err(|e| {
                AgentError::FailedPrecondition(format!("container process is gone: {e}"))
            })?;
            drop(start);
            wait_exec(&mut status).map_err(AgentError::from)
        })
        .await;
        match result {
            Ok(()) => {
                *lock(&c.started) = true;
                if c.kill_all_on_exit {
                    // In a pid namespace it does not own, the init's exit kills nothing else:
                    // what it leaves would hold its output open. runc's shim kills the rest of
                    // the container then (ShouldKillAllOnExit); so does the agent.
                    let (init, cgroup, cid) = (c.init.clone(), c.cgroup.clone(), id.to_string());
                    tokio::spawn(async move {
                        if init.wait().await.is_ok() {
                            tracing::debug!(container = %cid, "init exited; killing the rest");
                            cgroup.signal_all(nix::sys::signal::Signal::SIGKILL);
                        }
                    });
                }
                tracing::info!(container = id, pid = c.init.pid, "container started");
                Ok(c.init.pid as u32)
            }
            Err(e) => {
                tracing::warn!(container = id, error = %e, "start failed");
                Err(e)
            }
        }
    }
}
