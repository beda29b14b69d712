//! hull-agent as a library: everything PID 1 of the guest does, split so that the container
//! helper and the process/stdio layer can be driven without the ttrpc server (tests, tooling).

pub mod cmdline;
pub mod container;
pub mod error;
pub mod exit;
pub mod forward;
pub mod init;
pub mod logging;
pub mod network;
pub mod process;
pub mod ready;
pub mod reaper;
pub mod rootfs;
pub mod server;
pub mod stdio;
pub mod volumes;

pub use error::AgentError;
