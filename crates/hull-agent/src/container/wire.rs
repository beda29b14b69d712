//! What the agent and its container helper tell each other: the helper's configuration (JSON on
//! a pipe) and the status lines (JSON) the helper writes back on its CLOEXEC status pipe.

use std::io::Write;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// argv[1] that makes the agent binary run as the container helper.
pub const HELPER_ARG: &str = "__hull-container-helper";

/// What the helper is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum HelperMode {
    /// Set up a new container from `spec` and wait on the start pipe before exec.
    Create {
        /// the validated OCI spec
        spec: Box<Spec>,
    },
    /// Enter the namespaces of `init_pid` and exec `process` at once.
    Exec {
        /// the validated OCI process
        process: Box<Process>,
        /// the container's seccomp profile, which applies to its exec'd processes too
        seccomp: Option<Box<LinuxSeccomp>>,
        /// the container's init process, as a guest pid
        init_pid: i32,
    },
}

/// The helper's whole input.
#[derive(Debug, Serialize, Deserialize)]
pub struct HelperConfig {
    /// for log messages
    pub container_id: String,
    /// the container's cgroup directory (already created by the agent)
    pub cgroup_dir: PathBuf,
    /// stdio fds 0-2 are a pty slave
    pub terminal: bool,
    /// create or exec
    pub mode: HelperMode,
}

/// The class of a setup error, mapped to a ttrpc code by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// bad spec or process
    InvalidArgument,
    /// a missing executable, cwd, mount source...
    NotFound,
    /// anything else
    Internal,
}

/// A setup failure inside the helper, reported to the agent as readable text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct HelperError {
    /// how the agent should report it
    pub kind: ErrorKind,
    /// for the host's user
    pub message: String,
}

impl HelperError {
    /// An internal error with context.
    pub fn internal(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        HelperError {
            kind: ErrorKind::Internal,
            message: format!("{context}: {err}"),
        }
    }

    /// A not-found error.
    pub fn not_found(message: impl Into<String>) -> Self {
        HelperError {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(message: impl Into<String>) -> Self {
        HelperError {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
        }
    }
}

impl From<HelperError> for AgentError {
    fn from(e: HelperError) -> Self {
        match e.kind {
            ErrorKind::InvalidArgument => AgentError::InvalidArgument(e.message),
            ErrorKind::NotFound => AgentError::NotFound(e.message),
            ErrorKind::Internal => AgentError::Internal(e.message),
        }
    }
}

/// One line on the status pipe. EOF after `Ready` (create) or `Pid` (exec) means the exec worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The process was forked; its pid in the guest's pid namespace (sent by the outer helper).
    Pid(i32),
    /// Create only: everything is set up, waiting on the start pipe.
    Ready,
    /// Setup or exec failed.
    Error(HelperError),
}

impl Status {
    /// Write this status as one line (well below PIPE_BUF, so atomic).
    pub fn send(&self, mut out: impl Write) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.truncate(4000);
            line.push(b'\n');
            let _ = out.write_all(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip() {
        let mut buf = Vec::new();
        Status::Pid(42).send(&mut buf);
        Status::Error(HelperError::not_found(
            "executable file not found in $PATH: foo",
        ))
        .send(&mut buf);
        let lines: Vec<Status> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("status line"))
            .collect();
        assert_eq!(lines[0], Status::Pid(42));
        let err: AgentError = match &lines[1] {
            Status::Error(e) => e.clone().into(),
            other => panic!("unexpected {other:?}"),
        };
        assert!(matches!(err, AgentError::NotFound(m) if m.contains("foo")));
    }
}
