//! The security side of the OCI spec as kubelet asks for it: signal state, setuid binaries and
//! no_new_privs, seccomp profiles, namespaced sysctls, devices and privileged containers, users
//! and groups. Each runs with runc (the reference) and hull, and what the container sees must match.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// ExecSync `cmd` in `id`: exit code, stdout, stderr (no assertion on the exit code).
fn exec_all(env: &CriEnv, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = env
        .cri()
        .exec_sync(id, cmd, 30)
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}\n{}", env.log_tail()));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// The container's security context, created if missing.
fn security(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Asserts that every handler saw the same thing, and returns it.
fn all_alike<T: PartialEq + std::fmt::Debug + Clone>(seen: &[(&str, T)]) -> T {
    let (first, want) = seen.first().cloned().expect("at least one handler");
    for (handler, got) in seen {
        assert_eq!(got, &want, "{handler} differs from {first}");
    }
    want
}

/// glibc's internal signals 32 and 33 as bits of a /proc status mask.
const GLIBC_INTERNAL: u64 = 0b11 << 31;

/// The SigBlk and SigIgn masks of `/proc/<pid>/status` text.
fn masks(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {status:?}"))
    };
    (field("SigBlk:"), field("SigIgn:"))
}

/// The signal mask and ignored signals of a container's first process and of an exec'd one:
/// nothing blocked, nothing ignored beyond what the shell does itself, as runc leaves them.
///
/// The test's containerd is spawned by glibc's posix_spawn, which leaves glibc's internal
/// signals 32 and 33 ignored in the child; containerd and runc hand that on to the container
/// (under systemd they are not ignored). hull resets them like every other signal, so they are
/// left out of the comparison with runc and must be clear with hull.
pub fn signal_state(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let script = "grep -E 'SigBlk|SigIgn' /proc/self/status > /tmp/init-signals; \
                  trap 'exit 0' TERM; sleep 100000 & wait";
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("signals", &env.log_dir()), handler);
        let id = start(
            env,
            &pod,
            &spec::container("signals", &["sh", "-c", script]),
        );
        let exec = exec_ok(
            env,
            &id,
            &["grep", "-E", "SigBlk|SigIgn", "/proc/self/status"],
        );
        let init = retry(Duration::from_secs(30), || {
            let (code, out, _) = exec_all(env, &id, &["cat", "/tmp/init-signals"]);
            (code == 0 && !out.is_empty())
                .then_some(out)
                .ok_or_else(|| "not written yet".to_string())
        })
        .unwrap_or_else(|e| panic!("{handler}: {e}"));
        eprintln!("{handler}: exec {exec:?} init {init:?}");
        let (init, exec) = (masks(&init), masks(&exec));
        if handler == HULL {
            assert_eq!((init.1 & GLIBC_INTERNAL, exec), (0, (0, 0)), "{handler}");
        }
        let strip = |(blk, ign): (u64, u64)| (blk, ign & !GLIBC_INTERNAL);
        seen.push((handler, (strip(init), strip(exec))));
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
    }
    let (_, exec) = all_alike(&seen);
    assert_eq!(exec, (0, 0), "an exec'd process blocks or ignores signals");
}

/// A host directory with a setuid-root copy of busybox and an /etc/passwd whose root has no
/// password (so busybox `su` run by anyone works when, and only when, setuid works).
fn setuid_fixture() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hull-suid-")
        .tempdir()
        .expect("tempdir");
    let bb = dir.path().join("bin/busybox");
    std::fs::create_dir_all(bb.parent().expect("parent")).expect("mkdir");
    std::fs::copy("/bin/busybox", &bb).expect("copy busybox");
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        dir.path().join("passwd"),
        "root::0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .expect("passwd");
    dir
}

fn mount(host: &Path, container: &str) -> cri::Mount {
    cri::Mount {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.to_string(),
        readonly: true,
        ..Default::default()
    }
}

/// A container running as uid 1000 runs a setuid-root busybox `su` to become root: it works
/// with no_new_privs off and fails with it on (allowPrivilegeEscalation=false), in both runtimes.
pub fn setuid_and_no_new_privs(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let fixture = setuid_fixture();
    let su = [
        "/suid/bin/busybox",
        "su",
        "root",
        "-s",
        "/bin/sh",
        "-c",
        "id -u",
    ];
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("suid", &env.log_dir()), handler);
        let mut outcomes = Vec::new();
        for nnp in [false, true] {
            let mut c = spec::container(&format!("suid-{nnp}"), spec::SLEEPER);
            c.mounts = vec![
                mount(fixture.path(), "/suid"),
                mount(&fixture.path().join("passwd"), "/etc/passwd"),
            ];
            let sc = security(&mut c);
            sc.run_as_user = Some(cri::Int64Value { value: 1000 });
            sc.no_new_privs = nnp;
            let id = start(env, &pod, &c);
            let uid = exec_ok(env, &id, &["id", "-u"]);
            let (code, out, err) = exec_all(env, &id, &su);
            eprintln!("{handler} nnp={nnp}: uid {uid:?} su: {code} {out:?} {err:?}");
            outcomes.push((uid, code, out, err.trim().to_string()));
            stop_remove_ok(env, &id);
        }
        remove_pod(env, &pod);
        seen.push((handler, outcomes));
    }
    let want = all_alike(&seen);
    assert_eq!(
        want,
        [
            ("1000\n".to_string(), 0, "0\n".to_string(), String::new()),
            (
                "1000\n".to_string(),
                1,
                String::new(),
                "su: must be suid to work properly".to_string()
            ),
        ]
    );
}

/// A seccomp profile of kind `profile_type` (Localhost: `localhost_ref` is the file).
fn seccomp(
    c: &mut cri::ContainerConfig,
    profile_type: cri::security_profile::ProfileType,
    file: &str,
) {
    security(c).seccomp = Some(cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: file.to_string(),
    });
}

/// seccomp through CRI: RuntimeDefault denies unshare (EPERM) to a root container without
/// CAP_SYS_ADMIN; a Localhost profile that denies mkdir with errnoRet 38 gives ENOSYS to the
/// first process and to exec'd ones; an invalid Localhost profile fails the container with a
/// readable error. The same in both runtimes.
pub fn seccomp_profiles(env: &CriEnv, handlers: &[&str]) {
    use cri::security_profile::ProfileType;
    env.pull_busybox();
    let dir = tempfile::Builder::new()
        .prefix("hull-seccomp-")
        .tempdir()
        .expect("tempdir");
    let deny_mkdir = dir.path().join("deny-mkdir.json");
    std::fs::write(
        &deny_mkdir,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
    )
    .expect("profile");
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#).expect("profile");
    let mkdir_script = "mkdir /tmp/a 2>/tmp/init-mkdir; \
                        trap 'exit 0' TERM; sleep 100000 & wait";
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("seccomp", &env.log_dir()), handler);

        let mut c = spec::container("default", spec::SLEEPER);
        seccomp(&mut c, ProfileType::RuntimeDefault, "");
        let id = start(env, &pod, &c);
        let unshare = exec_all(env, &id, &["unshare", "-U", "true"]);
        stop_remove_ok(env, &id);

        let mut c = spec::container("localhost", &["sh", "-c", mkdir_script]);
        seccomp(
            &mut c,
            ProfileType::Localhost,
            &deny_mkdir.to_string_lossy(),
        );
        let id = start(env, &pod, &c);
        let exec_mkdir = exec_all(env, &id, &["mkdir", "/tmp/b"]);
        let init_mkdir = exec_ok(env, &id, &["cat", "/tmp/init-mkdir"]);
        stop_remove_ok(env, &id);

        let mut c = spec::container("bogus", spec::SLEEPER);
        seccomp(&mut c, ProfileType::Localhost, &bogus.to_string_lossy());
        let bad = env
            .create_container(&pod.id, &c, &pod.config)
            .and_then(|id| env.cri().start_container(&id).map(|()| id));
        let bad_err = match bad {
            Ok(id) => panic!("{handler}: container {id} with an invalid profile started"),
            Err(e) => e.to_string(),
        };
        eprintln!("{handler}: unshare {unshare:?} mkdir {exec_mkdir:?} init {init_mkdir:?}\n  bogus: {bad_err}");
        assert!(bad_err.contains("SCMP_ACT_BOGUS"), "{handler}: {bad_err}");
        for c in env.cri().list_containers().unwrap_or_default() {
            if c.pod_sandbox_id == pod.id {
                let _ = env.cri().remove_container(&c.id);
            }
        }
        remove_pod(env, &pod);
        seen.push((handler, (unshare, exec_mkdir, init_mkdir)));
    }
    let (unshare, mkdir, init) = all_alike(&seen);
    assert_eq!(
        unshare,
        (
            1,
            String::new(),
            "unshare: unshare(0x10000000): Operation not permitted\n".to_string()
        )
    );
    assert_eq!(
        mkdir,
        (
            1,
            String::new(),
            "mkdir: can't create directory '/tmp/b': Function not implemented\n".to_string()
        )
    );
    assert_eq!(
        init,
        "mkdir: can't create directory '/tmp/a': Function not implemented\n"
    );
}

/// runAsUser 1000, runAsGroup 3000, supplementalGroups [4000]: `id` says the same in both.
pub fn users_and_groups(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("ids", &env.log_dir()), handler);
        let mut c = spec::container("ids", spec::SLEEPER);
        let sc = security(&mut c);
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.run_as_group = Some(cri::Int64Value { value: 3000 });
        sc.supplemental_groups = vec![4000];
        let id = start(env, &pod, &c);
        let ids = exec_ok(env, &id, &["id"]);
        eprintln!("{handler}: {ids:?}");
        seen.push((handler, ids));
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
    }
    let ids = all_alike(&seen);
    assert!(ids.starts_with("uid=1000 gid=3000 groups="), "{ids}");
    assert!(ids.contains("4000"), "{ids}");
}

/// A pod with `sysctls`.
fn pod_with_sysctls(env: &CriEnv, name: &str, sysctls: &[(&str, &str)]) -> cri::PodSandboxConfig {
    let mut cfg = spec::pod(name, &env.log_dir());
    cfg.linux.get_or_insert_with(Default::default).sysctls = sysctls
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cfg
}

/// The pod's namespaced sysctls (kubelet's safe set) are what its container reads; a pod asking
/// for a sysctl the kernel lacks, or for one of the whole kernel (kernel.panic), is refused with
/// an error naming it, and a pod already running beside it is untouched. The same in both runtimes.
pub fn sysctls(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let read =
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range";
    let mut seen = Vec::new();
    for &handler in handlers {
        let cfg = pod_with_sysctls(
            env,
            "sysctls",
            &[
                ("net.ipv4.ip_unprivileged_port_start", "80"),
                ("net.ipv4.ping_group_range", "0 2147483647"),
            ],
        );
        let pod = run_pod(env, cfg, handler);
        let id = start(env, &pod, &spec::container("reader", spec::SLEEPER));
        let values = exec_ok(env, &id, &["sh", "-c", read]);

        let bad = pod_with_sysctls(env, "bad-sysctl", &[("net.ipv4.no_such_sysctl", "1")]);
        let err = match env.run_pod(&bad, handler) {
            Ok(id) => panic!("{handler}: pod {id} with an unknown sysctl runs"),
            Err(e) => e.to_string(),
        };
        env.track_ids_from_log();
        eprintln!("{handler}: {values:?}\n  unknown sysctl: {err}");
        assert!(err.contains("no_such_sysctl"), "{handler}: {err}");
        let global = pod_with_sysctls(env, "bad-sysctl", &[("kernel.panic", "1")]);
        let err = match env.run_pod(&global, handler) {
            Ok(id) => panic!("{handler}: pod {id} with kernel.panic runs"),
            Err(e) => e.to_string(),
        };
        env.track_ids_from_log();
        eprintln!("  kernel.panic: {err}");
        assert!(
            err.contains("kernel.panic") && err.contains("is not in a separate kernel namespace"),
            "{handler}: {err}"
        );
        let still = exec_ok(env, &id, &["sh", "-c", read]);
        assert_eq!(still, values, "{handler}: the running pod changed");
        for p in env.cri().list_pods().unwrap_or_default() {
            if p.metadata.as_ref().is_some_and(|m| m.name == "bad-sysctl") {
                let _ = env.cri().stop_pod(&p.id);
                let _ = env.cri().remove_pod(&p.id);
            }
        }
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
        seen.push((handler, values));
    }
    assert_eq!(all_alike(&seen), "80\n0\t2147483647\n");
}

/// Shell text printing whether a tmpfs mount works, whether /dev/kmsg is a character device
/// (there is one on a host and in a guest) and whether /dev/null works.
const DEVICE_PROBE: &str =
    "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>&1 && echo mount=ok || echo mount=denied; \
                            [ -c /dev/kmsg ] && echo kmsg=yes || echo kmsg=no; \
                            echo x > /dev/null && echo null=ok";

/// A privileged container (privileged pod; containerd then drops seccomp, masked and read-only
/// paths and allows every device) can mount a tmpfs and sees the devices of its machine (with
/// hull: the guest's, not the host's); a plain one cannot and does not. The same in both.
pub fn privileged(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let mut cfg = spec::pod("privileged", &env.log_dir());
        cfg.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
        let pod = run_pod(env, cfg, handler);
        let mut outcomes = Vec::new();
        for privileged in [true, false] {
            let mut c = spec::container(&format!("priv-{privileged}"), spec::SLEEPER);
            security(&mut c).privileged = privileged;
            let id = start(env, &pod, &c);
            let probe = exec_ok(env, &id, &["sh", "-c", DEVICE_PROBE]);
            let devs = exec_ok(env, &id, &["sh", "-c", "ls /dev | wc -l"]);
            eprintln!(
                "{handler} privileged={privileged}: {probe:?}, {} entries in /dev",
                devs.trim()
            );
            outcomes.push(probe);
            stop_remove_ok(env, &id);
        }
        remove_pod(env, &pod);
        seen.push((handler, outcomes));
    }
    assert_eq!(
        all_alike(&seen),
        [
            "mount=ok\nkmsg=yes\nnull=ok\n".to_string(),
            "mount: permission denied (are you root?)\nmount=denied\nkmsg=no\nnull=ok\n"
                .to_string()
        ]
    );
}

/// A device of the container config (CRI `devices`, host /dev/fuse, which the guest kernel has
/// too) appears with the same type, numbers, mode and owner in both runtimes. With hull a host
/// device the guest lacks (/dev/kvm) fails the container with an error naming it.
pub fn devices(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let device = |host: &str, path: &str| cri::Device {
        host_path: host.to_string(),
        container_path: path.to_string(),
        permissions: "rwm".to_string(),
    };
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("devices", &env.log_dir()), handler);
        let mut c = spec::container("fuse", spec::SLEEPER);
        c.devices = vec![device("/dev/fuse", "/dev/fuse")];
        let id = start(env, &pod, &c);
        let st = exec_ok(env, &id, &["stat", "-c", "%A %t:%T %u:%g", "/dev/fuse"]);
        eprintln!("{handler}: /dev/fuse {st:?}");
        seen.push((handler, st));
        stop_remove_ok(env, &id);
        if handler == HULL && Path::new("/dev/kvm").exists() {
            let mut c = spec::container("kvm", spec::SLEEPER);
            c.devices = vec![device("/dev/kvm", "/dev/kvm")];
            let r = env
                .create_container(&pod.id, &c, &pod.config)
                .and_then(|id| env.cri().start_container(&id).map(|()| id));
            let err = match r {
                Ok(id) => panic!("hull: container {id} with the host's /dev/kvm started"),
                Err(e) => e.to_string(),
            };
            eprintln!("hull: /dev/kvm: {err}");
            assert!(
                err.contains("device /dev/kvm (c 10:232) does not exist in the guest"),
                "{err}"
            );
            for c in env.cri().list_containers().unwrap_or_default() {
                if c.pod_sandbox_id == pod.id {
                    let _ = env.cri().remove_container(&c.id);
                }
            }
        }
        remove_pod(env, &pod);
    }
    let st = all_alike(&seen);
    assert!(st.starts_with("c") && st.contains(" a:e5 0:0"), "{st}");
}

/// A hostPath volume mounted over `/proc/sys` with each of `handlers`: refused (runc's rule:
/// inside /proc only the files lxcfs emulates) with one error naming /proc, while the pod's
/// other container runs on.
pub fn bind_into_proc_refused(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let dir = tempfile::Builder::new()
        .prefix("hull-proc-")
        .tempdir()
        .expect("tempdir");
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("procbind", &env.log_dir()), handler);
        let other = start(env, &pod, &spec::container("other", spec::SLEEPER));
        let mut c = spec::container("over-proc", spec::SLEEPER);
        c.mounts = vec![mount(dir.path(), "/proc/sys")];
        let failed = env
            .create_container(&pod.id, &c, &pod.config)
            .and_then(|id| env.cri().start_container(&id).map(|()| id));
        let e = failed.expect_err("a bind over /proc/sys was accepted");
        eprintln!("{handler}: {}", e.message());
        assert!(
            e.message().contains("/proc/sys") && e.message().contains("inside /proc"),
            "{handler}: {}",
            e.message()
        );
        assert_eq!(exec_ok(env, &other, &["echo", "alive"]).trim(), "alive");
        remove_pod(env, &pod);
    }
}

/// The device cgroup allow-list with each of `handlers`: a container may make any node (runc's
/// default `c *:* m`) but not open one the list does not allow (`/dev/kmsg`, c 1:11), while
/// /dev/null works; the same error text everywhere.
pub fn device_allow_list(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let script = "mknod /dev/kmsg-copy c 1 11 && echo made; \
                  head -c 1 /dev/kmsg-copy >/dev/null 2>/tmp/err; echo open=$?; \
                  sed 's/.*: //' /tmp/err; echo x > /dev/null && echo null-ok";
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("devcg", &env.log_dir()), handler);
        let id = start(env, &pod, &spec::container("devcg", spec::SLEEPER));
        let out = exec_ok(env, &id, &["sh", "-c", script]);
        eprintln!("{handler}: {out}");
        seen.push((handler, out));
        remove_pod(env, &pod);
    }
    let out = all_alike(&seen);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["made", "open=1", "Operation not permitted", "null-ok"],
        "{out}"
    );
}
