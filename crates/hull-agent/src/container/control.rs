//! Operations on a live container beyond its processes' stdio: PauseContainer and
//! ResumeContainer (cgroup.freeze), ListPids, ContainerStats, and RemoveProcess for execs.

use std::time::Duration;

use hull_protocol::ContainerStats;

use super::{blocking, lock, Runtime};
use crate::error::AgentError;

/// How long a freeze may take before PauseContainer gives up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    /// Freeze (`true`) or thaw every process of container `id`.
    pub async fn freeze(&self, id: &str, frozen: bool) -> Result<(), AgentError> {
        let c = self.container(id)?;
        if !c.is_started() {
            return Err(AgentError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let cgroup = c.cgroup.clone();
        blocking(move || cgroup.set_frozen(frozen, FREEZE_TIMEOUT)).await?;
        tracing::info!(container = id, frozen, "container freeze state changed");
        Ok(())
    }

    /// Apply `resources_json` (an OCI `linux.resources`) to container `id`'s cgroup.
    pub async fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), AgentError> {
        if resources_json.len() > hull_protocol::MAX_RESOURCES_LEN {
            return Err(AgentError::InvalidArgument(format!(
                "resources of {} bytes exceed {}",
                resources_json.len(),
                hull_protocol::MAX_RESOURCES_LEN
            )));
        }
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(resources_json)
                .map_err(|e| AgentError::InvalidArgument(format!("bad resources JSON: {e}")))?;
        let cgroup = self.container(id)?.cgroup.clone();
        blocking(move || cgroup.apply(&resources)).await?;
        tracing::info!(container = id, "container resources updated");
        Ok(())
    }

    /// Whether the kernel OOM-killed a process of container `id` (false if it is gone).
    pub fn oom_killed(&self, id: &str) -> bool {
        self.container(id).is_ok_and(|c| c.cgroup.oom_kills() > 0)
    }

    /// Guest pids of every process in container `id`.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, AgentError> {
        let c = self.container(id)?;
        Ok(c.cgroup
            .procs()
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .collect())
    }

    /// Resource counters of container `id`.
    pub fn stats(&self, id: &str) -> Result<ContainerStats, AgentError> {
        Ok(self.container(id)?.cgroup.stats())
    }

    /// Forget exec `exec_id` of container `id`; it must have exited.
    pub fn remove_process(&self, id: &str, exec_id: &str) -> Result<(), AgentError> {
        if exec_id.is_empty() {
            return Err(AgentError::InvalidArgument(
                "the init process goes with RemoveContainer".into(),
            ));
        }
        let p = self.process(id, exec_id)?;
        if p.exit_status().is_none() {
            return Err(AgentError::FailedPrecondition(format!(
                "exec {exec_id} of container {id} is still running"
            )));
        }
        let c = self.container(id)?;
        lock(&c.execs).remove(exec_id);
        Ok(())
    }
}
