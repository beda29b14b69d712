//! Task events sent back to containerd (create, start, exit, delete, exec, pause, resume).
//! Publishing failures are logged, never fatal: containerd also learns state through RPCs.

use std::time::{Duration, SystemTime};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;

/// An event and its topic.
#[derive(Debug, Clone)]
pub enum Event {
    /// A task was created.
    Create {
        id: String,
        bundle: String,
        pid: u32,
    },
    /// The init process started.
    Start { id: String, pid: u32 },
    /// A process exited (`exec_id` "" = init).
    Exit {
        id: String,
        exec_id: String,
        pid: u32,
        status: u32,
        at: SystemTime,
    },
    /// A process of the task's container was OOM-killed.
    Oom { id: String },
    /// A task was deleted.
    Delete {
        id: String,
        pid: u32,
        status: u32,
        at: SystemTime,
    },
    /// An exec was added.
    ExecAdded { id: String, exec_id: String },
    /// An exec started.
    ExecStarted {
        id: String,
        exec_id: String,
        pid: u32,
    },
    /// The task was paused.
    Paused { id: String },
    /// The task was resumed.
    Resumed { id: String },
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    ts
}

impl Event {
    fn into_message(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            Event::Create { id, bundle, pid } => {
                let mut e = TaskCreate::new();
                e.container_id = id;
                e.bundle = bundle;
                e.pid = pid;
                (topics::TASK_CREATE_EVENT_TOPIC, Box::new(e))
            }
            Event::Start { id, pid } => {
                let mut e = TaskStart::new();
                e.container_id = id;
                e.pid = pid;
                (topics::TASK_START_EVENT_TOPIC, Box::new(e))
            }
            Event::Oom { id } => {
                let mut e = TaskOOM::new();
                e.container_id = id;
                (topics::TASK_OOM_EVENT_TOPIC, Box::new(e))
            }
            Event::Exit {
                id,
                exec_id,
                pid,
                status,
                at,
            } => {
                let mut e = TaskExit::new();
                e.id = if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id
                };
                e.container_id = id;
                e.pid = pid;
                e.exit_status = status;
                e.exited_at = Some(timestamp(at)).into();
                (topics::TASK_EXIT_EVENT_TOPIC, Box::new(e))
            }
            Event::Delete {
                id,
                pid,
                status,
                at,
            } => {
                let mut e = TaskDelete::new();
                e.id = id.clone();
                e.container_id = id;
                e.pid = pid;
                e.exit_status = status;
                e.exited_at = Some(timestamp(at)).into();
                (topics::TASK_DELETE_EVENT_TOPIC, Box::new(e))
            }
            Event::ExecAdded { id, exec_id } => {
                let mut e = TaskExecAdded::new();
                e.container_id = id;
                e.exec_id = exec_id;
                (topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(e))
            }
            Event::ExecStarted { id, exec_id, pid } => {
                let mut e = TaskExecStarted::new();
                e.container_id = id;
                e.exec_id = exec_id;
                e.pid = pid;
                (topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(e))
            }
            Event::Paused { id } => {
                let mut e = TaskPaused::new();
                e.container_id = id;
                (topics::TASK_PAUSED_EVENT_TOPIC, Box::new(e))
            }
            Event::Resumed { id } => {
                let mut e = TaskResumed::new();
                e.container_id = id;
                (topics::TASK_RESUMED_EVENT_TOPIC, Box::new(e))
            }
        }
    }
}

/// Where events go.
pub trait Sink: Send + Sync {
    /// Deliver one event.
    fn send(&self, event: Event);
}

/// containerd's event service, through the publisher the shim framework connected.
pub struct Publisher {
    remote: RemotePublisher,
    namespace: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Publisher {
    /// Publish into `namespace` through `remote`.
    pub fn new(remote: RemotePublisher, namespace: &str) -> Self {
        Publisher {
            remote,
            namespace: namespace.to_string(),
        }
    }
}

impl Sink for Publisher {
    fn send(&self, event: Event) {
        let (topic, msg) = event.into_message();
        let ctx = containerd_shim::protos::ttrpc::context::with_timeout(
            Duration::from_secs(5).as_nanos() as i64,
        );
        if let Err(e) = self.remote.publish(ctx, topic, &self.namespace, msg) {
            tracing::warn!(topic, error = %e, "could not publish event");
        } else {
            tracing::debug!(topic, "event published");
        }
    }
}
