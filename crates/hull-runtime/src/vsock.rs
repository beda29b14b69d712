//! The host end of the agent channel: the address the agent is reached at and one connection
//! attempt (native AF_VSOCK, hybrid vsock's `CONNECT <port>` handshake, or a plain Unix socket).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

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
    /// A Unix socket that leads straight to the agent (virtio-serial chardev, tests).
    Unix {
        /// the socket
        path: PathBuf,
    },
}

impl AgentAddress {
    /// The same guest reached on vsock `port` instead; `None` for a plain Unix socket, which
    /// leads to one port only.
    pub(crate) fn with_port(&self, port: u32) -> Option<AgentAddress> {
        match self {
            AgentAddress::Hybrid { uds, .. } => Some(AgentAddress::Hybrid {
                uds: uds.clone(),
                port,
            }),
            AgentAddress::Vsock { cid, .. } => Some(AgentAddress::Vsock { cid: *cid, port }),
            AgentAddress::Unix { .. } => None,
        }
    }
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
        AgentAddress::Unix { path } => Ok(OwnedFd::from(UnixStream::connect(path)?)),
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
    dead: &mut dyn FnMut() -> Option<Error>,
) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + timeout;
    let io = |what: &'static str| move |e: std::io::Error| Error::io(what, e);
    ready
        .set_nonblocking(true)
        .map_err(io("agent ready listener"))?;
    loop {
        if let Some(e) = dead() {
            return Err(e);
        }
        match ready.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)
                    .and_then(|()| s.set_read_timeout(Some(Duration::from_secs(5))))
                    .map_err(io("agent ready connection"))?;
                let line = read_line(&mut s, 64).map_err(io("agent ready connection"))?;
                let want = String::from_utf8_lossy(hull_protocol::READY_LINE);
                if line != want.trim_end() {
                    return Err(Error::Agent(format!("announced itself with {line:?}")));
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::io("accept agent ready connection", e)),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error::DeadlineExceeded(format!(
                "agent did not answer within {}s (it never announced itself)",
                timeout.as_secs()
            )));
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
