//! A sandbox is one VM: its run directory, helper daemons, QEMU, the agent connection and
//! the host mounts of its containers. Creation either fully succeeds or leaves nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::config::{Config, SharedFsKind};
use crate::error::{Error, Result};
use crate::sharedfs::SharedFs;
use crate::vmm::{self, AccelDecision, Hypervisor, VmSpec};
use crate::vsock::VsockBackend;
use crate::{binaries, mounts, sharedfs, vsock};

/// Per-sandbox sizing chosen by the caller (None = config default).
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// vCPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
}

/// Timings of the boot, for logs and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct BootTimes {
    /// From the start of `create` until QEMU was spawned.
    pub prepare: Duration,
    /// From QEMU spawn until the agent answered.
    pub vm_to_agent: Duration,
}

/// One running sandbox VM.
#[derive(Debug)]
pub struct Sandbox {
    id: String,
    config: Config,
    run_dir: PathBuf,
    shared_dir: PathBuf,
    accel: Option<AccelDecision>,
    vsock: Option<VsockBackend>,
    shared_fs: Option<SharedFs>,
    vm: Option<Box<dyn Hypervisor>>,
    agent: Option<Arc<Agent>>,
    guest_kernel: String,
    times: BootTimes,
    stopping: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    pub(crate) containers: Mutex<HashMap<String, crate::container::HostContainer>>,
    torn_down: bool,
}

impl Sandbox {
    /// Boot a new sandbox VM and wait until its agent answers.
    pub fn create(config: &Config, id: &str, opts: &SandboxOptions) -> Result<Sandbox> {
        hull_protocol::validate_id(id)
            .map_err(|e| Error::InvalidArgument(format!("sandbox {e}")))?;
        let t0 = Instant::now();
        crate::assets::verify(&config.assets).map_err(|e| Error::Assets(e.to_string()))?;
        let run_dir = config.runtime.run_dir.join(id);
        std::fs::create_dir_all(&config.runtime.run_dir)
            .map_err(|e| Error::io(format!("create {}", config.runtime.run_dir.display()), e))?;
        crate::owner::sweep_stale(&config.runtime.run_dir);
        match std::fs::create_dir(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::InvalidArgument(format!(
                    "sandbox {id} already exists ({} is in use)",
                    run_dir.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("create {}", run_dir.display()), e)),
        }
        let mut sb = Sandbox {
            id: id.to_string(),
            config: config.clone(),
            shared_dir: run_dir.join("shared"),
            run_dir,
            accel: None,
            vsock: None,
            shared_fs: None,
            vm: None,
            agent: None,
            guest_kernel: String::new(),
            times: BootTimes::default(),
            stopping: Arc::new(AtomicBool::new(false)),
            failure: Arc::new(Mutex::new(None)),
            containers: Mutex::new(HashMap::new()),
            torn_down: false,
        };
        let booted = crate::owner::claim(&sb.run_dir)
            .map_err(|e| Error::io("record sandbox owner", e))
            .and_then(|()| sb.boot(opts, t0));
        match booted {
            Ok(()) => Ok(sb),
            Err(e) => {
                sb.teardown();
                Err(e)
            }
        }
    }

    fn boot(&mut self, opts: &SandboxOptions, t0: Instant) -> Result<()> {
        let cfg = self.config.clone();
        let qemu = binaries::resolve("qemu", &cfg.hypervisor.qemu)?;
        let mut vsock_cfg = cfg.vsock.clone();
        if vsock::effective_mode(vsock_cfg.mode) == crate::config::VsockMode::Hybrid {
            vsock_cfg.vhost_device_vsock =
                binaries::resolve("vhost-device-vsock", &vsock_cfg.vhost_device_vsock)?;
        }
        let mut fs_cfg = cfg.shared_fs.clone();
        if fs_cfg.kind == SharedFsKind::VirtioFs {
            fs_cfg.virtiofsd = binaries::resolve("virtiofsd", &fs_cfg.virtiofsd)?;
        }
        std::fs::create_dir(&self.shared_dir).map_err(|e| Error::io("create shared dir", e))?;
        mounts::make_shared_mountpoint(&self.shared_dir)?;

        let accel = vmm::accel::decide(
            cfg.hypervisor.accel,
            &qemu,
            &cfg.assets.kernel,
            &cfg.assets.initrd,
            &cfg.runtime.run_dir,
        );
        tracing::info!(sandbox = %self.id, accel = ?accel.accel, reason = %accel.reason, "accelerator chosen");

        let (tx, rx) = mpsc::channel();
        let log = self.run_dir.join("helpers.log");
        self.vsock = Some(vsock::start(
            &vsock_cfg,
            &self.run_dir,
            &log,
            Some(tx.clone()),
        )?);
        self.shared_fs = Some(sharedfs::start(
            &fs_cfg,
            &self.shared_dir,
            &self.run_dir,
            &log,
            Some(tx.clone()),
        )?);
        let (vsock_dev, addr) = match &self.vsock {
            Some(v) => (v.device.clone(), v.address.clone()),
            None => return Err(Error::Agent("vsock not set up".into())),
        };
        let fs_dev = match &self.shared_fs {
            Some(f) => f.device.clone(),
            None => return Err(Error::Agent("shared fs not set up".into())),
        };
        let mut cmdline = format!(
            "console=ttyS0 reboot=t panic=-1 quiet pci=off {}={} {}={}",
            hull_protocol::cmdline::SHARED_FS,
            fs_cfg.kind.as_param(),
            hull_protocol::cmdline::LOG,
            cfg.runtime.agent_log_level
        );
        let tsc = vmm::tsc::tcg_kernel_params(accel.tsc_khz);
        if !tsc.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&tsc);
        }
        if !cfg.hypervisor.kernel_params.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(cfg.hypervisor.kernel_params.trim());
        }
        let spec = VmSpec {
            id: self.id.clone(),
            kernel: cfg.assets.kernel.clone(),
            initrd: cfg.assets.initrd.clone(),
            cmdline,
            cpus: opts.cpus.unwrap_or(cfg.hypervisor.cpus),
            memory_mib: opts.memory_mib.unwrap_or(cfg.hypervisor.memory_mib),
            accel: accel.accel,
            tcg_tb_size_mib: cfg.hypervisor.tcg_tb_size_mib,
            vsock: vsock_dev,
            shared_fs: fs_dev,
            console_log: self.console_log(),
            control_socket: self.run_dir.join("qmp.sock"),
        };
        self.accel = Some(accel);
        self.times.prepare = t0.elapsed();
        let t1 = Instant::now();
        self.vm = Some(vmm::start(&qemu, &spec, Some(tx))?);
        let boot_timeout = Duration::from_secs(cfg.hypervisor.boot_timeout_secs);
        let mut dead = || {
            rx.try_recv()
                .ok()
                .map(|(name, status)| format!("{name} exited during boot ({status})"))
        };
        // With hybrid vsock, wait for the agent's own "ready" connection before connecting:
        // a host connection that reaches vhost-device-vsock before the guest driver has set
        // the device up can leave it deaf to this VM.
        let announced = match self.vsock.as_ref().and_then(|v| v.ready.as_ref()) {
            Some(ready) => vsock::wait_ready(ready, boot_timeout, &mut dead),
            None => Ok(()),
        };
        let connected = announced.and_then(|()| {
            let left = boot_timeout
                .saturating_sub(t1.elapsed())
                .max(Duration::from_secs(5));
            Agent::connect(&addr, left, &mut dead)
        });
        let (agent, check) = match connected {
            Ok(ok) => ok,
            Err(what) => {
                // Give QEMU's own message (e.g. a bad option or a missing device) a chance to be seen.
                let qemu_log =
                    std::fs::read_to_string(self.console_log().with_extension("qemu.log"))
                        .unwrap_or_default();
                let what = if qemu_log.trim().is_empty() {
                    what
                } else {
                    format!("{what}; qemu: {}", crate::tail_line(&qemu_log))
                };
                return Err(Error::Guest {
                    what,
                    console_tail: self.console_tail(),
                });
            }
        };
        self.times.vm_to_agent = t1.elapsed();
        self.guest_kernel = check.kernel_release;
        let agent = Arc::new(agent);
        self.agent = Some(agent.clone());
        tracing::info!(sandbox = %self.id, kernel = %self.guest_kernel, agent = %check.agent_version,
            prepare_ms = self.times.prepare.as_millis() as u64, boot_ms = self.times.vm_to_agent.as_millis() as u64, "sandbox ready");
        self.spawn_monitor(rx, agent);
        Ok(())
    }

    /// Fail the sandbox as soon as QEMU or a helper exits while we are not stopping it.
    fn spawn_monitor(
        &self,
        rx: mpsc::Receiver<(String, std::process::ExitStatus)>,
        agent: Arc<Agent>,
    ) {
        let stopping = self.stopping.clone();
        let failure = self.failure.clone();
        let id = self.id.clone();
        let console = self.console_log();
        let _ = std::thread::Builder::new()
            .name(format!("monitor-{id}"))
            .spawn(move || {
                while let Ok((name, status)) = rx.recv() {
                    if stopping.load(Ordering::SeqCst) {
                        continue;
                    }
                    let mut why = format!("{name} exited unexpectedly ({status})");
                    if name == "qemu" {
                        let tail = crate::tail_lines(
                            &std::fs::read_to_string(&console).unwrap_or_default(),
                            3,
                        );
                        if !tail.is_empty() {
                            why.push_str(&format!("; console tail: {tail}"));
                        }
                    }
                    tracing::error!(sandbox = %id, helper = %name, %status, "sandbox failed");
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    if f.is_none() {
                        *f = Some(why);
                    }
                    drop(f);
                    agent.disconnect();
                }
            });
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host directory holding this sandbox's state.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The directory exported to the guest.
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// The accelerator in use and why.
    pub fn accel(&self) -> Option<&AccelDecision> {
        self.accel.as_ref()
    }

    /// The guest kernel release reported by the agent.
    pub fn guest_kernel(&self) -> &str {
        &self.guest_kernel
    }

    /// How long the boot took.
    pub fn boot_times(&self) -> &BootTimes {
        &self.times
    }

    /// Host pids of QEMU and the helper daemons.
    pub fn pids(&self) -> Vec<(String, i32)> {
        let mut v = Vec::new();
        if let Some(vm) = &self.vm {
            v.push((vm.name().to_string(), vm.pid()));
        }
        if let Some(d) = self.vsock.as_ref().and_then(|v| v.daemon.as_ref()) {
            v.push((d.name().to_string(), d.pid()));
        }
        if let Some(d) = self.shared_fs.as_ref().and_then(|f| f.daemon.as_ref()) {
            v.push((d.name().to_string(), d.pid()));
        }
        v
    }

    /// Why the sandbox failed, if a helper or the VM died.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The agent connection.
    pub fn agent(&self) -> Result<&Arc<Agent>> {
        self.agent
            .as_ref()
            .ok_or_else(|| Error::Agent("sandbox has no agent connection".into()))
    }

    /// Replace an agent error by the sandbox's failure when there is one (the real cause).
    pub fn explain(&self, e: Error) -> Error {
        match self.failure() {
            Some(why) => Error::Daemon {
                name: format!("sandbox {}", self.id),
                what: format!("failed: {why}"),
            },
            None => e,
        }
    }

    /// The guest console log file.
    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    /// The last lines of the guest console, on one line.
    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.console_log()).unwrap_or_default();
        let tail = crate::tail_lines(&text, 5);
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }

    /// Power the guest off and remove everything the sandbox made on the host.
    pub fn stop(mut self) -> Result<()> {
        self.teardown();
        if self.run_dir.exists() {
            return Err(Error::io(
                format!("sandbox {} left {}", self.id, self.run_dir.display()),
                std::io::ErrorKind::ResourceBusy.into(),
            ));
        }
        Ok(())
    }

    /// Idempotent cleanup used by stop, failed creation and drop.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.stopping.store(true, Ordering::SeqCst);
        if let (Some(agent), Some(vm)) = (&self.agent, &self.vm) {
            if self.failure().is_none()
                && vm.exited().is_none()
                && agent.shutdown(Duration::from_secs(2)).is_ok()
            {
                vm.wait_exit(Duration::from_secs(5));
            }
        }
        if let Some(agent) = self.agent.take() {
            agent.disconnect();
        }
        if let Some(vm) = self.vm.take() {
            vm.stop(Duration::from_secs(2));
        }
        if let Some(fs) = self.shared_fs.take() {
            if let Some(d) = fs.daemon {
                d.stop(Duration::from_secs(1));
            }
        }
        if let Some(v) = self.vsock.take() {
            if let Some(d) = v.daemon {
                // vhost-device-vsock waits for the next VM after ours is gone and does not
                // exit on SIGTERM; it holds no state, so it is killed at once.
                d.stop(Duration::ZERO);
            }
        }
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Err(e) = mounts::remove_dir_if_unmounted(&self.run_dir) {
            tracing::error!(sandbox = %self.id, error = %e, "cleanup incomplete");
        }
        tracing::info!(sandbox = %self.id, "sandbox removed");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.teardown();
    }
}
