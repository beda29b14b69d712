//! The agent's error type and its mapping onto ttrpc status codes.
//! Every failure that can reach the host goes through `AgentError`.

use ttrpc::Code;

/// An error answered to the host; the variant picks the ttrpc status code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request (ids, spec, process) is malformed or not allowed.
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown container or exec id, or a missing file the request depends on.
    #[error("{0}")]
    NotFound(String),
    /// The id is already in use.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state where the request makes sense.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something went wrong inside the guest.
    #[error("{0}")]
    Internal(String),
}

/// A step of PID 1's early set-up that failed. Early init logs these and goes on.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// what was being done
        what: String,
        /// the errno
        source: nix::errno::Errno,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// what was being done
        what: String,
        /// the OS error
        source: std::io::Error,
    },
}

impl InitError {
    /// A failed system call.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> InitError {
        let what = what.into();
        move |source| InitError::Sys { what, source }
    }

    /// A failed file operation.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
        let what = what.into();
        move |source| InitError::Io { what, source }
    }
}

impl AgentError {
    /// Wrap an OS error with some context.
    pub fn io(context: &str, err: impl std::fmt::Display) -> Self {
        AgentError::Internal(format!("{context}: {err}"))
    }

    /// The ttrpc status code of this error.
    pub fn code(&self) -> Code {
        match self {
            AgentError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            AgentError::NotFound(_) => Code::NOT_FOUND,
            AgentError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            AgentError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            AgentError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}
