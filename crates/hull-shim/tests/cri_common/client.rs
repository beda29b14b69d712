//! A blocking client of containerd's CRI services (k8s-cri's tonic clients on a small
//! current-thread tokio runtime): one method per call the tests make, each with a deadline, each
//! returning the gRPC status as the error so a test can show containerd's own error text.

use std::future::Future;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// Deadline of one CRI call unless given (a pod start under TCG boots a VM).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The CRI result type: containerd's status on error.
pub type CriResult<T> = Result<T, Status>;

/// Connected to one containerd's gRPC socket.
#[derive(Debug)]
pub struct Cri {
    // The channel first: it is dropped before the runtime its tasks run on.
    channel: Channel,
    rt: tokio::runtime::Runtime,
}

impl Cri {
    /// Connect to the unix socket `sock`; panics when that fails.
    pub fn connect(sock: &str) -> Cri {
        Self::try_connect(sock).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Connect to the unix socket `sock`, or say why not.
    pub fn try_connect(sock: &str) -> Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let channel = rt
            .block_on(async {
                Endpoint::from_shared(format!("unix://{sock}"))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .map_err(|e| {
                        // tonic's top-level text is only "transport error": add the causes.
                        let mut text = e.to_string();
                        let mut cause = std::error::Error::source(&e);
                        while let Some(c) = cause {
                            let c_text = c.to_string();
                            if !text.contains(&c_text) {
                                text.push_str(&format!(": {c_text}"));
                            }
                            cause = c.source();
                        }
                        text
                    })
            })
            .map_err(|e| format!("connect to CRI at {sock}: {e}"))?;
        Ok(Cri { channel, rt })
    }

    /// Run `fut` on this client's runtime (for streaming helpers).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    fn call<T, F>(&self, what: &str, timeout: Duration, fut: F) -> CriResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match self
            .rt
            .block_on(async move { tokio::time::timeout(timeout, fut).await })
        {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what}: no answer from containerd after {timeout:?} (test deadline)"
            ))),
        }
    }

    /// Version.
    pub fn version(&self) -> CriResult<cri::VersionResponse> {
        let mut c = self.runtime();
        self.call("Version", CALL_TIMEOUT, async move {
            c.version(cri::VersionRequest::default()).await
        })
    }

    /// Status (runtime and network conditions).
    pub fn status(&self) -> CriResult<cri::StatusResponse> {
        let mut c = self.runtime();
        self.call("Status", CALL_TIMEOUT, async move {
            c.status(cri::StatusRequest { verbose: false }).await
        })
    }

    /// PullImage; returns the image ref.
    pub fn pull(&self, image: &str) -> CriResult<String> {
        let mut c = self.images();
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call(
            "PullImage",
            CALL_TIMEOUT,
            async move { c.pull_image(req).await },
        )
        .map(|r| r.image_ref)
    }

    /// ImageStatus: the image's id, if containerd has it.
    pub fn image_id(&self, image: &str) -> CriResult<Option<String>> {
        let mut c = self.images();
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.call("ImageStatus", CALL_TIMEOUT, async move {
            c.image_status(req).await
        })
        .map(|r| r.image.map(|i| i.id))
    }

    /// RunPodSandbox with runtime handler `handler` ("runc", "hull"); returns the sandbox id.
    pub fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> CriResult<String> {
        let mut c = self.runtime();
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        self.call("RunPodSandbox", CALL_TIMEOUT, async move {
            c.run_pod_sandbox(req).await
        })
        .map(|r| r.pod_sandbox_id)
    }

    /// PodSandboxStatus (verbose: with containerd's `info` JSON).
    pub fn pod_status(&self, id: &str) -> CriResult<cri::PodSandboxStatusResponse> {
        let mut c = self.runtime();
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        self.call("PodSandboxStatus", CALL_TIMEOUT, async move {
            c.pod_sandbox_status(req).await
        })
    }

    /// StopPodSandbox.
    pub fn stop_pod(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime();
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call("StopPodSandbox", CALL_TIMEOUT, async move {
            c.stop_pod_sandbox(req).await
        })
        .map(drop)
    }

    /// RemovePodSandbox.
    pub fn remove_pod(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime();
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call("RemovePodSandbox", CALL_TIMEOUT, async move {
            c.remove_pod_sandbox(req).await
        })
        .map(drop)
    }

    /// ListPodSandbox (all).
    pub fn list_pods(&self) -> CriResult<Vec<cri::PodSandbox>> {
        let mut c = self.runtime();
        self.call("ListPodSandbox", CALL_TIMEOUT, async move {
            c.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
        })
        .map(|r| r.items)
    }

    /// CreateContainer in `pod` (whose config is `pod_config`); returns the container id.
    pub fn create_container(
        &self,
        pod: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> CriResult<String> {
        let mut c = self.runtime();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        self.call("CreateContainer", CALL_TIMEOUT, async move {
            c.create_container(req).await
        })
        .map(|r| r.container_id)
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime();
        let req = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.call("StartContainer", CALL_TIMEOUT, async move {
            c.start_container(req).await
        })
        .map(drop)
    }

    /// StopContainer with a grace period of `timeout_s` seconds.
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> CriResult<()> {
        let mut c = self.runtime();
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_s,
        };
        let deadline = CALL_TIMEOUT + Duration::from_secs(timeout_s.max(0).unsigned_abs());
        self.call("StopContainer", deadline, async move {
            c.stop_container(req).await
        })
        .map(drop)
    }

    /// RemoveContainer.
    pub fn remove_container(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime();
        let req = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call("RemoveContainer", CALL_TIMEOUT, async move {
            c.remove_container(req).await
        })
        .map(drop)
    }

    /// UpdateContainerResources with Linux `resources`.
    pub fn update_container_resources(
        &self,
        id: &str,
        resources: cri::LinuxContainerResources,
    ) -> CriResult<()> {
        let mut c = self.runtime();
        let req = cri::UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(resources),
            ..Default::default()
        };
        self.call("UpdateContainerResources", CALL_TIMEOUT, async move {
            c.update_container_resources(req).await
        })
        .map(drop)
    }

    /// ContainerStatus.
    pub fn container_status(&self, id: &str) -> CriResult<cri::ContainerStatus> {
        let mut c = self.runtime();
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.call("ContainerStatus", CALL_TIMEOUT, async move {
            c.container_status(req).await
        })
        .and_then(|r| {
            r.status
                .ok_or_else(|| Status::internal("ContainerStatus without a status"))
        })
    }

    /// ListContainers (all, every pod).
    pub fn list_containers(&self) -> CriResult<Vec<cri::Container>> {
        let mut c = self.runtime();
        self.call("ListContainers", CALL_TIMEOUT, async move {
            c.list_containers(cri::ListContainersRequest::default())
                .await
        })
        .map(|r| r.containers)
    }

    /// ContainerStats of `id`.
    pub fn container_stats(&self, id: &str) -> CriResult<cri::ContainerStats> {
        let mut c = self.runtime();
        let req = cri::ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.call("ContainerStats", CALL_TIMEOUT, async move {
            c.container_stats(req).await
        })
        .and_then(|r| {
            r.stats
                .ok_or_else(|| Status::internal("ContainerStats without stats"))
        })
    }

    /// PodSandboxStats of pod `pod`.
    pub fn pod_stats(&self, pod: &str) -> CriResult<cri::PodSandboxStats> {
        let mut c = self.runtime();
        let req = cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.to_string(),
        };
        self.call("PodSandboxStats", CALL_TIMEOUT, async move {
            c.pod_sandbox_stats(req).await
        })
        .and_then(|r| {
            r.stats
                .ok_or_else(|| Status::internal("PodSandboxStats without stats"))
        })
    }

    /// ListContainerStats of the containers of pod `pod`.
    pub fn list_container_stats(&self, pod: &str) -> CriResult<Vec<cri::ContainerStats>> {
        let mut c = self.runtime();
        let req = cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.to_string(),
                ..Default::default()
            }),
        };
        self.call("ListContainerStats", CALL_TIMEOUT, async move {
            c.list_container_stats(req).await
        })
        .map(|r| r.stats)
    }

    /// ExecSync with a timeout of `timeout_s` seconds (0: none) inside containerd.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> CriResult<cri::ExecSyncResponse> {
        let mut c = self.runtime();
        let req = cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_s,
        };
        let deadline = CALL_TIMEOUT + Duration::from_secs(timeout_s.max(0).unsigned_abs());
        self.call("ExecSync", deadline, async move { c.exec_sync(req).await })
    }

    /// Exec: the streaming URL for `cmd` in container `id`.
    pub fn exec_url(&self, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> CriResult<String> {
        let mut c = self.runtime();
        let req = cri::ExecRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        };
        self.call("Exec", CALL_TIMEOUT, async move { c.exec(req).await })
            .map(|r| r.url)
    }

    /// Attach: the streaming URL for container `id`'s stdio.
    pub fn attach_url(&self, id: &str, stdin: bool, tty: bool) -> CriResult<String> {
        let mut c = self.runtime();
        let req = cri::AttachRequest {
            container_id: id.to_string(),
            stdin,
            tty,
            stdout: true,
            stderr: !tty,
        };
        self.call("Attach", CALL_TIMEOUT, async move { c.attach(req).await })
            .map(|r| r.url)
    }

    /// PortForward: the streaming URL for `ports` of pod `pod`.
    pub fn port_forward_url(&self, pod: &str, ports: &[i32]) -> CriResult<String> {
        let mut c = self.runtime();
        let req = cri::PortForwardRequest {
            pod_sandbox_id: pod.to_string(),
            port: ports.to_vec(),
        };
        self.call("PortForward", CALL_TIMEOUT, async move {
            c.port_forward(req).await
        })
        .map(|r| r.url)
    }
}
