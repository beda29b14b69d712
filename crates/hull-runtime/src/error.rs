//! The runtime's error type: one enum whose messages read well as a single line.
//! Callers at binary edges turn these into exit codes or ttrpc status codes.

use std::path::PathBuf;

/// Errors from sandboxes, containers and their helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Guest kernel / initrd missing or unusable.
    #[error("{0}")]
    Assets(String),
    /// A caller passed something invalid (an id, a spec, a path).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A helper binary is missing or unusable.
    #[error("{name} not usable at {path}: {reason}")]
    MissingBinary {
        /// which helper
        name: &'static str,
        /// where we looked
        path: PathBuf,
        /// why it is unusable
        reason: String,
    },
    /// A helper process (QEMU, virtiofsd, vsock backend) failed or died.
    #[error("{name} {what}")]
    Daemon {
        /// which helper
        name: String,
        /// what happened, with its exit status
        what: String,
    },
    /// The guest did not come up or stopped answering.
    #[error("guest {what}; console tail: {console_tail}")]
    Guest {
        /// what went wrong
        what: String,
        /// the last lines of the guest console
        console_tail: String,
    },
    /// The agent answered with an error or broke the protocol.
    #[error("agent: {0}")]
    Agent(String),
    /// A host OS operation failed.
    #[error("{context}: {source}")]
    Io {
        /// what we were doing
        context: String,
        /// the OS error
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A nix errno with what we were doing.
    pub fn sys(context: impl Into<String>, errno: nix::errno::Errno) -> Error {
        Error::io(context, std::io::Error::from(errno))
    }
}

/// Result with the runtime's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
