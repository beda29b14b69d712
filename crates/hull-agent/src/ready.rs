//! Telling the host the agent serves: one connection to the host (CID 2) on READY_VSOCK_PORT.
//! The host waits for it before connecting, so it never talks to a half-initialised device.

use std::os::fd::AsRawFd;
use std::time::Duration;

use hull_protocol::{READY_LINE, READY_VSOCK_PORT};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};

const VMADDR_CID_HOST: u32 = 2;

/// Announce readiness, retrying briefly; a host that does not listen (native vhost-vsock)
/// refuses at once and that is fine.
pub fn announce() {
    for attempt in 0..20 {
        match try_once() {
            Ok(()) => {
                tracing::info!(
                    port = READY_VSOCK_PORT,
                    uptime_ms = uptime_ms(),
                    "told the host the agent is ready"
                );
                return;
            }
            Err(nix::errno::Errno::ECONNREFUSED) | Err(nix::errno::Errno::ECONNRESET) => {
                tracing::debug!("host does not wait for a ready connection");
                return;
            }
            Err(e) => {
                tracing::debug!(attempt, error = %e, "ready connection failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn try_once() -> nix::Result<()> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(
        fd.as_raw_fd(),
        &VsockAddr::new(VMADDR_CID_HOST, READY_VSOCK_PORT),
    )?;
    nix::unistd::write(&fd, READY_LINE)?;
    Ok(())
}

/// Guest uptime in milliseconds (0 if /proc/uptime cannot be read): where boot time goes.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1000.0) as u64)
}
