//! The ttrpc `Agent` service: request validation and mapping onto the container `Runtime`,
//! errors onto ttrpc status codes; plus the vsock listener loop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hull_protocol::agent::{
    CheckRequest, CheckResponse, ConfigureNetworkRequest, ContainerRequest, CreateContainerRequest,
    Empty, EnsureVolumeRequest, ExecProcessRequest, PidsResponse, ProcessRequest,
    ReadStreamRequest, ReadStreamResponse, ResizeTtyRequest, SignalProcessRequest, StartResponse,
    StatsResponse, SyncVolumeRequest, UpdateContainerRequest, VolumeRequest, WaitProcessResponse,
    WatchOomRequest, WatchOomResponse, WriteStdinRequest, WriteStdinResponse,
};
use hull_protocol::agent_ttrpc_async::{create_agent, Agent};
use hull_protocol::forward_ttrpc_async::{create_forward, Forward};
use ttrpc::r#async::{Server, TtrpcContext};

use crate::container::Runtime;
use crate::error::AgentError;
use crate::forward::ForwardService;
use crate::volumes::Volumes;

type Res<T> = ttrpc::Result<T>;

/// The agent service.
#[derive(Debug)]
pub struct AgentService {
    runtime: Arc<Runtime>,
    volumes: Arc<Volumes>,
}

impl AgentService {
    /// Serve `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        AgentService {
            runtime,
            volumes: Arc::default(),
        }
    }

    /// Run `f` on the volumes off the async workers (it writes files).
    async fn on_volumes<T: Send + 'static>(
        &self,
        rpc: &str,
        f: impl FnOnce(&Volumes) -> Result<T, AgentError> + Send + 'static,
    ) -> Res<T> {
        let volumes = self.volumes.clone();
        let r = tokio::task::spawn_blocking(move || f(&volumes))
            .await
            .unwrap_or_else(|e| Err(AgentError::Internal(format!("volume task: {e}"))));
        log_err(rpc, r)
    }
}

impl AgentService {
    async fn read_stream(
        &self,
        rpc: &str,
        req: ReadStreamRequest,
        stderr: bool,
    ) -> Res<ReadStreamResponse> {
        let data = log_err(
            rpc,
            self.runtime
                .read_output(&req.container_id, &req.exec_id, stderr, req.max_len)
                .await,
        )?;
        let mut r = ReadStreamResponse::new();
        r.data = data;
        Ok(r)
    }
}

fn log_err<T>(rpc: &str, r: Result<T, AgentError>) -> Res<T> {
    r.map_err(|e| {
        tracing::debug!(rpc, error = %e, "request failed");
        e.into()
    })
}

#[async_trait]
impl Agent for AgentService {
    async fn check(&self, _: &TtrpcContext, _: CheckRequest) -> Res<CheckResponse> {
        let mut r = CheckResponse::new();
        r.agent_version = env!("CARGO_PKG_VERSION").to_string();
        r.kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(r)
    }

    async fn create_container(&self, _: &TtrpcContext, req: CreateContainerRequest) -> Res<Empty> {
        log_err(
            "CreateContainer",
            self.runtime
                .create(&req.container_id, &req.oci_spec_json)
                .await,
        )?;
        Ok(Empty::new())
    }

    async fn start_container(&self, _: &TtrpcContext, req: ContainerRequest) -> Res<StartResponse> {
        let pid = log_err(
            "StartContainer",
            self.runtime.start(&req.container_id).await,
        )?;
        let mut r = StartResponse::new();
        r.pid = pid;
        Ok(r)
    }

    async fn exec_process(&self, _: &TtrpcContext, req: ExecProcessRequest) -> Res<StartResponse> {
        if req.exec_id.is_empty() {
            return Err(AgentError::InvalidArgument("exec_id must not be empty".into()).into());
        }
        let pid = log_err(
            "ExecProcess",
            self.runtime
                .exec(&req.container_id, &req.exec_id, &req.oci_process_json)
                .await,
        )?;
        let mut r = StartResponse::new();
        r.pid = pid;
        Ok(r)
    }

    async fn signal_process(&self, _: &TtrpcContext, req: SignalProcessRequest) -> Res<Empty> {
        log_err(
            "SignalProcess",
            self.runtime
                .signal(&req.container_id, &req.exec_id, req.signal, req.all)
                .await,
        )?;
        Ok(Empty::new())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: ProcessRequest,
    ) -> Res<WaitProcessResponse> {
        let status = log_err(
            "WaitProcess",
            self.runtime.wait(&req.container_id, &req.exec_id).await,
        )?;
        let mut r = WaitProcessResponse::new();
        r.exit_status = status;
        if req.exec_id.is_empty() {
            r.oom_killed = self.runtime.oom_killed(&req.container_id);
        }
        Ok(r)
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: WriteStdinRequest,
    ) -> Res<WriteStdinResponse> {
        let n = log_err(
            "WriteStdin",
            self.runtime
                .write_stdin(&req.container_id, &req.exec_id, &req.data)
                .await,
        )?;
        let mut r = WriteStdinResponse::new();
        r.len = n as u32;
        Ok(r)
    }

    async fn close_stdin(&self, _: &TtrpcContext, req: ProcessRequest) -> Res<Empty> {
        log_err(
            "CloseStdin",
            self.runtime.close_stdin(&req.container_id, &req.exec_id),
        )?;
        Ok(Empty::new())
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> Res<ReadStreamResponse> {
        self.read_stream("ReadStdout", req, false).await
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> Res<ReadStreamResponse> {
        self.read_stream("ReadStderr", req, true).await
    }

    async fn resize_tty(&self, _: &TtrpcContext, req: ResizeTtyRequest) -> Res<Empty> {
        log_err(
            "ResizeTty",
            self.runtime
                .resize(&req.container_id, &req.exec_id, req.rows, req.cols),
        )?;
        Ok(Empty::new())
    }

    async fn remove_container(&self, _: &TtrpcContext, req: ContainerRequest) -> Res<Empty> {
        log_err(
            "RemoveContainer",
            self.runtime.remove(&req.container_id).await,
        )?;
        Ok(Empty::new())
    }

    async fn pause_container(&self, _: &TtrpcContext, req: ContainerRequest) -> Res<Empty> {
        log_err(
            "PauseContainer",
            self.runtime.freeze(&req.container_id, true).await,
        )?;
        Ok(Empty::new())
    }

    async fn resume_container(&self, _: &TtrpcContext, req: ContainerRequest) -> Res<Empty> {
        log_err(
            "ResumeContainer",
            self.runtime.freeze(&req.container_id, false).await,
        )?;
        Ok(Empty::new())
    }

    async fn update_container(&self, _: &TtrpcContext, req: UpdateContainerRequest) -> Res<Empty> {
        log_err(
            "UpdateContainer",
            self.runtime
                .update(&req.container_id, &req.resources_json)
                .await,
        )?;
        Ok(Empty::new())
    }

    async fn watch_oom(&self, _: &TtrpcContext, req: WatchOomRequest) -> Res<WatchOomResponse> {
        let kills = log_err(
            "WatchOom",
            self.runtime.watch_oom(&req.container_id, req.seen).await,
        )?;
        let mut r = WatchOomResponse::new();
        r.oom_kills = kills;
        Ok(r)
    }

    async fn list_pids(&self, _: &TtrpcContext, req: ContainerRequest) -> Res<PidsResponse> {
        let pids = log_err("ListPids", self.runtime.pids(&req.container_id))?;
        let mut r = PidsResponse::new();
        r.pids = pids;
        Ok(r)
    }

    async fn container_stats(&self, _: &TtrpcContext, req: ContainerRequest) -> Res<StatsResponse> {
        let s = log_err("ContainerStats", self.runtime.stats(&req.container_id))?;
        Ok(s.into())
    }

    async fn remove_process(&self, _: &TtrpcContext, req: ProcessRequest) -> Res<Empty> {
        log_err(
            "RemoveProcess",
            self.runtime.remove_process(&req.container_id, &req.exec_id),
        )?;
        Ok(Empty::new())
    }

    async fn configure_network(
        &self,
        _: &TtrpcContext,
        req: ConfigureNetworkRequest,
    ) -> Res<Empty> {
        log_err("ConfigureNetwork", crate::network::configure(&req).await)?;
        Ok(Empty::new())
    }

    async fn ensure_volume(&self, _: &TtrpcContext, req: EnsureVolumeRequest) -> Res<Empty> {
        self.on_volumes("EnsureVolume", move |v| {
            v.ensure(&req.volume_id, req.size_bytes, req.mode)
        })
        .await?;
        Ok(Empty::new())
    }

    async fn sync_volume(&self, _: &TtrpcContext, req: SyncVolumeRequest) -> Res<Empty> {
        self.on_volumes("SyncVolume", move |v| {
            let (id, mode, owner) = (req.volume_id.clone(), req.mode, (req.uid, req.gid));
            let entries = hull_protocol::volume::from_request(req)
                .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
            v.sync(&id, mode, owner, &entries)
        })
        .await?;
        Ok(Empty::new())
    }

    async fn remove_volume(&self, _: &TtrpcContext, req: VolumeRequest) -> Res<Empty> {
        self.on_volumes("RemoveVolume", move |v| v.remove(&req.volume_id))
            .await?;
        Ok(Empty::new())
    }

    async fn shutdown(&self, _: &TtrpcContext, _: Empty) -> Res<Empty> {
        tracing::info!("shutdown requested");
        tokio::spawn(async {
            // Let the reply reach the host first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if std::process::id() == 1 {
                crate::init::power_off();
            } else {
                nix::unistd::sync();
                std::process::exit(0);
            }
        });
        Ok(Empty::new())
    }
}

/// Listen on `addr` (e.g. `vsock://-1:1024`) and serve forever, rebinding after failures.
pub async fn serve(addr: &str, runtime: Arc<Runtime>) -> ! {
    let service: Arc<dyn Agent + Send + Sync> = Arc::new(AgentService::new(runtime));
    let forward: Arc<dyn Forward + Send + Sync> = Arc::new(ForwardService);
    loop {
        let server = Server::new().bind(addr).map(|s| {
            s.register_service(create_agent(service.clone()))
                .register_service(create_forward(forward.clone()))
        });
        match server {
            Ok(mut server) => match server.start().await {
                Ok(()) => {
                    tracing::info!(addr, "agent listening");
                    if addr.starts_with("vsock://") {
                        crate::forward::start(hull_protocol::portfwd::FORWARD_VSOCK_PORT);
                        tokio::task::spawn_blocking(crate::ready::announce);
                    }
                    // The accept loop runs in its own task; keep the server alive.
                    std::future::pending::<()>().await;
                }
                Err(e) => tracing::error!(addr, error = %e, "cannot start the ttrpc server"),
            },
            Err(e) => tracing::error!(addr, error = %e, "cannot listen"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
