//! End-to-end test harness: a private containerd (own root, state, sockets) driven with `ctr`,
//! the busybox image, and the check that a test left nothing behind on the host.
//!
//! ```ignore
//! let Some(cd) = PrivateContainerd::start() else { return }; // None only if skipping is allowed
//! cd.import_busybox();
//! let id = cd.id("echo");
//! let out = cd.ctr(&["run", "--rm", "--runtime", HULL_RUNTIME, BUSYBOX, &id, "echo", "hi"]);
//! assert_eq!(stdout(&out), "hi\n");
//! assert_eq!(cd.leftovers(), Vec::<String>::new()); // between steps, containerd still up
//! assert_eq!(cd.stop(), Vec::<String>::new());      // at the end: graceful teardown, then check
//! ```
//!
//! containerd resolves `--runtime io.containerd.hull.v2` to the binary `containerd-shim-hull-v2`
//! on its PATH, which starts with `$HULL_SHIM_DIR` if set, else the directory of the shim cargo
//! built for this test. Env: without root, containerd or ctr a test fails, unless
//! `HULL_TEST_ALLOW_SKIP=1` (see [`require`]) lets it skip; `HULL_TEST_IMAGE` overrides the image archive (default /var/lib/hull/images/busybox.oci.tar).
//!
//! The CRI suite (tests/cri_common) starts its containerd through [`Options::cri`] and
//! [`PrivateContainerd::start_in`], and tracks ids of its namespace (`k8s.io`) with
//! [`PrivateContainerd::track_id_in`] and host paths such as pod netns with
//! [`PrivateContainerd::track_path`].
#![allow(dead_code)]

pub mod args;
pub mod host;
pub mod require;
pub mod run;
pub mod setup;

pub use args::{created_id, with_fifo_dir};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The image `import_busybox` provides.
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// The runtime name of our shim (containerd runs `containerd-shim-hull-v2`).
pub const HULL_RUNTIME: &str = "io.containerd.hull.v2";
/// containerd's stock runc runtime.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The namespace every `ctr` call uses.
pub const NAMESPACE: &str = "hull-test";
/// Parent of every private containerd's directory.
pub const TESTS_ROOT: &str = "/run/hull-tests";
/// Default location of the busybox image archive (built by scripts/make-image.sh).
pub const DEFAULT_IMAGE: &str = "/var/lib/hull/images/busybox.oci.tar";
/// Sandbox run directories (`<root>/<container id>`) always checked for leftovers.
pub const RUN_ROOTS: &[&str] = &["/run/hull", TESTS_ROOT];

/// Timeout of one `ctr` call unless given.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// How long the leak check lets in-flight cleanups (containerd's `shim delete`) finish.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// containerd's fixed socket directory for shims (`/run/containerd/s/<sha256>`).
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Where the runc shim keeps runc's state (`<root>/<namespace>/<id>`).
const RUNC_ROOT: &str = "/run/containerd/runc";

/// Options of [`PrivateContainerd::start_with`].
#[derive(Debug, Default, Clone)]
pub struct Options {
    env: Vec<(String, String)>,
    run_roots: Vec<PathBuf>,
    cri: Option<String>,
}

impl Options {
    /// An extra environment variable for containerd, inherited by the shims it starts
    /// (e.g. `HULL_CONFIG` pointing at a test's runtime config).
    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Another sandbox run root (the runtime's `run_dir`) whose `<root>/<id>` directories are
    /// checked and cleaned like those under [`RUN_ROOTS`].
    pub fn run_root(mut self, dir: &Path) -> Options {
        self.run_roots.push(dir.to_path_buf());
        self
    }

    /// Load containerd's CRI plugin, configured by `toml` (its `[plugins."io.containerd.grpc.v1.cri"]`
    /// tables, appended to the config file); without this the plugin is disabled.
    pub fn cri(mut self, toml: &str) -> Options {
        self.cri = Some(toml.to_string());
        self
    }
}

/// A containerd of its own for one test, stopped and cleaned up by [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct PrivateContainerd {
    dir: PathBuf,
    address: String,
    log: PathBuf,
    child: Option<Child>,
    /// (containerd namespace, container id) of everything the test made.
    ids: Mutex<BTreeSet<(String, String)>>,
    /// Host paths that must be gone at the end (e.g. pod network namespaces).
    paths: Mutex<BTreeSet<PathBuf>>,
    run_roots: Vec<PathBuf>,
    torn_down: bool,
    keep_log: bool,
}

impl PrivateContainerd {
    /// Start one with default options; see [`start_with`](Self::start_with).
    pub fn start() -> Option<PrivateContainerd> {
        Self::start_with(Options::default())
    }

    /// Start one. Without root, containerd or ctr the test fails, or with
    /// `HULL_TEST_ALLOW_SKIP=1` this returns `None` (after printing why) and the test returns.
    /// Panics, with the log's tail, when containerd does not come up.
    pub fn start_with(opts: Options) -> Option<PrivateContainerd> {
        if let Some(why) = missing_prerequisite() {
            return skip(&why);
        }
        Some(Self::start_in(setup::make_private_dir(), opts))
    }

    /// Start one in `dir` (from [`setup::make_private_dir`], perhaps already holding files the
    /// config names); it owns `dir` from now on and removes it at teardown. Callers check
    /// [`missing_prerequisite`] first. Panics, with the log's tail, when containerd does not
    /// come up.
    pub fn start_in(dir: PathBuf, opts: Options) -> PrivateContainerd {
        let containerd = setup::which("containerd").expect("containerd on PATH");
        let address = format!("{}/containerd.sock", dir.display());
        let config = dir.join("config.toml");
        std::fs::write(&config, setup::config_toml(&dir, opts.cri.as_deref()))
            .expect("write containerd config");
        let log = dir.join("containerd.log");
        let log_file = std::fs::File::create(&log).expect("create containerd log");
        let child = Command::new(containerd)
            .arg("--config")
            .arg(&config)
            .env("PATH", setup::containerd_path())
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log fd"))
            .stderr(log_file)
            .spawn()
            .expect("spawn containerd");
        let mut cd = PrivateContainerd {
            dir,
            address,
            log,
            child: Some(child),
            ids: Mutex::new(BTreeSet::new()),
            paths: Mutex::new(BTreeSet::new()),
            run_roots: RUN_ROOTS
                .iter()
                .map(PathBuf::from)
                .chain(opts.run_roots.iter().cloned())
                .collect(),
            torn_down: false,
            keep_log: false,
        };
        cd.wait_ready();
        cd
    }

    fn wait_ready(&mut self) {
        let sock = PathBuf::from(&self.address);
        let mut exited = None;
        let ready = run::poll_until(READY_TIMEOUT, POLL, || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    exited = Some(st);
                    return true;
                }
            }
            sock.exists()
                && self
                    .ctr_raw(&["version"], None, Duration::from_secs(5))
                    .is_ok_and(|o| o.status.success())
        });
        if let Some(st) = exited {
            panic!(
                "containerd exited during startup ({st}); log tail:\n{}",
                self.log_tail(40)
            );
        }
        if !ready {
            panic!(
                "containerd not ready after {READY_TIMEOUT:?} at {}; log tail:\n{}",
                self.address,
                self.log_tail(40)
            );
        }
    }

    /// The private directory (config, root, state, sockets, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// containerd's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A container id unique to this test process (`t-<name>-<pid>`), tracked for leftovers.
    pub fn id(&self, name: &str) -> String {
        let id = format!("t-{name}-{}", std::process::id());
        self.track_id(&id);
        id
    }

    /// Check `id` for leftovers too (ids in `ctr run` / `ctr containers create` are tracked
    /// automatically).
    pub fn track_id(&self, id: &str) {
        self.track_id_in(NAMESPACE, id);
    }

    /// Check `id` of containerd namespace `ns` for leftovers (CRI's containers live in `k8s.io`).
    pub fn track_id_in(&self, ns: &str, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_string(), id.to_string()));
    }

    /// A host path that must not exist at the end (reported, then unmounted and removed).
    pub fn track_path(&self, path: &Path) {
        self.paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf());
    }

    fn tracked_ids(&self) -> Vec<(String, String)> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn tracked_paths(&self) -> Vec<PathBuf> {
        self.paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// `ctr -a SOCK -n hull-test ARGS` with stdin /dev/null and the default timeout.
    /// Panics if ctr cannot run or times out (it is killed); a failed status is returned.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with(args, None, CTR_TIMEOUT)
    }

    /// Like [`ctr`](Self::ctr), but asserts success and returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {} failed ({}):\nstdout: {}\nstderr: {}\ncontainerd log tail:\n{}",
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out),
            self.log_tail(20)
        );
        stdout(&out)
    }

    /// `ctr ARGS` with `input` on stdin. For `ctr run` the EOF is held back until the task
    /// has started: ctr 1.6 forwards stdin's EOF only if it comes after the task was created,
    /// otherwise the container never sees it. (`ctr tasks exec` has the same race, and no
    /// way to observe the exec'd process here: do not rely on EOF with exec.)
    pub fn ctr_input(&self, args: &[&str], input: &[u8]) -> Output {
        self.ctr_with(args, Some(input), CTR_TIMEOUT)
    }

    /// `ctr ARGS` with optional stdin and an explicit timeout.
    pub fn ctr_with(&self, args: &[&str], input: Option<&[u8]>, timeout: Duration) -> Output {
        let fifo_dir = self.dir.join("fifo").to_string_lossy().into_owned();
        let args = &with_fifo_dir(args, &fifo_dir)[..];
        let created = created_id(args);
        if let Some(id) = &created {
            self.track_id(id);
        }
        let release = || match &created {
            Some(id) if args.first() == Some(&"run") => self
                .task_status(id)
                .is_some_and(|s| matches!(s.as_str(), "RUNNING" | "STOPPED" | "PAUSED")),
            _ => true,
        };
        match run::run(self.ctr_command(NAMESPACE, args), input, release, timeout) {
            Ok(out) => out,
            Err(Ok(t)) => panic!(
                "ctr {} timed out after {timeout:?} (killed)\nstdout: {}\nstderr: {}\n\
                 containerd log tail:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&t.stdout),
                String::from_utf8_lossy(&t.stderr),
                self.log_tail(20)
            ),
            Err(Err(e)) => panic!("{e}"),
        }
    }

    fn ctr_command(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.args(["-a", &self.address, "-n", ns])
            .args(args)
            .env("CONTAINERD_SNAPSHOTTER", "overlayfs");
        c
    }

    /// ctr without panics or id tracking, for probes and teardown (`ns` default: ours).
    fn ctr_raw(&self, args: &[&str], ns: Option<&str>, timeout: Duration) -> Result<Output, ()> {
        let c = self.ctr_command(ns.unwrap_or(NAMESPACE), args);
        run::run(c, None, || true, timeout).map_err(|_| ())
    }

    /// The status column of `ctr tasks ls` for `id` (RUNNING, STOPPED, CREATED...).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self
            .ctr_raw(&["tasks", "ls"], None, Duration::from_secs(10))
            .ok()?;
        stdout(&out).lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
    }

    /// Build the busybox image if needed (scripts/make-image.sh, once per process) and import
    /// it as `docker.io/library/busybox:latest`.
    pub fn import_busybox(&self) {
        let tar = busybox_image();
        let tar = tar.to_string_lossy();
        self.ctr_ok(&["images", "import", "--all-platforms", &tar]);
        let images = self.ctr_ok(&["images", "ls", "-q"]);
        assert!(
            images.lines().any(|l| l == BUSYBOX),
            "{BUSYBOX} missing after import of {tar}; images: {images}"
        );
    }

    /// Stray things that should not exist when no container is running: processes naming this
    /// containerd's directory or a tracked container's run directory (and their descendants,
    /// and containerd's), mounts under those, run directories, virtiofsd pid files naming them,
    /// shim sockets, runc state and cgroups of tracked ids, and containers still known to
    /// containerd.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.child.is_some() {
            for (ns, id) in self.containers() {
                found.push(format!("container {ns}/{id} still exists"));
            }
        }
        found.extend(self.host_leftovers());
        found
    }

    fn host_leftovers(&self) -> Vec<String> {
        let ids = self.tracked_ids();
        let mut found: Vec<String> = host::owned_processes(&self.needles(&ids), &self.roots())
            .iter()
            .map(host::Proc::describe)
            .collect();
        for m in host::mounts_under(&self.dir) {
            found.push(format!("mount {m}"));
        }
        for (ns, id) in &ids {
            for d in self.run_dirs(id) {
                for m in host::mounts_under(&d) {
                    found.push(format!("mount {m}"));
                }
                if d.exists() {
                    found.push(format!("directory {}", d.display()));
                }
                for p in host::virtiofsd_pid_files(&d) {
                    found.push(format!("virtiofsd pid file {}", p.display()));
                }
            }
            for p in self.id_paths(ns, id) {
                if p.exists() {
                    found.push(format!("{} of {id}", p.display()));
                }
            }
        }
        for p in self.tracked_paths() {
            for m in host::mounts_under(&p) {
                found.push(format!("mount {m}"));
            }
            if p.exists() {
                found.push(format!("path {}", p.display()));
            }
        }
        found
    }

    /// Path prefixes whose mention in a command line marks a process as ours.
    fn needles(&self, ids: &[(String, String)]) -> Vec<String> {
        let mut n = vec![self.dir.to_string_lossy().into_owned()];
        n.extend(
            ids.iter()
                .flat_map(|(_, id)| self.run_dirs(id))
                .map(|d| d.to_string_lossy().into_owned()),
        );
        n
    }

    fn roots(&self) -> Vec<i32> {
        self.child
            .as_ref()
            .map(|c| i32::try_from(c.id()).unwrap_or(0))
            .into_iter()
            .collect()
    }

    /// `<root>/<id>` for every sandbox run root.
    fn run_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.run_roots.iter().map(|r| r.join(id)).collect()
    }

    /// Per-id host paths outside our directory: shim socket, runc state, cgroups.
    fn id_paths(&self, ns: &str, id: &str) -> Vec<PathBuf> {
        let mut paths = vec![Path::new(RUNC_ROOT).join(ns).join(id)];
        if let Some(hash) = sha256_hex(&format!("{}/{ns}/{id}", self.address)) {
            paths.push(Path::new(SHIM_SOCKET_DIR).join(hash));
        }
        // cgroup v2 (/sys/fs/cgroup/<ns>/<id>) or every v1 hierarchy.
        paths.push(Path::new("/sys/fs/cgroup").join(ns).join(id));
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            paths.push(e.path().join(ns).join(id));
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// (namespace, id) of every container in this containerd.
    fn containers(&self) -> Vec<(String, String)> {
        let t = Duration::from_secs(30);
        let Ok(ns) = self.ctr_raw(&["namespaces", "ls", "-q"], None, t) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for ns in stdout(&ns).lines().filter(|l| !l.is_empty()) {
            if let Ok(c) = self.ctr_raw(&["containers", "ls", "-q"], Some(ns), t) {
                for id in stdout(&c).lines().filter(|l| !l.is_empty()) {
                    all.push((ns.to_string(), id.to_string()));
                }
            }
        }
        all
    }

    /// Tear down (delete all tasks and containers, stop containerd), then report what is left
    /// (see [`leftovers`](Self::leftovers)), then remove that by force: kill, unmount, delete.
    /// An empty list means the test left nothing behind.
    pub fn stop(mut self) -> Vec<String> {
        self.teardown()
    }

    /// Like [`stop`](Self::stop), but containerd's log file stays (alone in the private
    /// directory, which the caller then removes), for a failed test to keep.
    pub fn stop_keeping_log(mut self) -> Vec<String> {
        self.keep_log = true;
        let mut report = self.teardown();
        let only_log = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().all(|e| e.path() == self.log))
            .unwrap_or(true);
        if !only_log {
            report.push(format!("cannot remove {}", self.dir.display()));
        }
        report
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut report = Vec::new();
        // 1. Gracefully: every task killed and deleted, every container removed.
        let t = Duration::from_secs(60);
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if self.child.is_some() && !alive {
            report.push(format!(
                "containerd died during the test; log tail:\n{}",
                self.log_tail(20)
            ));
        }
        let containers = if alive { self.containers() } else { Vec::new() };
        for (ns, id) in containers {
            self.track_id_in(&ns, &id);
            let _ = self.ctr_raw(&["tasks", "kill", "-s", "SIGKILL", &id], Some(&ns), t);
            let _ = self.ctr_raw(&["tasks", "delete", "-f", &id], Some(&ns), t);
            match self.ctr_raw(&["containers", "rm", &id], Some(&ns), t) {
                Ok(o) if o.status.success() => {}
                Ok(o) => report.push(format!(
                    "cannot remove container {ns}/{id}: {}",
                    stderr(&o).trim()
                )),
                Err(()) => report.push(format!("removing container {ns}/{id} timed out")),
            }
        }
        // 2. containerd itself, by its pid (only while unreaped, so the pid is still its own).
        if let Some(mut child) = self.child.take().filter(|_| alive) {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            let _ = kill(pid, Signal::SIGTERM);
            let stopped = run::poll_until(STOP_TIMEOUT, POLL, || {
                matches!(child.try_wait(), Ok(Some(_)) | Err(_))
            });
            if !stopped {
                report.push(format!("containerd ignored SIGTERM for {STOP_TIMEOUT:?}"));
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // 3. What is still there once containerd's own cleanups (a `shim delete` it started
        // for a shim that went away) had time to finish is a leftover...
        let mut left = Vec::new();
        run::poll_until(SETTLE_TIMEOUT, POLL, || {
            left = self.host_leftovers();
            left.is_empty()
        });
        report.extend(left);
        if !report.is_empty() {
            eprintln!(
                "harness: leftovers of {}:\n  {}\ncontainerd log tail:\n{}",
                self.dir.display(),
                report.join("\n  "),
                self.log_tail(40)
            );
        }
        // 4. ...removed by force so the next test starts clean.
        self.force_clean();
        if self.dir.exists() && !self.keep_log {
            report.push(format!("cannot remove {}", self.dir.display()));
        }
        report
    }

    fn force_clean(&self) {
        let ids = self.tracked_ids();
        let procs = host::owned_processes(&self.needles(&ids), &[]);
        for p in &procs {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        run::poll_until(STOP_TIMEOUT, POLL, || {
            let live: Vec<i32> = host::processes().iter().map(|p| p.pid).collect();
            !pids.iter().any(|p| live.contains(p))
        });
        for (ns, id) in &ids {
            for d in self.run_dirs(id) {
                host::unmount_under(&d);
                let _ = std::fs::remove_dir_all(&d);
                for p in host::virtiofsd_pid_files(&d) {
                    let _ = std::fs::remove_file(p);
                }
            }
            for p in self.id_paths(ns, id) {
                // cgroup directories go with rmdir only; the rest are plain files and dirs.
                if p.starts_with("/sys/fs/cgroup") {
                    let _ = std::fs::remove_dir(&p);
                } else if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        for p in self.tracked_paths() {
            host::unmount_under(&p);
            let _ = std::fs::remove_file(&p);
        }
        host::unmount_under(&self.dir);
        if self.keep_log {
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p == self.log {
                    continue;
                }
                let _ = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("harness: dropped with leftovers (call stop() to assert): {left:?}");
        }
    }
}

/// The busybox image archive, built by scripts/make-image.sh once per test process.
pub fn busybox_image() -> PathBuf {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let tar = std::env::var_os("HULL_TEST_IMAGE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_IMAGE));
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-image.sh");
            let mut cmd = Command::new("bash");
            cmd.arg(&script).arg(&tar);
            match run::run(cmd, None, || true, Duration::from_secs(300)) {
                Ok(o) if o.status.success() => Ok(tar),
                Ok(o) => Err(format!(
                    "{} failed: {}",
                    script.display(),
                    stderr(&o).trim()
                )),
                Err(_) => Err(format!("{} timed out or could not run", script.display())),
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Why containerd tests cannot run here (not root, containerd or ctr missing), if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if setup::which("containerd").is_none() {
        return Some("containerd not installed".into());
    }
    if setup::which("ctr").is_none() {
        return Some("ctr not installed".into());
    }
    None
}

/// The test cannot run for `why`: fails, or with `HULL_TEST_ALLOW_SKIP=1` prints why and
/// returns `None` (the test then returns).
pub fn skip<T>(why: &str) -> Option<T> {
    require::require(false, why);
    None
}

/// sha256 of `s` in hex, by sha256sum (how containerd names shim sockets).
fn sha256_hex(s: &str) -> Option<String> {
    let out = run::run(
        Command::new("sha256sum"),
        Some(s.as_bytes()),
        || true,
        Duration::from_secs(10),
    )
    .ok()?;
    stdout(&out).split_whitespace().next().map(str::to_string)
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
