//! The relay without a VM or root: listeners in the test's own namespace, a fake port source,
//! and a fake agent channel on a Unix socket that speaks the forward protocol.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

#[derive(Debug)]
struct FakeSource(mpsc::Receiver<Vec<u16>>);

impl PortSource for FakeSource {
    fn next(&mut self, known: &[u16]) -> Result<Vec<u16>> {
        match self.0.recv_timeout(Duration::from_millis(50)) {
            Ok(set) => Ok(set),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(known.to_vec()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::Unavailable("source gone".into()))
            }
        }
    }
}

/// What the fake agent does with a forward request.
#[derive(Clone, Copy)]
enum Agent {
    /// Answer OK and splice to this local port.
    SpliceTo(u16),
    /// Answer ERR.
    Refuse,
    /// Answer OK and hold the connection open without reading.
    Hold,
    /// Answer OK, then send a frame header over the limit.
    Garbage,
}

fn fake_agent(dir: &Path, mode: Agent) -> (AgentAddress, mpsc::Receiver<String>) {
    let path = dir.join("forward.sock");
    let l = UnixListener::bind(&path).expect("bind fake agent");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                match mode {
                    Agent::Refuse => {
                        let _ = s.write_all(b"ERR connection refused\n");
                    }
                    Agent::Garbage => {
                        let _ = s.write_all(b"OK\n\xff\xff\xff\xff");
                        std::thread::sleep(Duration::from_secs(30));
                    }
                    Agent::Hold => {
                        let _ = s.write_all(b"OK\n");
                        std::thread::sleep(Duration::from_secs(30));
                    }
                    Agent::SpliceTo(port) => {
                        let _ = s.write_all(b"OK\n");
                        let Ok(t) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                            return;
                        };
                        let (mut s2, mut t2) =
                            (s.try_clone().expect("clone"), t.try_clone().expect("clone"));
                        // frames in -> TCP, end frame -> half-close
                        let h = std::thread::spawn(move || loop {
                            let mut hdr = [0u8; 4];
                            if s2.read_exact(&mut hdr).is_err() {
                                return;
                            }
                            let len = u32::from_be_bytes(hdr) as usize;
                            if len == 0 {
                                let _ = t2.shutdown(Shutdown::Write);
                                return;
                            }
                            let mut data = vec![0u8; len];
                            if s2.read_exact(&mut data).is_err() || t2.write_all(&data).is_err() {
                                return;
                            }
                        });
                        // TCP -> frames, EOF -> end frame
                        let (mut s3, mut t3) = (s, t);
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = t3.read(&mut buf).unwrap_or(0);
                            let mut frame = (n as u32).to_be_bytes().to_vec();
                            frame.extend_from_slice(&buf[..n]);
                            if s3.write_all(&frame).is_err() || n == 0 {
                                break;
                            }
                        }
                        let _ = h.join();
                    }
                }
            });
        }
    });
    (AgentAddress::Unix { path }, rx)
}

/// An upper-casing echo server that answers after its client half-closes.
fn echo_server() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all);
                let _ = s.write_all(&all.to_ascii_uppercase());
            });
        }
    });
    port
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start(dial: AgentAddress) -> (PortForwarder, mpsc::Sender<Vec<u16>>) {
    let (tx, rx) = mpsc::channel();
    let pf =
        PortForwarder::start_with("t", None, dial, Box::new(FakeSource(rx)), None).expect("start");
    (pf, tx)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn relays_both_ways_with_half_close_and_stops_clean() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let echo = echo_server();
    let (dial, requests) = fake_agent(tmp.path(), Agent::SpliceTo(echo));
    let (mut pf, ports) = start(dial);
    let port = free_port();
    ports.send(vec![port]).expect("send");
    wait_for("the listener", || pf.ports() == vec![port]);

    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    let payload = vec![b'a'; 1 << 20];
    c.write_all(&payload).expect("write");
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("read");
    assert_eq!(back.len(), payload.len());
    assert!(back.iter().all(|&b| b == b'A'));
    assert_eq!(
        requests
            .recv_timeout(Duration::from_secs(5))
            .expect("request"),
        format!("PORT {port}")
    );
    drop(c);
    wait_for("the connection to end", || pf.connections() == 0);

    // The guest stops listening: the listener goes.
    ports.send(vec![]).expect("send");
    wait_for("the listener to close", || pf.ports().is_empty());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    pf.stop();
    pf.stop();
}

#[test]
fn a_refused_forward_resets_the_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dial, _requests) = fake_agent(tmp.path(), Agent::Refuse);
    let (pf, ports) = start(dial);
    let port = free_port();
    ports.send(vec![port]).expect("send");
    wait_for("the listener", || pf.ports() == vec![port]);
    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => assert_eq!(n, 0, "no data may come from a refused forward"),
    }
}

#[test]
fn a_hostile_frame_resets_the_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dial, _requests) = fake_agent(tmp.path(), Agent::Garbage);
    let (pf, ports) = start(dial);
    let port = free_port();
    ports.send(vec![port]).expect("send");
    wait_for("the listener", || pf.ports() == vec![port]);
    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let e = c.read(&mut buf).expect_err("reset");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    wait_for("the relay to end", || pf.connections() == 0);
}

#[test]
fn connections_are_bounded_and_stop_cuts_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dial, _requests) = fake_agent(tmp.path(), Agent::Hold);
    let (mut pf, ports) = start(dial);
    let port = free_port();
    ports.send(vec![port]).expect("send");
    wait_for("the listener", || pf.ports() == vec![port]);
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect"));
    }
    wait_for("all connections", || pf.connections() == MAX_CONNECTIONS);
    let mut extra = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "the connection over the limit must be closed"
    );
    assert_eq!(pf.connections(), MAX_CONNECTIONS);

    let t = Instant::now();
    pf.stop();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(pf.connections(), 0);
    for mut c in held {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "cut by stop");
    }
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn listened_ports_are_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dial, _requests) = fake_agent(tmp.path(), Agent::Refuse);
    let (pf, ports) = start(dial);
    let mut set: Vec<u16> = (0..MAX_LISTENED_PORTS + 8).map(|_| free_port()).collect();
    set.sort_unstable();
    set.dedup();
    ports.send(set.clone()).expect("send");
    wait_for("the listeners", || {
        pf.ports().len() >= MAX_LISTENED_PORTS - 4
    });
    assert!(pf.ports().len() <= MAX_LISTENED_PORTS);
    assert!(pf
        .ports()
        .iter()
        .all(|p| set[..MAX_LISTENED_PORTS].contains(p)));
}

#[test]
fn bad_netns_paths_are_invalid_arguments() {
    let e = open_netns(Path::new("/nonexistent/netns")).expect_err("missing");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let tmp = tempfile::NamedTempFile::new().expect("file");
    let e = open_netns(tmp.path()).expect_err("a plain file");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[test]
fn a_lost_guest_closes_the_listeners() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dial, _requests) = fake_agent(tmp.path(), Agent::Refuse);
    let (mut pf, ports) = start(dial);
    let port = free_port();
    ports.send(vec![port]).expect("send");
    wait_for("the listener", || pf.ports() == vec![port]);
    drop(ports); // the source now fails with Unavailable
    wait_for("the listener to close", || pf.ports().is_empty());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    pf.stop();
}
