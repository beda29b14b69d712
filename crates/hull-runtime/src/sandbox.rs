//! A sandbox is one VM: its run directory, shared directory and daemon, the VM from a `Vmm`,
//! the console ring and the agent connection. Creation either fully succeeds or leaves nothing;
//! `stop` is idempotent and safe to call while other threads use the sandbox's containers.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::config::{Config, SharedFsKind};
use crate::console::Console;
use crate::container::{self, Container};
use crate::error::{Death, Error, Result};
use crate::guest::Guest;
use crate::host::{HostMounts, RealMounts};
use crate::hostcgroup::{oom_score_adj, set_oom_score_adj, HostCgroup, CGROUP_ROOT};
use crate::network::PodNetwork;
use crate::portfwd::{self, PortForwarder};
use crate::sharedfs::{self, SharedFs};
use crate::vmm::{self, AccelDecision, Vm, VmSpec, Vmm};

/// Per-sandbox sizing chosen by the caller (None = config default).
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// vCPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
    /// The pod's network namespace (made by CNI), if the sandbox is a pod with a network.
    pub netns: Option<PathBuf>,
    /// Kernel parameters added for this sandbox (already checked against what is allowed).
    pub kernel_params: Vec<String>,
    /// The host cgroup (OCI `linux.cgroupsPath`) the VMM and its helpers are moved into.
    pub cgroups_path: Option<String>,
    /// The host OOM killer's bias for the VMM and its helpers (OCI `process.oomScoreAdj`).
    pub oom_score_adj: Option<i32>,
}

/// Timings of the boot, for logs and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct BootTimes {
    /// From the start of `create` until the VM was launched.
    pub prepare: Duration,
    /// From the launch until the agent answered.
    pub vm_to_agent: Duration,
}

/// The OS-facing parts a sandbox is made with: production uses QEMU and real mounts; unit
/// tests put fakes here.
#[derive(Debug)]
pub struct Seams {
    /// Creates the VM.
    pub vmm: Box<dyn Vmm>,
    /// Mounts of the shared directory.
    pub mounts: Arc<dyn HostMounts>,
}

impl Seams {
    /// The real ones for `config`.
    pub fn real(config: &Config) -> Result<Seams> {
        Ok(Seams {
            vmm: vmm::from_config(config)?,
            mounts: Arc::new(RealMounts),
        })
    }
}

/// What a running sandbox owns on the host; taken apart by `stop`.
#[derive(Debug, Default)]
struct Parts {
    vm: Option<Box<dyn Vm>>,
    shared_fs: Option<SharedFs>,
    portfwd: Option<PortForwarder>,
    network: Option<PodNetwork>,
    host_cgroup: Option<HostCgroup>,
}

/// One running sandbox VM.
#[derive(Debug)]
pub struct Sandbox {
    id: String,
    run_dir: PathBuf,
    guest: Arc<Guest>,
    parts: Mutex<Option<Parts>>,
    mounts: Arc<dyn HostMounts>,
    accel: Option<AccelDecision>,
    processes: Vec<(String, i32)>,
    vm_pid: i32,
    guest_kernel: String,
    times: BootTimes,
}

impl Sandbox {
    /// Boot a new sandbox VM and wait until its agent answers.
    pub fn create(config: &Config, id: &str, opts: &SandboxOptions) -> Result<Sandbox> {
        hull_protocol::validate_id(id)
            .map_err(|e| Error::InvalidArgument(format!("sandbox {e}")))?;
        Self::create_with(Seams::real(config)?, config, id, opts)
    }

    /// `create` with the given seams.
    pub fn create_with(
        seams: Seams,
        config: &Config,
        id: &str,
        opts: &SandboxOptions,
    ) -> Result<Sandbox> {
        hull_protocol::validate_id(id)
            .map_err(|e| Error::InvalidArgument(format!("sandbox {e}")))?;
        let t0 = Instant::now();
        let root = &config.runtime.run_dir;
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("create {}", root.display()), e))?;
        crate::owner::sweep_stale(root);
        let run_dir = root.join(id);
        match std::fs::create_dir(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(format!(
                    "sandbox {id} ({} is in use)",
                    run_dir.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("create {}", run_dir.display()), e)),
        }
        let mut parts = Parts::default();
        let booted = crate::owner::claim(&run_dir)
            .map_err(|e| Error::io("record sandbox owner", e))
            .and_then(|()| boot(&seams, config, id, &run_dir, opts, t0, &mut parts));
        match booted {
            Ok(b) => {
                let vm = parts.vm.as_ref();
                Ok(Sandbox {
                    id: id.to_string(),
                    accel: vm.and_then(|v| v.accel().cloned()),
                    vm_pid: vm.map_or(0, |v| v.pid()),
                    processes: b.processes,
                    run_dir,
                    guest: b.guest,
                    parts: Mutex::new(Some(parts)),
                    mounts: seams.mounts,
                    guest_kernel: b.kernel,
                    times: b.times,
                })
            }
            Err(e) => {
                take_apart(id, &mut parts);
                remove_run_dir(id, &run_dir, seams.mounts.as_ref());
                Err(e)
            }
        }
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host directory holding this sandbox's state.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The accelerator in use and why (where the VMM has a choice).
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

    /// Host pid of the VMM process.
    pub fn vm_pid(&self) -> i32 {
        self.vm_pid
    }

    /// Host pids of the VMM and the helper daemons: (name, pid).
    pub fn pids(&self) -> &[(String, i32)] {
        &self.processes
    }

    /// Raise the host OOM killer's bias of the VMM and its helpers to `adj` where it is lower
    /// (a container's `oomScoreAdj`: the VM is as exposed as its most exposed container).
    pub fn raise_oom_score_adj(&self, adj: i32) -> Result<()> {
        for (_, pid) in &self.processes {
            if oom_score_adj(*pid).is_some_and(|now| now < adj) {
                set_oom_score_adj(*pid, adj)?;
            }
        }
        Ok(())
    }

    /// How the VM or a helper died, if one did.
    pub fn death(&self) -> Option<Death> {
        self.guest.death()
    }

    /// The last lines of the guest console, on one line.
    pub fn console_tail(&self) -> String {
        self.guest.console_tail()
    }

    /// Guest ports that `localhost` in the pod's network namespace leads to now (empty
    /// without `SandboxOptions::netns`, or once stopped), and how many forwarded connections
    /// are open.
    pub fn forwarded_ports(&self) -> (Vec<u16>, usize) {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match parts.as_ref().and_then(|p| p.portfwd.as_ref()) {
            Some(pf) => (pf.ports(), pf.connections()),
            None => (Vec::new(), 0),
        }
    }

    /// Create container `id` from `spec` with the host directory `rootfs` as its root.
    /// The container is not started.
    pub fn create_container(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        rootfs: &Path,
    ) -> Result<Container> {
        container::create(&self.guest, id, spec, rootfs)
    }

    /// Stop the VM (QMP quit, then kill) and remove everything the sandbox made on the host. Idempotent;
    /// containers and processes of the sandbox fail with FailedPrecondition afterwards.
    pub fn stop(&self) -> Result<()> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut parts) = parts {
            self.guest.mark_stopped();
            take_apart(&self.id, &mut parts);
            self.guest.disconnect();
            // After the disconnect: a watch pushing an update now fails at once, not after
            // a call timeout.
            self.guest.volumes.close();
            // The VMM is gone, so the console reaches EOF; its reader must be done with its
            // file before the run directory goes.
            if !self.guest.console_closed(Duration::from_secs(2)) {
                tracing::warn!(sandbox = %self.id, "console reader did not see the console end");
            }
            // Unmounts each container's binds and removes its directory.
            self.guest.containers().clear();
            remove_run_dir(&self.id, &self.run_dir, self.mounts.as_ref());
        }
        if self.run_dir.exists() {
            return Err(Error::io(
                format!("sandbox {} left {}", self.id, self.run_dir.display()),
                std::io::ErrorKind::ResourceBusy.into(),
            ));
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(sandbox = %self.id, error = %e, "cleanup incomplete");
        }
    }
}

/// What a successful boot hands to the sandbox.
struct Booted {
    guest: Arc<Guest>,
    /// The VMM and the helper daemons: (name, pid).
    processes: Vec<(String, i32)>,
    kernel: String,
    times: BootTimes,
}

fn boot(
    seams: &Seams,
    cfg: &Config,
    id: &str,
    run_dir: &Path,
    opts: &SandboxOptions,
    t0: Instant,
    parts: &mut Parts,
) -> Result<Booted> {
    // A bad namespace path, or one without a usable interface, fails before anything boots.
    let net = match &opts.netns {
        Some(path) => parts.network.insert(PodNetwork::setup(path)?).take_device(),
        None => None,
    };
    let netns = opts.netns.as_deref().map(portfwd::open_netns).transpose()?;
    if let Some(path) = &opts.cgroups_path {
        let cg = parts
            .host_cgroup
            .insert(HostCgroup::create(Path::new(CGROUP_ROOT), path)?);
        cg.record(run_dir)?;
    }
    let shared_dir = run_dir.join("shared");
    std::fs::create_dir(&shared_dir).map_err(|e| Error::io("create shared dir", e))?;
    seams.mounts.make_shared(&shared_dir)?;
    let (tx, rx) = mpsc::channel();
    let mut fs_cfg = cfg.shared_fs.clone();
    if fs_cfg.kind == SharedFsKind::VirtioFs {
        fs_cfg.virtiofsd = crate::binaries::resolve("virtiofsd", &fs_cfg.virtiofsd)?;
    }
    let fs = parts.shared_fs.insert(sharedfs::start(
        &fs_cfg,
        &shared_dir,
        run_dir,
        &run_dir.join("helpers.log"),
        Some(tx.clone()),
    )?);
    let spec = VmSpec {
        id: id.to_string(),
        run_dir: run_dir.to_path_buf(),
        kernel: cfg.assets.kernel.clone(),
        initrd: cfg.assets.initrd.clone(),
        cmdline: kernel_cmdline(cfg, &opts.kernel_params),
        cpus: opts.cpus.unwrap_or(cfg.hypervisor.cpus),
        memory_mib: opts.memory_mib.unwrap_or(cfg.hypervisor.memory_mib),
        shared_fs: fs.device.clone(),
        net,
    };
    let prepare = t0.elapsed();
    let t1 = Instant::now();
    let vm = parts.vm.insert(seams.vmm.launch(&spec, tx)?);
    let mut pids: Vec<(String, i32)> = vm.processes();
    if let Some(d) = fs.daemon.as_ref() {
        pids.push((d.name().to_string(), d.pid()));
    }
    if let Some(cg) = &parts.host_cgroup {
        for (name, pid) in &pids {
            cg.add(*pid)
                .map_err(|e| Error::FailedPrecondition(format!("{name}: {e}")))?;
        }
    }
    if let Some(adj) = opts.oom_score_adj {
        for (name, pid) in &pids {
            set_oom_score_adj(*pid, adj)
                .map_err(|e| Error::FailedPrecondition(format!("{name}: {e}")))?;
        }
    }
    let console = match vm.take_console() {
        Some(fd) => Console::start(
            fd,
            id,
            run_dir.join("console.log"),
            cfg.runtime.console_bound(),
        )
        .map_err(|e| Error::io("start the console reader", e))?,
        None => {
            return Err(Error::Daemon {
                name: seams.vmm.name().into(),
                what: "gave no console".into(),
            })
        }
    };
    let console = Arc::new(console);
    let boot_timeout = Duration::from_secs(cfg.hypervisor.boot_timeout_secs);
    let mut dead = || -> Option<Error> {
        let (name, status) = rx.try_recv().ok()?;
        let mut death = Death::of(&name, status);
        death.how.push_str(" during boot");
        // The console pipe closes when QEMU exits: read it to the end before quoting it.
        console.wait_closed(Duration::from_millis(500));
        Some(Error::Died {
            sandbox: id.to_string(),
            death,
            console_tail: console.tail(5),
        })
    };
    let connected = vm
        .wait_agent_channel(boot_timeout, &mut dead)
        .and_then(|()| {
            let left = boot_timeout
                .saturating_sub(t1.elapsed())
                .max(Duration::from_secs(5));
            Agent::connect(&vm.agent_address(), left, &mut dead)
        });
    let (agent, check) = match connected {
        Ok(ok) => ok,
        Err(e @ Error::Died { .. }) => return Err(e),
        Err(e) => {
            // Give the VMM's own message (e.g. a bad option or a missing device) a chance to be seen.
            let what = match vm.last_error() {
                Some(line) => format!("{e}; {}: {line}", seams.vmm.name()),
                None => e.to_string(),
            };
            return Err(Error::Guest {
                what,
                console_tail: console.tail(5),
            });
        }
    };
    let vm_to_agent = t1.elapsed();
    if let Some(net) = &parts.network {
        let t2 = Instant::now();
        agent
            .configure_network(net.config())
            .map_err(|e| Error::Guest {
                what: format!(
                    "network from {} not applied: {e}",
                    net.netns_path().display()
                ),
                console_tail: console.tail(5),
            })?;
        tracing::debug!(sandbox = %id, ms = t2.elapsed().as_millis() as u64, "guest network configured");
    }
    let times = BootTimes {
        prepare,
        vm_to_agent,
    };
    tracing::info!(sandbox = %id, kernel = %check.kernel_release, agent = %check.agent_version,
        prepare_ms = times.prepare.as_millis() as u64, boot_ms = times.vm_to_agent.as_millis() as u64, "sandbox ready");
    let guest = Arc::new(Guest::new(
        id,
        agent,
        console,
        shared_dir,
        seams.mounts.clone(),
        vm.pid(),
    ));
    spawn_monitor(rx, Arc::downgrade(&guest), seams.vmm.name());
    if let Some(netns) = netns {
        parts.portfwd = Some(PortForwarder::start(id, netns, &vm.agent_address())?);
    }
    Ok(Booted {
        guest,
        processes: pids,
        kernel: check.kernel_release,
        times,
    })
}

/// The kernel command line every sandbox VM gets (the VMM driver may add its own).
fn kernel_cmdline(cfg: &Config, extra_params: &[String]) -> String {
    let mut cmdline = format!(
        "console=ttyS0 reboot=t panic=-1 quiet pci=off {}={} {}={}",
        hull_protocol::cmdline::SHARED_FS,
        cfg.shared_fs.kind.as_param(),
        hull_protocol::cmdline::LOG,
        cfg.runtime.agent_log_level
    );
    let extra = cfg.hypervisor.kernel_params.trim();
    for p in std::iter::once(extra)
        .chain(extra_params.iter().map(String::as_str))
        .filter(|p| !p.is_empty())
    {
        cmdline.push(' ');
        cmdline.push_str(p);
    }
    cmdline
}

/// Record the death of the VM or a helper as soon as it exits while the sandbox runs. When the
/// VMM dies its helpers follow (and the reverse), and their exits may be seen in any order:
/// an exit is held a moment for a VMM exit that comes with it, which is the one named.
fn spawn_monitor(
    rx: mpsc::Receiver<(String, std::process::ExitStatus)>,
    guest: std::sync::Weak<Guest>,
    vmm: &'static str,
) {
    const TOGETHER: Duration = Duration::from_millis(300);
    let _ = std::thread::Builder::new()
        .name("sandbox-monitor".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut death = first;
                while death.0 != vmm {
                    match rx.recv_timeout(TOGETHER) {
                        Ok(next) if next.0 == vmm => death = next,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                match guest.upgrade() {
                    Some(g) => g.record_death(Death::of(&death.0, death.1)),
                    None => return,
                }
            }
        });
}

/// Stop the VM and the daemons. No orderly guest power-off: the exits have been reported,
/// nothing in the guest outlives the sandbox, and the shared directory is written through
/// (virtio-fs without writeback, 9p without cache), so QMP `quit` loses nothing.
fn take_apart(id: &str, parts: &mut Parts) {
    if let Some(mut pf) = parts.portfwd.take() {
        pf.stop();
    }
    if let Some(vm) = parts.vm.take() {
        vm.stop(Duration::from_secs(2));
    }
    if let Some(fs) = parts.shared_fs.take() {
        fs.stop();
    }
    // After the VM: QEMU held the tap, which goes with its last fd.
    if let Some(mut net) = parts.network.take() {
        net.teardown();
    }
    // After every process in it has exited.
    if let Some(mut cg) = parts.host_cgroup.take() {
        cg.remove();
    }
    tracing::debug!(sandbox = %id, "vm and helpers stopped");
}

fn remove_run_dir(id: &str, run_dir: &Path, mounts: &dyn HostMounts) {
    match mounts.remove_tree(run_dir) {
        Ok(()) => tracing::info!(sandbox = %id, "sandbox removed"),
        Err(e) => tracing::error!(sandbox = %id, error = %e, "cleanup incomplete"),
    }
}

#[cfg(test)]
#[path = "sandbox_tests.rs"]
mod tests;
