//! Containers in the guest: our own minimal OCI implementation. `Runtime` holds the containers
//! and is the seam the ttrpc server (and tests) drive; one file per operation.

mod caps;
mod cgroup;
mod console;
mod control;
mod create;
mod device_filter;
mod devices;
mod disposition;
mod exec;
pub mod helper;
mod io;
mod launch;
mod oom;
mod pod;
mod remove;
mod rootfs;
mod seccomp;
mod setup;
mod signal;
mod signals;
pub mod spec;
mod start;
mod sysctl;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub use cgroup::{enable_controllers, shares_to_weight, Cgroup};
pub use rootfs::resolve_in_root;
pub use setup::resolve;

use crate::error::AgentError;
use crate::process::Process;

/// Where the runtime finds things; defaults are the guest's.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// the agent binary to re-execute as the helper
    pub helper_exe: PathBuf,
    /// the cgroup v2 mount; containers go to `<root>/hull/<id>`
    pub cgroup_root: PathBuf,
    /// roots and bind sources must be under this directory
    pub shared_dir: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            helper_exe: PathBuf::from("/proc/self/exe"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            shared_dir: PathBuf::from(hull_protocol::GUEST_SHARED_DIR),
        }
    }
}

/// Before StartContainer: what releases the init process and tells whether its exec worked.
#[derive(Debug)]
struct Pending {
    start: OwnedFd,
    status: BufReader<File>,
}

/// One container.
#[derive(Debug)]
pub struct Container {
    id: String,
    cgroup: Cgroup,
    init: Arc<Process>,
    pending: Mutex<Option<Pending>>,
    started: Mutex<bool>,
    /// The container does not own its pid namespace (it joins the pod's, or has none), so
    /// its init's exit must take the rest of its processes with it.
    kill_all_on_exit: bool,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// linux.seccomp of the spec: exec'd processes get it too
    seccomp: Option<Box<oci_spec::runtime::LinuxSeccomp>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Container {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's init process.
    pub fn init(&self) -> &Arc<Process> {
        &self.init
    }

    fn is_started(&self) -> bool {
        *lock(&self.started)
    }
}

/// All containers of this guest.
#[derive(Debug, Default)]
pub struct Runtime {
    config: RuntimeConfig,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    reserved: Mutex<HashSet<String>>,
}

fn validate(id: &str) -> Result<(), AgentError> {
    hull_protocol::validate_id(id).map_err(|e| AgentError::InvalidArgument(e.to_string()))
}

impl Runtime {
    /// A runtime with no containers.
    pub fn new(config: RuntimeConfig) -> Self {
        Runtime {
            config,
            containers: Mutex::default(),
            reserved: Mutex::default(),
        }
    }

    /// The container `id`.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, AgentError> {
        validate(id)?;
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("container {id} not found")))
    }

    /// The process `exec_id` of container `id` ("" = the init process).
    pub fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, AgentError> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            return Ok(c.init.clone());
        }
        validate(exec_id)?;
        let execs = lock(&c.execs);
        execs.get(exec_id).cloned().ok_or_else(|| {
            AgentError::NotFound(format!("exec {exec_id} not found in container {id}"))
        })
    }

    /// Ids of all containers.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.containers).keys().cloned().collect()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::io("blocking task", e))?
}
