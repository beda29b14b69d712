//! What this host can do for Hull (`hull check`): helper binaries, accelerator, vsock
//! transport, shared filesystem and guest assets, each with a verdict and a detail.

use std::process::Command;

use crate::config::{Config, SharedFsKind, VsockMode};
use crate::{binaries, vmm};

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Item {
    /// What was checked.
    pub name: &'static str,
    /// Usable?
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Check everything a sandbox needs; the accelerator probe may boot a short VM.
pub fn run(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    let qemu = binaries::resolve("qemu", &config.hypervisor.qemu);
    items.push(match &qemu {
        Ok(p) => Item {
            name: "qemu",
            ok: true,
            detail: format!("{} ({})", p.display(), version_of(p, "--version")),
        },
        Err(e) => Item {
            name: "qemu",
            ok: false,
            detail: e.to_string(),
        },
    });
    let assets = crate::assets::verify(&config.assets);
    items.push(Item {
        name: "guest assets",
        ok: assets.is_ok(),
        detail: match &assets {
            Ok(()) => format!(
                "{} + {}",
                config.assets.kernel.display(),
                config.assets.initrd.display()
            ),
            Err(e) => e.to_string(),
        },
    });
    items.push(match (&qemu, &assets) {
        (Ok(q), Ok(())) => {
            let d = vmm::qemu::accel::decide(
                config.hypervisor.accel,
                q,
                &config.assets.kernel,
                &config.assets.initrd,
                &config.runtime.run_dir,
            );
            Item {
                name: "accelerator",
                ok: true,
                detail: format!("{} ({})", format!("{:?}", d.accel).to_lowercase(), d.reason),
            }
        }
        _ => Item {
            name: "accelerator",
            ok: false,
            detail: "cannot probe without qemu and guest assets".into(),
        },
    });
    items.push(match vmm::qemu::vsock_mode(config.vsock.mode) {
        VsockMode::Vhost => Item {
            name: "vsock",
            ok: std::path::Path::new("/dev/vhost-vsock").exists(),
            detail: "vhost-vsock (/dev/vhost-vsock)".into(),
        },
        _ => match binaries::resolve("vhost-device-vsock", &config.vsock.vhost_device_vsock) {
            Ok(p) => Item {
                name: "vsock",
                ok: true,
                detail: format!("hybrid vsock via {} (no /dev/vhost-vsock)", p.display()),
            },
            Err(e) => Item {
                name: "vsock",
                ok: false,
                detail: format!("{e} (cargo install vhost-device-vsock)"),
            },
        },
    });
    items.push(match config.shared_fs.kind {
        SharedFsKind::NineP => Item {
            name: "shared fs",
            ok: true,
            detail: "9p (served by qemu)".into(),
        },
        SharedFsKind::VirtioFs => match binaries::resolve("virtiofsd", &config.shared_fs.virtiofsd)
        {
            Ok(p) => Item {
                name: "shared fs",
                ok: true,
                detail: format!("virtio-fs via {}", p.display()),
            },
            Err(e) => Item {
                name: "shared fs",
                ok: false,
                detail: e.to_string(),
            },
        },
    });
    items.push(Item {
        name: "tun",
        ok: std::path::Path::new("/dev/net/tun").exists(),
        detail: "/dev/net/tun (pod networking)".into(),
    });
    items
}

/// First line of `prog flag`, or "version unknown".
pub fn version_of(prog: &std::path::Path, flag: &str) -> String {
    Command::new(prog)
        .arg(flag)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into())
}
