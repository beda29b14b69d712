//! The Hull agent API shared by the host runtime and the guest agent:
//! generated protobuf messages, the ttrpc client/server, and the constants both sides agree on.

#![allow(missing_docs)]

/// Protobuf messages of the agent API.
#[allow(
    warnings,
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/sync/agent.rs"));
}

/// Synchronous ttrpc client (and sync server) of the agent API, used on the host.
#[allow(
    warnings,
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/sync/agent_ttrpc.rs"));
}

/// Asynchronous ttrpc server of the agent API, used in the guest.
#[cfg(feature = "async-server")]
#[allow(
    warnings,
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations
)]
pub mod agent_ttrpc_async {
    include!(concat!(env!("OUT_DIR"), "/async/agent_ttrpc.rs"));
}

/// Protobuf messages of the port-forward service (proto/forward.proto).
#[allow(
    warnings,
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations
)]
pub mod forward {
    include!(concat!(env!("OUT_DIR"), "/sync/forward.rs"));
}

/// Synchronous ttrpc client of the port-forward service, used on the host.
#[allow(
    warnings,
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations
)]
pub mod forward_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/sync/forward_ttrpc.rs"));
}

/// Asynchronous ttrpc server of the port-forward service, used in the guest.
#[cfg(feature = "async-server")]
#[allow(
    warnings,
    clippy::all,
    clippy::unwrap_used,
    missing_debug_implementations
)]
pub mod forward_ttrpc_async {
    include!(concat!(env!("OUT_DIR"), "/async/forward_ttrpc.rs"));
}

pub use ttrpc;

pub mod mount_options;
pub mod network;
pub mod portfwd;
mod stats;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod volume;
pub use mount_options::MountOptions;
pub use stats::ContainerStats;

/// AF_VSOCK port the agent listens on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Host port the agent connects to (and writes READY_LINE) once it serves: the host's
/// "agent ready" event. The host must not connect earlier (see docs/architecture notes
/// on vhost-device-vsock: a host connection before the guest driver is up can wedge it).
pub const READY_VSOCK_PORT: u32 = 1025;
/// What the agent writes on the ready connection.
pub const READY_LINE: &[u8] = b"hull-agent ready\n";
/// virtio-fs / 9p tag of the sandbox's shared directory.
pub const SHARED_FS_TAG: &str = "hullshared";
/// Where the agent mounts the shared directory in the guest.
pub const GUEST_SHARED_DIR: &str = "/run/hull/shared";
/// Where the guest mounts its per-pod volumes (tmpfs), one directory per volume id.
pub const GUEST_VOLUMES_DIR: &str = "/run/hull/volumes";
/// Largest chunk returned by one ReadStdout/ReadStderr call.
pub const MAX_READ_CHUNK: u32 = 64 * 1024;
/// Largest stdin chunk accepted by one WriteStdin call.
pub const MAX_WRITE_CHUNK: usize = 64 * 1024;
/// Largest OCI spec accepted by CreateContainer/ExecProcess.
pub const MAX_SPEC_LEN: usize = 1024 * 1024;
/// Largest `linux.resources` JSON UpdateContainer accepts.
pub const MAX_RESOURCES_LEN: usize = 64 * 1024;
/// Longest container or exec id.
pub const MAX_ID_LEN: usize = 128;
/// Most pids a ListPids reply may carry.
pub const MAX_PIDS: usize = 65_536;
/// Kernel command line keys read by the agent.
pub mod cmdline {
    /// `hull.sharedfs=virtiofs|9p|none`: how to mount the shared directory.
    pub const SHARED_FS: &str = "hull.sharedfs";
    /// `hull.log=error|warn|info|debug|trace`: agent log level (to the console).
    pub const LOG: &str = "hull.log";
    /// `hull.probe=1`: print PROBE_OK_MARKER on the console and power off (accelerator probe).
    pub const PROBE: &str = "hull.probe";
}
/// Printed on the guest console by an agent booted with `hull.probe=1`.
pub const PROBE_OK_MARKER: &str = "HULL-PROBE-OK";

/// Why an id was refused by [`validate_id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// Empty or longer than [`MAX_ID_LEN`].
    #[error("id must be 1..={MAX_ID_LEN} characters")]
    Length,
    /// Holds a character outside `[A-Za-z0-9_.-]`, or starts with '.'.
    #[error("id {0:?} may only hold [A-Za-z0-9_.-] and must not start with '.'")]
    Characters(String),
}

/// Check that a container or exec id is safe to use as a path component and bounded.
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(InvalidId::Length);
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(InvalidId::Characters(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{validate_id, InvalidId};

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1_2.x").is_ok());
        assert_eq!(validate_id(""), Err(InvalidId::Length));
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
        assert_eq!(validate_id(&"x".repeat(129)), Err(InvalidId::Length));
        assert_eq!(
            validate_id("a/b").expect_err("slash").to_string(),
            "id \"a/b\" may only hold [A-Za-z0-9_.-] and must not start with '.'"
        );
    }
}
