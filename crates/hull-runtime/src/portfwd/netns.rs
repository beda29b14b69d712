//! Listening sockets inside another network namespace: a short-lived thread enters the
//! namespace, binds, and ends; the sockets stay in the namespace they were made in.

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};

/// The listeners of one port: 127.0.0.1, and ::1 where the namespace has IPv6 loopback.
#[derive(Debug)]
pub struct PortListeners {
    /// the port
    pub port: u16,
    /// non-blocking listening sockets
    pub sockets: Vec<TcpListener>,
}

/// Ports that could not be listened on, and why.
pub type Failed = Vec<(u16, std::io::Error)>;

/// Bind localhost listeners for each of `ports` in `netns` (the current namespace when `None`).
/// A port whose 127.0.0.1 bind fails is returned in the error list with why.
pub fn bind_localhost(
    netns: Option<&OwnedFd>,
    ports: &[u16],
) -> std::io::Result<(Vec<PortListeners>, Failed)> {
    let bind_all = || {
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for &port in ports {
            match bind_port(port) {
                Ok(l) => ok.push(l),
                Err(e) => failed.push((port, e)),
            }
        }
        (ok, failed)
    };
    let Some(ns) = netns else {
        return Ok(bind_all());
    };
    let ns = ns.as_fd();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("hull-pf-netns".into())
            .spawn_scoped(s, || {
                // Only this thread changes namespace, and it ends right after binding.
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(bind_all())
            })?
            .join()
            .map_err(|_| std::io::Error::other("netns thread panicked"))?
    })
}

fn bind_port(port: u16) -> std::io::Result<PortListeners> {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    v4.set_nonblocking(true)?;
    let mut sockets = vec![v4];
    // No IPv6 (or no ::1 on lo) in the namespace: IPv4 alone, as containerd 1.6 dials tcp4.
    if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        v6.set_nonblocking(true)?;
        sockets.push(v6);
    }
    Ok(PortListeners { port, sockets })
}
