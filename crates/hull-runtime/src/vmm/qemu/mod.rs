//! The QEMU driver: finds the binary, chooses KVM or TCG (with the TCG clock parameters and
//! cache size), picks and starts the vsock backend, spawns QEMU and drives it over QMP.

pub mod accel;
mod args;
mod qmp;
mod tsc;
mod vsock;

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use self::vsock::effective_mode as vsock_mode;
use super::{AccelDecision, ExitNotify, Vm, VmSpec, Vmm};
use crate::config::{Config, HypervisorConfig, VsockConfig, VsockMode};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::vsock::AgentAddress;

/// How much of QEMU's own stderr log is read for an error message.
const LOG_TAIL_BYTES: u64 = 4096;

/// The QEMU VMM, with its binaries resolved and its accelerator decided once.
#[derive(Debug)]
pub struct Qemu {
    binary: PathBuf,
    hypervisor: HypervisorConfig,
    vsock: VsockConfig,
    run_root: PathBuf,
    accel: OnceLock<AccelDecision>,
}

impl Qemu {
    /// Resolve QEMU (and the vsock backend when it is needed) from `config`.
    pub fn new(config: &Config) -> Result<Qemu> {
        let binary = crate::binaries::resolve("qemu", &config.hypervisor.qemu)?;
        let mut vsock = config.vsock.clone();
        if vsock::effective_mode(vsock.mode) == VsockMode::Hybrid {
            vsock.vhost_device_vsock =
                crate::binaries::resolve("vhost-device-vsock", &vsock.vhost_device_vsock)?;
        }
        Ok(Qemu {
            binary,
            hypervisor: config.hypervisor.clone(),
            vsock,
            run_root: config.runtime.run_dir.clone(),
            accel: OnceLock::new(),
        })
    }

    fn accel_for(&self, spec: &VmSpec) -> &AccelDecision {
        self.accel.get_or_init(|| {
            let d = accel::decide(
                self.hypervisor.accel,
                &self.binary,
                &spec.kernel,
                &spec.initrd,
                &self.run_root,
            );
            tracing::info!(sandbox = %spec.id, accel = ?d.accel, reason = %d.reason, "accelerator chosen");
            d
        })
    }
}

impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(&self, spec: &VmSpec, notify: ExitNotify) -> Result<Box<dyn Vm>> {
        // Direct kernel boot needs a PVH vmlinux and a newc initrd: say so before QEMU does.
        crate::assets::verify_kernel(&spec.kernel)?;
        crate::assets::verify_initrd(&spec.initrd)?;
        let accel = self.accel_for(spec).clone();
        let log = spec.run_dir.join("helpers.log");
        let backend = vsock::start(&self.vsock, &spec.run_dir, &log, notify.clone())?;
        let mut cmdline = spec.cmdline.clone();
        let tsc = tsc::tcg_kernel_params(accel.tsc_khz);
        if !tsc.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&tsc);
        }
        let launch = args::Launch {
            spec,
            cmdline,
            accel: accel.accel,
            tcg_tb_size_mib: self.hypervisor.tcg_tb_size_mib,
            vsock: backend.device.clone(),
            control_socket: spec.run_dir.join("qmp.sock"),
            tap_fd: spec.net.as_ref().map(|n| n.tap.as_raw_fd()),
        };
        let (console_read, console_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(args::args(&launch));
        if let Some(net) = &spec.net {
            enter_pod_network(&mut cmd, net);
        }
        let qemu_log = spec.run_dir.join("qemu.log");
        // On an error `backend` is dropped here, which stops its daemon.
        let daemon =
            Daemon::spawn_with_stdout("qemu", cmd, console_write, Some(&qemu_log), Some(notify))?;
        tracing::info!(sandbox = %spec.id, pid = daemon.pid(), accel = ?accel.accel, "qemu started");
        Ok(Box::new(QemuVm {
            daemon,
            backend,
            accel,
            control_socket: launch.control_socket,
            log: qemu_log,
            console: Mutex::new(Some(console_read)),
        }))
    }
}

/// A running QEMU and its vsock backend.
#[derive(Debug)]
struct QemuVm {
    daemon: Daemon,
    backend: vsock::VsockBackend,
    accel: AccelDecision,
    control_socket: PathBuf,
    log: PathBuf,
    console: Mutex<Option<OwnedFd>>,
}

impl Vm for QemuVm {
    fn pid(&self) -> i32 {
        self.daemon.pid()
    }

    fn processes(&self) -> Vec<(String, i32)> {
        let mut v = vec![(self.daemon.name().to_string(), self.daemon.pid())];
        if let Some(d) = &self.backend.daemon {
            v.push((d.name().to_string(), d.pid()));
        }
        v
    }

    fn accel(&self) -> Option<&AccelDecision> {
        Some(&self.accel)
    }

    fn agent_address(&self) -> AgentAddress {
        self.backend.address.clone()
    }

    fn wait_agent_channel(
        &self,
        timeout: Duration,
        dead: &mut dyn FnMut() -> Option<Error>,
    ) -> Result<()> {
        // With hybrid vsock, wait for the agent's own "ready" connection before connecting:
        // a host connection that reaches vhost-device-vsock before the guest driver has set
        // the device up can leave it deaf to this VM.
        match &self.backend.ready {
            Some(ready) => crate::vsock::wait_ready(ready, timeout, dead),
            None => Ok(()),
        }
    }

    fn take_console(&self) -> Option<OwnedFd> {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn last_error(&self) -> Option<String> {
        let mut f = std::fs::File::open(&self.log).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
            .ok()?;
        let mut buf = Vec::new();
        f.take(LOG_TAIL_BYTES).read_to_end(&mut buf).ok()?;
        let line = crate::tail_line(&String::from_utf8_lossy(&buf));
        (!line.is_empty()).then_some(line)
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.daemon.exited()
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        self.daemon.wait_timeout(timeout).is_some()
    }

    fn stop(&self, grace: Duration) {
        if self.daemon.exited().is_none() {
            quit(&self.control_socket);
            if !self.wait_exit(grace) {
                self.daemon.stop(Duration::from_millis(200));
            }
        }
        if let Some(d) = &self.backend.daemon {
            // vhost-device-vsock waits for the next VM after ours is gone and does not
            // exit on SIGTERM; it holds no state, so it is killed at once.
            d.stop(Duration::ZERO);
        }
    }
}

/// Make the child run in the pod's netns and inherit the tap. The tap fd stays close-on-exec
/// in this process (so no other child, spawned concurrently by any thread, inherits it); only
/// the forked child clears the flag, just before exec.
fn enter_pod_network(cmd: &mut Command, net: &crate::network::NetDevice) {
    let tap = net.tap.clone();
    let netns = net.netns.clone();
    // SAFETY: the closure only calls setns and fcntl, which are async-signal-safe, on fds
    // that the Arcs it owns keep open until the Command is dropped (after the spawn).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns.raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = tap.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Ask QEMU to quit over QMP (best effort; the caller kills it if it does not).
fn quit(control_socket: &Path) {
    match qmp::Qmp::connect(control_socket, Duration::from_secs(1)) {
        Ok(mut q) => {
            let _ = q.execute("quit", None);
        }
        Err(e) => tracing::debug!(error = %e, "QMP unavailable, killing qemu"),
    }
}
