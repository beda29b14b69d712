//! The QEMU command line of a sandbox VM: a `microvm` with direct kernel boot, virtio-mmio
//! devices, guest RAM that vhost-user backends can map, the console on QEMU's stdout.

use std::path::{Path, PathBuf};

use super::accel::Accel;
use super::vsock::VsockDevice;
use crate::vmm::{SharedFsDevice, VmSpec};

/// Everything that shapes one QEMU command line.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The driver-neutral request.
    pub spec: &'a VmSpec,
    /// Full kernel command line (the spec's plus the driver's).
    pub cmdline: String,
    /// Accelerator.
    pub accel: Accel,
    /// TCG translation cache size in MiB (0 = QEMU's default); ignored under KVM.
    pub tcg_tb_size_mib: u32,
    /// Agent channel device.
    pub vsock: VsockDevice,
    /// QMP socket.
    pub control_socket: PathBuf,
    /// The fd number the tap has in the QEMU process (when `spec.net` is set).
    pub tap_fd: Option<i32>,
}

/// The QEMU command line for `l` (without the binary).
pub fn args(l: &Launch<'_>) -> Vec<String> {
    let spec = l.spec;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let (accel, cpu) = match l.accel {
        Accel::Kvm => ("kvm".to_string(), "host"),
        Accel::Tcg if l.tcg_tb_size_mib > 0 => {
            (format!("tcg,tb-size={}", l.tcg_tb_size_mib), "max")
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
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&[
        "-kernel",
        &path(&spec.kernel),
        "-initrd",
        &path(&spec.initrd),
        "-append",
        &l.cmdline,
    ]);
    // The console goes to QEMU's stdout, a pipe the runtime reads into a bounded ring.
    push(&["-chardev", "stdio,id=console,signal=off"]);
    push(&["-serial", "chardev:console"]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", path(&l.control_socket)),
    ]);
    // vhost-user devices refuse legacy virtio-mmio.
    push(&["-global", "virtio-mmio.force-legacy=false"]);
    push(&["-device", "virtio-rng-device"]);
    match &l.vsock {
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
    if let (Some(net), Some(fd)) = (&spec.net, l.tap_fd) {
        // The tap was made (in the pod netns) by the runtime and is inherited as an fd.
        // No vhost-net: the host may not have it, and the fd must be all QEMU needs.
        push(&["-netdev", &format!("tap,id=net0,fd={fd},vhost=off")]);
        push(&[
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={}", net.mac),
        ]);
    }
    a
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            id: "t1".into(),
            run_dir: "/r".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "console=ttyS0".into(),
            cpus: 2,
            memory_mib: 256,
            shared_fs: SharedFsDevice::VirtioFs {
                socket: PathBuf::from("/r/fs.sock"),
            },
            net: None,
        }
    }

    fn launch(spec: &VmSpec) -> Launch<'_> {
        Launch {
            spec,
            cmdline: spec.cmdline.clone(),
            accel: Accel::Tcg,
            tcg_tb_size_mib: 0,
            vsock: VsockDevice::VhostUser {
                socket: PathBuf::from("/r/vsock.vu"),
            },
            control_socket: "/r/qmp.sock".into(),
            tap_fd: None,
        }
    }

    #[test]
    fn microvm_with_shared_memory_and_devices() {
        let s = spec();
        let a = args(&launch(&s)).join(" ");
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
        assert!(
            a.contains("-chardev stdio,id=console,signal=off -serial chardev:console"),
            "{a}"
        );
    }

    #[test]
    fn tcg_translation_cache_size() {
        let s = spec();
        let mut l = launch(&s);
        l.tcg_tb_size_mib = 24;
        assert!(args(&l).join(" ").contains("-accel tcg,tb-size=24"));
        l.accel = Accel::Kvm;
        assert!(!args(&l).join(" ").contains("tb-size"));
    }

    #[test]
    fn kvm_and_9p_and_vhost() {
        let mut s = spec();
        s.shared_fs = SharedFsDevice::NineP {
            dir: "/r/shared".into(),
        };
        let mut l = launch(&s);
        l.accel = Accel::Kvm;
        l.vsock = VsockDevice::Vhost { cid: 7 };
        let a = args(&l).join(" ");
        assert!(a.contains("-accel kvm") && a.contains("-cpu host"), "{a}");
        assert!(a.contains("vhost-vsock-device,guest-cid=7"), "{a}");
        assert!(
            a.contains("virtio-9p-device,fsdev=sharedfs,mount_tag=hullshared"),
            "{a}"
        );
    }
}
