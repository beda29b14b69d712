//! Container resources as kubelet sets them (LinuxContainerResources): the limits a container
//! reads in its own cgroup must be those runc gives it. runc here may run on a cgroup v1 host
//! while the guest is cgroup v2, so the script prints each limit in one normalised form.

use std::collections::HashMap;

use super::*;

const MIB: i64 = 1024 * 1024;

/// Shell text printing `memory=<limit> cpu=<quota> <period> pids=<max>` and then
/// `weight=<cpu.weight>` (cgroup v2) or `shares=<cpu.shares>` (v1), from the container's own
/// cgroup (with or without a cgroup namespace).
const READ_LIMITS: &str = r#"
if [ -f /sys/fs/cgroup/cgroup.controllers ] || [ -f /sys/fs/cgroup/cgroup.procs ]; then
  d=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
  [ -f "$d/memory.max" ] || d=/sys/fs/cgroup
  echo "memory=$(cat $d/memory.max) cpu=$(cat $d/cpu.max) pids=$(cat $d/pids.max)"
  echo "weight=$(cat $d/cpu.weight)"
else
  c=/sys/fs/cgroup
  echo "memory=$(cat $c/memory/memory.limit_in_bytes) cpu=$(cat $c/cpu/cpu.cfs_quota_us) $(cat $c/cpu/cpu.cfs_period_us) pids=$(cat $c/pids/pids.max)"
  echo "shares=$(cat $c/cpu/cpu.shares)"
fi
"#;

/// The resources of the test container: 64Mi, half a CPU, 512 shares.
fn limited(name: &str) -> cri::ContainerConfig {
    let mut c = spec::container(name, spec::SLEEPER);
    if let Some(linux) = c.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 * MIB,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        });
    }
    c
}

/// The container's limits (first line of [`READ_LIMITS`]) and its cpu weight or shares line.
fn read_limits(env: &CriEnv, id: &str) -> (String, String) {
    let out = exec_ok(env, id, &["sh", "-c", READ_LIMITS]);
    let mut lines = out.lines();
    let limits = lines.next().unwrap_or_default().trim().to_string();
    let cpu = lines.next().unwrap_or_default().trim().to_string();
    (limits, cpu)
}

/// Memory limit, CPU quota/period and shares of a container, read inside it, with each of
/// `handlers`: the same values everywhere (cpu.weight from shares as runc converts them on
/// cgroup v2). With hull also a pids limit through `unified` (CRI has no pids field; unified
/// keys need cgroup v2, which the guest always has).
pub fn container_resources(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("resources", &env.log_dir()), handler);
        let id = start(env, &pod, &limited("limited"));
        let (limits, cpu) = read_limits(env, &id);
        eprintln!("{handler}: {limits} {cpu}");
        assert!(
            cpu == "weight=20" || cpu == "shares=512",
            "{handler}: cpu {cpu:?}"
        );
        seen.push((handler, limits));
        stop_remove_ok(env, &id);
        if handler == HULL {
            let mut c = limited("pids");
            if let Some(r) = c.linux.as_mut().and_then(|l| l.resources.as_mut()) {
                r.unified = HashMap::from([("pids.max".to_string(), "100".to_string())]);
            }
            let id = start(env, &pod, &c);
            let (limits, _) = read_limits(env, &id);
            assert!(
                limits.ends_with(" pids=100"),
                "hull unified pids.max: {limits}"
            );
            stop_remove_ok(env, &id);
        }
        remove_pod(env, &pod);
    }
    let want = format!("memory={} cpu=50000 100000 pids=max", 64 * MIB);
    for (handler, limits) in seen {
        assert_eq!(limits, want, "{handler}");
    }
}

/// UpdateContainerResources of a running container (memory 64Mi to 96Mi, quota halved) with
/// each of `handlers`: the new limits are what the container reads, the same everywhere.
pub fn update_container_resources(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("update", &env.log_dir()), handler);
        let id = start(env, &pod, &limited("updated"));
        let (before, _) = read_limits(env, &id);
        env.cri()
            .update_container_resources(
                &id,
                cri::LinuxContainerResources {
                    memory_limit_in_bytes: 96 * MIB,
                    cpu_quota: 25_000,
                    cpu_period: 100_000,
                    cpu_shares: 512,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{handler}: UpdateContainerResources: {e}\n{}",
                    env.log_tail()
                )
            });
        let (after, cpu) = read_limits(env, &id);
        eprintln!("{handler}: before {before}; after {after} {cpu}");
        seen.push((handler, before, after));
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
    }
    for (handler, before, after) in seen {
        assert_eq!(
            before,
            format!("memory={} cpu=50000 100000 pids=max", 64 * MIB),
            "{handler}"
        );
        assert_eq!(
            after,
            format!("memory={} cpu=25000 100000 pids=max", 96 * MIB),
            "{handler}"
        );
    }
}

/// A container over its 32Mi memory limit (busybox `tail` keeps a newline-free stream in
/// memory) with each of `handlers`: OOM-killed, ContainerStatus exit 137 reason OOMKilled.
pub fn oom_killed(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("oom", &env.log_dir()), handler);
        let mut c = spec::container("hog", &["sh", "-c", "head -c 512m /dev/zero | tail"]);
        if let Some(linux) = c.linux.as_mut() {
            linux.resources = Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 32 * MIB,
                ..Default::default()
            });
        }
        let id = start(env, &pod, &c);
        let st = exited(env, &id, handler);
        eprintln!(
            "{handler}: exit {} reason {:?} message {:?}",
            st.exit_code, st.reason, st.message
        );
        assert_eq!(
            (st.exit_code, st.reason.as_str()),
            (137, "OOMKilled"),
            "{handler}"
        );
        env.cri()
            .remove_container(&id)
            .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
        remove_pod(env, &pod);
    }
}

/// A child of the container blows its 32Mi limit and is OOM-killed while the container's init
/// runs on, with each of `handlers`: CRI learns of it from TaskOOM at once (ContainerStatus
/// reason OOMKilled while RUNNING), not only when the container exits.
pub fn oom_while_running(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("oom-running", &env.log_dir()), handler);
        let script = "head -c 512m /dev/zero | tail; echo survived; exec sleep 3600";
        let mut c = spec::container("survivor", &["sh", "-c", script]);
        if let Some(linux) = c.linux.as_mut() {
            linux.resources = Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 32 * MIB,
                ..Default::default()
            });
        }
        let id = start(env, &pod, &c);
        let st = retry(Duration::from_secs(60), || {
            let st = env.cri().container_status(&id).map_err(|e| e.to_string())?;
            (st.reason == "OOMKilled")
                .then_some(st.clone())
                .ok_or(format!("{st:?}"))
        })
        .unwrap_or_else(|e| panic!("{handler}: no OOMKilled while running: {e}"));
        eprintln!("{handler}: state {} reason {:?}", st.state, st.reason);
        assert_eq!(
            cri::ContainerState::try_from(st.state),
            Ok(cri::ContainerState::ContainerRunning),
            "{handler}: the init process survives its child's OOM kill"
        );
        // `sleep` as the container's pid 1 ignores SIGTERM: stopped by SIGKILL at once.
        stop_remove(env, &id, 0);
        remove_pod(env, &pod);
    }
}

/// hull: the pod's cgroup caps the sum of its containers, as kubelet's pod cgroup does on a
/// runc node: in a pod given 64Mi (sandbox-memory), a container without a limit of its own is
/// OOM-killed when it holds 128 MiB, which the VM (256 MiB + 64 MiB) could give it.
pub fn pod_cgroup_caps_containers(env: &CriEnv) {
    env.pull_busybox();
    let mut cfg = spec::pod("capped", &env.log_dir());
    cfg.linux.as_mut().expect("linux config").resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 * MIB,
        ..Default::default()
    });
    let pod = run_pod(env, cfg, HULL);
    let c = spec::container("hog", &["sh", "-c", "head -c 128m /dev/zero | tail"]);
    let id = start(env, &pod, &c);
    let st = exited(env, &id, "capped");
    eprintln!("capped pod: exit {} reason {:?}", st.exit_code, st.reason);
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"));
    env.cri()
        .remove_container(&id)
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
    // The same hog in a pod without a memory limit completes.
    let free = run_pod(env, spec::pod("uncapped", &env.log_dir()), HULL);
    let id = start(env, &free, &c);
    let st = exited(env, &id, "uncapped");
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    env.cri()
        .remove_container(&id)
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
    remove_pod(env, &free);
    remove_pod(env, &pod);
}

/// A memory limit below what a container can start in (one page) with each of `handlers`:
/// StartContainer fails with one error naming the memory limit, the container is exited
/// (StartError), and the pod runs its other containers on.
pub fn memory_limit_too_low(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("tiny", &env.log_dir()), handler);
        let other = start(env, &pod, &spec::container("other", spec::SLEEPER));
        let mut c = spec::container("tiny", spec::SLEEPER);
        if let Some(linux) = c.linux.as_mut() {
            linux.resources = Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 4096,
                ..Default::default()
            });
        }
        let id = env
            .create_container(&pod.id, &c, &pod.config)
            .unwrap_or_else(|e| panic!("{handler}: CreateContainer: {e}"));
        let e = env
            .cri()
            .start_container(&id)
            .expect_err("a container in one page of memory started");
        eprintln!("{handler}: {}", e.message());
        assert!(
            e.message().contains("memory limit") && e.message().contains("4096"),
            "{handler}: {}",
            e.message()
        );
        let st = env.cri().container_status(&id).expect("ContainerStatus");
        assert_eq!(st.reason, "StartError", "{handler}");
        env.cri()
            .remove_container(&id)
            .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
        assert_eq!(exec_ok(env, &other, &["echo", "alive"]).trim(), "alive");
        stop_remove_ok(env, &other);
        remove_pod(env, &pod);
    }
}

/// ContainerStatus of `id` once it has exited (within 60 s); `who` names it in the panic.
fn exited(env: &CriEnv, id: &str, who: &str) -> cri::ContainerStatus {
    retry(Duration::from_secs(60), || {
        let st = env.cri().container_status(id).map_err(|e| e.to_string())?;
        (cri::ContainerState::try_from(st.state) == Ok(cri::ContainerState::ContainerExited))
            .then_some(st.clone())
            .ok_or(format!("{st:?}"))
    })
    .unwrap_or_else(|e| panic!("{who}: the container did not exit: {e}"))
}
