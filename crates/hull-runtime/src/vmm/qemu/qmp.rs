//! A minimal QMP client (JSON lines over QEMU's control socket): capabilities
//! negotiation and `execute`, which is all Hull needs; events are skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Largest QMP line accepted from QEMU.
const MAX_LINE: usize = 1 << 20;

/// A negotiated QMP connection.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect, read the greeting and enter command mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| Error::io(format!("connect QMP {}", socket.display()), e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| Error::io("QMP timeout", e))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| Error::io("QMP timeout", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("dup QMP socket", e))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Daemon {
                name: "qemu".into(),
                what: format!("sent an unexpected QMP greeting: {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Run a command and return its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(format!("QMP {command}"), e))?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(Error::Daemon {
                    name: "qemu".into(),
                    what: format!("refused QMP {command}: {e}"),
                });
            }
        }
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = Read::take(&mut self.reader, MAX_LINE as u64)
            .read_line(&mut line)
            .map_err(|e| Error::io("read QMP", e))?;
        if n == 0 {
            return Err(Error::io(
                "read QMP",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        serde_json::from_str(&line).map_err(|e| Error::Daemon {
            name: "qemu".into(),
            what: format!("sent a bad QMP message: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn negotiates_and_executes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).expect("greet");
            let mut l = String::new();
            r.read_line(&mut l).expect("caps");
            assert!(l.contains("qmp_capabilities"));
            writeln!(w, r#"{{"return": {{}}}}"#).expect("ok");
            l.clear();
            r.read_line(&mut l).expect("cmd");
            assert!(l.contains("query-status"));
            writeln!(w, r#"{{"event": "X", "data": {{}}}}"#).expect("event");
            writeln!(w, r#"{{"return": {{"status": "running"}}}}"#).expect("ret");
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).expect("connect");
        let r = q.execute("query-status", None).expect("execute");
        assert_eq!(r["status"], "running");
        server.join().expect("server");
    }
}
