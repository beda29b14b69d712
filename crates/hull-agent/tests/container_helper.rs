//! Runs real containers on the host through `Runtime` (the same code the ttrpc server drives):
//! a busybox rootfs in a tempdir, checked for output, exit status, identity and cleanup.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hull_agent::container::{Runtime, RuntimeConfig};
use hull_agent::AgentError;
use hull_protocol::test_support::require;

const BUSYBOX: &str = "/bin/busybox";
const CGROUP_CANDIDATES: &[&str] = &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

fn cgroup_root() -> Option<PathBuf> {
    CGROUP_CANDIDATES.iter().map(PathBuf::from).find(|p| {
        p.join("cgroup.procs").exists()
            && fs::read_to_string("/proc/mounts")
                .is_ok_and(|m| m.contains(&format!(" {} cgroup2 ", p.display())))
    })
}

/// Root, busybox and cgroup2 are needed: without them the test fails (see [`require`]).
fn setup() -> Option<(tempfile::TempDir, Arc<Runtime>, PathBuf)> {
    let root = nix::unistd::Uid::effective().is_root();
    if !require(root, "root")
        || !require(Path::new(BUSYBOX).exists(), "/bin/busybox (busybox-static)")
    {
        return None;
    }
    let cg = cgroup_root();
    if !require(cg.is_some(), "a cgroup2 mount") {
        return None;
    }
    let cg = cg?;
    let shared = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(RuntimeConfig {
        helper_exe: PathBuf::from(env!("CARGO_BIN_EXE_hull-agent")),
        cgroup_root: cg.clone(),
        shared_dir: shared.path().to_path_buf(),
    });
    Some((shared, Arc::new(rt), cg))
}

fn make_rootfs(shared: &Path, id: &str) -> PathBuf {
    let root = shared.join(id).join("rootfs");
    for d in ["bin", "proc", "dev", "tmp", "etc", "home/user", "sys"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    for l in [
        "sh", "echo", "cat", "id", "hostname", "ls", "sleep", "pwd", "touch", "env", "mkdir",
        "chmod", "rm",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).expect("symlink");
    }
    root
}

fn spec(root: &Path, args: &[&str], extra: &str) -> Vec<u8> {
    let args = serde_json::to_string(args).expect("args");
    format!(
        r#"{{
  "ociVersion": "1.0.2",
  "root": {{"path": "{root}", "readonly": true}},
  "hostname": "hullbox",
  "process": {{
    "args": {args},
    "cwd": "/home/user",
    "env": ["PATH=/bin", "GREETING=hello"],
    "user": {{"uid": 1000, "gid": 1001, "additionalGids": [1002]}},
    "rlimits": [{{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}}],
    "noNewPrivileges": true
    {extra}
  }},
  "mounts": [
    {{"destination": "/proc", "type": "proc", "source": "proc"}},
    {{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}},
    {{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}},
    {{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}}
  ],
  "linux": {{
    "namespaces": [{{"type": "pid"}}, {{"type": "ipc"}}, {{"type": "uts"}}, {{"type": "mount"}}, {{"type": "network"}}],
    "resources": {{"pids": {{"limit": 64}}}},
    "maskedPaths": ["/proc/kcore", "/proc/keys"],
    "readonlyPaths": ["/proc/sys"]
  }}
}}"#,
        root = root.display()
    )
    .into_bytes()
}

async fn read_all(rt: &Runtime, id: &str, exec: &str, stderr: bool) -> String {
    let mut out = Vec::new();
    loop {
        let chunk = rt.read_output(id, exec, stderr, 4096).await.expect("read");
        if chunk.is_empty() {
            return String::from_utf8_lossy(&out).into_owned();
        }
        out.extend(chunk);
    }
}

/// Create, start, collect output and status, remove; check nothing is left.
async fn run(
    rt: &Runtime,
    shared: &Path,
    cg: &Path,
    id: &str,
    script: &str,
) -> (String, String, i32) {
    run_with(rt, shared, cg, id, script, |_| {}).await
}

/// [`run`] with the spec (as JSON) changed by `edit` first.
async fn run_with(
    rt: &Runtime,
    shared: &Path,
    cg: &Path,
    id: &str,
    script: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (String, String, i32) {
    let root = make_rootfs(shared, id);
    let mut json: serde_json::Value =
        serde_json::from_slice(&spec(&root, &["sh", "-c", script], "")).expect("spec json");
    edit(&mut json);
    rt.create(id, &serde_json::to_vec(&json).expect("spec"))
        .await
        .expect("create");
    rt.close_stdin(id, "").expect("close stdin");
    let pid = rt.start(id).await.expect("start");
    assert!(pid > 1);
    let (out, err) = tokio::join!(read_all(rt, id, "", false), read_all(rt, id, "", true));
    let status = rt.wait(id, "").await.expect("wait");
    rt.remove(id).await.expect("remove");
    assert!(!cg.join("hull").join(id).exists(), "cgroup left behind");
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&root.display().to_string()),
        "mount left behind"
    );
    (out, err, status)
}

#[tokio::test]
async fn container_runs_with_its_identity() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    let script = "echo out; echo err >&2; hostname; id -u; id -g; id -G; pwd; echo $GREETING; ulimit -n; \
                  touch /x 2>/dev/null && echo writable || echo readonly; touch /tmp/ok && echo tmp-ok; \
                  echo pid=$$; exit 7";
    let (out, err, status) = run(&rt, shared.path(), &cg, "c-identity", script).await;
    assert_eq!(status, 7, "stdout: {out}\nstderr: {err}");
    assert_eq!(err, "err\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "out",
            "hullbox",
            "1000",
            "1001",
            "1001 1002",
            "/home/user",
            "hello",
            "256",
            "readonly",
            "tmp-ok",
            "pid=1"
        ],
        "stderr: {err}"
    );
}

#[tokio::test]
async fn missing_command_fails_at_create() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    let root = make_rootfs(shared.path(), "c-missing");
    let err = rt
        .create("c-missing", &spec(&root, &["no-such-command"], ""))
        .await
        .expect_err("must fail");
    match err {
        AgentError::NotFound(m) => {
            assert_eq!(m, "executable file not found in $PATH: no-such-command")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!cg.join("hull/c-missing").exists());
    assert!(matches!(
        rt.start("c-missing").await,
        Err(AgentError::NotFound(_))
    ));

    // a missing cwd is reported too
    let mut bad_cwd = String::from_utf8(spec(&root, &["sh"], "")).expect("utf8");
    bad_cwd = bad_cwd.replace("/home/user", "/nope");
    let err = rt
        .create("c-missing", bad_cwd.as_bytes())
        .await
        .expect_err("must fail");
    assert!(
        matches!(&err, AgentError::NotFound(m) if m.contains("/nope")),
        "{err:?}"
    );
}

#[tokio::test]
async fn exec_stdin_signal_and_duplicates() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    let id = "c-exec";
    let root = make_rootfs(shared.path(), id);
    let sp = spec(&root, &["sleep", "1000"], "");
    rt.create(id, &sp).await.expect("create");
    assert!(matches!(
        rt.create(id, &sp).await,
        Err(AgentError::AlreadyExists(_))
    ));
    rt.start(id).await.expect("start");

    let process = r#"{"args":["cat"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#;
    rt.exec(id, "e1", process.as_bytes()).await.expect("exec");
    assert!(matches!(
        rt.exec(id, "e1", process.as_bytes()).await,
        Err(AgentError::AlreadyExists(_))
    ));
    assert_eq!(
        rt.write_stdin(id, "e1", b"through stdin\n")
            .await
            .expect("write"),
        14
    );
    rt.close_stdin(id, "e1").expect("close");
    assert_eq!(read_all(&rt, id, "e1", false).await, "through stdin\n");
    assert_eq!(rt.wait(id, "e1").await.expect("wait"), 0);

    // exec sees the container's hostname and pid namespace
    let ps =
        r#"{"args":["sh","-c","hostname; echo $$; exit 3"],"cwd":"/","user":{"uid":0,"gid":0}}"#;
    rt.exec(id, "e2", ps.as_bytes()).await.expect("exec");
    rt.close_stdin(id, "e2").expect("close");
    let out = read_all(&rt, id, "e2", false).await;
    assert_eq!(rt.wait(id, "e2").await.expect("wait"), 3);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hullbox"));
    let pid: i32 = lines.next().and_then(|l| l.parse().ok()).expect("pid");
    assert!(
        pid > 1 && pid < 100,
        "pid {pid} should be in the container's namespace"
    );

    let missing = r#"{"args":["nope"],"cwd":"/","user":{"uid":0,"gid":0}}"#;
    assert!(matches!(
        rt.exec(id, "e3", missing.as_bytes()).await,
        Err(AgentError::NotFound(_))
    ));
    assert!(matches!(
        rt.wait(id, "nope").await,
        Err(AgentError::NotFound(_))
    ));

    rt.signal(id, "", 9, false).await.expect("kill");
    assert_eq!(rt.wait(id, "").await.expect("wait"), 137);
    rt.remove(id).await.expect("remove");
    assert!(!cg.join("hull").join(id).exists());
    assert!(matches!(
        rt.wait(id, "").await,
        Err(AgentError::NotFound(_))
    ));
}

#[tokio::test]
async fn terminal_and_remove_unstarted() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    let id = "c-tty";
    let root = make_rootfs(shared.path(), id);
    rt.create(
        id,
        &spec(
            &root,
            &["sh", "-c", "test -t 0 && echo tty; exit 0"],
            r#","terminal": true"#,
        ),
    )
    .await
    .expect("create");
    rt.resize(id, "", 40, 100).expect("resize");
    rt.start(id).await.expect("start");
    let out = read_all(&rt, id, "", false).await;
    assert_eq!(read_all(&rt, id, "", true).await, "");
    assert_eq!(rt.wait(id, "").await.expect("wait"), 0);
    assert_eq!(out.trim_end(), "tty");
    rt.remove(id).await.expect("remove");

    // a created but never started container can be removed
    let id = "c-unstarted";
    let root = make_rootfs(shared.path(), id);
    rt.create(id, &spec(&root, &["sh"], ""))
        .await
        .expect("create");
    rt.remove(id).await.expect("remove");
    assert!(!cg.join("hull").join(id).exists());
}

#[tokio::test]
async fn a_stop_right_after_start_reaches_the_handler_the_init_installs_later() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    let id = "c-young";
    let root = make_rootfs(shared.path(), id);
    // PID 1 of its namespace ignores SIGTERM until its trap is in place, half a second in.
    let script = "sleep 0.5; trap 'exit 7' TERM; while :; do sleep 0.05; done";
    rt.create(id, &spec(&root, &["sh", "-c", script], ""))
        .await
        .expect("create");
    rt.close_stdin(id, "").expect("close stdin");
    rt.start(id).await.expect("start");
    rt.signal(id, "", 15, false).await.expect("term");
    let status = match tokio::time::timeout(Duration::from_secs(10), rt.wait(id, "")).await {
        Ok(s) => s.expect("wait"),
        Err(_) => {
            rt.signal(id, "", 9, false).await.expect("kill");
            panic!("SIGTERM sent right after start was lost");
        }
    };
    assert_eq!(status, 7);
    rt.remove(id).await.expect("remove");
    assert!(!cg.join("hull").join(id).exists(), "cgroup left behind");
}

/// A container process starts with nothing blocked and nothing ignored, as with runc (the
/// helper is a Rust binary that ignores SIGPIPE; execve would keep that).
#[tokio::test]
async fn container_starts_with_default_signal_state() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    // `sh` is the script's interpreter; the status read is its child's, after a fork.
    let (out, err, status) = run(
        &rt,
        shared.path(),
        &cg,
        "c-signals",
        "cat /proc/self/status; true",
    )
    .await;
    assert_eq!(status, 0, "stderr: {err}");
    let masks: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
        .collect();
    assert_eq!(
        masks,
        ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]
    );
}

const DENY_MKDIR: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
               {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 448, "op": "SCMP_CMP_EQ"}]}]}"#;

/// linux.seccomp applies with and without no_new_privs (loaded early, before the capability
/// to do so is dropped, in the second case): mkdir fails with ENOSYS, chmod to mode 0700 (an
/// argument condition) with the default EPERM, chmod to another mode works.
#[tokio::test]
async fn seccomp_profile_applies_with_and_without_no_new_privs() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    for nnp in [true, false] {
        let id = format!("c-seccomp-{nnp}");
        let script = "mkdir /tmp/d; echo mkdir=$?; touch /tmp/f && chmod 755 /tmp/f; \
                      echo chmod755=$?; chmod 700 /tmp/f; echo chmod700=$?";
        let (out, err, status) = run_with(&rt, shared.path(), &cg, &id, script, |spec| {
            spec["process"]["noNewPrivileges"] = nnp.into();
            spec["process"]["user"] = serde_json::json!({"uid": 0, "gid": 0});
            spec["linux"]["seccomp"] = serde_json::from_str(DENY_MKDIR).expect("profile");
        })
        .await;
        assert_eq!(status, 0, "nnp={nnp} stderr: {err}");
        assert_eq!(out, "mkdir=1\nchmod755=0\nchmod700=1\n", "nnp={nnp}");
        assert!(
            err.contains("mkdir: can't create directory '/tmp/d': Function not implemented"),
            "nnp={nnp}: {err}"
        );
        assert!(
            err.contains("chmod: /tmp/f: Operation not permitted"),
            "nnp={nnp}: {err}"
        );
    }
}

/// An invalid profile fails CreateContainer with one readable line.
#[tokio::test]
async fn bad_seccomp_profile_fails_create() {
    let Some((shared, rt, _cg)) = setup() else {
        return;
    };
    let root = make_rootfs(shared.path(), "c-bad-seccomp");
    let mut json: serde_json::Value =
        serde_json::from_slice(&spec(&root, &["sh"], "")).expect("spec json");
    json["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    let err = rt
        .create("c-bad-seccomp", &serde_json::to_vec(&json).expect("spec"))
        .await
        .expect_err("must fail");
    assert!(
        matches!(&err, AgentError::InvalidArgument(m)
            if m == "seccomp profile: action SCMP_ACT_NOTIFY is not supported"),
        "{err:?}"
    );
}

/// A profile shaped like RuntimeDefault (default ERRNO(EPERM), an allow list, one call allowed
/// only with some arguments, one rule with its own errno) over stacked filters: chmod to 0755
/// is allowed, chmod to 0700 falls to the default EPERM, mkdir gets the rule's ENOSYS.
#[tokio::test]
async fn seccomp_default_errno_profile_with_conditions() {
    let Some((shared, rt, cg)) = setup() else {
        return;
    };
    let allowed: Vec<&str> = syscalls::Sysno::iter()
        .map(|s| s.name())
        .filter(|n| !["chmod", "fchmodat", "mkdir", "mkdirat"].contains(n))
        .collect();
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 493, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    let script = "touch /tmp/f; chmod 755 /tmp/f; echo chmod755=$?; chmod 700 /tmp/f; \
                  echo chmod700=$?; mkdir /tmp/d; echo mkdir=$?";
    let (out, err, status) = run_with(&rt, shared.path(), &cg, "c-seccomp-default", script, |s| {
        s["linux"]["seccomp"] = profile;
    })
    .await;
    assert_eq!(status, 0, "stderr: {err}");
    assert_eq!(out, "chmod755=0\nchmod700=1\nmkdir=1\n", "stderr: {err}");
    assert!(
        err.contains("chmod: /tmp/f: Operation not permitted"),
        "{err}"
    );
    assert!(err.contains("Function not implemented"), "{err}");
}
