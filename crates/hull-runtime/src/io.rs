//! Copying a container process's stdio between host streams and the agent:
//! one thread per stream, output read until EOF, stdin closed at EOF.

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::agent::Agent;

/// Host ends of a process's stdio.
pub struct Stdio {
    /// Copied to the process's stdin, then closed; None closes stdin at once.
    pub stdin: Option<Box<dyn Read + Send>>,
    /// Receives the process's stdout (and the terminal's output with a tty).
    pub stdout: Box<dyn Write + Send>,
    /// Receives stderr; None for a tty.
    pub stderr: Option<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdio")
            .field("stdin", &self.stdin.is_some())
            .finish()
    }
}

/// Running copy threads; `join_output` returns once stdout and stderr reached EOF.
#[derive(Debug)]
pub struct Copies {
    outputs: Vec<JoinHandle<()>>,
}

impl Copies {
    /// Wait for the output streams to end.
    pub fn join_output(self) {
        for h in self.outputs {
            let _ = h.join();
        }
    }

    /// Wait up to `timeout` for the output streams to end; whether they did. Copies still
    /// running go on in the background until the agent ends them.
    pub fn join_output_within(self, timeout: std::time::Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                self.join_output();
                let _ = tx.send(());
            });
        started.is_ok() && rx.recv_timeout(timeout).is_ok()
    }
}

/// Start copying stdio of process `exec_id` of container `id`.
pub fn attach(agent: &Arc<Agent>, id: &str, exec_id: &str, stdio: Stdio) -> Copies {
    let mut outputs = Vec::new();
    outputs.push(spawn_output(
        agent.clone(),
        id,
        exec_id,
        false,
        stdio.stdout,
    ));
    if let Some(err) = stdio.stderr {
        outputs.push(spawn_output(agent.clone(), id, exec_id, true, err));
    }
    let (a, cid, eid) = (agent.clone(), id.to_string(), exec_id.to_string());
    match stdio.stdin {
        // Detached: it may stay blocked on a terminal read after the process ended.
        Some(input) => {
            let _ = std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || copy_stdin(&a, &cid, &eid, input));
        }
        None => {
            let _ = a.close_stdin(&cid, &eid);
        }
    }
    Copies { outputs }
}

fn spawn_output(
    agent: Arc<Agent>,
    id: &str,
    exec_id: &str,
    stderr: bool,
    mut out: Box<dyn Write + Send>,
) -> JoinHandle<()> {
    let (cid, eid) = (id.to_string(), exec_id.to_string());
    std::thread::spawn(move || loop {
        match agent.read_output(&cid, &eid, stderr) {
            Ok(data) if data.is_empty() => break,
            Ok(data) => {
                if out.write_all(&data).and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(container = %cid, exec = %eid, stderr, error = %e, "output copy ended");
                break;
            }
        }
    })
}

fn copy_stdin(agent: &Agent, id: &str, exec_id: &str, mut input: Box<dyn Read + Send>) {
    let mut buf = vec![0u8; hull_protocol::MAX_WRITE_CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut off = 0;
        while off < n {
            match agent.write_stdin(id, exec_id, &buf[off..n]) {
                Ok(w) => off += w,
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "stdin copy ended");
                    return;
                }
            }
        }
    }
    let _ = agent.close_stdin(id, exec_id);
}
