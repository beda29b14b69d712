//! The port-forward data channel: each forwarded TCP connection is its own vsock connection to
//! FORWARD_VSOCK_PORT; the host sends one request line, the agent answers one reply line.
//!
//! ```text
//! host -> agent   PORT <n>\n        n in 1..=65535, decimal, at most MAX_REQUEST_LEN bytes
//! agent -> host   OK\n              connected to localhost:<n> in the guest; frames follow
//!                 ERR <reason>\n    refused or failed; the agent closes the connection
//! ```
//!
//! After `OK` each direction is a sequence of frames: a 4-byte big-endian length (at most
//! MAX_FRAME) and that many bytes of the TCP stream. A zero-length frame ends its direction
//! (the TCP half-close); the vsock connection is closed once both directions have ended. A
//! connection that ends without an end frame was aborted: the other side resets its TCP end.
//! Framing carries the half-close because vhost-device-vsock (hybrid vsock) does not: it drops
//! a guest's shutdown(SHUT_WR) and turns a host's into a full close.

/// AF_VSOCK port of the agent's port-forward channel.
pub const FORWARD_VSOCK_PORT: u32 = 1026;
/// Longest request line, `\n` included.
pub const MAX_REQUEST_LEN: usize = 32;
/// Longest reply line, `\n` included; longer reasons are cut by the agent.
pub const MAX_REPLY_LEN: usize = 128;
/// Most ports a ListListeningPorts reply may carry.
pub const MAX_FORWARD_PORTS: usize = 256;
/// Longest wait of one ListListeningPorts long-poll.
pub const MAX_PORTS_WAIT_MS: u32 = 10_000;

/// Largest frame payload.
pub const MAX_FRAME: usize = 64 * 1024;
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 4;

/// The header of a frame carrying `len` bytes (0: end of this direction).
pub fn frame_header(len: usize) -> [u8; FRAME_HEADER] {
    debug_assert!(len <= MAX_FRAME);
    (len as u32).to_be_bytes()
}

/// The payload length a frame header announces.
pub fn parse_frame_header(h: [u8; FRAME_HEADER]) -> Result<usize, LineError> {
    let len = u32::from_be_bytes(h) as usize;
    if len > MAX_FRAME {
        return Err(LineError::Frame(len));
    }
    Ok(len)
}

/// Why a request or reply line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not `PORT <n>`.
    #[error("malformed port-forward request")]
    Malformed,
    /// `n` outside 1..=65535.
    #[error("port out of range")]
    Port,
    /// The agent answered `ERR <reason>`.
    #[error("{0}")]
    Refused(String),
    /// Neither `OK` nor `ERR ...`.
    #[error("malformed port-forward reply")]
    BadReply,
    /// A frame longer than MAX_FRAME.
    #[error("port-forward frame of {0} bytes, limit {MAX_FRAME}")]
    Frame(usize),
}

/// The request line for `port`, `\n` included.
pub fn request(port: u16) -> String {
    format!("PORT {port}\n")
}

/// Parse a request line (without its `\n`): the port asked for.
pub fn parse_request(line: &[u8]) -> Result<u16, LineError> {
    let digits = line.strip_prefix(b"PORT ").ok_or(LineError::Malformed)?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(LineError::Malformed);
    }
    // Five ASCII digits always parse as u32.
    let n: u32 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(LineError::Malformed)?;
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(LineError::Port),
    }
}

/// The reply line: `OK\n`, or `ERR <reason>\n` with the reason cut to fit MAX_REPLY_LEN and
/// stripped of control characters.
pub fn reply(result: Result<(), &str>) -> Vec<u8> {
    match result {
        Ok(()) => b"OK\n".to_vec(),
        Err(reason) => {
            let mut line = b"ERR ".to_vec();
            for c in reason.chars().map(|c| if c.is_control() { ' ' } else { c }) {
                let mut buf = [0u8; 4];
                let bytes = c.encode_utf8(&mut buf).as_bytes();
                if line.len() + bytes.len() + 1 > MAX_REPLY_LEN {
                    break;
                }
                line.extend_from_slice(bytes);
            }
            line.push(b'\n');
            line
        }
    }
}

/// Parse a reply line (without its `\n`).
pub fn parse_reply(line: &[u8]) -> Result<(), LineError> {
    if line == b"OK" {
        return Ok(());
    }
    match line.strip_prefix(b"ERR ") {
        Some(reason) => Err(LineError::Refused(
            String::from_utf8_lossy(reason)
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
        )),
        None => Err(LineError::BadReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_fail() {
        for p in [1u16, 80, 8080, 65535] {
            let line = request(p);
            assert!(line.len() <= MAX_REQUEST_LEN);
            let body = line.strip_suffix('\n').expect("newline");
            assert_eq!(parse_request(body.as_bytes()), Ok(p));
        }
        assert_eq!(parse_request(b"PORT 0"), Err(LineError::Port));
        assert_eq!(parse_request(b"PORT 65536"), Err(LineError::Port));
        assert_eq!(parse_request(b"PORT 99999"), Err(LineError::Port));
        for bad in [
            &b""[..],
            b"PORT",
            b"PORT ",
            b"PORT 123456",
            b"PORT -1",
            b"PORT +80",
            b"PORT 80 ",
            b" PORT 80",
            b"port 80",
            b"PORT 8\x0080",
            b"CONNECT 80",
        ] {
            assert_eq!(parse_request(bad), Err(LineError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn frame_headers_are_bounded() {
        assert_eq!(parse_frame_header(frame_header(0)), Ok(0));
        assert_eq!(parse_frame_header(frame_header(MAX_FRAME)), Ok(MAX_FRAME));
        assert_eq!(frame_header(258), [0, 0, 1, 2]);
        assert_eq!(
            parse_frame_header((MAX_FRAME as u32 + 1).to_be_bytes()),
            Err(LineError::Frame(MAX_FRAME + 1))
        );
        assert!(parse_frame_header([0xff; 4]).is_err());
    }

    #[test]
    fn replies_are_bounded_and_parsed() {
        assert_eq!(reply(Ok(())), b"OK\n");
        assert_eq!(parse_reply(b"OK"), Ok(()));
        let long = "é".repeat(500);
        let line = reply(Err(&long));
        assert!(line.len() <= MAX_REPLY_LEN, "{}", line.len());
        assert!(std::str::from_utf8(&line).is_ok(), "cut inside a character");
        let line = reply(Err("connection refused\nsecond line"));
        assert_eq!(line, b"ERR connection refused second line\n");
        assert_eq!(
            parse_reply(&line[..line.len() - 1]),
            Err(LineError::Refused("connection refused second line".into()))
        );
        assert_eq!(
            parse_reply(b"ERR \x1b[31mred"),
            Err(LineError::Refused("[31mred".into()))
        );
        assert_eq!(parse_reply(b"OKAY"), Err(LineError::BadReply));
        assert_eq!(parse_reply(b""), Err(LineError::BadReply));
    }
}
