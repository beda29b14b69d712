//! The sandbox's shared directory on the host and the daemon that exports it to the guest:
//! virtiofsd for virtio-fs, nothing for 9p (QEMU serves it itself).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::config::{SharedFsConfig, SharedFsKind};
use crate::daemon::{poll_until, Daemon, Notify};
use crate::error::{Error, Result};
use crate::vmm::SharedFsDevice;

/// The shared-fs device of a sandbox and its daemon, if any.
#[derive(Debug)]
pub struct SharedFs {
    /// What QEMU gets.
    pub device: SharedFsDevice,
    /// virtiofsd, for virtio-fs.
    pub daemon: Option<Daemon>,
}

impl SharedFs {
    /// Stop the daemon, if any.
    pub fn stop(self) {
        if let Some(d) = self.daemon {
            d.stop(Duration::from_secs(1));
        }
    }
}

/// Export `dir` (an existing directory) to the guest.
pub fn start(
    cfg: &SharedFsConfig,
    dir: &Path,
    run_dir: &Path,
    log: &Path,
    notify: Option<Notify>,
) -> Result<SharedFs> {
    match cfg.kind {
        SharedFsKind::NineP => Ok(SharedFs {
            device: SharedFsDevice::NineP {
                dir: dir.to_path_buf(),
            },
            daemon: None,
        }),
        SharedFsKind::VirtioFs => {
            let socket = run_dir.join("virtiofsd.sock");
            let mut cmd = Command::new(&cfg.virtiofsd);
            cmd.arg(format!("--socket-path={}", socket.display()))
                .arg("-o")
                .arg(format!("source={}", dir.display()))
                .arg("-o")
                .arg(format!("cache={}", cfg.cache))
                .arg("-o")
                .arg("xattr");
            let daemon = Daemon::spawn_notify("virtiofsd", cmd, Some(log), notify)?;
            if !poll_until(Duration::from_secs(10), || {
                socket.exists() || daemon.exited().is_some()
            }) || !socket.exists()
            {
                return Err(Error::Daemon {
                    name: "virtiofsd".into(),
                    what: format!(
                        "did not create {} ({}); see {}",
                        socket.display(),
                        daemon
                            .exited()
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "still running".into()),
                        log.display()
                    ),
                });
            }
            Ok(SharedFs {
                device: SharedFsDevice::VirtioFs { socket },
                daemon: Some(daemon),
            })
        }
    }
}
