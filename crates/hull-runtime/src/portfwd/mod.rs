//! CRI PortForward into a VM. containerd dials `localhost:<port>` inside the pod's network
//! namespace, where nothing of the guest listens; this relay keeps listeners there (127.0.0.1,
//! and ::1 where the namespace has it) for every port the guest reports listening on its
//! localhost, and carries each accepted connection over a vsock connection of its own to the
//! agent's forward channel (hull_protocol::portfwd), which connects to localhost in the guest.
//!
//! Threads: a watcher long-polls the agent (a ttrpc connection of its own) and hands changed
//! port sets to the acceptor; the acceptor polls the listeners and starts two threads per
//! connection (see `conn`). `stop` closes the listeners, cuts the connections and joins them all.
//!
//! Latency: the agent samples its TCP tables every 100 ms while a poll waits, so a listener
//! appears here about 100-200 ms after the guest server's listen(); a port-forward request
//! within that window is refused, as it would be with runc before the server listened.

mod conn;
mod netns;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::vsock::{self, AgentAddress};
use conn::{Conns, Refused};
pub use source::PortSource;
use source::{cut, AgentPorts};

/// Most guest ports listened on at once (the lowest ones win).
pub const MAX_LISTENED_PORTS: usize = 64;
/// Most forwarded connections open at once; more are closed right after accept.
pub const MAX_CONNECTIONS: usize = 64;
/// How often ports whose listener could not be made are tried again.
const RETRY_BIND: Duration = Duration::from_secs(2);
/// Accepts taken from one listener per wake-up.
const ACCEPT_BATCH: usize = 16;
/// Shortest time between two port-set changes taken from the guest.
const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(100);
/// Consecutive failed polls of the agent before the watcher gives up.
const MAX_POLL_FAILURES: u32 = 5;

/// Open the network namespace at `path` and check that it is one.
pub fn open_netns(path: &Path) -> Result<OwnedFd> {
    let bad = |why: String| {
        Error::InvalidArgument(format!("network namespace {}: {why}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let fd = OwnedFd::from(file);
    netns::bind_localhost(Some(&fd), &[]).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => bad("not a network namespace".into()),
        _ => bad(e.to_string()),
    })?;
    Ok(fd)
}

/// The port-forward relay of one sandbox.
#[derive(Debug)]
pub struct PortForwarder {
    id: String,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    cut_source: Option<OwnedFd>,
    watcher: Option<JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
    conns: Arc<Conns>,
    listening: Arc<Mutex<Vec<u16>>>,
}

impl PortForwarder {
    /// Relay into the guest reached at `agent` from listeners in the namespace `netns`
    /// (from [`open_netns`]).
    pub fn start(id: &str, netns: OwnedFd, agent: &AgentAddress) -> Result<PortForwarder> {
        let dial = agent
            .with_port(hull_protocol::portfwd::FORWARD_VSOCK_PORT)
            .ok_or_else(|| {
                Error::FailedPrecondition("port forwarding needs a vsock agent channel".into())
            })?;
        let fd = vsock::connect(agent, Duration::from_secs(10))
            .map_err(|e| Error::Unavailable(format!("port-forward agent connection: {e}")))?;
        let (source, cut_source) = AgentPorts::new(fd)?;
        Self::start_with(id, Some(netns), dial, Box::new(source), Some(cut_source))
    }

    /// `start` with a given port source and forward address; listeners in the current
    /// namespace when `netns` is `None`. `cut_source` is shut down at stop to unblock the source.
    pub fn start_with(
        id: &str,
        netns: Option<OwnedFd>,
        dial: AgentAddress,
        source: Box<dyn PortSource>,
        cut_source: Option<OwnedFd>,
    ) -> Result<PortForwarder> {
        let io = |e| Error::io("port-forward wake-up socket", e);
        let (wake, wake_rx) = UnixStream::pair().map_err(io)?;
        wake_rx.set_nonblocking(true).map_err(io)?;
        let wake_watcher = wake.try_clone().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Conns::new(MAX_CONNECTIONS);
        let listening = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let acceptor = Acceptor {
            id: id.to_string(),
            netns,
            dial,
            wake: wake_rx,
            ports: rx,
            stop: stop.clone(),
            conns: conns.clone(),
            listening: listening.clone(),
        };
        let spawn_err = |e| Error::io("start a port-forward thread", e);
        let acceptor = std::thread::Builder::new()
            .name("hull-pf-accept".into())
            .spawn(move || acceptor.run())
            .map_err(spawn_err)?;
        let mut pf = PortForwarder {
            id: id.to_string(),
            stop: stop.clone(),
            wake,
            cut_source,
            watcher: None,
            acceptor: Some(acceptor),
            conns,
            listening,
        };
        let sandbox = id.to_string();
        pf.watcher = Some(
            std::thread::Builder::new()
                .name("hull-pf-watch".into())
                .spawn(move || watch(&sandbox, source, &tx, &wake_watcher, &stop))
                .map_err(spawn_err)?,
        );
        Ok(pf)
    }

    /// The guest ports listened on now.
    pub fn ports(&self) -> Vec<u16> {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forwarded connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Close the listeners, cut every connection and join every thread. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = (&self.wake).write(&[1]);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        if let Some(fd) = self.cut_source.take() {
            cut(&fd);
        }
        if let Some(h) = self.watcher.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        self.conns.close_all();
        tracing::debug!(sandbox = %self.id, "port forwarding stopped");
    }
}

impl Drop for PortForwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `source` and hand every changed set to the acceptor.
fn watch(
    id: &str,
    mut source: Box<dyn PortSource>,
    tx: &mpsc::Sender<Vec<u16>>,
    wake: &UnixStream,
    stop: &AtomicBool,
) {
    let mut known: Vec<u16> = Vec::new();
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        match source.next(&known) {
            Ok(ports) => {
                failures = 0;
                if ports != known {
                    tracing::debug!(sandbox = %id, ?ports, "guest listening ports");
                    known = ports.clone();
                    if !hand_over(tx, wake, ports) {
                        return;
                    }
                    // A guest that changes its ports all the time costs the host at most
                    // this many rebinds a second.
                    std::thread::park_timeout(MIN_UPDATE_INTERVAL);
                }
            }
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                failures += 1;
                if matches!(e, Error::Unavailable(_)) || failures >= MAX_POLL_FAILURES {
                    tracing::warn!(sandbox = %id, error = %e, "port forwarding gives up polling the guest");
                    // Refused at once beats accepted and then dropped.
                    hand_over(tx, wake, Vec::new());
                    return;
                }
                tracing::debug!(sandbox = %id, error = %e, "polling the guest's ports failed");
                std::thread::park_timeout(Duration::from_millis(500));
            }
        }
    }
}

/// Give the acceptor a new port set; false when it is gone.
fn hand_over(tx: &mpsc::Sender<Vec<u16>>, mut wake: &UnixStream, ports: Vec<u16>) -> bool {
    if tx.send(ports).is_err() {
        return false;
    }
    let _ = wake.write(&[1]);
    true
}

/// The acceptor thread's state.
struct Acceptor {
    id: String,
    netns: Option<OwnedFd>,
    dial: AgentAddress,
    wake: UnixStream,
    ports: mpsc::Receiver<Vec<u16>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Conns>,
    listening: Arc<Mutex<Vec<u16>>>,
}

impl Acceptor {
    fn run(self) {
        let mut listeners: BTreeMap<u16, Vec<TcpListener>> = BTreeMap::new();
        let mut wanted: Vec<u16> = Vec::new();
        let mut warned: BTreeSet<u16> = BTreeSet::new();
        let mut retry_at: Option<Instant> = None;
        let mut full_warned = false;
        while !self.stop.load(Ordering::SeqCst) {
            let ready = self.wait(&listeners, retry_at);
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            for (port, i) in ready {
                let Some(l) = listeners.get(&port).and_then(|v| v.get(i)) else {
                    continue;
                };
                for _ in 0..ACCEPT_BATCH {
                    let stream = match l.accept() {
                        Ok((s, _)) => s,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(sandbox = %self.id, port, error = %e, "accept failed");
                            break;
                        }
                    };
                    let _ = stream.set_nonblocking(false);
                    match self.conns.spawn(&self.id, stream, port, &self.dial) {
                        Ok(()) => full_warned = false,
                        Err(Refused::Full) if !full_warned => {
                            full_warned = true;
                            tracing::warn!(sandbox = %self.id, limit = MAX_CONNECTIONS,
                                "too many port-forward connections; closing new ones");
                        }
                        Err(_) => {}
                    }
                }
            }
            let mut latest = None;
            while let Ok(set) = self.ports.try_recv() {
                latest = Some(set);
            }
            let due = retry_at.is_some_and(|t| Instant::now() >= t);
            if let Some(mut set) = latest {
                if set.len() > MAX_LISTENED_PORTS {
                    tracing::warn!(sandbox = %self.id, ports = set.len(), limit = MAX_LISTENED_PORTS,
                        "guest listens on more ports than are forwarded");
                    set.truncate(MAX_LISTENED_PORTS);
                }
                wanted = set;
            } else if !due {
                continue;
            }
            retry_at = self.reconcile(&mut listeners, &wanted, &mut warned);
        }
        listeners.clear();
        self.publish(&listeners);
    }

    /// Block until the wake-up socket or a listener is readable (or a retry is due); returns
    /// the readable listeners as (port, index).
    fn wait(
        &self,
        listeners: &BTreeMap<u16, Vec<TcpListener>>,
        retry_at: Option<Instant>,
    ) -> Vec<(u16, usize)> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        let mut index = Vec::new();
        for (&port, socks) in listeners {
            for (i, s) in socks.iter().enumerate() {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                index.push((port, i));
            }
        }
        let timeout = match retry_at {
            Some(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        if poll(&mut fds, timeout).is_err() {
            return Vec::new();
        }
        let readable = |f: &PollFd| {
            f.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
        };
        if readable(&fds[0]) {
            let mut buf = [0u8; 64];
            while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        }
        fds[1..]
            .iter()
            .zip(index)
            .filter(|(f, _)| readable(f))
            .map(|(_, at)| at)
            .collect()
    }

    /// Close listeners of ports no longer wanted and open the missing ones; returns when to
    /// try again for ports that could not be bound.
    fn reconcile(
        &self,
        listeners: &mut BTreeMap<u16, Vec<TcpListener>>,
        wanted: &[u16],
        warned: &mut BTreeSet<u16>,
    ) -> Option<Instant> {
        listeners.retain(|p, _| wanted.contains(p));
        warned.retain(|p| wanted.contains(p));
        let missing: Vec<u16> = wanted
            .iter()
            .copied()
            .filter(|p| !listeners.contains_key(p))
            .collect();
        let mut retry = None;
        if !missing.is_empty() {
            match netns::bind_localhost(self.netns.as_ref(), &missing) {
                Ok((bound, failed)) => {
                    for l in bound {
                        listeners.insert(l.port, l.sockets);
                    }
                    for (port, e) in failed {
                        if warned.insert(port) {
                            tracing::warn!(sandbox = %self.id, port, error = %e,
                                "cannot listen for port forwarding; retrying");
                        }
                        retry = Some(Instant::now() + RETRY_BIND);
                    }
                }
                Err(e) => {
                    tracing::warn!(sandbox = %self.id, error = %e, "cannot enter the pod network namespace");
                    retry = Some(Instant::now() + RETRY_BIND);
                }
            }
        }
        self.publish(listeners);
        retry
    }

    fn publish(&self, listeners: &BTreeMap<u16, Vec<TcpListener>>) {
        *self.listening.lock().unwrap_or_else(|p| p.into_inner()) =
            listeners.keys().copied().collect();
    }
}

#[cfg(test)]
mod tests;
