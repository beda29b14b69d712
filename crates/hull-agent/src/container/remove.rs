//! RemoveContainer: kill whatever is left in the container's cgroup, wait for the helpers,
//! remove the cgroup and forget the container.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{blocking, lock, Runtime};
use crate::error::AgentError;

impl Runtime {
    /// Remove container `id`, killing its processes.
    pub async fn remove(&self, id: &str) -> Result<(), AgentError> {
        let c = self.container(id)?;
        // A container created but not started: closing the start pipe lets its process exit.
        lock(&c.pending).take();
        c.cgroup.signal_all(Signal::SIGKILL);
        let _ = c.init.signal(Signal::SIGKILL);
        let execs: Vec<_> = lock(&c.execs).values().cloned().collect();
        for p in std::iter::once(c.init.clone()).chain(execs) {
            if tokio::time::timeout(Duration::from_secs(10), p.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    container = id,
                    pid = p.pid,
                    "process did not exit after SIGKILL"
                );
            }
        }
        let cgroup = c.cgroup.clone();
        blocking(move || {
            cgroup.remove();
            Ok(())
        })
        .await?;
        lock(&self.containers).remove(id);
        tracing::info!(container = id, "container removed");
        Ok(())
    }
}
