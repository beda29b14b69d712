//! End to end: a private containerd (tests/common) runs busybox containers with the hull
//! runtime, each in its own QEMU VM, and nothing is left behind by any path, including a
//! VM that dies, a shim that is killed and a guest that cannot boot.

mod common;

use std::time::Duration;

use common::{run::poll_until, stderr, stdout, Options, PrivateContainerd, BUSYBOX, HULL_RUNTIME};

/// Long enough for a TCG boot on a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

fn hull_run<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--runtime", HULL_RUNTIME];
    v.extend_from_slice(extra);
    v
}

/// Host pids of processes whose command line names the sandbox run directory of `id`.
fn sandbox_processes(id: &str, comm: &str) -> Vec<i32> {
    let needle = format!("/run/hull/{id}/");
    common::host::processes()
        .into_iter()
        .filter(|p| p.args.join(" ").contains(&needle) && p.comm.starts_with(comm))
        .map(|p| p.pid)
        .collect()
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_string()
}

#[test]
fn run_rm_guest_kernel_exit_code_stdin_env_and_mounts() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();

    let id = cd.id("uname");
    let out = cd.ctr(&hull_run(&["--rm", BUSYBOX, &id, "uname", "-r"]));
    assert!(out.status.success(), "uname failed: {}", stderr(&out));
    let guest = stdout(&out).trim().to_string();
    assert!(!guest.is_empty());
    assert_ne!(guest, host_kernel(), "ran on the host kernel, not in a VM");

    let id = cd.id("exit3");
    let out = cd.ctr(&hull_run(&["--rm", BUSYBOX, &id, "sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));

    let id = cd.id("cat");
    let out = cd.ctr_input(
        &hull_run(&["--rm", BUSYBOX, &id, "cat"]),
        b"hi from stdin\n",
    );
    assert!(out.status.success(), "cat failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi from stdin\n");

    let id = cd.id("env");
    let out = cd.ctr(&hull_run(&[
        "--rm",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        BUSYBOX,
        &id,
        "sh",
        "-c",
        "echo $FOO; pwd",
    ]));
    assert_eq!(stdout(&out), "bar\n/tmp\n", "stderr: {}", stderr(&out));

    let id = cd.id("ro");
    let out = cd.ctr(&hull_run(&[
        "--rm",
        "--read-only",
        BUSYBOX,
        &id,
        "touch",
        "/x",
    ]));
    assert_ne!(
        out.status.code(),
        Some(0),
        "a read-only rootfs was writable"
    );
    assert!(
        stderr(&out).contains("Read-only"),
        "stderr: {}",
        stderr(&out)
    );

    let vol = tempfile::tempdir().expect("tempdir");
    std::fs::write(vol.path().join("f"), "from the host\n").expect("write");
    let mount = format!(
        "type=bind,src={},dst=/vol,options=rbind:ro",
        vol.path().display()
    );
    let id = cd.id("bind");
    let out = cd.ctr(&hull_run(&[
        "--rm",
        "--mount",
        &mount,
        BUSYBOX,
        &id,
        "sh",
        "-c",
        "cat /vol/f; touch /vol/g",
    ]));
    assert_eq!(stdout(&out), "from the host\n", "stderr: {}", stderr(&out));
    assert_ne!(
        out.status.code(),
        Some(0),
        "a read-only bind mount was writable"
    );
    assert!(!vol.path().join("g").exists());

    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn detached_task_exec_ps_metrics_pause_resume_kill_delete() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("detached");
    cd.ctr_ok(&hull_run(&["-d", BUSYBOX, &id, "sleep", "1000"]));
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    assert_eq!(
        sandbox_processes(&id, "qemu").len(),
        1,
        "one VM for the task"
    );

    let ps = cd.ctr_ok(&["task", "exec", "--exec-id", "e1", &id, "ps"]);
    assert!(ps.contains("sleep 1000"), "ps in the container: {ps}");
    let exit = cd.ctr(&["task", "exec", "--exec-id", "e2", &id, "sh", "-c", "exit 5"]);
    assert_eq!(exit.status.code(), Some(5), "stderr: {}", stderr(&exit));

    let pids = cd.ctr_ok(&["task", "ps", &id]);
    assert!(pids.lines().count() >= 2, "task ps: {pids}");
    let metrics = cd.ctr_ok(&["task", "metrics", &id]);
    assert!(metrics.contains("pids.current"), "metrics: {metrics}");
    assert!(metrics.contains("memory.usage"), "metrics: {metrics}");

    cd.ctr_ok(&["task", "pause", &id]);
    assert_eq!(cd.task_status(&id).as_deref(), Some("PAUSED"));
    cd.ctr_ok(&["task", "resume", &id]);
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));

    // sleep is the container's PID 1 and ignores SIGTERM, as under runc; SIGKILL ends it.
    cd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(
        poll_until(DEADLINE, POLL, || cd.task_status(&id).as_deref()
            == Some("STOPPED")),
        "task did not stop"
    );
    cd.ctr_ok(&["task", "delete", &id]);
    cd.ctr_ok(&["container", "rm", &id]);
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn two_tasks_run_at_once_each_in_its_own_vm() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let a = cd.id("pod-a");
    let b = cd.id("pod-b");
    cd.ctr_ok(&hull_run(&["-d", BUSYBOX, &a, "sleep", "1000"]));
    cd.ctr_ok(&hull_run(&["-d", BUSYBOX, &b, "sleep", "1000"]));
    let (qa, qb) = (sandbox_processes(&a, "qemu"), sandbox_processes(&b, "qemu"));
    assert_eq!((qa.len(), qb.len()), (1, 1), "one VM each");
    assert_ne!(qa, qb);
    for id in [&a, &b] {
        cd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    }
    for id in [&a, &b] {
        assert!(poll_until(DEADLINE, POLL, || cd.task_status(id).as_deref()
            == Some("STOPPED")));
        cd.ctr_ok(&["task", "delete", id]);
        cd.ctr_ok(&["container", "rm", id]);
    }
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn a_dead_vm_stops_the_task_with_an_error_status() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("vm-dies");
    let args = hull_run(&["--rm", BUSYBOX, &id, "sleep", "1000"]);
    std::thread::scope(|s| {
        // A foreground `ctr run` exits with the task's status: that is what we check.
        let run = s.spawn(|| cd.ctr(&args));
        assert!(
            poll_until(DEADLINE, POLL, || cd.task_status(&id).as_deref()
                == Some("RUNNING")),
            "the task did not start"
        );
        let qemu = sandbox_processes(&id, "qemu");
        assert_eq!(qemu.len(), 1, "the task's VM");
        // This test started the VM (through containerd); it ends it by its pid.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu[0]),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill qemu");
        let out = run.join().expect("ctr run thread");
        assert_eq!(
            out.status.code(),
            Some(255),
            "ctr run after the VM died: {}",
            stderr(&out)
        );
    });
    let st = cd.ctr(&["task", "ls"]);
    assert!(!stdout(&st).contains(&id), "--rm left the task");
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn a_dead_helper_daemon_stops_the_task() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("helper-dies");
    cd.ctr_ok(&hull_run(&["-d", BUSYBOX, &id, "sleep", "1000"]));
    let helpers = sandbox_processes(&id, "virtiofsd");
    assert!(!helpers.is_empty(), "the task's virtiofsd");
    for pid in helpers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        poll_until(DEADLINE, POLL, || cd.task_status(&id).as_deref()
            == Some("STOPPED")),
        "the task did not stop after its virtiofsd died"
    );
    cd.ctr_ok(&["task", "delete", &id]);
    cd.ctr_ok(&["container", "rm", &id]);
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn a_killed_shim_is_cleaned_up_by_delete() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("shim-dies");
    cd.ctr_ok(&hull_run(&["-d", BUSYBOX, &id, "sleep", "1000"]));
    let shim: Vec<i32> = common::host::processes()
        .into_iter()
        .filter(|p| {
            p.comm.starts_with("containerd-shim")
                && p.args.join(" ").contains(&format!("-id {id} "))
        })
        .map(|p| p.pid)
        .collect();
    assert_eq!(shim.len(), 1, "the task's shim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill shim");
    // containerd notices, runs `containerd-shim-hull-v2 delete`; the VM and its helpers died
    // with the shim, the run directory goes with delete.
    let run_dir = std::path::PathBuf::from("/run/hull").join(&id);
    assert!(
        poll_until(DEADLINE, POLL, || {
            !run_dir.exists()
                && sandbox_processes(&id, "").is_empty()
                && cd.task_status(&id).as_deref() != Some("RUNNING")
        }),
        "not cleaned up after the shim died: run dir {} exists: {}, processes: {:?}",
        run_dir.display(),
        run_dir.exists(),
        sandbox_processes(&id, "")
    );
    let _ = cd.ctr(&["task", "delete", &id]);
    cd.ctr_ok(&["container", "rm", &id]);
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn a_guest_that_cannot_boot_fails_create_with_its_console() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    // No init in the initrd: the guest kernel panics at boot and QEMU exits.
    std::fs::write(
        &config,
        "[hypervisor]\nkernel_params = \"rdinit=/no/such/init\"\nboot_timeout_secs = 30\n",
    )
    .expect("write config");
    let Some(cd) = PrivateContainerd::start_with(
        Options::default().env("HULL_CONFIG", &config.display().to_string()),
    ) else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("noboot");
    let out = cd.ctr(&hull_run(&["--rm", BUSYBOX, &id, "true"]));
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("console"),
        "error does not show the console: {err}"
    );
    assert!(
        err.contains("init") || err.contains("panic"),
        "error does not name the cause: {err}"
    );
    let _ = cd.ctr(&["container", "rm", &id]);
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn tty_task_gets_a_terminal() {
    let script = common::setup::which("script");
    if !common::require::require(script.is_some(), "script(1) (bsdutils)") {
        return;
    }
    let Some(script) = script else { return };
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("tty");
    // ctr -t needs a terminal of its own: script(1) gives it one, sized 30x100 here. ctr sends
    // that size with a ResizePty after the start, so the container polls until it arrives.
    let inner = "tty; for i in $(seq 200); do s=$(stty size); [ \"$s\" = \"30 100\" ] && break; sleep 0.05; done; echo size $s";
    let cmd = format!(
        "stty rows 30 cols 100; ctr -a {} -n {} run --runtime {HULL_RUNTIME} --rm -t {BUSYBOX} {id} sh -c '{inner}'",
        cd.address(),
        common::NAMESPACE
    );
    cd.track_id(&id);
    let mut c = std::process::Command::new(script);
    c.args(["-qec", &cmd, "/dev/null"]);
    let out = common::run::run(c, None, || true, DEADLINE)
        .unwrap_or_else(|_| panic!("script(1) running ctr -t timed out or failed"));
    let text = stdout(&out);
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in the container: {text:?}"
    );
    assert!(
        text.contains("size 30 100"),
        "the terminal size did not follow: {text:?}"
    );
    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}
