//! A process's standard streams: pipes by default, a pty with `terminal: true`. The child ends
//! go to the container helper; the agent keeps non-blocking parent ends driven by tokio.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use hull_protocol::{MAX_READ_CHUNK, MAX_WRITE_CHUNK};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::socket::{
    recvmsg, setsockopt, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType,
};
use nix::sys::time::TimeVal;
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

/// The agent's side of a new process's stdio: ready now (pipes), or, with a terminal, a socket
/// on which the container process sends the pty master it opened in its own devpts.
#[derive(Debug)]
pub enum ParentSide {
    /// pipes
    Ready(ParentFds),
    /// the console socket
    Console(OwnedFd),
}

/// Create the pipes (or, for a terminal, the console socket) of a new process.
pub fn create(terminal: bool) -> io::Result<(ParentSide, ChildStdio)> {
    if terminal {
        let (parent, child) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let child = ChildStdio {
            stdin: child.try_clone()?,
            stdout: child.try_clone()?,
            stderr: child,
            terminal: true,
        };
        return Ok((ParentSide::Console(parent), child));
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
    Ok((ParentSide::Ready(parent), child))
}

impl ParentSide {
    /// The agent's ends; with a terminal, first receive the pty master (blocking, bounded).
    pub fn into_fds(self) -> io::Result<ParentFds> {
        match self {
            ParentSide::Ready(p) => Ok(p),
            ParentSide::Console(sock) => {
                let master = receive_master(&sock)?;
                Ok(ParentFds {
                    stdin: master.try_clone()?,
                    stdout: master,
                    stderr: None,
                    terminal: true,
                })
            }
        }
    }
}

/// Receive one fd (the pty master) sent with SCM_RIGHTS.
fn receive_master(sock: &OwnedFd) -> io::Result<OwnedFd> {
    setsockopt(sock, ReceiveTimeout, &TimeVal::new(30, 0))?;
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this fd in our table for us.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no terminal received from the container",
        )
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

    /// Read the process's stdout (the tty output with a terminal) or its stderr (always
    /// empty with a terminal).
    pub async fn read_output(&self, stderr: bool, max_len: u32) -> io::Result<Vec<u8>> {
        match (stderr, &self.stderr) {
            (false, _) => self.stdout.read(max_len).await,
            (true, Some(s)) => s.read(max_len).await,
            (true, None) => Ok(Vec::new()),
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
