//! A private image registry for one test: Debian's `docker-registry` (the distribution registry
//! server) on 127.0.0.1:<free port>, storage in the test's directory, filled with `skopeo copy`
//! from the locally built OCI archives, so that CRI PullImage really pulls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{run, stderr};

/// Default location of the pause image archive (scripts/make-image.sh --pause).
pub const DEFAULT_PAUSE_IMAGE: &str = "/var/lib/hull/images/pause.oci.tar";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// A free TCP port on 127.0.0.1 (free when asked: the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A running registry, stopped (by pid) on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct Registry {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// Start one with its config, storage and log under `dir`; panics if it does not answer.
    pub fn start(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir.join("storage")).expect("create registry dir");
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: hull-test\n",
                dir.join("storage").display()
            ),
        )
        .expect("write registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut r = Registry {
            port,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let up = run::poll_until(READY_TIMEOUT, Duration::from_millis(50), || {
            r.child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
                && r.answers()
        });
        assert!(
            up,
            "docker-registry did not answer on 127.0.0.1:{port}; log:\n{}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        r
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        // "HTTP/1.0 200 OK" (Go answers in the request's version).
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.") && buf[..n].windows(5).any(|w| w == b" 200 "))
    }

    /// Push the OCI archive `tar` as `repo:tag` (e.g. `library/busybox:latest`).
    pub fn push(&self, tar: &Path, reference: &str) {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("create skopeo tmp dir");
        let mut c = Command::new("skopeo");
        c.args([
            "copy",
            "--quiet",
            "--insecure-policy",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{}/{reference}", self.host()))
        .env("TMPDIR", &tmp);
        match run::run(c, None, || true, PUSH_TIMEOUT) {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "skopeo copy {} -> {reference} failed: {}",
                tar.display(),
                stderr(&o)
            ),
            Err(_) => panic!("skopeo copy {} timed out", tar.display()),
        }
    }

    /// Stop it (SIGTERM, then SIGKILL) and reap it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(pid, Signal::SIGTERM);
                let gone =
                    run::poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
                        !matches!(child.try_wait(), Ok(None))
                    });
                if !gone {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pause image archive, built by `scripts/make-image.sh --pause` once per test process
/// (`HULL_TEST_PAUSE_IMAGE` overrides where).
pub fn pause_image() -> PathBuf {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let tar = std::env::var_os("HULL_TEST_PAUSE_IMAGE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PAUSE_IMAGE));
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-image.sh");
            let mut cmd = Command::new("bash");
            cmd.arg(&script).arg("--pause").arg(&tar);
            match run::run(cmd, None, || true, Duration::from_secs(300)) {
                Ok(o) if o.status.success() => Ok(tar),
                Ok(o) => Err(format!(
                    "{} --pause failed: {}",
                    script.display(),
                    stderr(&o)
                )),
                Err(_) => Err(format!("{} --pause timed out", script.display())),
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}
