//! Shim errors and their ttrpc status codes: containerd shows the message, and the code
//! tells it (and ctr) what kind of failure it was.

use containerd_shim::protos::ttrpc::{self, Code};

/// What went wrong in a task request.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No such task or process.
    #[error("{0}: not found")]
    NotFound(String),
    /// The id is taken.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The task is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Hull does not do this.
    #[error("{0} is not supported by hull")]
    Unimplemented(&'static str),
    /// The sandbox or the guest failed.
    #[error(transparent)]
    Runtime(#[from] hull_runtime::Error),
    /// Anything else on the host.
    #[error("{0}")]
    Internal(String),
}

/// Result of a shim operation.
pub type Result<T> = std::result::Result<T, ShimError>;

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let code = match &e {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Runtime(e) => runtime_code(e),
            ShimError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

/// The ttrpc code of a runtime error: the agent's codes travel through unchanged; a dead VM
/// or helper is UNAVAILABLE.
fn runtime_code(e: &hull_runtime::Error) -> Code {
    use hull_runtime::Error as E;
    match e {
        E::NotFound(_) => Code::NOT_FOUND,
        E::InvalidArgument(_) | E::Config(_) => Code::INVALID_ARGUMENT,
        E::AlreadyExists(_) => Code::ALREADY_EXISTS,
        E::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        E::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
        E::Unavailable(_) | E::Died { .. } => Code::UNAVAILABLE,
        E::Assets(_) | E::MissingBinary { .. } => Code::FAILED_PRECONDITION,
        E::Daemon { .. } | E::Guest { .. } | E::Agent(_) | E::Io { .. } => Code::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let code = |e: ShimError| match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => s.code(),
            other => panic!("not a status: {other:?}"),
        };
        assert_eq!(code(ShimError::NotFound("task t1".into())), Code::NOT_FOUND);
        assert_eq!(
            code(ShimError::Unimplemented("checkpoint")),
            Code::UNIMPLEMENTED
        );
        let rt = |e: hull_runtime::Error| code(ShimError::Runtime(e));
        use hull_runtime::Error as E;
        assert_eq!(rt(E::InvalidArgument("x".into())), Code::INVALID_ARGUMENT);
        assert_eq!(rt(E::AlreadyExists("x".into())), Code::ALREADY_EXISTS);
        assert_eq!(
            rt(E::FailedPrecondition("x".into())),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(rt(E::DeadlineExceeded("x".into())), Code::DEADLINE_EXCEEDED);
        assert_eq!(rt(E::Unavailable("x".into())), Code::UNAVAILABLE);
        let died = E::Died {
            sandbox: "p1".into(),
            death: hull_runtime::Death {
                name: "qemu".into(),
                how: "killed by signal 9 (SIGKILL)".into(),
            },
            console_tail: "(empty)".into(),
        };
        assert!(
            died.to_string().contains("qemu exited: killed by signal 9"),
            "{died}"
        );
        assert_eq!(rt(died), Code::UNAVAILABLE);
    }
}
