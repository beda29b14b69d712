//! containerd's Task service (runtime v2, task API v2) decoded and mapped onto `Pod`.
//! Nothing here decides anything: requests in, `Pod` calls, responses out.

use std::sync::Arc;

use containerd_shim::api;
use containerd_shim::protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{EnumOrUnknown, Message};
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};

use crate::error::ShimError;
use crate::events::timestamp;
use crate::pod::Pod;
use crate::process::{IoPaths, Status};
use crate::rootfs::MountSpec;

/// The type URL containerd's `ctr task metrics` decodes cgroup v2 metrics by.
const METRICS_V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// The task service of one shim.
#[derive(Clone)]
pub struct TaskService {
    pod: Arc<Pod>,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService")
            .field("pod", &self.pod)
            .finish()
    }
}

impl TaskService {
    /// Serve `pod`; `exit` ends the shim.
    pub fn new(pod: Arc<Pod>, exit: Arc<ExitSignal>) -> Self {
        TaskService { pod, exit }
    }
}

fn empty() -> api::Empty {
    api::Empty::new()
}

impl Task for TaskService {
    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        tracing::debug!(task = %req.id, bundle = %req.bundle, mounts = req.rootfs.len(), "Create");
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented("restoring a checkpoint").into());
        }
        let mounts: Vec<MountSpec> = req
            .rootfs
            .iter()
            .map(|m| MountSpec {
                typ: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let io = IoPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.pod
            .create(&req.id, std::path::Path::new(&req.bundle), &mounts, io)?;
        // The guest pid exists only once the task starts (StartResponse carries it).
        Ok(api::CreateTaskResponse::new())
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let pid = self.pod.start(&req.id, &req.exec_id)?;
        let mut r = api::StartResponse::new();
        r.pid = pid;
        Ok(r)
    }

    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let s = self.pod.state_of(&req.id, &req.exec_id)?;
        let status = match (s.status, s.paused) {
            (Status::Created | Status::Starting, _) => TaskStatus::CREATED,
            (Status::Running, true) => TaskStatus::PAUSED,
            (Status::Running, false) => TaskStatus::RUNNING,
            (Status::Stopped, _) => TaskStatus::STOPPED,
        };
        let mut r = api::StateResponse::new();
        r.id = if req.exec_id.is_empty() {
            req.id.clone()
        } else {
            req.exec_id.clone()
        };
        r.exec_id = req.exec_id.clone();
        r.bundle = s.bundle;
        r.pid = s.pid;
        r.status = EnumOrUnknown::new(status);
        r.stdin = s.io.stdin;
        r.stdout = s.io.stdout;
        r.stderr = s.io.stderr;
        r.terminal = s.io.terminal;
        if let Some(e) = s.exit {
            r.exit_status = e.status;
            r.exited_at = Some(timestamp(e.at)).into();
        }
        Ok(r)
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let d = self.pod.delete(&req.id, &req.exec_id)?;
        let mut r = api::DeleteResponse::new();
        r.pid = d.pid;
        r.exit_status = d.status;
        r.exited_at = Some(timestamp(d.at)).into();
        Ok(r)
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let mut r = api::PidsResponse::new();
        r.processes = self
            .pod
            .pids(&req.id)?
            .into_iter()
            .map(|pid| {
                let mut p = ProcessInfo::new();
                p.pid = pid;
                p
            })
            .collect();
        Ok(r)
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.pod.set_paused(&req.id, true)?;
        Ok(empty())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.pod.set_paused(&req.id, false)?;
        Ok(empty())
    }

    fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(ShimError::Unimplemented("checkpoint").into())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        tracing::debug!(task = %req.id, exec = %req.exec_id, signal = req.signal, all = req.all, "Kill");
        self.pod.kill(&req.id, &req.exec_id, req.signal, req.all)?;
        Ok(empty())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let value = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        let spec: oci_spec::runtime::Process = serde_json::from_slice(value).map_err(|e| {
            ShimError::InvalidArgument(format!("exec {} process spec: {e}", req.exec_id))
        })?;
        let io = IoPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.pod.add_exec(&req.id, &req.exec_id, spec, io)?;
        Ok(empty())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        self.pod
            .resize(&req.id, &req.exec_id, req.width, req.height)?;
        Ok(empty())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        if req.stdin {
            self.pod.close_stdin(&req.id, &req.exec_id)?;
        }
        Ok(empty())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let any = req.resources.as_ref().ok_or(ShimError::InvalidArgument(
            "update without resources".into(),
        ))?;
        if !any.type_url.ends_with("LinuxResources") {
            return Err(ShimError::InvalidArgument(format!(
                "resources of type {:?}, want LinuxResources",
                any.type_url
            ))
            .into());
        }
        let resources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("resources JSON: {e}")))?;
        self.pod.update(&req.id, &resources)?;
        Ok(empty())
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let exit = self.pod.wait(&req.id, &req.exec_id)?;
        let mut r = api::WaitResponse::new();
        r.exit_status = exit.status;
        r.exited_at = Some(timestamp(exit.at)).into();
        Ok(r)
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let s = self.pod.stats(&req.id)?;
        let mut m = Metrics::new();
        let mut cpu = CPUStat::new();
        cpu.usage_usec = s.cpu_usage_usec;
        cpu.user_usec = s.cpu_user_usec;
        cpu.system_usec = s.cpu_system_usec;
        m.cpu = Some(cpu).into();
        let mut mem = MemoryStat::new();
        mem.usage = s.memory_usage_bytes;
        mem.usage_limit = s.memory_limit_bytes;
        // containerd's CRI takes the working set as usage minus inactive_file.
        mem.inactive_file = s.memory_inactive_file_bytes;
        mem.anon = s.memory_anon_bytes;
        mem.pgfault = s.memory_pgfault;
        mem.pgmajfault = s.memory_pgmajfault;
        m.memory = Some(mem).into();
        let mut pids = PidsStat::new();
        pids.current = s.pids_current;
        pids.limit = s.pids_limit;
        m.pids = Some(pids).into();
        let mut any = Any::new();
        any.type_url = METRICS_V2_TYPE.to_string();
        any.value = m
            .write_to_bytes()
            .map_err(|e| ShimError::Internal(format!("encode metrics: {e}")))?;
        let mut r = api::StatsResponse::new();
        r.stats = Some(any).into();
        Ok(r)
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let mut r = api::ConnectResponse::new();
        r.shim_pid = std::process::id();
        r.task_pid = self.pod.task_pid(&req.id);
        r.version = env!("CARGO_PKG_VERSION").to_string();
        Ok(r)
    }

    fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if !self.pod.is_empty() {
            tracing::debug!("shutdown ignored: tasks remain");
            return Ok(empty());
        }
        self.pod.shutdown();
        // Unlink our socket before answering, so that once containerd has its reply no trace
        // of this shim is left on disk (the open connection is not affected).
        crate::socket::remove_own();
        tracing::info!("shim shutting down");
        self.exit.signal();
        Ok(empty())
    }
}
