//! Which vsock device QEMU gets and what backs it on the host: in-kernel vhost-vsock where
//! /dev/vhost-vsock exists, otherwise a vhost-user backend (vhost-device-vsock) per VM.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{VsockConfig, VsockMode};
use crate::daemon::{poll_until, Daemon};
use crate::error::{Error, Result};
use crate::vmm::ExitNotify;
use crate::vsock::AgentAddress;

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

/// The vsock device of one sandbox and, for hybrid vsock, its backend daemon.
#[derive(Debug)]
pub struct VsockBackend {
    /// What QEMU gets.
    pub device: VsockDevice,
    /// What the agent client connects to.
    pub address: AgentAddress,
    /// The vhost-user backend, if any.
    pub daemon: Option<Daemon>,
    /// Hybrid vsock: where the agent announces that it serves (guest-initiated connection).
    pub ready: Option<UnixListener>,
}

/// Which transport `mode` means on this host.
pub fn effective_mode(mode: VsockMode) -> VsockMode {
    match mode {
        VsockMode::Auto if Path::new("/dev/vhost-vsock").exists() => VsockMode::Vhost,
        VsockMode::Auto => VsockMode::Hybrid,
        m => m,
    }
}

/// Set up the vsock device for a sandbox whose state lives in `run_dir`.
pub fn start(
    cfg: &VsockConfig,
    run_dir: &Path,
    log: &Path,
    notify: ExitNotify,
) -> Result<VsockBackend> {
    let port = hull_protocol::AGENT_VSOCK_PORT;
    match effective_mode(cfg.mode) {
        VsockMode::Vhost => {
            let cid = pick_cid();
            Ok(VsockBackend {
                device: VsockDevice::Vhost { cid },
                address: AgentAddress::Vsock { cid, port },
                daemon: None,
                ready: None,
            })
        }
        _ => {
            let vu = run_dir.join("vsock.vhost-user.sock");
            let uds = run_dir.join("vsock.sock");
            // Guest connections to host port P arrive on `<uds>_P`.
            let ready_path = PathBuf::from(format!(
                "{}_{}",
                uds.display(),
                hull_protocol::READY_VSOCK_PORT
            ));
            let ready = UnixListener::bind(&ready_path)
                .map_err(|e| Error::io(format!("listen on {}", ready_path.display()), e))?;
            let mut cmd = Command::new(&cfg.vhost_device_vsock);
            cmd.arg("--vm").arg(format!(
                "guest-cid=3,socket={},uds-path={}",
                vu.display(),
                uds.display()
            ));
            let daemon = Daemon::spawn_notify("vhost-device-vsock", cmd, Some(log), Some(notify))?;
            if !poll_until(Duration::from_secs(10), || {
                vu.exists() || daemon.exited().is_some()
            }) || !vu.exists()
            {
                return Err(Error::Daemon {
                    name: "vhost-device-vsock".into(),
                    what: format!(
                        "did not create {} ({})",
                        vu.display(),
                        daemon
                            .exited()
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "still running".into())
                    ),
                });
            }
            Ok(VsockBackend {
                device: VsockDevice::VhostUser { socket: vu },
                address: AgentAddress::Hybrid { uds, port },
                daemon: Some(daemon),
                ready: Some(ready),
            })
        }
    }
}

fn pick_cid() -> u32 {
    // CIDs 0-2 are reserved; collisions make QEMU fail to start with a clear error.
    let seed = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0));
    3 + seed % 0x3fff_ffff
}
