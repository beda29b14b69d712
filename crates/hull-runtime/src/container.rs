//! Containers of a sandbox, host side: their rootfs and bind mounts made visible in the
//! shared directory, the guest spec sent to the agent, and process control through it.

use std::path::{Path, PathBuf};

pub use hull_protocol::ContainerStats;
use oci_spec::runtime::{Process, Spec};

use crate::error::{Error, Result};
use crate::mounts;
use crate::sandbox::Sandbox;
use crate::spec::{self, HostBind};

/// What the host keeps about a container.
#[derive(Debug)]
pub(crate) struct HostContainer {
    /// `<shared>/<id>`: everything of this container that the guest sees.
    dir: PathBuf,
}

impl Drop for HostContainer {
    fn drop(&mut self) {
        if let Err(e) = mounts::remove_dir_if_unmounted(&self.dir) {
            tracing::error!(dir = %self.dir.display(), error = %e, "container cleanup incomplete");
        }
    }
}

impl Sandbox {
    /// Create container `id` from `spec` with the host directory `rootfs` as its root.
    /// The container is not started.
    pub fn create_container(&self, id: &str, spec: &Spec, rootfs: &Path) -> Result<()> {
        hull_protocol::validate_id(id)
            .map_err(|e| Error::InvalidArgument(format!("container {e}")))?;
        spec::validate(spec)?;
        if !rootfs.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "rootfs {} is not a directory",
                rootfs.display()
            )));
        }
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if containers.contains_key(id) {
            return Err(Error::InvalidArgument(format!(
                "container {id} already exists"
            )));
        }
        let (guest_spec, binds) = spec::for_guest(spec, id, rootfs)?;
        let dir = self.shared_dir().join(id);
        std::fs::create_dir(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        // From here on, dropping `host` unmounts and removes what was made.
        let host = HostContainer { dir };
        for b in &binds {
            bind_into(self.shared_dir(), b)?;
        }
        let json = serde_json::to_vec(&guest_spec)
            .map_err(|e| Error::InvalidArgument(format!("spec: {e}")))?;
        if json.len() > hull_protocol::MAX_SPEC_LEN {
            return Err(Error::InvalidArgument(format!(
                "spec is {} bytes, limit {}",
                json.len(),
                hull_protocol::MAX_SPEC_LEN
            )));
        }
        self.agent()?
            .create_container(id, json)
            .map_err(|e| self.explain(e))?;
        containers.insert(id.to_string(), host);
        Ok(())
    }

    /// Start a created container; returns the guest pid of its init process.
    pub fn start_container(&self, id: &str) -> Result<u32> {
        self.known(id)?;
        self.agent()?
            .start_container(id)
            .map_err(|e| self.explain(e))
    }

    /// Start an extra process in a running container.
    pub fn exec(&self, id: &str, exec_id: &str, process: &Process) -> Result<u32> {
        self.known(id)?;
        hull_protocol::validate_id(exec_id)
            .map_err(|e| Error::InvalidArgument(format!("exec {e}")))?;
        let json = serde_json::to_vec(process)
            .map_err(|e| Error::InvalidArgument(format!("process: {e}")))?;
        self.agent()?
            .exec_process(id, exec_id, json)
            .map_err(|e| self.explain(e))
    }

    /// Signal a container process ("" = init).
    pub fn signal(&self, id: &str, exec_id: &str, signal: i32, all: bool) -> Result<()> {
        self.known(id)?;
        let sig = u32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        self.agent()?
            .signal(id, exec_id, sig, all)
            .map_err(|e| self.explain(e))
    }

    /// Wait for a container process to exit; returns its exit status.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<i32> {
        self.known(id)?;
        self.agent()?.wait(id, exec_id).map_err(|e| self.explain(e))
    }

    /// Remove a container: in the guest, then its host mounts and directory.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        self.known(id)?;
        let r = self
            .agent()?
            .remove_container(id)
            .map_err(|e| self.explain(e));
        // The host side goes whatever the guest said.
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        r
    }

    /// Freeze (`true`) or thaw every process of a container.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        self.known(id)?;
        self.agent()?
            .set_paused(id, paused)
            .map_err(|e| self.explain(e))
    }

    /// Guest pids of a container's processes.
    pub fn container_pids(&self, id: &str) -> Result<Vec<u32>> {
        self.known(id)?;
        self.agent()?.pids(id).map_err(|e| self.explain(e))
    }

    /// Resource usage of a container (its cgroup inside the guest).
    pub fn stats(&self, id: &str) -> Result<ContainerStats> {
        self.known(id)?;
        let s = self.agent()?.stats(id).map_err(|e| self.explain(e))?;
        Ok(s.into())
    }

    /// Forget an exited exec process of a container.
    pub fn remove_exec(&self, id: &str, exec_id: &str) -> Result<()> {
        self.known(id)?;
        self.agent()?
            .remove_process(id, exec_id)
            .map_err(|e| self.explain(e))
    }

    fn known(&self, id: &str) -> Result<()> {
        if self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
        {
            Ok(())
        } else {
            Err(Error::NotFound(format!("container {id}")))
        }
    }
}

/// Bind `b.source` at `<shared>/<b.rel>` (a directory or a file).
fn bind_into(shared: &Path, b: &HostBind) -> Result<()> {
    let target = shared.join(&b.rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    if b.source.is_dir() {
        std::fs::create_dir(&target)
    } else {
        std::fs::File::create(&target).map(drop)
    }
    .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
    mounts::bind(&b.source, &target, b.readonly)
}
