//! One forwarded connection: a new agent-channel connection to the guest's forward port, the
//! `PORT <n>` request and its reply, then two threads copying bytes until both directions end.
//! `Conns` tracks the open ones so that stopping can cut them and join their threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hull_protocol::portfwd::{self, LineError, FRAME_HEADER, MAX_FRAME, MAX_REPLY_LEN};
use nix::sys::socket::{setsockopt, shutdown, sockopt, Shutdown};

use crate::vsock::{self, AgentAddress};

/// Bound on the connect + `CONNECT`/`PORT` handshakes with the guest.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack of the relay threads (the copy buffer is on the heap).
const STACK: usize = 128 * 1024;

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    closing: bool,
    /// id -> (duplicates of its sockets, to cut it; its thread)
    open: HashMap<u64, (Vec<OwnedFd>, Option<JoinHandle<()>>)>,
}

/// The open forwarded connections of one sandbox, at most `max`.
#[derive(Debug)]
pub struct Conns {
    inner: Mutex<Inner>,
    max: usize,
}

/// Why a connection was not relayed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max` connections are open.
    Full,
    /// The relay is stopping.
    Closing,
}

impl Conns {
    /// No connections yet; at most `max` at once.
    pub fn new(max: usize) -> Arc<Conns> {
        Arc::new(Conns {
            inner: Mutex::new(Inner::default()),
            max,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Relay `client` (accepted on `port`) to the guest through `dial` on a thread of its own.
    pub fn spawn(
        self: &Arc<Self>,
        sandbox: &str,
        client: TcpStream,
        port: u16,
        dial: &AgentAddress,
    ) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.closing {
            return Err(Refused::Closing);
        }
        if inner.open.len() >= self.max {
            return Err(Refused::Full);
        }
        let id = inner.next;
        inner.next += 1;
        let cut = OwnedFd::from(client.try_clone().map_err(|_| Refused::Full)?);
        let conns = self.clone();
        let dial = dial.clone();
        let sandbox = sandbox.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("hull-pf-{port}"))
            .stack_size(STACK)
            .spawn(move || {
                match relay(&conns, id, client, port, &dial) {
                    Ok((up, down)) => {
                        tracing::debug!(sandbox = %sandbox, port, up, down, "port forward done")
                    }
                    Err(e) => {
                        tracing::info!(sandbox = %sandbox, port, error = %e, "port forward failed")
                    }
                }
                // Stopping takes the entry (and joins this thread) instead.
                conns.lock().open.remove(&id);
            });
        match spawned {
            Ok(h) => {
                inner.open.insert(id, (vec![cut], Some(h)));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a port-forward thread");
                Err(Refused::Full)
            }
        }
    }

    /// Keep a duplicate of `fd` to cut connection `id` with; false when stopping has begun.
    fn register(&self, id: u64, fd: &impl AsFd) -> bool {
        let mut inner = self.lock();
        if inner.closing {
            return false;
        }
        match (inner.open.get_mut(&id), fd.as_fd().try_clone_to_owned()) {
            (Some((fds, _)), Ok(dup)) => {
                fds.push(dup);
                true
            }
            // Not yet inserted cannot happen: spawn holds the lock until it is.
            _ => false,
        }
    }

    /// Cut every connection and wait for their threads; later `spawn`s are refused.
    pub fn close_all(&self) {
        let taken: Vec<_> = {
            let mut inner = self.lock();
            inner.closing = true;
            inner.open.drain().map(|(_, v)| v).collect()
        };
        let mut handles = Vec::new();
        for (fds, h) in taken {
            for fd in &fds {
                let _ = shutdown(fd.as_raw_fd(), Shutdown::Both);
            }
            handles.extend(h);
        }
        for h in handles {
            let _ = h.join();
        }
    }
}

/// Why one relay failed.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("guest: {0}")]
    Guest(LineError),
    #[error("stopping")]
    Stopping,
    #[error("aborted")]
    Aborted,
}

fn relay(
    conns: &Conns,
    id: u64,
    client: TcpStream,
    port: u16,
    dial: &AgentAddress,
) -> Result<(u64, u64), RelayError> {
    let io = |what| move |e| RelayError::Io(what, e);
    let guest = File::from(vsock::connect(dial, HANDSHAKE_TIMEOUT).map_err(io("connect"))?);
    if !conns.register(id, &guest) {
        return Err(RelayError::Stopping);
    }
    set_read_timeout(&guest, Some(HANDSHAKE_TIMEOUT)).map_err(io("socket option"))?;
    (&guest)
        .write_all(portfwd::request(port).as_bytes())
        .map_err(io("send request"))?;
    let line = read_reply(&guest).map_err(io("read reply"))?;
    if let Err(e) = portfwd::parse_reply(&line) {
        // Nothing listens there any more: reset, as a refused connect would have.
        reset_on_close(&client);
        return Err(RelayError::Guest(e));
    }
    set_read_timeout(&guest, None).map_err(io("socket option"))?;
    let _ = client.set_nodelay(true);
    let (up, down) = std::thread::scope(|s| {
        let down = std::thread::Builder::new()
            .name(format!("hull-pf-{port}-down"))
            .stack_size(STACK)
            .spawn_scoped(s, || to_client(&guest, &client))
            .map_err(io("thread"))?;
        let up = to_guest(&client, &guest);
        Ok::<_, RelayError>((up, down.join().ok().flatten()))
    })?;
    match (up, down) {
        (Some(up), Some(down)) => Ok((up, down)),
        _ => Err(RelayError::Aborted),
    }
}

/// Client bytes to the guest as frames, an end frame at the client's EOF. Returns the bytes
/// sent, or `None` after an error (then both connections are cut).
fn to_guest(mut client: &TcpStream, mut guest: &File) -> Option<u64> {
    let mut buf = vec![0u8; FRAME_HEADER + MAX_FRAME];
    let mut total = 0u64;
    loop {
        let n = match client.read(&mut buf[FRAME_HEADER..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return abort(client, guest),
        };
        buf[..FRAME_HEADER].copy_from_slice(&portfwd::frame_header(n));
        if guest.write_all(&buf[..FRAME_HEADER + n]).is_err() {
            return abort(client, guest);
        }
        if n == 0 {
            return Some(total);
        }
        total += n as u64;
    }
}

/// Frames from the guest to the client, passing the end frame on as a half-close. Returns the
/// bytes received, or `None` after an error, a bad frame, or an end without an end frame
/// (then both connections are cut and the client is reset).
fn to_client(guest: &File, mut client: &TcpStream) -> Option<u64> {
    let mut from = BufReader::with_capacity(FRAME_HEADER + MAX_FRAME, guest);
    let mut buf = vec![0u8; MAX_FRAME];
    let mut total = 0u64;
    loop {
        let mut h = [0u8; FRAME_HEADER];
        let Ok(len) = from
            .read_exact(&mut h)
            .map_err(|_| ())
            .and_then(|()| portfwd::parse_frame_header(h).map_err(|_| ()))
        else {
            return abort(client, guest);
        };
        if len == 0 {
            let _ = client.shutdown(std::net::Shutdown::Write);
            return Some(total);
        }
        if from.read_exact(&mut buf[..len]).is_err() || client.write_all(&buf[..len]).is_err() {
            return abort(client, guest);
        }
        total += len as u64;
    }
}

/// Cut both connections (the other direction's thread wakes up) and make the client's close a
/// reset (no FIN first: only the read side is shut down).
fn abort(client: &TcpStream, guest: &File) -> Option<u64> {
    reset_on_close(client);
    let _ = client.shutdown(std::net::Shutdown::Read);
    let _ = shutdown(guest.as_raw_fd(), Shutdown::Both);
    None
}

fn reset_on_close(client: &TcpStream) {
    let _ = setsockopt(
        client,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// The reply line without its `\n`, read byte by byte so no stream byte is consumed.
fn read_reply(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if b[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if line.len() >= MAX_REPLY_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply line too long",
            ));
        }
    }
}

fn set_read_timeout(fd: &impl AsFd, t: Option<Duration>) -> std::io::Result<()> {
    let tv = match t {
        Some(t) => nix::sys::time::TimeVal::new(
            t.as_secs() as libc::time_t,
            t.subsec_micros() as libc::suseconds_t,
        ),
        None => nix::sys::time::TimeVal::new(0, 0),
    };
    setsockopt(fd, sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_are_bounded() {
        assert_eq!(read_reply(&b"OK\nDATA"[..]).expect("ok"), b"OK");
        let long = vec![b'x'; 1000];
        assert_eq!(
            read_reply(&long[..]).expect_err("long").kind(),
            std::io::ErrorKind::InvalidData
        );
        assert_eq!(
            read_reply(&b"OK"[..]).expect_err("eof").kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
