//! The agent channel's host end: native AF_VSOCK when /dev/vhost-vsock exists, otherwise
//! hybrid vsock through vhost-device-vsock (a Unix socket and the `CONNECT <port>` handshake).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{VsockConfig, VsockMode};
use crate::daemon::{poll_until, Daemon, Notify};
use crate::error::{Error, Result};
use crate::vmm::VsockDevice;

/// Where the host connects to reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    /// Unix socket of a hybrid-vsock backend.
    Hybrid {
        /// the backend's host-side socket
        uds: PathBuf,
        /// guest port
        port: u32,
    },
    /// Native vsock.
    Vsock {
        /// guest CID
        cid: u32,
        /// guest port
        port: u32,
    },
}

/// The vsock device of one sandbox and, for hybrid vsock, its backend daemon.
#[derive(Debug)]
pub struct VsockBackend {
    /// What QEMU gets.
    pub device: VsockDevice,
    /// What the agent client connects to.
    pub address: AgentAddress,
    /// The vhost-user backend, if any.
    pub daemon: Option<Daemon>,
    /// Hybrid vsock: where the agent announces that it serves (guest-initiated connection).
    pub ready: Option<UnixListener>,
}

/// Which transport `mode` means on this host.
pub fn effective_mode(mode: VsockMode) -> VsockMode {
    match mode {
        VsockMode::Auto if Path::new("/dev/vhost-vsock").exists() => VsockMode::Vhost,
        VsockMode::Auto => VsockMode::Hybrid,
        m => m,
    }
}

/// Set up the vsock device for a sandbox whose state lives in `run_dir`.
pub fn start(
    cfg: &VsockConfig,
    run_dir: &Path,
    log: &Path,
    notify: Option<Notify>,
) -> Result<VsockBackend> {
    let port = hull_protocol::AGENT_VSOCK_PORT;
    match effective_mode(cfg.mode) {
        VsockMode::Vhost => {
            let cid = pick_cid();
            Ok(VsockBackend {
                device: VsockDevice::Vhost { cid },
                address: AgentAddress::Vsock { cid, port },
                daemon: None,
                ready: None,
            })
        }
        _ => {
            let vu = run_dir.join("vsock.vhost-user.sock");
            let uds = run_dir.join("vsock.sock");
            // Guest connections to host port P arrive on `<uds>_P`.
            let ready_path = PathBuf::from(format!(
                "{}_{}",
                uds.display(),
                hull_protocol::READY_VSOCK_PORT
            ));
            let ready = UnixListener::bind(&ready_path)
                .map_err(|e| Error::io(format!("listen on {}", ready_path.display()), e))?;
            let mut cmd = Command::new(&cfg.vhost_device_vsock);
            cmd.arg("--vm").arg(format!(
                "guest-cid=3,socket={},uds-path={}",
                vu.display(),
                uds.display()
            ));
            let daemon = Daemon::spawn_notify("vhost-device-vsock", cmd, Some(log), notify)?;
            if !poll_until(Duration::from_secs(10), || {
                vu.exists() || daemon.exited().is_some()
            }) || !vu.exists()
            {
                return Err(Error::Daemon {
                    name: "vhost-device-vsock".into(),
                    what: format!(
                        "did not create {} ({})",
                        vu.display(),
                        daemon
                            .exited()
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "still running".into())
                    ),
                });
            }
            Ok(VsockBackend {
                device: VsockDevice::VhostUser { socket: vu },
                address: AgentAddress::Hybrid { uds, port },
                daemon: Some(daemon),
                ready: Some(ready),
            })
        }
    }
}

fn pick_cid() -> u32 {
    // CIDs 0-2 are reserved; collisions make QEMU fail to start with a clear error.
    let seed = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0));
    3 + seed % 0x3fff_ffff
}

/// Connect to the agent: one attempt, `timeout` bounding the handshake.
pub fn connect(addr: &AgentAddress, timeout: Duration) -> std::io::Result<OwnedFd> {
    match addr {
        AgentAddress::Hybrid { uds, port } => {
            let mut s = UnixStream::connect(uds)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())?;
            let reply = read_line(&mut s, 64)?;
            if !reply.starts_with("OK ") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("hybrid vsock handshake answered {reply:?}"),
                ));
            }
            s.set_read_timeout(None)?;
            s.set_write_timeout(None)?;
            Ok(OwnedFd::from(s))
        }
        AgentAddress::Vsock { cid, port } => {
            use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
            let fd = socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &VsockAddr::new(*cid, *port),
            )?;
            Ok(fd)
        }
    }
}

/// Wait until the agent announces itself on `ready`, `timeout` passes, or `dead()` says why not.
pub fn wait_ready(
    ready: &UnixListener,
    timeout: Duration,
    mut dead: impl FnMut() -> Option<String>,
) -> std::result::Result<(), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + timeout;
    ready.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        if let Some(why) = dead() {
            return Err(why);
        }
        match ready.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                let line =
                    read_line(&mut s, 64).map_err(|e| format!("agent ready connection: {e}"))?;
                let want = String::from_utf8_lossy(hull_protocol::READY_LINE);
                if line != want.trim_end() {
                    return Err(format!("agent announced itself with {line:?}"));
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept agent ready connection: {e}")),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "agent did not answer within {}s (it never announced itself)",
                timeout.as_secs()
            ));
        }
        // Wake at least every 100 ms to notice a dead VM or helper.
        let wait = left.min(Duration::from_millis(100)).as_millis() as u16;
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(wait));
    }
}

/// Read one `\n`-terminated line byte by byte (nothing after it may be consumed), at most `max` bytes.
fn read_line(s: &mut impl Read, max: usize) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "handshake line too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn serve_once(
        reply: &'static [u8],
    ) -> (
        tempfile::TempDir,
        AgentAddress,
        std::thread::JoinHandle<String>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("v.sock");
        let l = UnixListener::bind(&uds).expect("bind");
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let got = read_line(&mut s, 64).expect("line");
            s.write_all(reply).expect("reply");
            got
        });
        (dir, AgentAddress::Hybrid { uds, port: 1024 }, h)
    }

    #[test]
    fn hybrid_handshake() {
        let (_d, addr, h) = serve_once(b"OK 1073741824\nTTRPC");
        let fd = connect(&addr, Duration::from_secs(5)).expect("connect");
        assert_eq!(h.join().expect("server"), "CONNECT 1024");
        // the byte after the OK line is still there for ttrpc
        let mut s = UnixStream::from(fd);
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).expect("rest");
        assert_eq!(&rest, b"TTRPC");
    }

    #[test]
    fn refused_and_garbage_handshakes_fail() {
        let (_d, addr, _h) = serve_once(b"");
        assert!(connect(&addr, Duration::from_secs(5)).is_err());
        let (_d2, addr2, _h2) = serve_once(&[b'x'; 200]);
        assert!(connect(&addr2, Duration::from_secs(5)).is_err());
    }
}
