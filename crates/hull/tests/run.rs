//! End-to-end: `hull run` boots a real VM (QEMU, TCG here) and runs containers in it.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{stdout, Env};

#[test]
fn prints_the_guest_kernel_release() {
    let env = Env::new("uname", "");
    let out = env.run(&["--", "uname", "-r"]);
    assert!(out.status.success(), "stderr: {}", common::stderr(&out));
    let host = nix::sys::utsname::uname().expect("uname");
    let guest = stdout(&out).trim().to_string();
    assert!(!guest.is_empty());
    assert_ne!(
        guest,
        host.release().to_string_lossy(),
        "ran on the host kernel"
    );
}

#[test]
fn exit_status_is_the_containers() {
    let env = Env::new("exit", "");
    let out = env.run(&["--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        common::stderr(&out)
    );
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(common::stderr(&out), "err\n");
}

#[test]
fn stdin_reaches_the_container() {
    let env = Env::new("stdin", "");
    let root = common::rootfs().to_string_lossy().into_owned();
    let mut child = env
        .hull(&[
            "run",
            "-i",
            "--rootfs",
            &root,
            "--",
            "sh",
            "-c",
            "cat; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"hello from the host\n").expect("write");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    env.assert_clean();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hello from the host\ndone\n");
}

#[test]
fn env_cwd_and_sizes_are_honoured() {
    let env = Env::new("envcwd", "");
    let out = env.run(&[
        "--env",
        "FOO=bar baz",
        "--cwd",
        "/tmp",
        "--memory",
        "192",
        "--cpus",
        "2",
        "--",
        "sh",
        "-c",
        "echo \"$FOO\"; pwd; grep -c ^processor /proc/cpuinfo; awk '/MemTotal/{print int($2/1024)}' /proc/meminfo",
    ]);
    assert!(out.status.success(), "stderr: {}", common::stderr(&out));
    let s = stdout(&out);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[..3], ["bar baz", "/tmp", "2"], "{s}");
    let mem: u32 = lines[3].parse().expect("MemTotal");
    assert!(
        (100..=192).contains(&mem),
        "guest MemTotal {mem} MiB for --memory 192"
    );
}

#[test]
fn sigterm_reaches_the_container() {
    let env = Env::new("sigterm", "");
    let root = common::rootfs().to_string_lossy().into_owned();
    let script = "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.2; done";
    let mut child = env
        .hull(&["run", "--rootfs", &root, "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let n = out.read(&mut buf).expect("read");
        assert!(n > 0, "hull ended before the container was ready");
        seen.extend_from_slice(&buf[..n]);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    out.read_to_end(&mut seen).expect("read rest");
    let status = child.wait().expect("wait");
    env.assert_clean();
    assert!(
        String::from_utf8_lossy(&seen).contains("got-term"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(status.code(), Some(3));
}

#[test]
fn nine_p_shared_fs_works() {
    let env = Env::new("ninep", "[shared_fs]\nkind = \"9p\"\n");
    let out = env.run(&["--", "sh", "-c", "head -1 /etc/passwd"]);
    assert!(out.status.success(), "stderr: {}", common::stderr(&out));
    assert!(stdout(&out).starts_with("root:x:0:0"), "{}", stdout(&out));
}

/// SIGKILL the processes `processes_mentioning(pattern)` lists (only this test's: the pattern
/// names its sandbox), then check that `hull run` fails in time with one line naming `what`.
fn kill_under_a_running_process(env: &Env, pattern: &str, what: &str) {
    let child = env.spawn_sleeper();
    let victims = common::processes_mentioning(pattern);
    assert!(!victims.is_empty(), "nothing matches {pattern}");
    for v in &victims {
        let pid: i32 = v
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("pid");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let t = Instant::now();
    let o = child.wait_with_output().expect("wait");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "hull took {:?} to notice",
        t.elapsed()
    );
    env.assert_clean();
    common::assert_one_line_error(&o, what);
}

#[test]
fn a_dead_helper_fails_the_sandbox_with_its_name() {
    let env = Env::new("helperdeath", "");
    let dir = std::path::Path::new(common::RUN_ROOT).join(&env.id);
    kill_under_a_running_process(
        &env,
        &format!("source={}/shared", dir.display()),
        "virtiofsd exited: killed by signal 9 (SIGKILL)",
    );
}

#[test]
fn a_killed_qemu_is_named_with_its_signal() {
    let env = Env::new("qemukill", "");
    kill_under_a_running_process(
        &env,
        &format!("-name hull-{},", env.id),
        "qemu exited: killed by signal 9 (SIGKILL)",
    );
}

#[test]
fn root_in_the_container_has_only_the_specs_capabilities() {
    let env = Env::new("caps", "");
    let out = env.run(&[
        "--",
        "sh",
        "-c",
        "grep -E '^Cap(Eff|Bnd)' /proc/self/status; hostname other 2>/dev/null || echo denied",
    ]);
    assert!(out.status.success(), "stderr: {}", common::stderr(&out));
    // The default OCI set: CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE.
    assert_eq!(
        stdout(&out),
        "CapEff:\t0000000020000420\nCapBnd:\t0000000020000420\ndenied\n"
    );
}

#[test]
fn a_killed_hull_leaves_no_process_and_the_next_run_sweeps_its_directory() {
    // A run root of its own: a sandbox of a test running in parallel would sweep the killed
    // run's directory from a shared one before this test could see it still there.
    let run_root = std::path::PathBuf::from(format!("{}-crash", common::RUN_ROOT));
    let env = Env::in_run_root("crash", "", &run_root);
    let mut child = env.spawn_sleeper();
    child.kill().expect("SIGKILL hull");
    child.wait().expect("reap hull");
    let dir = run_root.join(&env.id);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !common::processes_mentioning(&dir.to_string_lossy()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "helpers outlived hull: {:?}",
            common::processes_mentioning(&dir.to_string_lossy())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dir.exists(),
        "expected the killed run's directory to still be there"
    );
    let next = Env::in_run_root("crash-next", "", &run_root);
    let o = next.run(&["--", "true"]);
    assert!(o.status.success(), "stderr: {}", common::stderr(&o));
    assert!(
        !dir.exists(),
        "stale run directory {} was not swept",
        dir.display()
    );
}
