//! The QEMU driver: a `microvm` with direct kernel boot, virtio-mmio devices and guest RAM
//! that vhost-user backends can map; controlled over QMP, console written to a file.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Accel, Hypervisor, SharedFsDevice, VmSpec, VsockDevice};
use crate::daemon::{Daemon, Notify};
use crate::error::Result;

/// A running QEMU process.
#[derive(Debug)]
pub struct Qemu {
    daemon: Daemon,
    control_socket: std::path::PathBuf,
}

/// The QEMU command line for `spec` (without the binary).
pub fn args(spec: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let (accel, cpu) = match spec.accel {
        Accel::Kvm => ("kvm".to_string(), "host"),
        Accel::Tcg if spec.tcg_tb_size_mib > 0 => {
            (format!("tcg,tb-size={}", spec.tcg_tb_size_mib), "max")
        }
        Accel::Tcg => ("tcg".to_string(), "max"),
    };
    let mem = format!("{}M", spec.memory_mib);
    push(&["-name", &format!("hull-{},debug-threads=on", spec.id)]);
    push(&["-machine", "microvm,memory-backend=mem,pcie=off,rtc=on"]);
    push(&["-accel", &accel]);
    push(&["-cpu", cpu, "-smp", &spec.cpus.to_string(), "-m", &mem]);
    // vhost-user backends map guest RAM, so it must be a shareable memfd.
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
    ]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    push(&[
        "-kernel",
        &path(&spec.kernel),
        "-initrd",
        &path(&spec.initrd),
        "-append",
        &spec.cmdline,
    ]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={}", path(&spec.console_log)),
    ]);
    push(&["-serial", "chardev:console"]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", path(&spec.control_socket)),
    ]);
    // vhost-user devices refuse legacy virtio-mmio.
    push(&["-global", "virtio-mmio.force-legacy=false"]);
    push(&["-device", "virtio-rng-device"]);
    match &spec.vsock {
        VsockDevice::Vhost { cid } => {
            push(&["-device", &format!("vhost-vsock-device,guest-cid={cid}")])
        }
        VsockDevice::VhostUser { socket } => {
            push(&[
                "-chardev",
                &format!("socket,id=vsock,path={}", path(socket)),
            ]);
            push(&["-device", "vhost-user-vsock-device,chardev=vsock"]);
        }
    }
    let tag = hull_protocol::SHARED_FS_TAG;
    match &spec.shared_fs {
        SharedFsDevice::VirtioFs { socket } => {
            push(&[
                "-chardev",
                &format!("socket,id=sharedfs,path={}", path(socket)),
            ]);
            push(&[
                "-device",
                &format!("vhost-user-fs-device,chardev=sharedfs,tag={tag}"),
            ]);
        }
        SharedFsDevice::NineP { dir } => {
            push(&[
                "-fsdev",
                &format!(
                    "local,id=sharedfs,path={},security_model=passthrough",
                    path(dir)
                ),
            ]);
            push(&[
                "-device",
                &format!("virtio-9p-device,fsdev=sharedfs,mount_tag={tag}"),
            ]);
        }
    }
    a
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Qemu {
    /// Spawn QEMU for `spec`; its own stderr goes to `<console_log>.qemu`.
    pub fn start(binary: &Path, spec: &VmSpec, notify: Option<Notify>) -> Result<Qemu> {
        let mut cmd = Command::new(binary);
        cmd.args(args(spec));
        let log = spec.console_log.with_extension("qemu.log");
        let daemon = Daemon::spawn_notify("qemu", cmd, Some(&log), notify)?;
        tracing::info!(sandbox = %spec.id, pid = daemon.pid(), accel = ?spec.accel, "qemu started");
        Ok(Qemu {
            daemon,
            control_socket: spec.control_socket.clone(),
        })
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn pid(&self) -> i32 {
        self.daemon.pid()
    }

    fn exited(&self) -> Option<String> {
        self.daemon.exited().map(|s| s.to_string())
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        self.daemon.wait_timeout(timeout).is_some()
    }

    fn stop(&self, grace: Duration) {
        if self.daemon.exited().is_some() {
            return;
        }
        match super::qmp::Qmp::connect(&self.control_socket, Duration::from_secs(1)) {
            Ok(mut q) => {
                let _ = q.execute("quit", None);
            }
            Err(e) => tracing::debug!(error = %e, "QMP unavailable, killing qemu"),
        }
        if !self.wait_exit(grace) {
            self.daemon.stop(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec() -> VmSpec {
        VmSpec {
            id: "t1".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "console=ttyS0".into(),
            cpus: 2,
            memory_mib: 256,
            accel: Accel::Tcg,
            tcg_tb_size_mib: 0,
            vsock: VsockDevice::VhostUser {
                socket: PathBuf::from("/r/vsock.vu"),
            },
            shared_fs: SharedFsDevice::VirtioFs {
                socket: PathBuf::from("/r/fs.sock"),
            },
            console_log: "/r/console.log".into(),
            control_socket: "/r/qmp.sock".into(),
        }
    }

    #[test]
    fn microvm_with_shared_memory_and_devices() {
        let a = args(&spec()).join(" ");
        assert!(a.contains("microvm,memory-backend=mem"), "{a}");
        assert!(a.contains("-accel tcg "), "{a}");
        assert!(a.contains("-cpu max -smp 2 -m 256M"), "{a}");
        assert!(
            a.contains("memory-backend-memfd,id=mem,size=256M,share=on"),
            "{a}"
        );
        assert!(a.contains("vhost-user-vsock-device,chardev=vsock"), "{a}");
        assert!(
            a.contains("vhost-user-fs-device,chardev=sharedfs,tag=hullshared"),
            "{a}"
        );
        assert!(a.contains("-no-reboot"), "{a}");
    }

    #[test]
    fn tcg_translation_cache_size() {
        let mut s = spec();
        s.tcg_tb_size_mib = 24;
        assert!(args(&s).join(" ").contains("-accel tcg,tb-size=24"));
        s.accel = Accel::Kvm;
        assert!(!args(&s).join(" ").contains("tb-size"));
    }

    #[test]
    fn kvm_and_9p_and_vhost() {
        let mut s = spec();
        s.accel = Accel::Kvm;
        s.vsock = VsockDevice::Vhost { cid: 7 };
        s.shared_fs = SharedFsDevice::NineP {
            dir: "/r/shared".into(),
        };
        let a = args(&s).join(" ");
        assert!(a.contains("-accel kvm") && a.contains("-cpu host"), "{a}");
        assert!(a.contains("vhost-vsock-device,guest-cid=7"), "{a}");
        assert!(
            a.contains("virtio-9p-device,fsdev=sharedfs,mount_tag=hullshared"),
            "{a}"
        );
    }
}
