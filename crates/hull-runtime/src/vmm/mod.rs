//! Hypervisor drivers behind two small traits: a `Vmm` launches VMs from a driver-neutral
//! `VmSpec`, a `Vm` is one running VM. Everything QEMU-specific lives in `qemu/`.

pub mod qemu;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::vsock::AgentAddress;

pub use qemu::accel::{Accel, AccelDecision};

/// Where the exits of a VM's processes are reported: (process name, wait status).
pub type ExitNotify = std::sync::mpsc::Sender<(String, ExitStatus)>;

/// How the shared directory reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedFsDevice {
    /// virtio-fs through a vhost-user-fs backend (virtiofsd) on this socket.
    VirtioFs {
        /// the backend's vhost-user socket
        socket: PathBuf,
    },
    /// 9p served by the VMM itself from this host directory.
    NineP {
        /// exported directory
        dir: PathBuf,
    },
}

/// What a sandbox asks of a VM, independent of the hypervisor.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Sandbox id (names the VM).
    pub id: String,
    /// The sandbox's run directory: the driver keeps its sockets and logs here.
    pub run_dir: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: PathBuf,
    /// Kernel command line the sandbox needs (the driver may add its own parameters).
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Shared directory device.
    pub shared_fs: SharedFsDevice,
    /// The pod's network device: a tap in the pod netns, which the VMM process must run in.
    pub net: Option<crate::network::NetDevice>,
}

/// Something that creates VMs.
pub trait Vmm: Send + Sync + std::fmt::Debug {
    /// Driver name, e.g. "qemu".
    fn name(&self) -> &'static str;
    /// Start a VM for `spec`. Exits of the VMM and of every helper it starts are sent on
    /// `notify`. On error nothing the launch started is left running.
    fn launch(&self, spec: &VmSpec, notify: ExitNotify) -> Result<Box<dyn Vm>>;
}

/// A running VM.
pub trait Vm: Send + Sync + std::fmt::Debug {
    /// Host pid of the VMM process (the sandbox task's pid).
    fn pid(&self) -> i32;
    /// The VMM and its helper processes: (name, pid).
    fn processes(&self) -> Vec<(String, i32)>;
    /// How the accelerator was chosen, where the driver has a choice.
    fn accel(&self) -> Option<&AccelDecision>;
    /// Where the host reaches the agent.
    fn agent_address(&self) -> AgentAddress;
    /// Block until the guest side of the agent channel is usable (the agent announced itself),
    /// `timeout` passes (an error), or `dead()` returns the error that makes waiting pointless.
    fn wait_agent_channel(
        &self,
        timeout: Duration,
        dead: &mut dyn FnMut() -> Option<crate::Error>,
    ) -> Result<()>;
    /// The read end of the guest console (taken once).
    fn take_console(&self) -> Option<OwnedFd>;
    /// The VMM's own last complaint (e.g. a bad option), if it wrote one.
    fn last_error(&self) -> Option<String>;
    /// Its wait status once the VMM process has exited.
    fn exited(&self) -> Option<ExitStatus>;
    /// Wait up to `timeout` for the VMM to exit by itself (after a guest power-off).
    fn wait_exit(&self, timeout: Duration) -> bool;
    /// Stop the VM and its helpers: ask the VMM to quit, kill it after `grace`. Returns once
    /// every process is gone.
    fn stop(&self, grace: Duration);
}

/// The driver the configuration asks for (QEMU is the only one today).
pub fn from_config(config: &Config) -> Result<Box<dyn Vmm>> {
    Ok(Box::new(qemu::Qemu::new(config)?))
}
