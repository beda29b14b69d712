//! Sandbox, container and process logic through the `Vmm` seam: a fake VMM (a sleeping child
//! process) and a fake agent over a Unix socket; no root, no VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::testing::{FakeMounts, FakeVmm};
use crate::Stdio;

struct Env {
    _dir: tempfile::TempDir,
    config: Config,
    rootfs: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults();
    config.runtime.run_dir = dir.path().join("run");
    config.shared_fs.kind = SharedFsKind::NineP;
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("rootfs");
    Env {
        _dir: dir,
        config,
        rootfs,
    }
}

fn seams() -> Seams {
    Seams {
        vmm: Box::new(FakeVmm::default()),
        mounts: Arc::new(FakeMounts::default()),
    }
}

fn boot(e: &Env, id: &str) -> Sandbox {
    Sandbox::create_with(seams(), &e.config, id, &SandboxOptions::default()).expect("boot")
}

fn spec(args: &[&str]) -> oci_spec::runtime::Spec {
    crate::spec::minimal(
        args.iter().map(|s| s.to_string()).collect(),
        &[],
        None,
        false,
    )
    .expect("spec")
}

fn quiet() -> Stdio {
    Stdio {
        stdin: None,
        stdout: Box::new(std::io::sink()),
        stderr: Some(Box::new(std::io::sink())),
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); its state letter tells.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn lifecycle_and_nothing_left() {
    let e = env();
    let sb = boot(&e, "sb1");
    assert_eq!(sb.guest_kernel(), "fake-kernel");
    let vm_pid = sb.vm_pid();
    assert!(alive(vm_pid));
    let run_dir = sb.run_dir().to_path_buf();
    let c = sb
        .create_container("c1", &spec(&["sleep", "1000"]), &e.rootfs)
        .expect("create");
    let init = c.start(quiet()).expect("start");
    let echo = c
        .exec(
            "e1",
            spec(&["echo", "hi"]).process().as_ref().expect("p"),
            quiet(),
        )
        .expect("exec");
    assert_eq!(echo.wait().expect("wait").status, 0);
    assert!(c.pids().expect("pids").contains(&init.pid()));
    init.signal(15, false).expect("signal");
    assert_eq!(init.wait().expect("wait").status, 128 + 15);
    c.remove().expect("remove");
    sb.stop().expect("stop");
    assert!(!run_dir.exists(), "run dir left");
    assert!(!alive(vm_pid), "fake vmm {vm_pid} left running");
}

#[test]
fn codes_travel_from_the_agent() {
    let e = env();
    let sb = boot(&e, "sb2");
    let c = sb
        .create_container("c1", &spec(&["sleep", "1"]), &e.rootfs)
        .expect("create");
    let dup = sb
        .create_container("c1", &spec(&["sleep", "1"]), &e.rootfs)
        .expect_err("dup");
    assert!(matches!(dup, Error::AlreadyExists(_)), "{dup:?}");
    c.start(quiet()).expect("start");
    let again = c.start(quiet()).expect_err("twice");
    assert!(matches!(again, Error::FailedPrecondition(_)), "{again:?}");
    let p = spec(&["exit", "3"]).process().clone().expect("p");
    let e1 = c.exec("e1", &p, quiet()).expect("exec");
    let dup = c.exec("e1", &p, quiet()).expect_err("dup exec");
    assert!(matches!(dup, Error::AlreadyExists(_)), "{dup:?}");
    assert_eq!(e1.wait().expect("wait").status, 3);
    let bad = sb
        .create_container("../x", &spec(&["true"]), &e.rootfs)
        .expect_err("bad id");
    assert!(matches!(bad, Error::InvalidArgument(_)), "{bad:?}");
    sb.stop().expect("stop");
}

#[test]
fn a_dead_vm_is_named_by_every_caller() {
    let e = env();
    let sb = boot(&e, "sb3");
    let c = sb
        .create_container("c1", &spec(&["sleep", "1000"]), &e.rootfs)
        .expect("create");
    let init = Arc::new(c.start(quiet()).expect("start"));
    let waiter = {
        let init = init.clone();
        std::thread::spawn(move || init.wait())
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sb.vm_pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill fake vm");
    let err = waiter.join().expect("join").expect_err("vm died");
    let text = err.to_string();
    assert!(matches!(err, Error::Died { .. }), "{err:?}");
    assert!(
        text.contains("fake-vmm exited: killed by signal 9 (SIGKILL)"),
        "{text}"
    );
    assert!(
        text.contains("fake guest booted"),
        "console tail missing: {text}"
    );
    let later = c.pids().expect_err("dead");
    assert!(later.to_string().contains("killed by signal 9"), "{later}");
    c.remove()
        .expect("removing a container of a dead VM succeeds");
    sb.stop().expect("stop");
}

#[test]
fn stop_releases_blocked_waiters_and_later_calls_fail() {
    let e = env();
    let sb = Arc::new(boot(&e, "sb4"));
    let c = sb
        .create_container("c1", &spec(&["sleep", "1000"]), &e.rootfs)
        .expect("create");
    let init = Arc::new(c.start(quiet()).expect("start"));
    let waiter = {
        let init = init.clone();
        std::thread::spawn(move || init.wait())
    };
    let t = Instant::now();
    sb.stop().expect("stop");
    let r = waiter.join().expect("join");
    assert!(r.is_err(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let e2 = init.signal(9, false).expect_err("stopped");
    assert!(matches!(e2, Error::FailedPrecondition(_)), "{e2:?}");
    sb.stop().expect("second stop");
}

#[test]
fn concurrent_use_and_stop_never_deadlock() {
    let e = env();
    let sb = Arc::new(boot(&e, "sb5"));
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..4 {
        let sb = sb.clone();
        let tx = tx.clone();
        let rootfs = e.rootfs.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                let id = format!("c{t}-{i}");
                let r = sb
                    .create_container(&id, &spec(&["exit", "0"]), &rootfs)
                    .and_then(|c| {
                        c.start(quiet())?.wait()?;
                        c.remove()
                    });
                if let Err(err) = r {
                    assert!(
                        matches!(err, Error::FailedPrecondition(_)),
                        "only 'stopped' may fail: {err:?}"
                    );
                }
            }
            let _ = tx.send(());
        });
    }
    std::thread::sleep(Duration::from_millis(20));
    sb.stop().expect("stop");
    drop(tx);
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a worker hung");
    }
}

#[test]
fn failed_launch_leaves_nothing() {
    let e = env();
    let s = Seams {
        vmm: Box::new(FakeVmm {
            fail_launch: Some("refuses".into()),
            ..FakeVmm::default()
        }),
        mounts: Arc::new(FakeMounts::default()),
    };
    let err = Sandbox::create_with(s, &e.config, "sb6", &SandboxOptions::default())
        .expect_err("launch fails");
    assert!(err.to_string().contains("fake-vmm refuses"), "{err}");
    assert!(!e.config.runtime.run_dir.join("sb6").exists());
    let dup = boot(&e, "sb6");
    let again = Sandbox::create_with(seams(), &e.config, "sb6", &SandboxOptions::default())
        .expect_err("duplicate");
    assert!(matches!(again, Error::AlreadyExists(_)), "{again:?}");
    dup.stop().expect("stop");
}

#[test]
fn binds_go_under_the_shared_dir() {
    let e = env();
    let mounts = Arc::new(FakeMounts::default());
    let s = Seams {
        vmm: Box::new(FakeVmm::default()),
        mounts: mounts.clone(),
    };
    let sb = Sandbox::create_with(s, &e.config, "sb7", &SandboxOptions::default()).expect("boot");
    sb.create_container("c1", &spec(&["sleep", "1"]), &e.rootfs)
        .expect("create");
    let binds = mounts.binds.lock().expect("lock").clone();
    assert_eq!(binds.len(), 1, "{binds:?}");
    assert_eq!(binds[0].0, e.rootfs);
    assert!(binds[0].1.starts_with(sb.run_dir()), "{binds:?}");
    assert!(binds[0].1.ends_with(Path::new("c1/rootfs")), "{binds:?}");
    sb.stop().expect("stop");
}

#[test]
fn synced_volumes_follow_the_host_and_go_with_their_last_container() {
    let e = env();
    let vmm = FakeVmm::default();
    let volumes = vmm.volumes.clone();
    let s = Seams {
        vmm: Box::new(vmm),
        mounts: Arc::new(FakeMounts::default()),
    };
    let sb = Sandbox::create_with(s, &e.config, "sb8", &SandboxOptions::default()).expect("boot");
    let cm = e
        ._dir
        .path()
        .join("pods/u/volumes/kubernetes.io~configmap/cfg");
    std::fs::create_dir_all(&cm).expect("mkdir");
    std::fs::write(cm.join("a"), "1").expect("write");
    let mut sp = spec(&["sleep", "1"]);
    sp.set_mounts(Some(vec![oci_spec::runtime::MountBuilder::default()
        .destination("/cfg")
        .typ("bind")
        .source(&cm)
        .options(vec!["rbind".to_string(), "ro".to_string()])
        .build()
        .expect("mount")]));
    let c1 = sb.create_container("c1", &sp, &e.rootfs).expect("c1");
    let c2 = sb.create_container("c2", &sp, &e.rootfs).expect("c2");
    let id = crate::volumes::volume_id(&cm);
    let paths = |v: &crate::testing::FakeVolumes| v.lock().expect("lock").get(&id).cloned();
    assert_eq!(paths(&volumes), Some(vec!["a".to_string()]));
    std::fs::write(cm.join("b"), "2").expect("write");
    assert!(
        crate::daemon::poll_until(Duration::from_secs(5), || paths(&volumes)
            .is_some_and(|p| p.len() == 2)),
        "update not synced: {:?}",
        paths(&volumes)
    );
    c1.remove().expect("remove c1");
    assert!(paths(&volumes).is_some(), "c2 still uses it");
    c2.remove().expect("remove c2");
    assert_eq!(paths(&volumes), None, "gone with its last container");
    // A second pod life: the volume comes back, and goes when the sandbox stops.
    sb.create_container("c3", &sp, &e.rootfs).expect("c3");
    assert!(paths(&volumes).is_some());
    sb.stop().expect("stop");
}
