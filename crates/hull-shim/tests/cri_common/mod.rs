//! CRI end-to-end harness: a private containerd with its CRI plugin (runtimes `runc` and `hull`),
//! its own CNI network (bridge + host-local + portmap + loopback on a private subnet), its own
//! image registry (docker-registry on loopback, filled with skopeo from locally built images,
//! mirrored for docker.io), the locally built pause image as `sandbox_image`, and a gRPC client.
//!
//! ```ignore
//! let Some(env) = CriEnv::start() else { return }; // skips when prerequisites are missing
//! env.pull_busybox();
//! let cfg = spec::pod("web", env.log_dir());
//! let pod = env.run_pod(&cfg, HULL).expect("RunPodSandbox");
//! let c = env.create_container(&pod, &spec::container("c", spec::SLEEPER), &cfg).expect("create");
//! env.cri().start_container(&c).expect("start");
//! ...
//! assert_eq!(env.stop(), Vec::<String>::new()); // pods removed, containerd stopped, no leftovers
//! ```
//!
//! Leftovers checked at [`CriEnv::stop`]: pods and containers still known to CRI, processes
//! (shims, QEMU, virtiofsd, vhost-device-vsock: everything naming the private directory or a
//! tracked id's run directory, and their descendants), mounts, run directories, shim sockets,
//! runc state, cgroups, pod network namespaces, portmap's iptables rules, containerd containers.
//! Env: a test whose requirements are missing fails unless `HULL_TEST_ALLOW_SKIP=1`; `HULL_TEST_IMAGE` and
//! `HULL_TEST_PAUSE_IMAGE` override the image archives.
#![allow(dead_code)]

pub mod client;
pub mod net;
pub mod registry;
pub mod scenarios;
pub mod spec;
pub mod stream;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;

use crate::common::{self, setup, Options, PrivateContainerd};
use client::{Cri, CriResult};
use net::NetSlot;
use registry::Registry;

/// The CRI runtime handler of containerd's runc.
pub const RUNC: &str = "runc";
/// The CRI runtime handler of hull (runtime_type io.containerd.hull.v2).
pub const HULL: &str = "hull";
/// containerd's namespace for everything CRI makes.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The pod sandbox image (pushed to the private registry from scripts/make-image.sh --pause).
pub const PAUSE: &str = "docker.io/hull/pause:latest";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's private CRI world; stop it with [`stop`](Self::stop) to get the leak report.
#[derive(Debug)]
pub struct CriEnv {
    // Field order is drop order: the client, then containerd, then registry and network.
    cri: Cri,
    cd: Option<PrivateContainerd>,
    registry: Registry,
    net: NetSlot,
    dir: PathBuf,
    stopped: bool,
}

impl CriEnv {
    /// Start everything; `None` (after printing why) when a prerequisite is missing.
    pub fn start() -> Option<CriEnv> {
        if let Some(why) = common::missing_prerequisite() {
            return common::skip(&why);
        }
        for tool in ["docker-registry", "skopeo", "iptables-save", "ip"] {
            if setup::which(tool).is_none() {
                return common::skip(&format!("{tool} not installed"));
            }
        }
        if !Path::new(net::CNI_BIN_DIR).join("bridge").exists() {
            return common::skip("CNI plugins not installed in /usr/lib/cni");
        }
        let t0 = Instant::now();
        let busybox = common::busybox_image();
        let pause = registry::pause_image();
        let dir = setup::make_private_dir();
        // Removes `dir` if starting fails before containerd owns it (declared first: dropped
        // after the registry that lives in it).
        let mut guard = DirGuard(Some(dir.clone()));
        let net = NetSlot::acquire();
        let conf_dir = dir.join("cni/net.d");
        net.write_conflist(&conf_dir, &dir.join("cni/ipam"));
        let registry = Registry::start(&dir.join("registry"));
        registry.push(&busybox, "library/busybox:latest");
        registry.push(&pause, "hull/pause:latest");
        let stream_port = registry::free_port();
        let toml = cri_toml(&conf_dir, &registry.host(), stream_port);
        guard.0 = None;
        let cd = PrivateContainerd::start_in(dir.clone(), Options::default().cri(&toml));
        let cri = Cri::connect(cd.address());
        let env = CriEnv {
            cri,
            cd: Some(cd),
            registry,
            net,
            dir,
            stopped: false,
        };
        env.wait_ready();
        eprintln!(
            "cri harness: containerd {} with CRI, registry {}, subnet {} up in {:.1?}",
            env.dir.display(),
            env.registry.host(),
            env.net.subnet(),
            t0.elapsed()
        );
        Some(env)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.cri.status() {
                Ok(s) => {
                    let conds = s.status.map(|s| s.conditions).unwrap_or_default();
                    if conds.len() >= 2 && conds.iter().all(|c| c.status) {
                        return;
                    }
                    last = format!("{conds:?}");
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "CRI not ready after {READY_TIMEOUT:?}: {last}\ncontainerd log tail:\n{}",
            self.containerd().log_tail(30)
        );
    }

    /// The gRPC client.
    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    /// The private containerd (log, address).
    pub fn containerd(&self) -> &PrivateContainerd {
        self.cd.as_ref().expect("containerd running")
    }

    /// The test's private directory (containerd's root and state live in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Parent of the pods' log directories.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }

    /// The network slot (subnet, bridge).
    pub fn net(&self) -> &NetSlot {
        &self.net
    }

    /// PullImage busybox through CRI (from the private registry via the docker.io mirror).
    pub fn pull_busybox(&self) -> String {
        self.cri
            .pull(spec::BUSYBOX)
            .unwrap_or_else(|e| panic!("PullImage {}: {e}\n{}", spec::BUSYBOX, self.log_tail()))
    }

    /// RunPodSandbox, tracking the sandbox and its netns for the leak check.
    pub fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> CriResult<String> {
        let id = self.cri.run_pod(config, handler)?;
        self.containerd().track_id_in(CRI_NAMESPACE, &id);
        if let Some(ns) = self.pod_netns(&id) {
            self.containerd().track_path(&ns);
        }
        Ok(id)
    }

    /// CreateContainer, tracking the container for the leak check.
    pub fn create_container(
        &self,
        pod: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> CriResult<String> {
        let id = self.cri.create_container(pod, config, pod_config)?;
        self.containerd().track_id_in(CRI_NAMESPACE, &id);
        Ok(id)
    }

    /// Track for the leak check every task id of CRI's namespace that containerd's log names
    /// (`.../io.containerd.runtime.v2.task/k8s.io/<id>`): also the sandboxes and containers
    /// whose RunPodSandbox or CreateContainer failed, whose ids CRI never returned. Returns them.
    pub fn track_ids_from_log(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.containerd().log_path()).unwrap_or_default();
        let marker = format!("io.containerd.runtime.v2.task/{CRI_NAMESPACE}/");
        let mut ids: Vec<String> = log
            .match_indices(&marker)
            .map(|(i, m)| {
                log[i + m.len()..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>()
            })
            .filter(|id| id.len() == 64)
            .collect();
        ids.sort();
        ids.dedup();
        for id in &ids {
            self.containerd().track_id_in(CRI_NAMESPACE, id);
        }
        ids
    }

    /// The pod's network namespace path, from containerd's verbose status.
    pub fn pod_netns(&self, pod: &str) -> Option<PathBuf> {
        let st = self.cri.pod_status(pod).ok()?;
        let info: serde_json::Value = serde_json::from_str(st.info.get("info")?).ok()?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["type"] == "network")?["path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// The pod's IP (PodSandboxStatus).
    pub fn pod_ip(&self, pod: &str) -> String {
        let st = self
            .cri
            .pod_status(pod)
            .unwrap_or_else(|e| panic!("PodSandboxStatus {pod}: {e}"));
        st.status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| panic!("pod {pod} has no IP"))
    }

    /// The tail of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "containerd log tail:\n{}",
            self.cd.as_ref().map(|c| c.log_tail(30)).unwrap_or_default()
        )
    }

    /// Stop and remove whatever pods remain (each is reported: a test removes its own), stop
    /// the registry and containerd, and report every leftover; then clean up by force.
    pub fn stop(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut report = Vec::new();
        match self.cri.list_containers() {
            Ok(cs) => report.extend(
                cs.iter()
                    .map(|c| format!("CRI container {} still exists at teardown", c.id)),
            ),
            Err(e) => report.push(format!("ListContainers at teardown: {e}")),
        }
        if let Ok(pods) = self.cri.list_pods() {
            for p in pods {
                report.push(format!("CRI pod {} still exists at teardown", p.id));
                if let Err(e) = self.cri.stop_pod(&p.id) {
                    report.push(format!("StopPodSandbox {} at teardown: {e}", p.id));
                }
                if let Err(e) = self.cri.remove_pod(&p.id) {
                    report.push(format!("RemovePodSandbox {} at teardown: {e}", p.id));
                }
            }
        }
        self.registry.stop();
        if let Some(cd) = self.cd.take() {
            let log = cd.log_path().to_path_buf();
            let failed = std::thread::panicking();
            let mut left = cd.stop_keeping_log();
            if failed || !left.is_empty() || !report.is_empty() {
                match keep_log(&log) {
                    Some(kept) => {
                        eprintln!("cri harness: containerd log kept in {}", kept.display())
                    }
                    None => left.push(format!("cannot keep {}", log.display())),
                }
            }
            let _ = std::fs::remove_file(&log);
            let _ = std::fs::remove_dir(log.parent().unwrap_or(&log));
            report.extend(left);
        }
        report.extend(self.net.leftover_rules());
        report
    }
}

/// Copy a failed test's containerd log (with the shims' logs in it) to
/// `$CARGO_TARGET_TMPDIR/cri-logs/<private dir name>.log` (an example: the temp dir's
/// `cri-logs`), outside the directory teardown removes.
fn keep_log(log: &Path) -> Option<PathBuf> {
    let name = log.parent()?.file_name()?.to_string_lossy().into_owned();
    let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tmp.join("cri-logs");
    std::fs::create_dir_all(&dir).ok()?;
    let kept = dir.join(format!("{name}.log"));
    std::fs::copy(log, &kept).ok()?;
    Some(kept)
}

/// Removes its directory when dropped, unless disarmed (`.0 = None`).
#[derive(Debug)]
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("cri harness: dropped with leftovers (call stop() to assert): {left:?}");
        }
    }
}

/// containerd 1.6's CRI plugin tables: runtimes `runc` (default) and `hull`, our CNI dirs,
/// docker.io mirrored to the private registry, the streaming server on a loopback port.
pub fn cri_toml(cni_conf_dir: &Path, registry: &str, stream_port: u16) -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]
      runtime_type = "io.containerd.hull.v2"
      pod_annotations = ["io.hull.*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://{registry}"]
"#,
        bin = net::CNI_BIN_DIR,
        conf = cni_conf_dir.display(),
    )
}
