//! Running a helper command (ctr, the image script) with a deadline and optional stdin: on
//! timeout its process group is killed by pid, so a stuck child never hangs a test.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How often the stdin gate is re-checked while the command runs.
const GATE_POLL: Duration = Duration::from_millis(100);

/// A command that did not finish in time (it was killed), with what it printed until then.
#[derive(Debug)]
pub struct TimedOut {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Run `cmd` to completion, or kill its process group after `timeout`.
///
/// Without `input` stdin is /dev/null. With `input` the bytes are written to stdin, which then
/// stays open until `release_stdin()` first returns true (it is polled while the command runs),
/// and is closed after that: this is how a caller waits for `ctr` to be ready for the EOF.
/// Errors: `Err(Ok(TimedOut))` on timeout, `Err(Err(text))` when the command cannot be spawned.
pub fn run(
    mut cmd: Command,
    input: Option<&[u8]>,
    mut release_stdin: impl FnMut() -> bool,
    timeout: Duration,
) -> Result<Output, Result<TimedOut, String>> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Err(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let out_t = reader(child.stdout.take());
    let err_t = reader(child.stderr.take());

    // The writer keeps stdin open until the gate channel is dropped.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let in_t = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(bytes)) => {
            let bytes = bytes.to_vec();
            Some(thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
                let _ = gate_rx.recv();
                drop(stdin);
            }))
        }
        _ => None,
    };
    let mut gate = input.map(|_| gate_tx);

    let (st_tx, st_rx) = mpsc::channel::<std::io::Result<ExitStatus>>();
    let waiter = thread::spawn(move || {
        let _ = st_tx.send(child.wait());
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if gate.is_some() && release_stdin() {
            gate = None;
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = st_rx.recv();
            break None;
        }
        let wait = if gate.is_some() {
            GATE_POLL.min(deadline - now)
        } else {
            deadline - now
        };
        match st_rx.recv_timeout(wait) {
            Ok(st) => break Some(st),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    drop(gate);
    let _ = waiter.join();
    if let Some(t) = in_t {
        let _ = t.join();
    }
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        Some(Ok(status)) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Some(Err(e)) => Err(Err(format!("waiting for {:?}: {e}", cmd.get_program()))),
        None => Err(Ok(TimedOut { stdout, stderr })),
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Poll `done` every `every` until it returns true or `timeout` passes; true if it did.
pub fn poll_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(every.min(deadline - now));
    }
}
