//! What a running sandbox shares with its containers and processes: the agent connection, the
//! host side of each container, and whether the VM is stopped or died (and how).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::agent::Agent;
use crate::console::Console;
use crate::error::{Death, Error, Result};
use crate::host::HostMounts;
use crate::spec::PodNamespaces;
use crate::volumes::Volumes;

/// How long a caller whose agent call broke waits for the cause (the VM's exit) to be known.
const DEATH_NOTICE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Life {
    death: Option<Death>,
    stopped: bool,
}

/// The shared state of one running sandbox.
#[derive(Debug)]
pub(crate) struct Guest {
    pub id: String,
    agent: Arc<Agent>,
    console: Arc<Console>,
    pub shared_dir: PathBuf,
    pub mounts: Arc<dyn HostMounts>,
    life: Mutex<Life>,
    changed: Condvar,
    /// The pod's shared namespaces (the container named like the sandbox holds them).
    pod: Mutex<PodNamespaces>,
    /// Host side of each container (its directory under the shared directory).
    pub containers: Mutex<HashMap<String, HostContainer>>,
    /// The pod's guest volumes (tmpfs and synced copies).
    pub volumes: Arc<Volumes>,
}

/// What the host keeps about a container: `<shared>/<id>`, everything the guest sees of it,
/// and its use of the pod's guest volumes.
#[derive(Debug)]
pub(crate) struct HostContainer {
    pub id: String,
    pub dir: PathBuf,
    pub mounts: Arc<dyn HostMounts>,
    pub volumes: Arc<Volumes>,
}

impl Drop for HostContainer {
    fn drop(&mut self) {
        self.volumes.detach(&self.id);
        if let Err(e) = self.mounts.remove_tree(&self.dir) {
            tracing::error!(dir = %self.dir.display(), error = %e, "container cleanup incomplete");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guest {
    pub fn new(
        id: &str,
        agent: Agent,
        console: Arc<Console>,
        shared_dir: PathBuf,
        mounts: Arc<dyn HostMounts>,
        vm_pid: i32,
    ) -> Guest {
        let agent = Arc::new(agent);
        Guest {
            id: id.to_string(),
            volumes: Arc::new(Volumes::new(agent.clone())),
            agent,
            console,
            shared_dir,
            mounts,
            life: Mutex::new(Life::default()),
            changed: Condvar::new(),
            pod: Mutex::new(PodNamespaces {
                host_pid: vm_pid,
                guest_pid: None,
            }),
            containers: Mutex::new(HashMap::new()),
        }
    }

    /// The agent, unless the sandbox is stopped or dead (then the error says which).
    pub fn agent(&self) -> Result<&Arc<Agent>> {
        let life = lock(&self.life);
        if let Some(d) = &life.death {
            return Err(self.died(d.clone()));
        }
        if life.stopped {
            return Err(self.stopped_error());
        }
        Ok(&self.agent)
    }

    /// Run one agent call, with its error explained by the sandbox's state.
    pub fn call<T>(&self, f: impl FnOnce(&Agent) -> Result<T>) -> Result<T> {
        let agent = self.agent()?;
        f(agent).map_err(|e| self.explain(e))
    }

    /// Replace a broken-connection error by its cause: the VM's (or a helper's) death, or
    /// the sandbox being stopped. A transport error waits briefly for that cause to be known.
    pub fn explain(&self, e: Error) -> Error {
        let life = lock(&self.life);
        let life = if matches!(e, Error::Unavailable(_)) {
            self.changed
                .wait_timeout_while(life, DEATH_NOTICE, |l| l.death.is_none() && !l.stopped)
                .unwrap_or_else(|p| p.into_inner())
                .0
        } else {
            life
        };
        if let Some(d) = &life.death {
            return self.died(d.clone());
        }
        if life.stopped {
            return self.stopped_error();
        }
        e
    }

    /// Record that a VM process died; every pending and later call fails naming it.
    pub fn record_death(&self, death: Death) {
        let mut life = lock(&self.life);
        if life.death.is_none() && !life.stopped {
            tracing::error!(sandbox = %self.id, %death, "sandbox failed");
            life.death = Some(death);
        }
        drop(life);
        self.changed.notify_all();
        self.agent.disconnect();
    }

    /// Mark the sandbox stopped: later calls fail with FailedPrecondition.
    pub fn mark_stopped(&self) {
        lock(&self.life).stopped = true;
        self.changed.notify_all();
    }

    /// Where the pod's namespaces are.
    pub fn pod_namespaces(&self) -> PodNamespaces {
        *lock(&self.pod)
    }

    /// Container `id` started with guest pid `pid`: if it is the pod's sandbox container (named
    /// like the sandbox), its namespaces are the pod's.
    pub fn started(&self, id: &str, pid: u32) {
        if id == self.id {
            lock(&self.pod).guest_pid = Some(pid);
        }
    }

    /// How the VM died, if it did.
    pub fn death(&self) -> Option<Death> {
        lock(&self.life).death.clone()
    }

    /// Cut the agent connection: every pending and later call fails at once.
    pub fn disconnect(&self) {
        self.agent.disconnect();
    }

    /// Wait up to `timeout` for the console reader to see the end of the console (the VMM
    /// exited) and close its file.
    pub fn console_closed(&self, timeout: Duration) -> bool {
        self.console.wait_closed(timeout)
    }

    /// The last lines of the guest console.
    pub fn console_tail(&self) -> String {
        self.console.tail(5)
    }

    fn died(&self, death: Death) -> Error {
        Error::Died {
            sandbox: self.id.clone(),
            death,
            console_tail: self.console.tail(3),
        }
    }

    fn stopped_error(&self) -> Error {
        Error::FailedPrecondition(format!("sandbox {} is stopped", self.id))
    }

    /// Fail unless the sandbox runs and container `id` exists on the host side.
    pub fn known(&self, id: &str) -> Result<()> {
        self.agent()?;
        if lock(&self.containers).contains_key(id) {
            Ok(())
        } else {
            Err(Error::NotFound(format!("container {id}")))
        }
    }

    /// Lock the container table.
    pub fn containers(&self) -> MutexGuard<'_, HashMap<String, HostContainer>> {
        lock(&self.containers)
    }
}
