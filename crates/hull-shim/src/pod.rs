//! The pod this shim serves: one hull-runtime `Sandbox` (one VM) and its tasks. Every task
//! operation of containerd's API lands here; RPC decoding stays in `task.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use hull_runtime::{Config, Sandbox, SandboxOptions};
use oci_spec::runtime::Spec;

use crate::error::{Result, ShimError};
use crate::events::{Event, Sink};
use crate::process::{self, Exit, IoPaths, Proc, Status};
use crate::rootfs::{self, RootfsMount};

/// Annotation naming the pod sandbox a CRI container belongs to.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// File in a task's bundle recording the sandbox it runs in (read by `delete` after a crash).
pub const SANDBOX_FILE: &str = "hull-sandbox";
/// How long output may keep flowing after a process exited before its exit is reported.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Exit status reported when the sandbox died under a process.
pub const SANDBOX_LOST_STATUS: u32 = 255;

/// One task (container).
#[derive(Debug)]
struct Task {
    bundle: PathBuf,
    rootfs: Option<RootfsMount>,
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

/// The pod.
pub struct Pod {
    config: Config,
    sandbox: RwLock<Option<Sandbox>>,
    tasks: Mutex<HashMap<String, Task>>,
    changed: Condvar,
    events: Arc<dyn Sink>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod").finish_non_exhaustive()
    }
}

fn poisoned<T>(p: std::sync::PoisonError<T>) -> T {
    p.into_inner()
}

impl Pod {
    /// An empty pod; its VM boots with the first task.
    pub fn new(config: Config, events: Arc<dyn Sink>) -> Arc<Pod> {
        Arc::new(Pod {
            config,
            sandbox: RwLock::new(None),
            tasks: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            events,
        })
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(poisoned)
    }

    fn sandbox(&self) -> Result<RwLockReadGuard<'_, Option<Sandbox>>> {
        let g = self.sandbox.read().unwrap_or_else(poisoned);
        if g.is_none() {
            return Err(ShimError::FailedPrecondition(
                "the pod has no sandbox".into(),
            ));
        }
        Ok(g)
    }

    fn with_sandbox<T>(&self, f: impl FnOnce(&Sandbox) -> hull_runtime::Result<T>) -> Result<T> {
        let g = self.sandbox()?;
        match g.as_ref() {
            Some(sb) => f(sb).map_err(ShimError::from),
            None => Err(ShimError::FailedPrecondition(
                "the pod has no sandbox".into(),
            )),
        }
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
        if self.tasks().contains_key(id) {
            return Err(ShimError::AlreadyExists(format!("task {id}")));
        }
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            ShimError::InvalidArgument(format!("{}/config.json: {e}", bundle.display()))
        })?;
        let rootfs_mount = rootfs::mount(bundle, mounts)?;
        let root_dir = match &rootfs_mount {
            Some(m) => m.path().to_path_buf(),
            None => rootfs::spec_root(bundle, &spec)?,
        };
        let sandbox_id = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
            .unwrap_or_else(|| id.to_string());
        // Dropping `rootfs_mount` on an error below unmounts it again.
        self.ensure_sandbox(&sandbox_id)?;
        if let Err(e) = std::fs::write(bundle.join(SANDBOX_FILE), &sandbox_id) {
            tracing::warn!(task = id, error = %e, "cannot record the sandbox id in the bundle");
        }
        let created = self.with_sandbox(|sb| sb.create_container(id, &spec, &root_dir));
        if let Err(e) = created {
            drop(rootfs_mount);
            self.stop_sandbox_if_idle();
            return Err(e);
        }
        self.tasks().insert(
            id.to_string(),
            Task {
                bundle: bundle.to_path_buf(),
                rootfs: rootfs_mount,
                paused: false,
                init: Proc::created(io, None),
                execs: HashMap::new(),
            },
        );
        tracing::info!(task = id, sandbox = %sandbox_id, "task created");
        self.events.send(Event::Create {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            pid: 0,
        });
        Ok(())
    }

    fn ensure_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let mut g = self.sandbox.write().unwrap_or_else(poisoned);
        if g.is_none() {
            let sb = Sandbox::create(&self.config, sandbox_id, &SandboxOptions::default())?;
            *g = Some(sb);
        }
        Ok(())
    }

    /// Stop the VM when no task is left.
    fn stop_sandbox_if_idle(&self) {
        if !self.tasks().is_empty() {
            return;
        }
        let taken = self.sandbox.write().unwrap_or_else(poisoned).take();
        if let Some(sb) = taken {
            let id = sb.id().to_string();
            if let Err(e) = sb.stop() {
                tracing::error!(sandbox = %id, error = %e, "sandbox cleanup incomplete");
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
        let mut tasks = self.tasks();
        let task = tasks
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
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
        drop(tasks);
        self.events.send(Event::ExecAdded {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    /// Start the init process (`exec_id` "") or an added exec; returns the guest pid.
    pub fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (io, spec) = {
            let tasks = self.tasks();
            let task = tasks
                .get(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
            let p = task.proc(id, exec_id)?;
            if p.status != Status::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "process {} of task {id} was already started",
                    display_exec(exec_id)
                )));
            }
            (p.io.clone(), p.spec.clone())
        };
        let stdio = process::open(&io).map_err(ShimError::InvalidArgument)?;
        let (pid, agent) = self.with_sandbox(|sb| {
            let pid = match &spec {
                None => sb.start_container(id)?,
                Some(process) => sb.exec(id, exec_id, process)?,
            };
            Ok((pid, Arc::clone(sb.agent()?)))
        })?;
        {
            let mut tasks = self.tasks();
            if let Some(p) = tasks.get_mut(id).and_then(|t| t.proc_mut(id, exec_id).ok()) {
                p.pid = pid;
                p.status = Status::Running;
            }
        }
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
        let copies = hull_runtime::io::attach(&agent, id, exec_id, stdio);
        let pod = Arc::clone(self);
        let (cid, eid) = (id.to_string(), exec_id.to_string());
        std::thread::Builder::new()
            .name(format!("wait-{id}"))
            .spawn(move || pod.wait_exit(&agent, &cid, &eid, pid, copies))
            .map_err(|e| ShimError::Internal(format!("spawn waiter: {e}")))?;
        tracing::info!(task = id, exec = exec_id, pid, "process started");
        Ok(pid)
    }

    /// Waiter thread body: the exit status from the guest, the output drained, then the
    /// exit recorded and announced.
    fn wait_exit(
        &self,
        agent: &hull_runtime::agent::Agent,
        id: &str,
        exec_id: &str,
        pid: u32,
        copies: hull_runtime::io::Copies,
    ) {
        let status = match agent.wait(id, exec_id) {
            Ok(s) => u32::try_from(s).unwrap_or(SANDBOX_LOST_STATUS),
            Err(e) => {
                let why = self
                    .sandbox
                    .read()
                    .unwrap_or_else(poisoned)
                    .as_ref()
                    .and_then(|sb| sb.failure())
                    .unwrap_or_else(|| e.to_string());
                tracing::error!(task = id, exec = exec_id, error = %why, "lost the process");
                SANDBOX_LOST_STATUS
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = std::thread::Builder::new()
            .name(format!("drain-{id}"))
            .spawn(move || {
                copies.join_output();
                let _ = tx.send(());
            });
        if rx.recv_timeout(DRAIN_TIMEOUT).is_err() {
            tracing::warn!(
                task = id,
                exec = exec_id,
                "output still open after exit; reporting the exit anyway"
            );
        }
        let at = SystemTime::now();
        {
            let mut tasks = self.tasks();
            if let Some(p) = tasks.get_mut(id).and_then(|t| t.proc_mut(id, exec_id).ok()) {
                p.status = Status::Stopped;
                p.exit = Some(Exit { status, at });
            }
        }
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
        {
            let tasks = self.tasks();
            let task = tasks
                .get(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
            let p = task.proc(id, exec_id)?;
            if p.status == Status::Stopped {
                return Err(ShimError::NotFound(format!(
                    "process {} of task {id} already finished",
                    display_exec(exec_id)
                )));
            }
        }
        let sig = i32::try_from(signal)
            .map_err(|_| ShimError::InvalidArgument(format!("signal {signal}")))?;
        self.with_sandbox(|sb| sb.signal(id, exec_id, sig, all))
    }

    /// Block until the process has exited.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let mut tasks = self.tasks();
        loop {
            let task = tasks
                .get(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
            if let Some(exit) = task.proc(id, exec_id)?.exit {
                return Ok(exit);
            }
            tasks = self.changed.wait(tasks).unwrap_or_else(poisoned);
        }
    }

    /// Delete an exec, or the task itself (stopping the VM after its last task).
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        if !exec_id.is_empty() {
            let mut tasks = self.tasks();
            let task = tasks
                .get_mut(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
            let p = task.proc(id, exec_id)?;
            if p.status == Status::Running {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of task {id} is running"
                )));
            }
            let d = deleted(p);
            let started = p.status == Status::Stopped;
            task.execs.remove(exec_id);
            drop(tasks);
            if started {
                if let Err(e) = self.with_sandbox(|sb| sb.remove_exec(id, exec_id)) {
                    tracing::debug!(task = id, exec = exec_id, error = %e, "exec already gone in the guest");
                }
            }
            self.changed.notify_all();
            return Ok(d);
        }
        let d = {
            let tasks = self.tasks();
            let task = tasks
                .get(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
            if task.init.status == Status::Running {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id} is running; kill it first"
                )));
            }
            deleted(&task.init)
        };
        if let Err(e) = self.with_sandbox(|sb| sb.remove_container(id)) {
            tracing::warn!(task = id, error = %e, "guest side of the task not removed cleanly");
        }
        let task = self.tasks().remove(id);
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

    /// The state of a process.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcState> {
        let tasks = self.tasks();
        let task = tasks
            .get(id)
            .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
        let p = task.proc(id, exec_id)?;
        Ok(ProcState {
            bundle: task.bundle.display().to_string(),
            pid: p.pid,
            status: p.status,
            paused: task.paused && exec_id.is_empty(),
            io: p.io.clone(),
            exit: p.exit,
        })
    }

    /// Freeze or thaw the task.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        {
            let tasks = self.tasks();
            let task = tasks
                .get(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id}")))?;
            if task.init.status != Status::Running {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id} is not running"
                )));
            }
        }
        self.with_sandbox(|sb| sb.set_paused(id, paused))?;
        if let Some(t) = self.tasks().get_mut(id) {
            t.paused = paused;
        }
        self.events.send(if paused {
            Event::Paused { id: id.to_string() }
        } else {
            Event::Resumed { id: id.to_string() }
        });
        Ok(())
    }

    /// Guest pids of the task's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>> {
        self.known(id)?;
        self.with_sandbox(|sb| sb.container_pids(id))
    }

    /// Resource usage of the task.
    pub fn stats(&self, id: &str) -> Result<hull_runtime::container::ContainerStats> {
        self.known(id)?;
        self.with_sandbox(|sb| sb.stats(id))
    }

    /// Resize a process's terminal.
    pub fn resize(&self, id: &str, exec_id: &str, cols: u32, rows: u32) -> Result<()> {
        self.known(id)?;
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        self.with_sandbox(|sb| sb.agent()?.resize(id, exec_id, clamp(rows), clamp(cols)))
    }

    /// Close a process's stdin.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.known(id)?;
        self.with_sandbox(|sb| sb.agent()?.close_stdin(id, exec_id))
    }

    /// Pid of the first task's init process (0 if none).
    pub fn task_pid(&self, id: &str) -> u32 {
        self.tasks().get(id).map_or(0, |t| t.init.pid)
    }

    /// Whether no task is left.
    pub fn is_empty(&self) -> bool {
        self.tasks().is_empty()
    }

    /// Stop the VM if no task is left (containerd's Shutdown).
    pub fn shutdown(&self) {
        self.stop_sandbox_if_idle();
    }

    fn known(&self, id: &str) -> Result<()> {
        if self.tasks().contains_key(id) {
            Ok(())
        } else {
            Err(ShimError::NotFound(format!("task {id}")))
        }
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
