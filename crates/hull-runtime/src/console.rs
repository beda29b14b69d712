//! The guest console, read by the host from QEMU's stdout pipe into a bounded ring
//! (temporary minimal version; see the console module of the console branch).

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Ring {
    bytes: VecDeque<u8>,
    closed: bool,
}

/// A console reader and the last bytes it read.
#[derive(Debug)]
pub(crate) struct Console {
    ring: Arc<(Mutex<Ring>, Condvar)>,
}

impl Console {
    /// Start reading `source` until EOF, keeping the last `bound` bytes.
    pub fn start(
        source: OwnedFd,
        sandbox_id: &str,
        _file: PathBuf,
        bound: usize,
    ) -> std::io::Result<Console> {
        let ring = Arc::new((Mutex::new(Ring::default()), Condvar::new()));
        let r = ring.clone();
        std::thread::Builder::new()
            .name(format!("console-{sandbox_id}"))
            .spawn(move || {
                let mut f = std::fs::File::from(source);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut g = r.0.lock().unwrap_or_else(|p| p.into_inner());
                    g.bytes.extend(&buf[..n]);
                    let over = g.bytes.len().saturating_sub(bound);
                    g.bytes.drain(..over);
                }
                r.0.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
                r.1.notify_all();
            })?;
        Ok(Console { ring })
    }

    /// The last `n` non-empty lines on one line, or "(empty)".
    pub fn tail(&self, n: usize) -> String {
        let g = self.ring.0.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = g.bytes.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        drop(g);
        let t = crate::tail_lines(&String::from_utf8_lossy(&v), n);
        if t.is_empty() {
            "(empty)".into()
        } else {
            t
        }
    }

    /// Whether the console reached EOF (the VMM exited) within `timeout`.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let (m, c) = &*self.ring;
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = c
            .wait_timeout_while(g, timeout, |r| !r.closed)
            .unwrap_or_else(|p| p.into_inner());
        g.closed
    }
}
