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
            ShimError::Runtime(hull_runtime::Error::NotFound(_)) => Code::NOT_FOUND,
            ShimError::Runtime(hull_runtime::Error::InvalidArgument(_)) => Code::INVALID_ARGUMENT,
            ShimError::Runtime(_) | ShimError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
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
        assert_eq!(
            code(ShimError::Runtime(hull_runtime::Error::InvalidArgument(
                "x".into()
            ))),
            Code::INVALID_ARGUMENT
        );
    }
}
