//! Integration: the library API against a real VM. A sandbox holds a long-running container,
//! an extra process is exec'd into it, signals reach it, and stopping removes everything.

mod common;

use std::path::PathBuf;

use common::{busybox_rootfs, quiet, Sink};
use hull_runtime::{spec, Config, Error, Sandbox, SandboxOptions, Stdio};

const RUN_ROOT: &str = "/run/hull-tests";

#[test]
fn exec_and_signals_in_a_running_container() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = busybox_rootfs(tmp.path(), &["sh", "sleep", "echo", "cat", "hostname"]);
    let mut config = Config::defaults();
    config.runtime.run_dir = PathBuf::from(RUN_ROOT);
    let id = format!("lib-exec-{}", std::process::id());
    let sandbox = Sandbox::create(&config, &id, &SandboxOptions::default()).expect("sandbox boots");
    let run_dir = sandbox.run_dir().to_path_buf();

    let spec = spec::minimal(vec!["sleep".into(), "1000".into()], &[], None, false).expect("spec");
    let c1 = sandbox
        .create_container("c1", &spec, &rootfs)
        .expect("create");
    let e = sandbox
        .create_container("c1", &spec, &rootfs)
        .expect_err("duplicate container id");
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    let init = c1.start(quiet()).expect("start");

    let mut process = spec.process().clone().expect("process");
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo exec-ok; hostname; exit 4".into(),
    ]));
    let out = Sink::default();
    let e1 = c1
        .exec(
            "e1",
            &process,
            Stdio {
                stdin: None,
                stdout: Box::new(out.clone()),
                stderr: Some(Box::new(std::io::sink())),
            },
        )
        .expect("exec");
    let exit = e1.wait().expect("wait exec");
    assert_eq!(exit.status, 4);
    assert!(exit.drained);
    assert_eq!(out.text(), "exec-ok\nhull\n");

    // An exited exec can be forgotten, and its id used again.
    e1.remove().expect("remove exec");
    assert!(e1.wait().is_err(), "removed exec must be gone");
    process.set_args(Some(vec!["sh".into(), "-c".into(), "exit 0".into()]));
    let again = c1.exec("e1", &process, quiet()).expect("exec id reused");
    assert_eq!(again.wait().expect("wait reused exec").status, 0);

    // Starting twice is a precondition failure carried from the agent.
    let e = c1.start(quiet()).expect_err("starting twice must fail");
    assert!(
        matches!(e, Error::FailedPrecondition(_) | Error::AlreadyExists(_)),
        "{e:?}"
    );
    // Pids, stats, pause and resume act on the container's cgroup in the guest.
    let pids = c1.pids().expect("pids");
    assert!(pids.contains(&init.pid()), "{pids:?} lacks {}", init.pid());
    let stats = c1.stats().expect("stats");
    assert!(stats.pids_current >= 1, "{stats:?}");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    c1.set_paused(true).expect("pause");
    c1.set_paused(false).expect("resume");
    init.signal(libc::SIGKILL, false).expect("kill");
    assert_eq!(init.wait().expect("wait init").status, 128 + libc::SIGKILL);
    c1.remove().expect("remove");
    let e = c1.pids().expect_err("removed container must be gone");
    assert!(matches!(e, Error::NotFound(_)), "{e}");

    sandbox.stop().expect("stop");
    let e = c1.pids().expect_err("stopped sandbox");
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    sandbox.stop().expect("stop is idempotent");
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
}

#[test]
fn duplicate_sandbox_id_is_refused_without_touching_the_first() {
    let mut config = Config::defaults();
    config.runtime.run_dir = PathBuf::from(RUN_ROOT);
    let id = format!("lib-dup-{}", std::process::id());
    let first = Sandbox::create(&config, &id, &SandboxOptions::default()).expect("first boots");
    let e = Sandbox::create(&config, &id, &SandboxOptions::default()).expect_err("duplicate id");
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    assert!(
        first.run_dir().exists(),
        "the first sandbox lost its run directory"
    );
    first.stop().expect("stop");
}
