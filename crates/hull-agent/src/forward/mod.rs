//! Port forwarding into the guest: the ttrpc `Forward` service (which ports listen on
//! localhost) and the data channel on FORWARD_VSOCK_PORT that splices one vsock connection
//! from the host onto one TCP connection to localhost:<port> in the guest.

pub mod ports;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hull_protocol::forward::{ListPortsRequest, ListPortsResponse};
use hull_protocol::forward_ttrpc_async::Forward;
use hull_protocol::portfwd::{
    self, FRAME_HEADER, MAX_FORWARD_PORTS, MAX_FRAME, MAX_PORTS_WAIT_MS, MAX_REQUEST_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};
use ttrpc::r#async::TtrpcContext;

/// How often a waiting ListListeningPorts looks at the tables again.
const PORTS_POLL: Duration = Duration::from_millis(100);
/// Forwards open at once; more are closed at accept.
pub const MAX_FORWARDS: usize = 256;
/// Time the host has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection to localhost may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The ttrpc `Forward` service.
#[derive(Debug, Default)]
pub struct ForwardService;

#[async_trait]
impl Forward for ForwardService {
    async fn list_listening_ports(
        &self,
        _: &TtrpcContext,
        req: ListPortsRequest,
    ) -> ttrpc::Result<ListPortsResponse> {
        let wait = Duration::from_millis(req.wait_ms.min(MAX_PORTS_WAIT_MS).into());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ports: Vec<u32> = ports::listening_ports(MAX_FORWARD_PORTS)
                .into_iter()
                .map(u32::from)
                .collect();
            let now = tokio::time::Instant::now();
            if ports != req.known || now >= deadline {
                let mut r = ListPortsResponse::new();
                r.ports = ports;
                return Ok(r);
            }
            tokio::time::sleep(PORTS_POLL.min(deadline - now)).await;
        }
    }
}

/// Listen on vsock `port` now (so the channel is there before the agent announces itself) and
/// serve it in a task forever, rebinding after failures.
pub fn start(port: u32) {
    let first = bind(port);
    tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_FORWARDS));
        let mut listener = first;
        loop {
            if let Some(l) = listener.take() {
                accept_loop(&l, &limit).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            listener = bind(port);
        }
    });
}

fn bind(port: u32) -> Option<VsockListener> {
    match VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port)) {
        Ok(l) => {
            tracing::info!(port, "port-forward channel listening");
            Some(l)
        }
        Err(e) => {
            tracing::error!(port, error = %e, "cannot listen for port forwards");
            None
        }
    }
}

async fn accept_loop(listener: &VsockListener, limit: &Arc<Semaphore>) {
    let mut failures = 0u32;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(ok) => {
                failures = 0;
                ok
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "port-forward accept failed");
                if failures > 100 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if peer.cid() != VMADDR_CID_HOST {
            tracing::warn!(cid = peer.cid(), "port-forward from a guest peer refused");
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(limit = MAX_FORWARDS, "too many port forwards; one refused");
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = forward_one(stream).await {
                tracing::debug!(error = %e, "port forward ended");
            }
        });
    }
}

/// Read the request, connect, answer, then splice until both directions are done.
async fn forward_one(mut vs: VsockStream) -> std::io::Result<()> {
    let line = tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut vs, MAX_REQUEST_LEN))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let port = match portfwd::parse_request(&line) {
        Ok(p) => p,
        Err(e) => {
            vs.write_all(&portfwd::reply(Err(&e.to_string()))).await?;
            return Ok(());
        }
    };
    let mut tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect_local(port)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = format!("localhost:{port}: {e}");
            vs.write_all(&portfwd::reply(Err(&reason))).await?;
            return Ok(());
        }
        Err(_) => {
            let reason = format!("localhost:{port}: connect timed out");
            vs.write_all(&portfwd::reply(Err(&reason))).await?;
            return Ok(());
        }
    };
    let _ = tcp.set_nodelay(true);
    vs.write_all(&portfwd::reply(Ok(()))).await?;
    match splice(&mut vs, &mut tcp).await {
        Ok((up, down)) => {
            tracing::debug!(port, up, down, "port forward done");
            Ok(())
        }
        Err(e) => {
            // Aborted: reset the guest's end, as a dropped TCP connection would.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let _ = nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::Linger, &linger);
            Err(e)
        }
    }
}

/// Frames from the host onto `tcp` and `tcp`'s bytes as frames to the host, until both
/// directions have ended (each with its end frame or EOF); returns the bytes each way. An
/// error (an abort by the host, a bad frame) ends both at once: the caller drops both sockets.
async fn splice<V, T>(vs: &mut V, tcp: &mut T) -> std::io::Result<(u64, u64)>
where
    V: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut vs_r, mut vs_w) = tokio::io::split(vs);
    let (mut tcp_r, mut tcp_w) = tokio::io::split(tcp);
    let up = async {
        let mut total = 0u64;
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let mut h = [0u8; FRAME_HEADER];
            vs_r.read_exact(&mut h).await?;
            let len = portfwd::parse_frame_header(h)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if len == 0 {
                tcp_w.shutdown().await?;
                return Ok::<u64, std::io::Error>(total);
            }
            vs_r.read_exact(&mut buf[..len]).await?;
            tcp_w.write_all(&buf[..len]).await?;
            total += len as u64;
        }
    };
    let down = async {
        let mut total = 0u64;
        let mut buf = vec![0u8; FRAME_HEADER + MAX_FRAME];
        loop {
            let n = tcp_r.read(&mut buf[FRAME_HEADER..]).await?;
            buf[..FRAME_HEADER].copy_from_slice(&portfwd::frame_header(n));
            vs_w.write_all(&buf[..FRAME_HEADER + n]).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(total);
            }
            total += n as u64;
        }
    };
    tokio::try_join!(up, down)
}

/// localhost:<port> in the guest: IPv4 first, then IPv6 (a server may listen on ::1 only).
async fn connect_local(port: u16) -> std::io::Result<TcpStream> {
    match TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
        Ok(s) => Ok(s),
        Err(e4) => TcpStream::connect((Ipv6Addr::LOCALHOST, port))
            .await
            .map_err(|_| e4),
    }
}

/// One `\n`-terminated line, read byte by byte so nothing after it is consumed; at most `max`
/// bytes with the `\n`.
async fn read_line<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(max);
    loop {
        let b = r.read_u8().await?;
        if b == b'\n' {
            return Ok(line);
        }
        line.push(b);
        if line.len() >= max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request line too long",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn request_lines_are_bounded() {
        rt().block_on(async {
            let mut ok: &[u8] = b"PORT 80\nrest";
            assert_eq!(
                read_line(&mut ok, MAX_REQUEST_LEN).await.expect("line"),
                b"PORT 80"
            );
            assert_eq!(ok, b"rest", "bytes after the line must stay unread");
            let long = [b'7'; 100];
            let e = read_line(&mut &long[..], MAX_REQUEST_LEN)
                .await
                .expect_err("too long");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            let e = read_line(&mut &b"PORT 8"[..], MAX_REQUEST_LEN)
                .await
                .expect_err("eof");
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        });
    }

    /// The agent's end of a forward: frames in from the "host", the TCP stream out, and back.
    #[test]
    fn splice_frames_both_ways_with_half_close() {
        rt().block_on(async {
            let (mut host, mut agent_vs) = tokio::io::duplex(1 << 16);
            let (mut server, mut agent_tcp) = tokio::io::duplex(1 << 16);
            let agent = tokio::spawn(async move { splice(&mut agent_vs, &mut agent_tcp).await });
            // host sends "hello" in two frames, then ends its direction
            for chunk in [&b"hel"[..], b"lo", b""] {
                host.write_all(&portfwd::frame_header(chunk.len()))
                    .await
                    .expect("header");
                host.write_all(chunk).await.expect("data");
            }
            let mut got = Vec::new();
            server
                .read_to_end(&mut got)
                .await
                .expect("server reads to the half-close");
            assert_eq!(got, b"hello");
            // the server answers after the half-close, then closes
            server.write_all(b"HELLO").await.expect("answer");
            drop(server);
            let mut back = Vec::new();
            host.read_to_end(&mut back).await.expect("host reads");
            let mut want = portfwd::frame_header(5).to_vec();
            want.extend_from_slice(b"HELLO");
            want.extend_from_slice(&portfwd::frame_header(0));
            assert_eq!(back, want);
            assert_eq!(agent.await.expect("join").expect("splice"), (5, 5));
        });
    }

    #[test]
    fn splice_refuses_oversized_frames_and_aborts() {
        rt().block_on(async {
            let (mut host, mut agent_vs) = tokio::io::duplex(1 << 16);
            let (_server, mut agent_tcp) = tokio::io::duplex(1 << 16);
            host.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
                .await
                .expect("header");
            let e = splice(&mut agent_vs, &mut agent_tcp)
                .await
                .expect_err("oversized frame");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            // a host that vanishes without an end frame aborts the forward
            let (host2, mut agent_vs) = tokio::io::duplex(1 << 16);
            let (_server, mut agent_tcp) = tokio::io::duplex(1 << 16);
            drop(host2);
            assert!(splice(&mut agent_vs, &mut agent_tcp).await.is_err());
            drop(host);
        });
    }

    #[test]
    fn connects_to_v4_or_v6_localhost() {
        rt().block_on(async {
            let l4 = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("bind");
            let port = l4.local_addr().expect("addr").port();
            let (c, a) = tokio::join!(connect_local(port), l4.accept());
            assert!(c.is_ok() && a.is_ok());
            drop(l4);
            if let Ok(l6) = tokio::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await {
                let port = l6.local_addr().expect("addr").port();
                let (c, a) = tokio::join!(connect_local(port), l6.accept());
                assert!(c.is_ok() && a.is_ok(), "v6-only server");
            }
        });
    }
}
