//! The shim process lifecycle as containerd drives it: `start` (spawn the serving shim and
//! print its socket), serve (private mount namespace, logging, the task service) and
//! `delete` (clean up after a shim that died).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config as ShimConfig, DeleteResponse, ExitSignal, Flags, StartOpts};
use hull_runtime::config::ConfigError;
use hull_runtime::Config;

use crate::events::{timestamp, Publisher};
use crate::pod::{Pod, SANDBOX_FILE, SANDBOX_ID_ANNOTATION};
use crate::task::TaskService;

/// The runtime name containerd knows us by.
pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

/// Exit status reported for a task whose shim died (as if SIGKILLed).
const DEAD_SHIM_STATUS: u32 = 128 + 9;

/// The shim.
pub struct HullShim {
    flags_id: String,
    namespace: String,
    config: Result<Config, ConfigError>,
    exit: Arc<ExitSignal>,
}

impl HullShim {
    fn load_config() -> Result<Config, ConfigError> {
        Config::load(None).map(|(c, _)| c)
    }
}

impl containerd_shim::Shim for HullShim {
    type T = TaskService;

    fn new(_runtime_id: &str, flags: &Flags, _config: &mut ShimConfig) -> Self {
        let serving = flags.action.is_empty();
        if serving {
            crate::logging::init(flags.debug, &flags.namespace, &flags.id);
            // Every mount of this pod lives in a namespace that dies with the shim and its
            // helpers, so not even a SIGKILLed shim can leave one behind. Done before any
            // thread exists, so all threads share it.
            if let Err(e) = hull_runtime::enter_private_mount_namespace() {
                tracing::error!(error = %e, "cannot enter a private mount namespace");
            }
        }
        HullShim {
            flags_id: flags.id.clone(),
            namespace: flags.namespace.clone(),
            config: Self::load_config(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // Containers of one pod share one shim (and one VM): group them by the sandbox id.
        let grouping = pod_grouping(Path::new("config.json")).unwrap_or_else(|| opts.id.clone());
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let sandbox_id = std::fs::read_to_string(SANDBOX_FILE)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.flags_id.clone());
        // containerd runs `delete` for every task whose connection closed, also for a pod's
        // container while the pod's shim still serves the sandbox: only the sandbox's own task
        // may end a live shim (one that hung); a container's never does.
        let is_sandbox = sandbox_id == self.flags_id;
        match &self.config {
            Ok(config) => cleanup_dead_sandbox(&config.runtime.run_dir, &sandbox_id, is_sandbox),
            Err(e) => eprintln!("containerd-shim-hull-v2 delete: hull configuration: {e}"),
        }
        crate::socket::remove_dead();
        let mut r = DeleteResponse::new();
        r.exit_status = DEAD_SHIM_STATUS;
        r.exited_at = Some(timestamp(SystemTime::now())).into();
        Ok(r)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let events = Arc::new(Publisher::new(publisher, &self.namespace));
        let config = match &self.config {
            Ok(c) => c.clone(),
            Err(e) => {
                tracing::error!(error = %e, "hull configuration unusable; using built-in defaults");
                Config::defaults()
            }
        };
        TaskService::new(Pod::new(config, events), self.exit.clone())
    }
}

/// The sandbox id annotation of the bundle's spec, if it has one.
fn pod_grouping(config_json: &Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(config_json).ok()?;
    spec.annotations()
        .as_ref()?
        .get(SANDBOX_ID_ANNOTATION)
        .cloned()
}

/// After a shim died: end it for good if it is somehow still there, then remove the sandbox's
/// run directory. Its helpers die with it (PDEATHSIG) and its mounts with its namespace.
fn cleanup_dead_sandbox(run_root: &Path, sandbox_id: &str, kill_live_owner: bool) {
    if let Err(e) = hull_runtime::cleanup_dead_sandbox(run_root, sandbox_id, kill_live_owner) {
        eprintln!("containerd-shim-hull-v2 delete: {e}");
    }
}
