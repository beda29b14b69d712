//! Errors of guest asset building and checking.
//! Each message is one line that names the file involved and, where it helps, the fix.

use std::path::PathBuf;

use super::elf::ElfError;

/// Errors from building, locating or verifying the guest kernel and initrd.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// A host file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// what we were doing, with the path
        context: String,
        /// the OS error
        source: std::io::Error,
    },
    /// An installed asset is missing.
    #[error("guest {what} {path} does not exist; run `hull assets build`")]
    Missing {
        /// "kernel" or "initrd"
        what: &'static str,
        /// where it should be
        path: PathBuf,
    },
    /// An installed asset exists but is not what it should be.
    #[error("guest {what} {path} is not usable: {reason}; run `hull assets build`")]
    Invalid {
        /// "kernel" or "initrd"
        what: &'static str,
        /// the file
        path: PathBuf,
        /// what is wrong with it
        reason: String,
    },
    /// No hull-agent binary was found for the initrd.
    #[error("hull-agent not found (tried {tried}); pass --agent PATH or set assets.agent")]
    AgentNotFound {
        /// the paths tried, comma separated
        tried: String,
    },
    /// The agent binary is dynamically linked: it cannot be PID 1 of an initrd without a libc.
    #[error(
        "hull-agent at {path} is dynamically linked; build it with --target x86_64-unknown-linux-musl"
    )]
    AgentDynamic {
        /// the agent binary
        path: PathBuf,
    },
    /// The agent binary is not an x86-64 ELF executable.
    #[error("hull-agent at {path} is not usable: {reason}")]
    AgentInvalid {
        /// the agent binary
        path: PathBuf,
        /// what is wrong with it
        reason: ElfError,
    },
    /// The kernel source tarball is missing.
    #[error("kernel source {path} not found; install it with `apt-get install linux-source-6.1`")]
    KernelSourceMissing {
        /// the tarball named by assets.kernel_source
        path: PathBuf,
    },
    /// After olddefconfig the kernel .config does not honour lines of the fragment.
    #[error("kernel config does not honour these lines of guest/kernel/hull.config: {}", missing.join(", "))]
    KernelConfig {
        /// the fragment's `CONFIG_X=value` / `# CONFIG_X is not set` lines that .config contradicts
        missing: Vec<String>,
    },
    /// The kernel build finished but its output cannot be booted as Hull boots it.
    #[error("kernel build produced {path}, which is not usable: {reason}; log {log}")]
    KernelOutput {
        /// the stripped vmlinux in the build tree
        path: PathBuf,
        /// what is wrong with it
        reason: ElfError,
        /// the full build log
        log: PathBuf,
    },
    /// A kernel build step (tar, make...) failed.
    #[error("kernel build step `{step}` failed ({status}); log {log}; last lines: {tail}")]
    BuildStep {
        /// the command
        step: String,
        /// its exit status
        status: String,
        /// the full build log
        log: PathBuf,
        /// the log's last lines
        tail: String,
    },
}

impl AssetsError {
    /// An I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> AssetsError {
        AssetsError::Io {
            context: context.into(),
            source,
        }
    }
}
