//! Hull runtime library: a sandbox is one lightweight VM holding containers.
//! `Sandbox`, `Container` and `Process` are the way to run things; the shim and the `hull`
//! CLI are thin callers of them. Transports and daemons stay private to this crate.

mod agent;
pub mod assets;
pub mod binaries;
pub mod check;
pub mod config;
mod console;
mod container;
mod daemon;
pub mod error;
mod guest;
mod host;
mod hostcgroup;
mod io;
mod mounts;
pub mod network;
mod owner;
mod portfwd;
mod process;
mod sandbox;
mod sharedfs;
pub mod spec;
#[cfg(test)]
use hull_protocol::test_support;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod vmm;
pub mod volumes;
mod vsock;

pub use config::Config;
pub use container::{Container, ContainerStats};
pub use daemon::poll_until;
pub use error::{Death, Error, Result};
pub use host::{HostMounts, RealMounts};
pub use io::Stdio;
pub use mounts::enter_private_mount_namespace;
pub use process::{Exit, Process};
pub use sandbox::{BootTimes, Sandbox, SandboxOptions, Seams};
pub use vsock::AgentAddress;

/// The last non-empty line of `text`, trimmed (for one-line error messages).
pub fn tail_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The last `n` non-empty lines of `text`, joined with " | " (for one-line error messages).
pub fn tail_lines(text: &str, n: usize) -> String {
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .take(n)
        .collect();
    lines.reverse();
    lines.join(" | ")
}

/// Remove what is left of sandbox `id` under `run_root` after its owner died, then unmount and
/// remove the run directory; its helpers die with the owner (parent-death signal). An owner
/// that is still alive (checked by pid and start time) is killed when `kill_live_owner`, else
/// left alone with its directory.
pub fn cleanup_dead_sandbox(
    run_root: &std::path::Path,
    id: &str,
    kill_live_owner: bool,
) -> Result<()> {
    hull_protocol::validate_id(id).map_err(|e| Error::InvalidArgument(format!("sandbox {e}")))?;
    let dir = run_root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    if let Some(pid) = owner::live_owner(&dir) {
        if !kill_live_owner {
            return Ok(());
        }
        if pid != std::process::id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            if !poll_until(std::time::Duration::from_secs(10), || {
                owner::live_owner(&dir).is_none()
            }) {
                return Err(Error::Unavailable(format!(
                    "owner {pid} of sandbox {id} does not die"
                )));
            }
        }
    }
    // Its processes are gone (PDEATHSIG), so the cgroups it made can go.
    hostcgroup::remove_recorded(&dir);
    mounts::remove_dir_if_unmounted(&dir)
}
