//! End to end through containerd's CRI, as kubelet drives it: a private containerd with the CRI
//! plugin, CNI, a local registry and a locally built pause image (tests/cri_common), driven over
//! gRPC with k8s-cri. Every pod feature runs with runc (the reference) and with hull, plus
//! what only a VM has (its size from the pod, pods it refuses, its death).
//!
//! Needs root, containerd, runc, CNI plugins in /usr/lib/cni, docker-registry, skopeo and
//! iptables (scripts/setup.sh installs them); fails otherwise (`HULL_TEST_ALLOW_SKIP=1` skips).
//! Every test stops its own containerd and asserts that nothing is left behind.

mod common;
mod cri_common;

use cri_common::{scenarios, CriEnv, HULL, RUNC};

fn with_env(body: impl FnOnce(&CriEnv)) {
    let Some(env) = CriEnv::start() else {
        return;
    };
    let t = std::time::Instant::now();
    body(&env);
    eprintln!("test body took {:.2?}", t.elapsed());
    assert_eq!(env.stop(), Vec::<String>::new(), "leftovers");
}

#[test]
fn cri_version_pull_and_pause_image() {
    with_env(|env| {
        let v = env.cri().version().expect("Version");
        assert_eq!(v.runtime_api_version, "v1");
        assert_eq!(v.runtime_name, "containerd");
        let image_ref = env.pull_busybox();
        assert!(image_ref.starts_with("sha256:"), "{image_ref}");
        let id = env
            .cri()
            .image_id(cri_common::spec::BUSYBOX)
            .expect("ImageStatus");
        assert_eq!(id.as_deref(), Some(image_ref.as_str()));
    });
}

#[test]
fn cri_lifecycle_runc_and_hull_side_by_side() {
    with_env(|env| scenarios::lifecycle(env, &[RUNC, HULL]));
}

#[test]
fn cri_runc_pod_ip_reachable_from_host() {
    with_env(|env| scenarios::pod_ip_from_host(env, RUNC));
}

#[test]
fn cri_runc_containers_share_localhost() {
    with_env(|env| scenarios::localhost_between_containers(env, RUNC));
}

#[test]
fn cri_runc_hostname_hosts_resolv_conf() {
    with_env(|env| scenarios::hostname_hosts_resolv(env, RUNC));
}

#[test]
fn cri_runc_container_restart_while_pod_runs() {
    with_env(|env| scenarios::container_restart_in_running_pod(env, RUNC));
}

#[test]
fn cri_runc_stop_grace_period() {
    with_env(|env| scenarios::stop_grace_period(env, RUNC));
}

#[test]
fn cri_runc_port_forward() {
    with_env(|env| scenarios::port_forward(env, RUNC));
}

#[test]
fn cri_runc_exec_stream() {
    with_env(|env| scenarios::exec_stream(env, RUNC));
}

#[test]
fn cri_runc_exec_tty() {
    with_env(|env| scenarios::exec_tty(env, RUNC));
}

#[test]
fn cri_runc_attach() {
    with_env(|env| scenarios::attach(env, RUNC));
}

#[test]
fn cri_runc_logs_and_exit_status() {
    with_env(|env| scenarios::logs_and_exit_status(env, RUNC));
}

// hull: the same pod features, each in its own VM.

#[test]
fn cri_hull_pod_ip_reachable_from_host() {
    with_env(|env| scenarios::pod_ip_from_host(env, HULL));
}

#[test]
fn cri_hull_pod_to_pod_across_two_vms() {
    with_env(|env| scenarios::pod_to_pod(env, HULL, HULL));
}

#[test]
fn cri_hull_and_runc_pods_reach_each_other() {
    with_env(|env| scenarios::pod_to_pod(env, HULL, RUNC));
}

#[test]
fn cri_hull_containers_share_localhost() {
    with_env(|env| scenarios::localhost_between_containers(env, HULL));
}

#[test]
fn cri_hull_exec_stream() {
    with_env(|env| scenarios::exec_stream(env, HULL));
}

#[test]
fn cri_hull_attach() {
    with_env(|env| scenarios::attach(env, HULL));
}

#[test]
fn cri_hull_logs_and_exit_status() {
    with_env(|env| scenarios::logs_and_exit_status(env, HULL));
}

#[test]
fn cri_hull_exec_tty() {
    with_env(|env| scenarios::exec_tty(env, HULL));
}

#[test]
fn cri_hull_port_forward() {
    with_env(|env| scenarios::port_forward(env, HULL));
}

/// The leak check works: a pod left running is reported at teardown, and teardown still
/// removes it, its network namespace and its processes.
#[test]
fn cri_hull_hostname_hosts_resolv_conf() {
    with_env(|env| scenarios::hostname_hosts_resolv(env, HULL));
}

#[test]
fn cri_hull_container_restart_while_pod_runs() {
    with_env(|env| scenarios::container_restart_in_running_pod(env, HULL));
}

#[test]
fn cri_hull_stop_grace_period() {
    with_env(|env| scenarios::stop_grace_period(env, HULL));
}

#[test]
fn cri_harness_reports_and_removes_a_pod_left_running() {
    let Some(env) = CriEnv::start() else {
        return;
    };
    env.pull_busybox();
    let cfg = cri_common::spec::pod("left", &env.log_dir());
    let pod = scenarios::run_pod(&env, cfg, RUNC);
    let c = scenarios::start(
        &env,
        &pod,
        &cri_common::spec::container("c", cri_common::spec::SLEEPER),
    );
    let netns = env.pod_netns(&pod.id).expect("the pod's netns path");
    assert!(netns.exists());
    let left = env.stop();
    assert!(
        left.iter().any(|l| l.contains(&pod.id)) && left.iter().any(|l| l.contains(&c)),
        "pod and container not reported: {left:?}"
    );
    assert!(!netns.exists(), "{} survived teardown", netns.display());
    let procs: Vec<String> = common::host::processes()
        .iter()
        .filter(|p| p.args.iter().any(|a| a.contains(&pod.id)))
        .map(common::host::Proc::describe)
        .collect();
    assert_eq!(
        procs,
        Vec::<String>::new(),
        "processes of the pod survived teardown"
    );
}

// Pod VM size, refused pods, a VM that dies, shared pid namespace, stats.

#[test]
fn cri_hull_vm_sized_from_pod_resources_and_annotations() {
    with_env(scenarios::vm_sizing);
}

#[test]
fn cri_hull_bad_pods_refused_with_readable_errors() {
    with_env(scenarios::bad_pod_input);
}

#[test]
fn cri_hull_vm_death_exits_containers_and_pod_is_removable() {
    with_env(scenarios::vm_death);
}

#[test]
fn cri_runc_share_process_namespace() {
    with_env(|env| scenarios::share_process_namespace(env, RUNC));
}

#[test]
fn cri_hull_share_process_namespace() {
    with_env(|env| scenarios::share_process_namespace(env, HULL));
}

#[test]
fn cri_runc_container_stats() {
    with_env(|env| scenarios::container_stats(env, RUNC));
}

#[test]
fn cri_hull_container_stats() {
    with_env(|env| scenarios::container_stats(env, HULL));
}

#[test]
fn cri_container_resources_runc_and_hull_alike() {
    with_env(|env| scenarios::container_resources(env, &[RUNC, HULL]));
}

#[test]
fn cri_update_container_resources_runc_and_hull_alike() {
    with_env(|env| scenarios::update_container_resources(env, &[RUNC, HULL]));
}

#[test]
fn cri_oom_killed_runc_and_hull_alike() {
    with_env(|env| scenarios::oom_killed(env, &[RUNC, HULL]));
}

#[test]
fn cri_oom_while_running_runc_and_hull_alike() {
    with_env(|env| scenarios::oom_while_running(env, &[RUNC, HULL]));
}

#[test]
fn cri_hull_pod_cgroup_caps_its_containers() {
    with_env(scenarios::pod_cgroup_caps_containers);
}

#[test]
fn cri_guest_kernel_has_what_containers_expect_beside_runc() {
    with_env(|env| scenarios::guest_kernel_features(env, &[RUNC, HULL]));
}

#[test]
fn cri_memory_limit_too_low_runc_and_hull_alike() {
    with_env(|env| scenarios::memory_limit_too_low(env, &[RUNC, HULL]));
}

// The security side of the OCI spec (scenarios/security.rs).

#[test]
fn cri_signal_state_runc_and_hull_alike() {
    with_env(|env| scenarios::signal_state(env, &[RUNC, HULL]));
}

#[test]
fn cri_setuid_and_no_new_privs_runc_and_hull_alike() {
    with_env(|env| scenarios::setuid_and_no_new_privs(env, &[RUNC, HULL]));
}

#[test]
fn cri_seccomp_profiles_runc_and_hull_alike() {
    with_env(|env| scenarios::seccomp_profiles(env, &[RUNC, HULL]));
}

#[test]
fn cri_users_and_groups_runc_and_hull_alike() {
    with_env(|env| scenarios::users_and_groups(env, &[RUNC, HULL]));
}

#[test]
fn cri_sysctls_runc_and_hull_alike() {
    with_env(|env| scenarios::sysctls(env, &[RUNC, HULL]));
}

#[test]
fn cri_privileged_runc_and_hull_alike() {
    with_env(|env| scenarios::privileged(env, &[RUNC, HULL]));
}

#[test]
fn cri_devices_runc_and_hull_alike() {
    with_env(|env| scenarios::devices(env, &[RUNC, HULL]));
}

// Volumes: hostPath, emptyDir (memory and disk), /dev/shm, configmap and secret updates.

#[test]
fn cri_host_path_volumes_runc_and_hull_alike() {
    with_env(|env| scenarios::host_path(env, &[RUNC, HULL]));
}

#[test]
fn cri_memory_empty_dir_and_shm_runc_and_hull_alike() {
    with_env(|env| scenarios::memory_empty_dir_and_shm(env, &[RUNC, HULL]));
}

#[test]
fn cri_configmap_updates_atomic_runc_and_hull_alike() {
    with_env(|env| scenarios::configmap_updates(env, &[RUNC, HULL]));
}

#[test]
fn cri_hull_volumes_a_vm_cannot_serve_are_refused() {
    with_env(scenarios::volumes_refused);
}

#[test]
fn cri_missing_bind_source_fails_the_container_not_the_pod() {
    with_env(|env| scenarios::missing_bind_source(env, &[RUNC, HULL]));
}

#[test]
fn cri_host_to_container_propagation_runc_and_hull_alike() {
    with_env(|env| scenarios::host_to_container_propagation(env, &[RUNC, HULL]));
}

#[test]
fn cri_bind_into_proc_refused_runc_and_hull_alike() {
    with_env(|env| scenarios::bind_into_proc_refused(env, &[RUNC, HULL]));
}

#[test]
fn cri_device_allow_list_runc_and_hull_alike() {
    with_env(|env| scenarios::device_allow_list(env, &[RUNC, HULL]));
}
