//! The runtime's error type: one enum whose messages read well as a single line, with a
//! variant for each code that means something to callers (the shim maps them to ttrpc codes).

use std::path::PathBuf;

/// Errors from sandboxes, containers and their helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Guest kernel / initrd missing or unusable.
    #[error(transparent)]
    Assets(#[from] crate::assets::AssetsError),
    /// A caller passed something invalid (an id, a spec, a path).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A thing with that name exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The thing is not in a state that allows the request (e.g. started twice, sandbox stopped).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A call did not finish in time.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The guest or a helper cannot be reached (not the VM's death: see `Died`).
    #[error("unavailable: {0}")]
    Unavailable(String),
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
    /// A helper process (QEMU, virtiofsd, vsock backend) could not be started or misbehaved.
    #[error("{name} {what}")]
    Daemon {
        /// which helper
        name: String,
        /// what happened
        what: String,
    },
    /// The VM or one of its helpers died: names it and how (`qemu exited: killed by signal 9`).
    #[error("sandbox {sandbox}: {death}; console tail: {console_tail}")]
    Died {
        /// the sandbox
        sandbox: String,
        /// which process and how it ended
        death: Death,
        /// the last lines of the guest console
        console_tail: String,
    },
    /// The guest did not come up.
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

/// Which helper process ended and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// "qemu", "virtiofsd", "vhost-device-vsock"
    pub name: String,
    /// "killed by signal 9 (SIGKILL)" or "exited with status 1"
    pub how: String,
}

impl Death {
    /// Describe the end of helper `name` from its wait status.
    pub fn of(name: &str, status: std::process::ExitStatus) -> Death {
        Death {
            name: name.to_string(),
            how: describe_status(status),
        }
    }
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.how.starts_with("killed") {
            write!(f, "{} exited: {}", self.name, self.how)
        } else {
            write!(f, "{} {}", self.name, self.how)
        }
    }
}

/// "exited with status N" or "killed by signal N (NAME)".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => status.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn deaths_name_the_signal() {
        let d = Death::of("qemu", std::process::ExitStatus::from_raw(9));
        assert_eq!(d.to_string(), "qemu exited: killed by signal 9 (SIGKILL)");
        let d = Death::of("virtiofsd", std::process::ExitStatus::from_raw(1 << 8));
        assert_eq!(d.to_string(), "virtiofsd exited with status 1");
    }
}
