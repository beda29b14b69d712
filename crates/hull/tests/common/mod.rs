//! Shared helpers of the `hull` end-to-end tests: a busybox rootfs, a per-test config and
//! sandbox id, running the real `hull` binary, and the check that nothing was left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// All tests share one run root so the accelerator probe runs once per host boot.
pub const RUN_ROOT: &str = "/run/hull-tests";

/// A busybox rootfs built once per test binary.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hull-test-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make_rootfs(&dir);
        dir
    })
}

/// Write a busybox rootfs into `dir`.
pub fn make_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir rootfs/bin");
    for d in ["proc", "sys", "dev", "tmp", "etc", "run", "home/user"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("busybox-static must be installed (/bin/busybox)");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").expect("group");
}

/// One test's sandbox id and config file.
pub struct Env {
    pub id: String,
    pub config: PathBuf,
    /// The run root (runtime.run_dir) its sandboxes live under.
    pub run_root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    /// A config with `extra` TOML appended (sections may repeat keys of the defaults).
    pub fn new(name: &str, extra: &str) -> Env {
        Env::in_run_root(name, extra, Path::new(RUN_ROOT))
    }

    /// Like [`Env::new`] with its own run root: for a test that needs a stale run directory to
    /// stay put, since every sandbox starting under a run root sweeps the stale ones in it.
    pub fn in_run_root(name: &str, extra: &str, run_root: &Path) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let text = format!("[runtime]\nrun_dir = \"{}\"\n{extra}\n", run_root.display());
        std::fs::write(&config, text).expect("write config");
        Env {
            id: format!("t-{name}-{}", std::process::id()),
            config,
            run_root: run_root.to_path_buf(),
            _dir: dir,
        }
    }

    /// `hull --config <cfg> <args>` with the sandbox id set for `run`.
    pub fn hull(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hull"));
        c.arg("--config").arg(&self.config);
        if args.first() == Some(&"run") {
            c.arg("run").arg("--id").arg(&self.id).args(&args[1..]);
        } else {
            c.args(args);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Run `hull run --rootfs <busybox> <args...>` to completion and check for leftovers.
    pub fn run(&self, args: &[&str]) -> Output {
        let root = rootfs().to_string_lossy().into_owned();
        let mut a = vec!["run", "--rootfs", root.as_str()];
        a.extend_from_slice(args);
        let out = self.hull(&a).output().expect("spawn hull");
        self.assert_clean();
        out
    }

    /// Start `hull run` of a container that prints "ready" and sleeps, and return once it
    /// printed it (stdout and stderr piped).
    pub fn spawn_sleeper(&self) -> std::process::Child {
        use std::io::Read;
        let root = rootfs().to_string_lossy().into_owned();
        let script = "echo ready; sleep 1000";
        let mut child = self
            .hull(&["run", "--rootfs", &root, "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hull");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 64];
        let n = out.read(&mut buf).expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("ready"));
        child
    }

    /// Nothing of this sandbox is left: no run directory, no process naming it, no mount, no
    /// virtiofsd pid file naming it.
    pub fn assert_clean(&self) {
        let dir = self.run_root.join(&self.id);
        assert!(!dir.exists(), "run directory {} left behind", dir.display());
        let pid_files = virtiofsd_pid_files(&dir);
        assert!(
            pid_files.is_empty(),
            "virtiofsd pid files left behind: {pid_files:?}"
        );
        let procs = processes_mentioning(&dir.to_string_lossy());
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !mounts.contains(&self.id),
            "mount left behind for {}",
            self.id
        );
    }
}

/// Pids and command lines of processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a failed run: non-zero status and one error line on stderr naming `needle`.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "error does not name {needle:?}: {err}"
    );
}

use hull_protocol::test_support::virtiofsd_pid_files;
