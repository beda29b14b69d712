//! SignalProcess: one process by its guest pid, or (all) every process of the container's
//! cgroup, with `cgroup.kill` for SIGKILL. A signal to a young init that would be dropped is
//! held back until its handler is in place (see `disposition`).

use super::disposition::{self, Fate};
use super::Runtime;
use crate::error::AgentError;
use crate::process::parse_signal;

impl Runtime {
    /// Send `signal` to a process of container `id`, or to all of them.
    pub async fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), AgentError> {
        let sig = parse_signal(signal)?;
        let c = self.container(id)?;
        let process = self.process(id, exec_id)?;
        tracing::debug!(container = id, exec = exec_id, signal = %sig, all, "signal");
        if all {
            c.cgroup.signal_all(sig);
            return Ok(());
        }
        let pid = process.pid;
        let young = disposition::age(pid).is_some_and(|a| a < disposition::YOUNG);
        if young && disposition::fate_of(pid, sig) == Fate::Dropped {
            let deadline = tokio::time::Instant::now() + disposition::HOLD;
            while tokio::time::Instant::now() < deadline
                && process.exit_status().is_none()
                && disposition::fate_of(pid, sig) == Fate::Dropped
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tracing::debug!(container = id, pid, signal = %sig, fate = ?disposition::fate_of(pid, sig), "held a signal for a young init");
        }
        process.signal(sig)
    }
}
