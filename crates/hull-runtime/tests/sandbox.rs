//! Integration: the library API against a real VM. A sandbox holds a long-running container,
//! an extra process is exec'd into it, signals reach it, and stopping removes everything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hull_runtime::io::{attach, Stdio};
use hull_runtime::{spec, Config, Sandbox, SandboxOptions};

const RUN_ROOT: &str = "/run/hull-tests";

/// A Write that collects into a shared buffer.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static must be installed");
    for applet in ["sh", "sleep", "echo", "cat", "hostname"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    root
}

#[test]
fn exec_and_signals_in_a_running_container() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = busybox_rootfs(tmp.path());
    let mut config = Config::defaults();
    config.runtime.run_dir = PathBuf::from(RUN_ROOT);
    let id = format!("lib-exec-{}", std::process::id());
    let sandbox = Sandbox::create(&config, &id, &SandboxOptions::default()).expect("sandbox boots");
    let run_dir = sandbox.run_dir().to_path_buf();

    let spec = spec::minimal(vec!["sleep".into(), "1000".into()], &[], None, false).expect("spec");
    sandbox
        .create_container("c1", &spec, &rootfs)
        .expect("create");
    sandbox.start_container("c1").expect("start");

    let mut process = spec.process().clone().expect("process");
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo exec-ok; hostname; exit 4".into(),
    ]));
    sandbox.exec("c1", "e1", &process).expect("exec");
    let out = Sink::default();
    let agent = Arc::clone(sandbox.agent().expect("agent"));
    let copies = attach(
        &agent,
        "c1",
        "e1",
        Stdio {
            stdin: None,
            stdout: Box::new(out.clone()),
            stderr: Some(Box::new(std::io::sink())),
        },
    );
    assert_eq!(sandbox.wait("c1", "e1").expect("wait exec"), 4);
    copies.join_output();
    assert_eq!(out.text(), "exec-ok\nhull\n");

    assert!(
        sandbox.wait("c1", "nope").is_err(),
        "unknown exec id must fail"
    );

    // An exited exec can be forgotten, and its id used again.
    sandbox.remove_exec("c1", "e1").expect("remove exec");
    assert!(
        sandbox.wait("c1", "e1").is_err(),
        "removed exec must be gone"
    );
    process.set_args(Some(vec!["sh".into(), "-c".into(), "exit 0".into()]));
    sandbox.exec("c1", "e1", &process).expect("exec id reused");
    assert_eq!(sandbox.wait("c1", "e1").expect("wait reused exec"), 0);

    // Pids, stats, pause and resume act on the container's cgroup in the guest.
    let init_pid = sandbox.start_container("c1").err().map(|_| ());
    assert!(init_pid.is_some(), "starting twice must fail");
    let pids = sandbox.container_pids("c1").expect("pids");
    assert!(!pids.is_empty(), "the container's sleep must be listed");
    let stats = sandbox.stats("c1").expect("stats");
    assert!(stats.pids_current >= 1, "{stats:?}");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    sandbox.set_paused("c1", true).expect("pause");
    sandbox.set_paused("c1", false).expect("resume");
    assert!(
        sandbox.set_paused("nope", true).is_err(),
        "unknown container"
    );
    sandbox
        .signal("c1", "", libc::SIGKILL, false)
        .expect("kill");
    assert_eq!(
        sandbox.wait("c1", "").expect("wait init"),
        128 + libc::SIGKILL
    );
    sandbox.remove_container("c1").expect("remove");
    assert!(
        sandbox.wait("c1", "").is_err(),
        "removed container must be gone"
    );

    sandbox.stop().expect("stop");
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
}

#[test]
fn duplicate_sandbox_id_is_refused_without_touching_the_first() {
    let mut config = Config::defaults();
    config.runtime.run_dir = PathBuf::from(RUN_ROOT);
    let id = format!("lib-dup-{}", std::process::id());
    let first = Sandbox::create(&config, &id, &SandboxOptions::default()).expect("first boots");
    let e = Sandbox::create(&config, &id, &SandboxOptions::default()).expect_err("duplicate id");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(
        first.run_dir().exists(),
        "the first sandbox lost its run directory"
    );
    first.stop().expect("stop");
}
