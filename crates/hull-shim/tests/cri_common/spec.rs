//! Pod and container configs the way kubelet fills them in, reduced to what the tests vary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_cri::v1 as cri;

/// The Kubernetes namespace of every test pod.
pub const POD_NAMESPACE: &str = "hull-test";
/// busybox, pulled through the registry mirror.
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// A pod named `name` (unique uid per call), logging under `log_dir`.
pub fn pod(name: &str, log_dir: &std::path::Path) -> cri::PodSandboxConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let uid = format!("{name}-{}-{n}", std::process::id());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: POD_NAMESPACE.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.join(&uid).to_string_lossy().into_owned(),
        labels: HashMap::from([("hull-test".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// kubelet's namespace modes for a pod without shareProcessNamespace: network and ipc shared
/// by the pod, a pid namespace of each container's own.
fn kubelet_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    }
}

/// A busybox container `name` running `cmd`, logging to `<pod log dir>/<name>.log`.
pub fn container(name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    container_attempt(name, 0, cmd)
}

/// Like [`container`], as restart number `attempt`.
pub fn container_attempt(name: &str, attempt: u32, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.to_string(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}-{attempt}.log"),
        labels: HashMap::from([("hull-test".to_string(), name.to_string())]),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A shell command that sleeps until SIGTERM and then exits 0 (a polite PID 1).
pub const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"];

/// Shell text: serve `text` over HTTP on `port` (busybox httpd), exit 0 on SIGTERM.
pub fn web_server_script(port: u16, text: &str) -> String {
    format!(
        "mkdir -p /www && echo {text} > /www/index.html && \
         httpd -f -p {port} -h /www & trap 'exit 0' TERM; wait"
    )
}
