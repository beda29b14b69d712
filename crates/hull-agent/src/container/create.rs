//! CreateContainer: validate the spec, create the cgroup, start the helper, and wait until the
//! container process is fully set up (mounts, user, cwd, executable) and parked before exec.

use std::sync::{Arc, Mutex};

use super::cgroup::Cgroup;
use super::launch::launch;
use super::wire::{HelperConfig, HelperMode};
use super::{blocking, lock, spec, validate, Container, Pending, Runtime};
use crate::error::AgentError;
use crate::process::Process;
use crate::stdio::Stdio;

impl Runtime {
    /// Create container `id` from an OCI spec (JSON). Setup errors surface here.
    pub async fn create(&self, id: &str, spec_json: &[u8]) -> Result<(), AgentError> {
        validate(id)?;
        let spec = spec::parse_spec(spec_json, &self.config.shared_dir)?;
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        if let Some(linux) = spec.linux() {
            let nss = linux.namespaces().clone().unwrap_or_default();
            if let Some(sysctls) = linux.sysctl() {
                super::sysctl::validate(sysctls, &nss)
                    .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
            }
        }
        if let Some(profile) = &seccomp {
            let filters = super::seccomp::compile(profile)
                .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
            tracing::debug!(
                container = id,
                filters = filters.programs.len(),
                instructions = filters.programs.iter().map(Vec::len).sum::<usize>(),
                "seccomp profile compiled"
            );
        }
        {
            let containers = lock(&self.containers);
            let mut reserved = lock(&self.reserved);
            if containers.contains_key(id) || !reserved.insert(id.to_string()) {
                return Err(AgentError::AlreadyExists(format!(
                    "container {id} already exists"
                )));
            }
        }
        let result = self.create_reserved(id, spec).await;
        lock(&self.reserved).remove(id);
        let container = result?;
        lock(&self.containers).insert(id.to_string(), container);
        tracing::info!(container = id, "container created");
        Ok(())
    }

    async fn create_reserved(
        &self,
        id: &str,
        spec: oci_spec::runtime::Spec,
    ) -> Result<Arc<Container>, AgentError> {
        let cgroup = Cgroup::path(&self.config.cgroup_root, id);
        let spec_seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let config = HelperConfig {
            container_id: id.to_string(),
            cgroup_dir: cgroup.dir().to_path_buf(),
            terminal,
            mode: HelperMode::Create {
                spec: Box::new(spec.clone()),
            },
        };
        let exe = self.config.helper_exe.clone();
        let cg = cgroup.clone();
        let cid = id.to_string();
        let kill_all_on_exit = !owns_pid_namespace(&spec);
        let device_rules = super::device_filter::rules(
            spec.linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|r| r.devices().as_deref())
                .unwrap_or_default(),
        )?;
        let pod_limits = super::pod::pod_limits(&spec.annotations().clone().unwrap_or_default())?;
        let launched = blocking(move || {
            let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
            let up = crate::ready::uptime_ms;
            tracing::debug!(container = %cid, uptime_ms = up(), "creating cgroup");
            cg.create(resources.as_ref())?;
            if let Some(pod_dir) = cg.dir().parent() {
                super::pod::apply(pod_dir, &pod_limits).inspect_err(|_| cg.remove())?;
            }
            if let Some(rules) = &device_rules {
                super::device_filter::attach(cg.dir(), rules).inspect_err(|_| cg.remove())?;
            }
            tracing::debug!(container = %cid, uptime_ms = up(), "launching helper");
            let l = launch(&exe, &config, true)
                .map_err(|e| setup_oom(&cg, e))
                .inspect_err(|_| cg.remove());
            tracing::debug!(container = %cid, uptime_ms = up(), "helper parked before exec");
            l
        })
        .await;
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(container = id, error = %e, "create failed");
                return Err(e);
            }
        };
        let stdio = match Stdio::new(launched.stdio) {
            Ok(s) => s,
            Err(e) => {
                cgroup.signal_all(nix::sys::signal::Signal::SIGKILL);
                return Err(AgentError::io("stdio", e));
            }
        };
        let init = Arc::new(Process::new(
            launched.pid,
            launched.helper_pid,
            launched.exit,
            stdio,
        ));
        let pending = launched.start.map(|start| Pending {
            start,
            status: launched.status,
        });
        Ok(Arc::new(Container {
            id: id.to_string(),
            cgroup,
            init,
            pending: Mutex::new(pending),
            started: Mutex::new(false),
            kill_all_on_exit,
            execs: Mutex::default(),
            seccomp: spec_seccomp.map(Box::new),
        }))
    }
}

/// A setup that failed because the container's memory limit left it no room names the limit,
/// as runc does ("unable to set memory limit ... (current usage ...)"), not the helper's exit.
fn setup_oom(cgroup: &Cgroup, e: AgentError) -> AgentError {
    if cgroup.oom_kills() == 0 {
        return e;
    }
    let read = |f: &str| {
        std::fs::read_to_string(cgroup.dir().join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    AgentError::InvalidArgument(format!(
        "the container was OOM-killed during setup: its memory limit of {} bytes is below what \
         it needs to start (peak usage {} bytes)",
        read("memory.max"),
        read("memory.peak")
    ))
}

/// Whether the spec gives the container a pid namespace of its own (a pid entry without a path).
fn owns_pid_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| {
            nss.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
            })
        })
}
