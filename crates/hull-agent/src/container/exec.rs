//! ExecProcess: run an extra process in a running container through the helper in exec mode
//! (setns into the init's namespaces and cgroup, then fork and exec).

use std::sync::Arc;

use super::launch::launch;
use super::wire::{HelperConfig, HelperMode};
use super::{blocking, lock, spec, validate, Runtime};
use crate::error::AgentError;
use crate::process::Process;
use crate::stdio::Stdio;

impl Runtime {
    /// Start `exec_id` in container `id` from an OCI process (JSON); returns its guest pid.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
    ) -> Result<u32, AgentError> {
        validate(exec_id)?;
        let c = self.container(id)?;
        let process = spec::parse_process(process_json)?;
        if !c.is_started() || c.init.exit_status().is_some() {
            return Err(AgentError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        {
            let execs = lock(&c.execs);
            if execs.contains_key(exec_id) {
                return Err(AgentError::AlreadyExists(format!(
                    "exec {exec_id} already exists in {id}"
                )));
            }
        }
        let config = HelperConfig {
            container_id: id.to_string(),
            cgroup_dir: c.cgroup.dir().to_path_buf(),
            terminal: process.terminal().unwrap_or(false),
            mode: HelperMode::Exec {
                process: Box::new(process),
                seccomp: c.seccomp.clone(),
                init_pid: c.init.pid,
            },
        };
        let exe = self.config.helper_exe.clone();
        let launched = blocking(move || launch(&exe, &config, false)).await?;
        let stdio = Stdio::new(launched.stdio).map_err(|e| AgentError::io("stdio", e))?;
        let proc = Arc::new(Process::new(
            launched.pid,
            launched.helper_pid,
            launched.exit,
            stdio,
        ));
        let pid = proc.pid;
        let mut execs = lock(&c.execs);
        if execs.contains_key(exec_id) {
            let _ = proc.signal(nix::sys::signal::Signal::SIGKILL);
            return Err(AgentError::AlreadyExists(format!(
                "exec {exec_id} already exists in {id}"
            )));
        }
        execs.insert(exec_id.to_string(), proc);
        tracing::info!(container = id, exec = exec_id, pid, "exec started");
        Ok(pid as u32)
    }
}
