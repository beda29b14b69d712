//! Shared by the runtime's integration tests: what they need from the host (a test whose
//! requirement is missing fails, unless `HULL_TEST_ALLOW_SKIP=1` lets it skip), a busybox
//! rootfs, and stdio ends that collect or drop a process's output.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

// Each test binary uses a different part of this.
#[allow(unused_imports)]
pub use hull_protocol::test_support::require_root;
use hull_runtime::Stdio;

/// A Write that collects into a shared buffer.
#[derive(Clone, Default)]
pub struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    /// What was written, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// Stdio that closes stdin and drops the output.
pub fn quiet() -> Stdio {
    Stdio {
        stdin: None,
        stdout: Box::new(std::io::sink()),
        stderr: Some(Box::new(std::io::sink())),
    }
}

/// `<dir>/rootfs`: static busybox with `applets` linked in /bin, and the usual directories.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static must be installed");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    root
}
