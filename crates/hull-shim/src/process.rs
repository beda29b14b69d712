//! One process of a task as the shim tracks it (the init process or an exec): its status,
//! its exit, and the host ends of its stdio (containerd's FIFOs or files).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::sync::Arc;

use hull_runtime::Stdio;

use crate::error::ShimError;

/// Why a process's stdio could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// containerd asked for a logging scheme we do not serve (e.g. `binary://`).
    #[error("stdio {0:?}: only FIFOs and file:// are supported")]
    Unsupported(String),
    /// The FIFO or file cannot be opened.
    #[error("open stdio {path}: {source}")]
    Open {
        /// the FIFO or file
        path: PathBuf,
        /// the OS error
        source: std::io::Error,
    },
}

impl From<StdioError> for ShimError {
    fn from(e: StdioError) -> Self {
        ShimError::InvalidArgument(e.to_string())
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// A Start is under way.
    Starting,
    /// Running.
    Running,
    /// Exited; see `Proc::exit`.
    Stopped,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When the shim learned of it.
    pub at: SystemTime,
}

/// The stdio paths containerd gave for a process ("" = none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoPaths {
    /// Read by the shim, fed to the process.
    pub stdin: String,
    /// Written by the shim.
    pub stdout: String,
    /// Written by the shim; empty with a terminal.
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
}

/// One process.
#[derive(Debug)]
pub struct Proc {
    /// Guest pid once started (0 before).
    pub pid: u32,
    /// Status.
    pub status: Status,
    /// Exit, once stopped.
    pub exit: Option<Exit>,
    /// Stdio paths.
    pub io: IoPaths,
    /// The OCI process of an exec (None for init).
    pub spec: Option<oci_spec::runtime::Process>,
    /// The running process, once started.
    pub process: Option<Arc<hull_runtime::Process>>,
}

impl Proc {
    /// A process that has not started.
    pub fn created(io: IoPaths, spec: Option<oci_spec::runtime::Process>) -> Self {
        Proc {
            pid: 0,
            status: Status::Created,
            exit: None,
            io,
            spec,
            process: None,
        }
    }
}

/// containerd passes plain paths for FIFOs, and `file://` URIs for log files.
fn local_path(uri: &str) -> Result<PathBuf, StdioError> {
    if let Some(p) = uri.strip_prefix("file://") {
        return Ok(PathBuf::from(p));
    }
    if uri.contains("://") {
        return Err(StdioError::Unsupported(uri.to_string()));
    }
    Ok(PathBuf::from(uri))
}

/// Host ends for `io`: stdout/stderr are opened now (read-write, so opening a FIFO never
/// blocks and a missing reader cannot fail the task); stdin is opened on first read, which
/// waits for containerd's writer.
pub fn open_stdio(io: &IoPaths) -> Result<Stdio, StdioError> {
    let stdout: Box<dyn Write + Send> = if io.stdout.is_empty() {
        Box::new(std::io::sink())
    } else {
        Box::new(open_output(&local_path(&io.stdout)?)?)
    };
    let stderr: Option<Box<dyn Write + Send>> = if io.terminal {
        None
    } else if io.stderr.is_empty() {
        Some(Box::new(std::io::sink()))
    } else {
        Some(Box::new(open_output(&local_path(&io.stderr)?)?))
    };
    let stdin: Option<Box<dyn Read + Send>> = if io.stdin.is_empty() {
        None
    } else {
        Some(Box::new(LazyInput {
            path: local_path(&io.stdin)?,
            file: None,
        }))
    };
    Ok(Stdio {
        stdin,
        stdout,
        stderr,
    })
}

fn open_output(path: &Path) -> Result<File, StdioError> {
    let is_fifo = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
        .unwrap_or(false);
    let mut o = OpenOptions::new();
    if is_fifo {
        o.read(true).write(true);
    } else {
        o.create(true).append(true);
    }
    o.open(path).map_err(|source| StdioError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// A FIFO opened when first read, so that opening (which waits for a writer) happens on
/// the stdin copy thread and never in an RPC.
struct LazyInput {
    path: PathBuf,
    file: Option<File>,
}

impl Read for LazyInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(File::open(&self.path)?);
        }
        match self.file.as_mut() {
            Some(f) => f.read(buf),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_uris() {
        assert_eq!(
            local_path("/run/x/fifo").expect("path"),
            PathBuf::from("/run/x/fifo")
        );
        assert_eq!(
            local_path("file:///var/log/c.log").expect("file"),
            PathBuf::from("/var/log/c.log")
        );
        let e = local_path("binary:///usr/bin/logger").expect_err("binary logging");
        assert!(e.to_string().contains("only FIFOs"), "{e}");
        let e = ShimError::from(e);
        assert!(matches!(e, ShimError::InvalidArgument(_)), "{e:?}");
    }

    #[test]
    fn output_to_a_file_and_stdin_is_lazy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.log");
        let io = IoPaths {
            stdin: dir.path().join("never-opened").display().to_string(),
            stdout: out.display().to_string(),
            stderr: String::new(),
            terminal: false,
        };
        let mut s = open_stdio(&io).expect("open");
        s.stdout.write_all(b"hello").expect("write");
        drop(s.stdout);
        assert_eq!(std::fs::read(&out).expect("read"), b"hello");
        // Opening stdin is deferred: a missing path only fails at the first read.
        let mut input = s.stdin.expect("stdin");
        assert!(input.read(&mut [0u8; 4]).is_err());
    }
}
