//! Hypervisor drivers. The sandbox talks to a VM only through the small `Hypervisor` trait,
//! so another VMM (Cloud Hypervisor, Firecracker) can be added without touching sandbox code.

pub mod accel;
pub mod qemu;
pub mod qmp;
pub mod tsc;

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;

pub use accel::{Accel, AccelDecision};

/// How the agent's vsock device is backed on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockDevice {
    /// In-kernel vhost-vsock with this guest CID.
    Vhost {
        /// guest context id
        cid: u32,
    },
    /// A vhost-user vsock backend listening on this socket.
    VhostUser {
        /// the backend's vhost-user socket
        socket: PathBuf,
    },
}

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

/// Everything a VMM needs to boot one sandbox VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Sandbox id (names the VM).
    pub id: String,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: PathBuf,
    /// Full kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Accelerator.
    pub accel: Accel,
    /// TCG translation cache size in MiB (0 = QEMU's default); ignored under KVM.
    pub tcg_tb_size_mib: u32,
    /// Agent channel device.
    pub vsock: VsockDevice,
    /// Shared directory device.
    pub shared_fs: SharedFsDevice,
    /// Guest serial console is written here.
    pub console_log: PathBuf,
    /// VMM control socket (QMP for QEMU).
    pub control_socket: PathBuf,
}

/// A running VM.
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    /// Driver name, e.g. "qemu".
    fn name(&self) -> &'static str;
    /// Host pid of the VMM process.
    fn pid(&self) -> i32;
    /// `Some(description)` once the VMM process has exited.
    fn exited(&self) -> Option<String>;
    /// Wait up to `timeout` for the VMM to exit by itself (after a guest power-off).
    fn wait_exit(&self, timeout: Duration) -> bool;
    /// Stop the VM: ask the VMM to quit, then kill it. Returns once the process is gone.
    fn stop(&self, grace: Duration);
}

/// Start a VM with the configured driver.
pub fn start(
    qemu_binary: &std::path::Path,
    spec: &VmSpec,
    notify: Option<crate::daemon::Notify>,
) -> Result<Box<dyn Hypervisor>> {
    Ok(Box::new(qemu::Qemu::start(qemu_binary, spec, notify)?))
}
