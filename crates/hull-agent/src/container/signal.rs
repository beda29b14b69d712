//! SignalProcess: one process by its guest pid, or (all) every process of the container's
//! cgroup, with `cgroup.kill` for SIGKILL.

use super::Runtime;
use crate::error::AgentError;
use crate::process::parse_signal;

impl Runtime {
    /// Send `signal` to a process of container `id`, or to all of them.
    pub fn signal(
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
            Ok(())
        } else {
            process.signal(sig)
        }
    }
}
