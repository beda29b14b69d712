//! A container of a sandbox, host side: its rootfs and bind mounts made visible in the shared
//! directory, the guest spec sent to the agent, and the container's lifecycle through it.

use std::path::Path;
use std::sync::Arc;

pub use hull_protocol::ContainerStats;

use crate::error::{Error, Result};
use crate::guest::{Guest, HostContainer};
use crate::io::Stdio;
use crate::process::Process;
use crate::spec::{self, HostBind};

/// A container in a running sandbox. Cheap to clone; every clone names the same container.
#[derive(Debug, Clone)]
pub struct Container {
    guest: Arc<Guest>,
    id: String,
}

/// Create container `id` from `spec` with the host directory `rootfs` as its root.
pub(crate) fn create(
    guest: &Arc<Guest>,
    id: &str,
    spec: &oci_spec::runtime::Spec,
    rootfs: &Path,
) -> Result<Container> {
    hull_protocol::validate_id(id).map_err(|e| Error::InvalidArgument(format!("container {e}")))?;
    spec::validate(spec)?;
    if !rootfs.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "rootfs {} is not a directory",
            rootfs.display()
        )));
    }
    // The table stays locked while the container is made, so an id is created only once.
    let mut containers = guest.containers();
    // Checked under the table's lock: `stop` clears the table before it removes the directory.
    guest.agent()?;
    if containers.contains_key(id) {
        return Err(Error::AlreadyExists(format!("container {id}")));
    }
    let mountinfo = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    let (guest_spec, binds, volumes) =
        spec::for_guest(spec, id, rootfs, Some(guest.pod_namespaces()), &mountinfo)?;
    let json = serde_json::to_vec(&guest_spec)
        .map_err(|e| Error::InvalidArgument(format!("spec: {e}")))?;
    if json.len() > hull_protocol::MAX_SPEC_LEN {
        return Err(Error::InvalidArgument(format!(
            "spec is {} bytes, limit {}",
            json.len(),
            hull_protocol::MAX_SPEC_LEN
        )));
    }
    let dir = guest.shared_dir.join(id);
    std::fs::create_dir(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    // From here on, dropping `host` unmounts and removes what was made.
    let host = HostContainer {
        id: id.to_string(),
        dir,
        mounts: guest.mounts.clone(),
        volumes: guest.volumes.clone(),
    };
    for b in &binds {
        bind_into(guest, b)?;
    }
    guest
        .volumes
        .attach(id, &volumes)
        .map_err(|e| guest.explain(e))?;
    guest.call(|a| a.create_container(id, json))?;
    containers.insert(id.to_string(), host);
    Ok(Container {
        guest: guest.clone(),
        id: id.to_string(),
    })
}

impl Container {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Start the container's init process with `stdio` attached.
    pub fn start(&self, stdio: Stdio) -> Result<Process> {
        self.guest.known(&self.id)?;
        let pid = self.guest.call(|a| a.start_container(&self.id))?;
        self.guest.started(&self.id, pid);
        Ok(Process::attached(&self.guest, &self.id, "", pid, stdio))
    }

    /// Start process `exec_id` (an OCI `process`) in the running container.
    pub fn exec(
        &self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: Stdio,
    ) -> Result<Process> {
        self.guest.known(&self.id)?;
        if exec_id.is_empty() {
            return Err(Error::InvalidArgument("exec id is empty".into()));
        }
        hull_protocol::validate_id(exec_id)
            .map_err(|e| Error::InvalidArgument(format!("exec {e}")))?;
        let json = serde_json::to_vec(process)
            .map_err(|e| Error::InvalidArgument(format!("process: {e}")))?;
        let pid = self
            .guest
            .call(|a| a.exec_process(&self.id, exec_id, json))?;
        Ok(Process::attached(
            &self.guest,
            &self.id,
            exec_id,
            pid,
            stdio,
        ))
    }

    /// Signal the init process (or, with `all`, every process of the container), started or not.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        self.guest.known(&self.id)?;
        let sig = u32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        self.guest.call(|a| a.signal(&self.id, "", sig, all))
    }

    /// Freeze (`true`) or thaw every process of the container.
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.guest.known(&self.id)?;
        self.guest.call(|a| a.set_paused(&self.id, paused))
    }

    /// Apply new resource limits to the container's cgroup in the guest (as runc update does).
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        self.guest.known(&self.id)?;
        let json = serde_json::to_vec(resources)
            .map_err(|e| Error::InvalidArgument(format!("resources: {e}")))?;
        if json.len() > hull_protocol::MAX_RESOURCES_LEN {
            return Err(Error::InvalidArgument(format!(
                "resources of {} bytes exceed {}",
                json.len(),
                hull_protocol::MAX_RESOURCES_LEN
            )));
        }
        self.guest
            .call(|a| a.update_container(&self.id, json.clone()))
    }

    /// Block until the kernel has OOM-killed more than `seen` processes of the container in
    /// all; returns the new count, or the unchanged one after about 30 s (call again).
    /// NotFound once the container is removed.
    pub fn watch_oom(&self, seen: u64) -> Result<u64> {
        self.guest.known(&self.id)?;
        self.guest.call(|a| a.watch_oom(&self.id, seen))
    }

    /// Guest pids of the container's processes.
    pub fn pids(&self) -> Result<Vec<u32>> {
        self.guest.known(&self.id)?;
        self.guest.call(|a| a.pids(&self.id))
    }

    /// Resource usage (the container's cgroup inside the guest).
    pub fn stats(&self) -> Result<ContainerStats> {
        self.guest.known(&self.id)?;
        Ok(self.guest.call(|a| a.stats(&self.id))?.into())
    }

    /// Remove the container: in the guest, then its host mounts and directory. The host side
    /// goes whatever the guest says (a dead guest has nothing left to remove).
    pub fn remove(&self) -> Result<()> {
        let host = self.guest.containers().remove(&self.id);
        let r = match (&host, self.guest.agent()) {
            // A stopped or dead sandbox has nothing left of the container in the guest.
            (_, Err(Error::Died { .. } | Error::FailedPrecondition(_))) => Ok(()),
            (None, _) => Err(Error::NotFound(format!("container {}", self.id))),
            (Some(_), _) => self.guest.call(|a| a.remove_container(&self.id)),
        };
        // The host side goes whatever the guest said.
        drop(host);
        match r {
            Err(Error::Died { .. }) => Ok(()),
            other => other,
        }
    }
}

/// Bind `b.source` at `<shared>/<b.rel>` (a directory or a file).
fn bind_into(guest: &Guest, b: &HostBind) -> Result<()> {
    let target = guest.shared_dir.join(&b.rel);
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
    guest.mounts.bind(&b.source, &target, b.readonly)
}
