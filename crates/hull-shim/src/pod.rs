//! The pod this shim serves: one hull-runtime `Sandbox` (one VM) and its tasks. Every task
//! operation of containerd's API lands here; RPC decoding stays in `task.rs`.
//!
//! Locking: `lifecycle` serialises what creates or removes tasks and so may boot or stop the
//! VM; `state` guards the task table and is only held for bookkeeping, never across a call
//! into the guest. Lock order: `lifecycle`, then `state`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use hull_runtime::{Config, Container, Sandbox, SandboxOptions, Seams};
use oci_spec::runtime::Spec;

use crate::error::{Result, ShimError};
use crate::events::{Event, Sink};
use crate::pod_config;
use crate::process::{self, Exit, IoPaths, Proc, Status};
use crate::rootfs::{self, RootfsMount};

/// Annotation naming the pod sandbox a CRI container belongs to.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// File in a task's bundle recording the sandbox it runs in (read by `delete` after a crash).
pub const SANDBOX_FILE: &str = "hull-sandbox";
/// Exit status reported when the sandbox died under a process.
pub const SANDBOX_LOST_STATUS: u32 = 255;

/// Makes the seams a new sandbox is built with (real ones in production).
pub type SeamsFactory = Box<dyn Fn(&Config) -> hull_runtime::Result<Seams> + Send + Sync>;

/// One task (container).
#[derive(Debug)]
struct Task {
    /// A CRI pod's sandbox container: containerd knows it by the VMM's host pid.
    pod_sandbox: bool,
    bundle: PathBuf,
    rootfs: Option<RootfsMount>,
    container: Container,
    paused: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
}

impl Task {
    fn proc(&self, id: &str, exec_id: &str) -> Result<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} of task {id}")))
    }

    fn proc_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} of task {id}")))
    }
}

/// A snapshot of one process for State requests.
#[derive(Debug, Clone)]
pub struct ProcState {
    /// Bundle of the task.
    pub bundle: String,
    /// Guest pid (0 before start).
    pub pid: u32,
    /// Status; `paused` overrides a running init.
    pub status: Status,
    /// Whether the task is paused.
    pub paused: bool,
    /// Stdio paths.
    pub io: IoPaths,
    /// Exit, once stopped.
    pub exit: Option<Exit>,
}

/// What a finished process reports to Delete.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
    /// Guest pid.
    pub pid: u32,
    /// Exit status (0 if it never ran).
    pub status: u32,
    /// When it exited (now if it never ran).
    pub at: SystemTime,
}

#[derive(Default)]
struct State {
    sandbox: Option<Arc<Sandbox>>,
    tasks: HashMap<String, Task>,
}

/// The pod.
pub struct Pod {
    config: Config,
    seams: SeamsFactory,
    lifecycle: Mutex<()>,
    state: Mutex<State>,
    changed: Condvar,
    events: Arc<dyn Sink>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn not_found(id: &str) -> ShimError {
    ShimError::NotFound(format!("task {id}"))
}

impl Pod {
    /// An empty pod; its VM boots with the first task.
    pub fn new(config: Config, events: Arc<dyn Sink>) -> Arc<Pod> {
        Self::with_seams(config, events, Box::new(Seams::real))
    }

    /// An empty pod whose sandbox will be made with `seams`.
    pub fn with_seams(config: Config, events: Arc<dyn Sink>, seams: SeamsFactory) -> Arc<Pod> {
        Arc::new(Pod {
            config,
            seams,
            lifecycle: Mutex::new(()),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            events,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Run `f` on task `id` under the state lock.
    fn with_task<T>(&self, id: &str, f: impl FnOnce(&mut Task) -> Result<T>) -> Result<T> {
        let mut st = self.state();
        let task = st.tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        f(task)
    }

    /// Create task `id` from the bundle, mounting `mounts` as its rootfs, booting the VM first
    /// if this is the pod's first task.
    pub fn create(
        self: &Arc<Self>,
        id: &str,
        bundle: &Path,
        mounts: &[rootfs::MountSpec],
        io: IoPaths,
    ) -> Result<()> {
        hull_protocol::validate_id(id)
            .map_err(|e| ShimError::InvalidArgument(format!("task {e}")))?;
        let _life = lock(&self.lifecycle);
        if self.state().tasks.contains_key(id) {
            return Err(ShimError::AlreadyExists(format!("task {id}")));
        }
        let spec = load_spec(&bundle.join("config.json"))?;
        let sandbox_id = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
            .unwrap_or_else(|| id.to_string());
        let pod_sandbox = pod_config::is_pod_sandbox(&spec);
        let opts = if pod_sandbox {
            pod_config::sandbox_options(&self.config, &spec)?
        } else if sandbox_id == id {
            pod_config::host_placement(&spec)
        } else {
            SandboxOptions::default()
        };
        let joins_pod = sandbox_id != id;
        // Dropping `rootfs_mount` on an error below unmounts it again.
        let rootfs_mount = rootfs::mount(bundle, mounts)?;
        let root_dir = match &rootfs_mount {
            Some(m) => m.path().to_path_buf(),
            None => rootfs::spec_root(bundle, &spec)?,
        };
        let sandbox = self.ensure_sandbox(&sandbox_id, opts, joins_pod)?;
        if let Err(e) = std::fs::write(bundle.join(SANDBOX_FILE), &sandbox_id) {
            tracing::warn!(task = id, error = %e, "cannot record the sandbox id in the bundle");
        }
        if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
            // The VM is as exposed to the host's OOM killer as its most exposed container.
            if let Err(e) = sandbox.raise_oom_score_adj(adj) {
                tracing::warn!(task = id, error = %e, "cannot raise the VM's oom_score_adj");
            }
        }
        let t_create = std::time::Instant::now();
        let container = match sandbox.create_container(id, &spec, &root_dir) {
            Ok(c) => c,
            Err(e) => {
                drop(rootfs_mount);
                self.stop_sandbox_if_idle();
                return Err(e.into());
            }
        };
        self.state().tasks.insert(
            id.to_string(),
            Task {
                pod_sandbox,
                bundle: bundle.to_path_buf(),
                rootfs: rootfs_mount,
                container,
                paused: false,
                init: Proc::created(io, None),
                execs: HashMap::new(),
            },
        );
        // The per-pod start breakdown: the sandbox's prepare_ms and boot_ms ("sandbox ready"),
        // then each container's create_ms here and start_ms at "process started".
        tracing::info!(task = id, sandbox = %sandbox_id,
            create_ms = t_create.elapsed().as_millis() as u64, "task created");
        self.events.send(Event::Create {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            pid: 0,
        });
        Ok(())
    }

    /// The pod's sandbox, booted now with `opts` if there is none, unless the task only joins
    /// a pod (whose sandbox this shim must already serve). Caller holds `lifecycle`.
    fn ensure_sandbox(
        &self,
        sandbox_id: &str,
        opts: SandboxOptions,
        joins_pod: bool,
    ) -> Result<Arc<Sandbox>> {
        if let Some(sb) = &self.state().sandbox {
            if sb.id() != sandbox_id {
                return Err(ShimError::InvalidArgument(format!(
                    "this shim serves sandbox {}, not {sandbox_id}",
                    sb.id()
                )));
            }
            return Ok(sb.clone());
        }
        if joins_pod {
            return Err(ShimError::FailedPrecondition(format!(
                "sandbox {sandbox_id} is not running in this shim"
            )));
        }
        let seams = (self.seams)(&self.config)?;
        let sb = Arc::new(Sandbox::create_with(
            seams,
            &self.config,
            sandbox_id,
            &opts,
        )?);
        self.state().sandbox = Some(sb.clone());
        Ok(sb)
    }

    /// Stop the VM when no task is left. Caller holds `lifecycle`.
    fn stop_sandbox_if_idle(&self) {
        let taken = {
            let mut st = self.state();
            if !st.tasks.is_empty() {
                return;
            }
            st.sandbox.take()
        };
        if let Some(sb) = taken {
            if let Err(e) = sb.stop() {
                tracing::error!(sandbox = %sb.id(), error = %e, "sandbox cleanup incomplete");
            }
        }
    }

    /// Add exec `exec_id` to task `id` (started later by `start`).
    pub fn add_exec(
        &self,
        id: &str,
        exec_id: &str,
        spec: oci_spec::runtime::Process,
        io: IoPaths,
    ) -> Result<()> {
        hull_protocol::validate_id(exec_id)
            .map_err(|e| ShimError::InvalidArgument(format!("exec {e}")))?;
        self.with_task(id, |task| {
            if task.init.status != Status::Running {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id} is not running"
                )));
            }
            if task.execs.contains_key(exec_id) {
                return Err(ShimError::AlreadyExists(format!("exec {exec_id}")));
            }
            task.execs
                .insert(exec_id.to_string(), Proc::created(io, Some(spec)));
            Ok(())
        })?;
        self.events.send(Event::ExecAdded {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    /// Start the init process (`exec_id` "") or an added exec; returns the guest pid.
    pub fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (container, io, spec, pod_sandbox) = self.with_task(id, |task| {
            let container = task.container.clone();
            let pod_sandbox = task.pod_sandbox && exec_id.is_empty();
            let p = task.proc_mut(id, exec_id)?;
            if p.status != Status::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "process {} of task {id} was already started",
                    display_exec(exec_id)
                )));
            }
            // Claimed here, so a second Start of the same process fails at once.
            p.status = Status::Starting;
            Ok((container, p.io.clone(), p.spec.clone(), pod_sandbox))
        })?;
        let t_start = std::time::Instant::now();
        let started = process::open_stdio(&io)
            .map_err(ShimError::from)
            .and_then(|stdio| {
                match &spec {
                    None => container.start(stdio),
                    Some(process) => container.exec(exec_id, process, stdio),
                }
                .map_err(ShimError::from)
            });
        let process = match started {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = self.with_task(id, |t| {
                    t.proc_mut(id, exec_id)?.status = Status::Created;
                    Ok(())
                });
                return Err(e);
            }
        };
        // containerd reads a pod's namespaces at /proc/<pid of the sandbox task>: for a pod's
        // sandbox container that is the VMM, which runs in the pod's network namespace.
        let pid = match (pod_sandbox, self.state().sandbox.as_ref()) {
            (true, Some(sb)) => u32::try_from(sb.vm_pid()).unwrap_or(0),
            _ => process.pid(),
        };
        let _ = self.with_task(id, |t| {
            let p = t.proc_mut(id, exec_id)?;
            p.pid = pid;
            p.status = Status::Running;
            p.process = Some(process.clone());
            Ok(())
        });
        self.events.send(if exec_id.is_empty() {
            Event::Start {
                id: id.to_string(),
                pid,
            }
        } else {
            Event::ExecStarted {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
            }
        });
        let pod = Arc::clone(self);
        let (cid, eid) = (id.to_string(), exec_id.to_string());
        std::thread::Builder::new()
            .name(format!("wait-{id}"))
            .spawn(move || pod.wait_exit(&process, &cid, &eid, pid))
            .map_err(|e| ShimError::Internal(format!("spawn waiter: {e}")))?;
        if exec_id.is_empty() {
            let pod = Arc::clone(self);
            let cid = id.to_string();
            // Without it the container runs on unwatched: OOM kills are then reported at exit.
            if let Err(e) = std::thread::Builder::new()
                .name(format!("oom-{id}"))
                .spawn(move || pod.watch_oom(&container, &cid))
            {
                tracing::warn!(task = id, error = %e, "cannot spawn the OOM watcher");
            }
        }
        tracing::info!(
            task = id,
            exec = exec_id,
            pid,
            start_ms = t_start.elapsed().as_millis() as u64,
            "process started"
        );
        Ok(pid)
    }

    /// OOM watcher thread body: a TaskOOM for every OOM kill in the container while it exists,
    /// as runc's shim reports them (not only when the init process exits).
    fn watch_oom(&self, container: &hull_runtime::Container, id: &str) {
        let mut seen = 0;
        loop {
            match container.watch_oom(seen) {
                Ok(kills) if kills > seen => {
                    tracing::info!(task = id, kills, "container had a process OOM-killed");
                    self.events.send(Event::Oom { id: id.to_string() });
                    seen = kills;
                }
                Ok(_) => {}
                // The container was removed or the sandbox is gone: nothing left to watch.
                Err(e) => {
                    tracing::debug!(task = id, error = %e, "OOM watch ended");
                    return;
                }
            }
        }
    }

    /// Waiter thread body: the exit from the guest (output drained), recorded and announced.
    fn wait_exit(&self, process: &hull_runtime::Process, id: &str, exec_id: &str, pid: u32) {
        let status = match process.wait() {
            Ok(exit) => {
                if exit.oom_killed && exec_id.is_empty() {
                    // containerd marks the container OOMKilled on this, before the exit.
                    tracing::info!(task = id, "container had a process OOM-killed");
                    self.events.send(Event::Oom { id: id.to_string() });
                }
                u32::try_from(exit.status).unwrap_or(SANDBOX_LOST_STATUS)
            }
            Err(e) => {
                tracing::error!(task = id, exec = exec_id, error = %e, "lost the process");
                SANDBOX_LOST_STATUS
            }
        };
        let at = SystemTime::now();
        let _ = self.with_task(id, |t| {
            let p = t.proc_mut(id, exec_id)?;
            p.status = Status::Stopped;
            p.exit = Some(Exit { status, at });
            Ok(())
        });
        self.changed.notify_all();
        tracing::info!(task = id, exec = exec_id, pid, status, "process exited");
        self.events.send(Event::Exit {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            status,
            at,
        });
    }

    /// Signal a process (or, with `all`, every process of the task).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = i32::try_from(signal)
            .map_err(|_| ShimError::InvalidArgument(format!("signal {signal}")))?;
        let (container, process) = self.with_task(id, |task| {
            let p = task.proc(id, exec_id)?;
            if p.status == Status::Stopped {
                return Err(ShimError::NotFound(format!(
                    "process {} of task {id} already finished",
                    display_exec(exec_id)
                )));
            }
            Ok((task.container.clone(), p.process.clone()))
        })?;
        match (exec_id.is_empty(), process) {
            (true, _) => container.kill(sig, all)?,
            (false, Some(p)) => p.signal(sig, all)?,
            (false, None) => {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of task {id} is not started"
                )))
            }
        }
        Ok(())
    }

    /// Block until the process has exited.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let mut st = self.state();
        loop {
            let task = st.tasks.get(id).ok_or_else(|| not_found(id))?;
            if let Some(exit) = task.proc(id, exec_id)?.exit {
                return Ok(exit);
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Delete an exec, or the task itself (stopping the VM after its last task).
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id);
        }
        let _life = lock(&self.lifecycle);
        let (d, container) = self.with_task(id, |task| {
            if matches!(task.init.status, Status::Running | Status::Starting) {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id} is running; kill it first"
                )));
            }
            Ok((deleted(&task.init), task.container.clone()))
        })?;
        if let Err(e) = container.remove() {
            tracing::warn!(task = id, error = %e, "guest side of the task not removed cleanly");
        }
        let task = self.state().tasks.remove(id);
        // Unmounts the rootfs.
        drop(task.and_then(|mut t| t.rootfs.take()));
        self.changed.notify_all();
        tracing::info!(task = id, "task deleted");
        self.events.send(Event::Delete {
            id: id.to_string(),
            pid: d.pid,
            status: d.status,
            at: d.at,
        });
        self.stop_sandbox_if_idle();
        Ok(d)
    }

    fn delete_exec(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        let (d, process) = self.with_task(id, |task| {
            let p = task.proc(id, exec_id)?;
            if matches!(p.status, Status::Running | Status::Starting) {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of task {id} is running"
                )));
            }
            let d = deleted(p);
            let process = p.process.clone();
            task.execs.remove(exec_id);
            Ok((d, process))
        })?;
        if let Some(p) = process {
            if let Err(e) = p.remove() {
                tracing::debug!(task = id, exec = exec_id, error = %e, "exec already gone in the guest");
            }
        }
        self.changed.notify_all();
        Ok(d)
    }

    /// The state of a process.
    pub fn state_of(&self, id: &str, exec_id: &str) -> Result<ProcState> {
        self.with_task(id, |task| {
            let p = task.proc(id, exec_id)?;
            Ok(ProcState {
                bundle: task.bundle.display().to_string(),
                pid: p.pid,
                status: p.status,
                paused: task.paused && exec_id.is_empty(),
                io: p.io.clone(),
                exit: p.exit,
            })
        })
    }

    /// Freeze or thaw the task.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let container = self.running_container(id)?;
        container.set_paused(paused)?;
        let _ = self.with_task(id, |t| {
            t.paused = paused;
            Ok(())
        });
        self.events.send(if paused {
            Event::Paused { id: id.to_string() }
        } else {
            Event::Resumed { id: id.to_string() }
        });
        Ok(())
    }

    /// Apply new resource limits to the task's container (containerd's Update).
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let container = self.running_container(id)?;
        container.update(resources)?;
        Ok(())
    }

    /// The container of task `id`, whose init must be running.
    fn running_container(&self, id: &str) -> Result<Container> {
        self.with_task(id, |task| {
            if task.init.status != Status::Running {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id} is not running"
                )));
            }
            Ok(task.container.clone())
        })
    }

    fn container(&self, id: &str) -> Result<Container> {
        self.with_task(id, |t| Ok(t.container.clone()))
    }

    fn started(&self, id: &str, exec_id: &str) -> Result<Option<Arc<hull_runtime::Process>>> {
        self.with_task(id, |t| Ok(t.proc(id, exec_id)?.process.clone()))
    }

    /// Guest pids of the task's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>> {
        Ok(self.container(id)?.pids()?)
    }

    /// Resource usage of the task.
    pub fn stats(&self, id: &str) -> Result<hull_runtime::ContainerStats> {
        Ok(self.container(id)?.stats()?)
    }

    /// Resize a process's terminal.
    pub fn resize(&self, id: &str, exec_id: &str, cols: u32, rows: u32) -> Result<()> {
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        match self.started(id, exec_id)? {
            Some(p) => Ok(p.resize(clamp(rows), clamp(cols))?),
            None => Err(ShimError::FailedPrecondition(format!(
                "process {} of task {id} is not started",
                display_exec(exec_id)
            ))),
        }
    }

    /// Close a process's stdin (a process not started yet gets none when it starts).
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        match self.started(id, exec_id)? {
            Some(p) => Ok(p.close_stdin()?),
            None => Ok(()),
        }
    }

    /// Pid of a task's init process (0 if none).
    pub fn task_pid(&self, id: &str) -> u32 {
        self.state().tasks.get(id).map_or(0, |t| t.init.pid)
    }

    /// Whether no task is left.
    pub fn is_empty(&self) -> bool {
        self.state().tasks.is_empty()
    }

    /// Stop the VM if no task is left (containerd's Shutdown).
    pub fn shutdown(&self) {
        let _life = lock(&self.lifecycle);
        self.stop_sandbox_if_idle();
    }
}

fn deleted(p: &Proc) -> Deleted {
    match p.exit {
        Some(e) => Deleted {
            pid: p.pid,
            status: e.status,
            at: e.at,
        },
        None => Deleted {
            pid: p.pid,
            status: 0,
            at: SystemTime::now(),
        },
    }
}

fn display_exec(exec_id: &str) -> &str {
    if exec_id.is_empty() {
        "init"
    } else {
        exec_id
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;

/// The bundle's OCI spec; a spec that does not parse is named with serde's reason (e.g. an
/// unknown seccomp action), not oci-spec's bare "invalid argument".
fn load_spec(path: &Path) -> Result<Spec> {
    let bytes = std::fs::read(path)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ShimError::InvalidArgument(format!("invalid OCI spec {}: {e}", path.display()))
    })
}
