//! A pod's network namespace: opened once by path (checked to be one), entered only by a
//! short-lived thread of our own, so no thread of the caller ever changes namespace.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Open the namespace at `path` (e.g. /var/run/netns/cni-...): an error naming it when it
    /// does not exist or is not a network namespace.
    pub fn open(path: &Path) -> Result<Netns> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "pod network namespace {} does not exist",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("open pod network namespace {}", path.display()),
                    e,
                ))
            }
        };
        let fs = nix::sys::statfs::fstatfs(&file)
            .map_err(|e| Error::sys(format!("statfs {}", path.display()), e))?;
        if fs.filesystem_type().0 as u64 != libc::NSFS_MAGIC as u64 {
            return Err(Error::InvalidArgument(format!(
                "{} is not a network namespace (no nsfs mount)",
                path.display()
            )));
        }
        Ok(Netns {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Where it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open namespace file (kept open, it pins the namespace).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Run `f` on a new thread that has entered the namespace; the thread ends with `f`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            let joined = std::thread::Builder::new()
                .name("hull-netns".into())
                .spawn_scoped(s, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::sys(
                            format!("enter network namespace {}", self.path.display()),
                            e,
                        )
                    })?;
                    f()
                })
                .map_err(|e| Error::io("spawn the netns thread", e))?
                .join();
            joined.unwrap_or_else(|_| {
                Err(Error::Io {
                    context: format!("network set-up in {}", self.path.display()),
                    source: std::io::Error::other("thread panicked"),
                })
            })
        })
    }

    /// The raw fd (for a child's pre_exec setns).
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_netns_is_named() {
        let e = Netns::open(Path::new("/var/run/netns/hull-no-such-ns")).expect_err("missing");
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        assert!(
            e.to_string().contains("/var/run/netns/hull-no-such-ns"),
            "{e}"
        );
    }

    #[test]
    fn a_plain_file_is_not_a_netns() {
        let f = tempfile::NamedTempFile::new().expect("tmp");
        let e = Netns::open(f.path()).expect_err("not a netns");
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
    }

    #[test]
    fn own_netns_opens_and_runs() {
        let ns = Netns::open(Path::new("/proc/self/ns/net")).expect("own netns");
        // Entering needs CAP_SYS_ADMIN; without it the error names the namespace.
        match ns.run(|| Ok(7)) {
            Ok(v) => assert_eq!(v, 7),
            Err(e) => assert!(e.to_string().contains("/proc/self/ns/net"), "{e}"),
        }
    }
}
