//! A process's standard streams: pipes by default, a pty with `terminal: true`. The child ends
//! go to the container helper; the agent keeps non-blocking parent ends driven by tokio.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use hull_protocol::{MAX_READ_CHUNK, MAX_WRITE_CHUNK};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::unistd::pipe2;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

/// The ends given to the child as its fds 0, 1 and 2.
#[derive(Debug)]
pub struct ChildStdio {
    /// fd 0
    pub stdin: OwnedFd,
    /// fd 1
    pub stdout: OwnedFd,
    /// fd 2
    pub stderr: OwnedFd,
    /// true if the three are the slave of a pty
    pub terminal: bool,
}

/// The agent's ends as plain fds, before they are registered with tokio.
#[derive(Debug)]
pub struct ParentFds {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    terminal: bool,
}

/// Create the pipes (or pty) of a new process.
pub fn create(terminal: bool) -> io::Result<(ParentFds, ChildStdio)> {
    if terminal {
        let pty = open_pty()?;
        let master_in = pty.master.try_clone()?;
        let child = ChildStdio {
            stdin: pty.slave.try_clone()?,
            stdout: pty.slave.try_clone()?,
            stderr: pty.slave,
            terminal: true,
        };
        let parent = ParentFds {
            stdin: master_in,
            stdout: pty.master,
            stderr: None,
            terminal: true,
        };
        return Ok((parent, child));
    }
    let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let parent = ParentFds {
        stdin: in_w,
        stdout: out_r,
        stderr: Some(err_r),
        terminal: false,
    };
    let child = ChildStdio {
        stdin: in_r,
        stdout: out_w,
        stderr: err_w,
        terminal: false,
    };
    Ok((parent, child))
}

struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

/// Like openpty, but both ends are CLOEXEC from the start, so a concurrent spawn in another
/// thread cannot inherit them (a leaked slave would keep the output from ever reaching EOF).
fn open_pty() -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name)?;
    // SAFETY: PtyMaster owns a valid open fd; into_raw_fd hands that ownership to us once.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok(Pty {
        master,
        slave: slave.into(),
    })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// One non-blocking stream end (pipe or pty master) with at most one reader at a time.
#[derive(Debug)]
pub struct Stream {
    fd: AsyncFd<OwnedFd>,
    reader: Mutex<()>,
    writer: Mutex<()>,
}

impl Stream {
    /// Register `fd` with the current tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd is a valid open fd that keeps returning the same fd until dropped,
        // and the AsyncFd owns it for its whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Stream {
            fd,
            reader: Mutex::new(()),
            writer: Mutex::new(()),
        })
    }

    /// Wait for output and return up to min(max_len, MAX_READ_CHUNK) bytes; empty means EOF
    /// (for a pty master, EIO once the last slave is closed is EOF too).
    pub async fn read(&self, max_len: u32) -> io::Result<Vec<u8>> {
        let len = max_len.clamp(1, MAX_READ_CHUNK) as usize;
        let mut buf = vec![0u8; len];
        let _one_reader = self.reader.lock().await;
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.as_raw_fd(), &mut buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(Vec::new()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Write at most MAX_WRITE_CHUNK bytes of `data`, waiting until some can be written.
    pub async fn write(&self, data: &[u8]) -> io::Result<usize> {
        let data = &data[..data.len().min(MAX_WRITE_CHUNK)];
        if data.is_empty() {
            return Ok(0);
        }
        let _one_writer = self.writer.lock().await;
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref().as_fd(), data).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Set the window size (pty masters only).
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a `winsize` from the valid pointer; the fd is owned by self.
        let rc = unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The agent's side of a process's stdio.
#[derive(Debug)]
pub struct Stdio {
    stdin: std::sync::Mutex<Option<std::sync::Arc<Stream>>>,
    stdout: Stream,
    stderr: Option<Stream>,
    terminal: bool,
}

impl Stdio {
    /// Register the parent ends with tokio (call from within the runtime).
    pub fn new(fds: ParentFds) -> io::Result<Self> {
        Ok(Stdio {
            stdin: std::sync::Mutex::new(Some(std::sync::Arc::new(Stream::new(fds.stdin)?))),
            stdout: Stream::new(fds.stdout)?,
            stderr: fds.stderr.map(Stream::new).transpose()?,
            terminal: fds.terminal,
        })
    }

    /// True if the process has a pty.
    pub fn terminal(&self) -> bool {
        self.terminal
    }

    /// Read the process's stdout (the tty output with a terminal).
    pub async fn read_stdout(&self, max_len: u32) -> io::Result<Vec<u8>> {
        self.stdout.read(max_len).await
    }

    /// Read the process's stderr (always empty with a terminal).
    pub async fn read_stderr(&self, max_len: u32) -> io::Result<Vec<u8>> {
        match &self.stderr {
            Some(s) => s.read(max_len).await,
            None => Ok(Vec::new()),
        }
    }

    fn stdin(&self) -> Option<std::sync::Arc<Stream>> {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Write to stdin; fails with BrokenPipe once stdin is closed.
    pub async fn write_stdin(&self, data: &[u8]) -> io::Result<usize> {
        match self.stdin() {
            Some(s) => s.write(data).await,
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed")),
        }
    }

    /// Close stdin. With a pty the master stays open (it carries the output too).
    pub fn close_stdin(&self) {
        if !self.terminal {
            self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Set the pty window size.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        if !self.terminal {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "process has no terminal",
            ));
        }
        self.stdout.resize(rows, cols)
    }
}
