//! Scenarios only a VM has: its size from the pod's resources and annotations, the pods it
//! refuses (host namespaces, unknown or oversized settings) and its death under running containers.

use super::*;
/// The config the shim runs with: it inherits this process's environment through containerd
/// (HULL_CONFIG, else /etc/hull/config.toml, else the built-in defaults).
fn hull_config() -> hull_runtime::config::Config {
    hull_runtime::config::Config::load(None)
        .unwrap_or_else(|e| panic!("hull config: {e}"))
        .0
}

/// The annotations of the pod's sandbox container as containerd sent them to the runtime.
fn sandbox_annotations(env: &CriEnv, pod: &str) -> serde_json::Map<String, serde_json::Value> {
    let st = env
        .cri()
        .pod_status(pod)
        .unwrap_or_else(|e| panic!("PodSandboxStatus {pod}: {e}"));
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("info").map_or("{}", String::as_str))
            .expect("PodSandboxStatus info is JSON");
    info["runtimeSpec"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// `nproc` and /proc/meminfo's MemTotal (bytes) as container `id` sees them.
fn cpus_and_memory(env: &CriEnv, id: &str) -> (u64, u64) {
    let nproc = exec_ok(env, id, &["nproc"]);
    let meminfo = exec_ok(env, id, &["cat", "/proc/meminfo"]);
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo:?}"));
    let n = nproc
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("nproc said {nproc:?}"));
    (n, kib * 1024)
}

/// Asserts that a guest with `mib` MiB of RAM reports `total` bytes of MemTotal: never more,
/// and at most 64 MiB less (what the guest kernel keeps for itself).
fn assert_vm_memory(what: &str, total: u64, mib: u64) {
    assert!(
        total <= mib * MIB && total > (mib - 64) * MIB,
        "{what}: MemTotal {} MiB for a VM of {mib} MiB",
        total / MIB
    );
}

/// hull: a pod's VM is sized at boot. With resources on the pod (containerd 1.6 passes
/// `LinuxPodSandboxConfig.resources` to the runtime as the sandbox-cpu-quota/period/shares and
/// sandbox-memory annotations) it has `[hypervisor] cpus/memory_mib` plus what the pod asks for
/// (vCPUs rounded up); the `io.hull.vm.cpus/memory_mib` pod annotations set the size instead.
/// The container sees it in `nproc` and /proc/meminfo.
pub fn vm_sizing(env: &CriEnv) {
    env.pull_busybox();
    let h = hull_config().hypervisor;
    let mut cfg = spec::pod("sized", &env.log_dir());
    cfg.linux.as_mut().expect("linux config").resources = Some(cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 150_000,
        cpu_shares: 1536,
        memory_limit_in_bytes: (256 * MIB) as i64,
        ..Default::default()
    });
    let pod = run_pod(env, cfg, HULL);
    let a = sandbox_annotations(env, &pod.id);
    let sent = |k: &str| a.get(&format!("io.kubernetes.cri.{k}")).cloned();
    assert_eq!(
        (
            sent("sandbox-cpu-quota"),
            sent("sandbox-cpu-period"),
            sent("sandbox-memory")
        ),
        (
            Some("150000".into()),
            Some("100000".into()),
            Some((256 * MIB).to_string().into())
        ),
        "the sandbox annotations containerd sent: {a:?}"
    );
    let c = start(env, &pod, &spec::container("main", spec::SLEEPER));
    let (cpus, mem) = cpus_and_memory(env, &c);
    eprintln!("sized pod: {cpus} vCPUs, MemTotal {} MiB", mem / MIB);
    assert_eq!(
        cpus,
        u64::from(h.cpus) + 2,
        "vCPUs: {} of the VM's own + 1.5 asked, rounded up",
        h.cpus
    );
    assert_vm_memory("sized pod", mem, u64::from(h.memory_mib) + 256);
    stop_remove_ok(env, &c);
    remove_pod(env, &pod);

    let mut cfg = spec::pod("pinned", &env.log_dir());
    cfg.annotations.extend([
        ("io.hull.vm.cpus".to_string(), "2".to_string()),
        ("io.hull.vm.memory_mib".to_string(), "192".to_string()),
    ]);
    let pod = run_pod(env, cfg, HULL);
    let mut main = spec::container("main", spec::SLEEPER);
    main.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
        .oom_score_adj = 500;
    let c = start(env, &pod, &main);
    // On the host the VM is as exposed to the OOM killer as its most exposed container, and
    // lives in the sandbox's cgroup (containerd's /k8s.io/<sandbox id> here).
    let qemu = qemu_of(&pod.id).unwrap_or_else(|| panic!("no QEMU names hull-{}", pod.id));
    let adj =
        std::fs::read_to_string(format!("/proc/{qemu}/oom_score_adj")).expect("oom_score_adj");
    assert_eq!(adj.trim(), "500", "QEMU's oom_score_adj");
    let cgroups = std::fs::read_to_string(format!("/proc/{qemu}/cgroup")).expect("cgroup");
    assert!(
        cgroups
            .lines()
            .any(|l| l.ends_with(&format!("/k8s.io/{}", pod.id))),
        "QEMU is not in the sandbox's cgroup: {cgroups}"
    );
    let (cpus, mem) = cpus_and_memory(env, &c);
    eprintln!("pinned pod: {cpus} vCPUs, MemTotal {} MiB", mem / MIB);
    assert_eq!(cpus, 2, "io.hull.vm.cpus=2");
    assert_vm_memory("io.hull.vm.memory_mib=192", mem, 192);
    stop_remove_ok(env, &c);
    remove_pod(env, &pod);
}

/// Sets the pod's namespace modes for network, pid and ipc.
pub(super) fn pod_namespaces(
    cfg: &mut cri::PodSandboxConfig,
    f: impl FnOnce(&mut cri::NamespaceOption),
) {
    let ns = cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    f(ns);
}

/// hull: pods a VM cannot serve as asked are refused by RunPodSandbox with one readable error
/// naming what is wrong, and leave nothing behind: the host's network, pid or ipc namespace,
/// an io.hull.* annotation that is not a setting, a VM larger than `[pod] max_memory_mib`, a
/// kernel parameter `[pod] allowed_kernel_params` does not list.
pub fn bad_pod_input(env: &CriEnv) {
    env.pull_busybox();
    let node = cri::NamespaceMode::Node as i32;
    type Edit = Box<dyn Fn(&mut cri::PodSandboxConfig)>;
    let annotate = |k: &'static str, v: &'static str| -> Edit {
        Box::new(move |c: &mut cri::PodSandboxConfig| {
            c.annotations.insert(k.into(), v.into());
        })
    };
    let config = hull_config();
    assert!(
        !config
            .pod
            .allowed_kernel_params
            .iter()
            .any(|p| p == "init" || p == "init=/bin/sh"),
        "this test needs a config that does not allow init=/bin/sh"
    );
    let cases: Vec<(&str, Edit, Vec<String>)> = vec![
        (
            "hostnet",
            Box::new(move |c| pod_namespaces(c, |n| n.network = node)),
            vec!["hostNetwork".into()],
        ),
        (
            "hostpid",
            Box::new(move |c| pod_namespaces(c, |n| n.pid = node)),
            vec!["hostPID".into()],
        ),
        (
            "hostipc",
            Box::new(move |c| pod_namespaces(c, |n| n.ipc = node)),
            vec!["hostIPC".into()],
        ),
        (
            "unknown-annotation",
            annotate("io.hull.foo", "bar"),
            vec!["io.hull.foo".into()],
        ),
        (
            "too-much-memory",
            annotate("io.hull.vm.memory_mib", "100000"),
            vec![
                "100000 MiB".into(),
                format!("{} (pod.max_memory_mib)", config.pod.max_memory_mib),
            ],
        ),
        (
            "kernel-param",
            annotate("io.hull.kernel_params", "init=/bin/sh"),
            vec!["init=/bin/sh".into(), "pod.allowed_kernel_params".into()],
        ),
    ];
    let mut wrong = Vec::new();
    for (name, edit, want) in &cases {
        let mut cfg = spec::pod(name, &env.log_dir());
        edit(&mut cfg);
        let t = Instant::now();
        match env.run_pod(&cfg, HULL) {
            Ok(id) => {
                wrong.push(format!("{name}: RunPodSandbox succeeded ({id})"));
                let _ = env.cri().stop_pod(&id);
                let _ = env.cri().remove_pod(&id);
            }
            Err(e) => {
                eprintln!(
                    "{name}: RunPodSandbox refused in {:.2?}: {:?}: {}",
                    t.elapsed(),
                    e.code(),
                    e.message()
                );
                for w in want {
                    if !e.message().contains(w.as_str()) {
                        wrong.push(format!("{name}: error does not say {w:?}: {}", e.message()));
                    }
                }
                if e.message().contains("panic") {
                    wrong.push(format!("{name}: {}", e.message()));
                }
            }
        }
        let pods = env.cri().list_pods().expect("ListPodSandbox");
        if !pods.is_empty() {
            wrong.push(format!("{name}: pods left: {pods:?}"));
        }
    }
    // The refused sandboxes' ids never came back through CRI: find them in containerd's log
    // for the leak check at teardown.
    let ids = env.track_ids_from_log();
    eprintln!("refused sandboxes in containerd's log: {}", ids.len());
    if ids.len() < cases.len() {
        wrong.push(format!(
            "containerd's log names {} task ids for {} refused pods",
            ids.len(),
            cases.len()
        ));
    }
    assert_eq!(wrong, Vec::<String>::new());
}

/// The QEMU of hull pod `pod` (`-name hull-<id>,...` on its command line).
fn qemu_of(pod: &str) -> Option<i32> {
    let name = format!("hull-{pod}");
    crate::common::host::processes()
        .into_iter()
        .find(|p| {
            p.args
                .windows(2)
                .any(|w| w[0] == "-name" && (w[1] == name || w[1].starts_with(&format!("{name},"))))
        })
        .map(|p| p.pid)
}

/// hull: the pod's VM dies (its QEMU SIGKILLed): its container reports exited with 255,
/// CreateContainer in the pod and StartContainer of a container created before fail with an
/// error, and Stop/RemovePodSandbox remove it all.
pub fn vm_death(env: &CriEnv) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("doomed", &env.log_dir()), HULL);
    let c = start(env, &pod, &spec::container("main", spec::SLEEPER));
    exec_ok(env, &c, &["true"]);
    // Created while the VM lives, started after it died.
    let pending = env
        .create_container(
            &pod.id,
            &spec::container("pending", spec::SLEEPER),
            &pod.config,
        )
        .unwrap_or_else(|e| panic!("CreateContainer pending: {e}"));
    let qemu = qemu_of(&pod.id).unwrap_or_else(|| panic!("no QEMU names hull-{}", pod.id));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {qemu}: {e}"));
    let t = Instant::now();
    let st = retry(Duration::from_secs(60), || {
        let st = env.cri().container_status(&c).map_err(|e| e.to_string())?;
        (st.state == cri::ContainerState::ContainerExited as i32)
            .then_some(st.clone())
            .ok_or(format!("still {st:?}"))
    })
    .unwrap_or_else(|e| panic!("the container of a dead VM: {e}\n{}", env.log_tail()));
    eprintln!(
        "container exited {:.2?} after kill: {} {:?} {:?}",
        t.elapsed(),
        st.exit_code,
        st.reason,
        st.message
    );
    assert_eq!(st.exit_code, 255, "{st:?}");
    let pending_start = env.cri().start_container(&pending);
    eprintln!("StartContainer of a container created before the VM died: {pending_start:?}");
    let late = spec::container("late", spec::SLEEPER);
    let created = env.create_container(&pod.id, &late, &pod.config);
    eprintln!("CreateContainer after the VM died: {created:?}");
    let started = created
        .as_ref()
        .ok()
        .map(|id| env.cri().start_container(id));
    eprintln!("StartContainer after the VM died: {started:?}");
    let ps = env.cri().pod_status(&pod.id).expect("PodSandboxStatus");
    eprintln!(
        "pod state after the VM died: {:?}",
        ps.status.as_ref().map(|s| s.state)
    );
    remove_pod(env, &pod);
    assert_eq!(
        env.cri().list_containers().expect("ListContainers"),
        vec![],
        "containers left"
    );
    env.track_ids_from_log();
    assert!(
        pending_start.is_err(),
        "StartContainer in a pod whose VM died succeeded"
    );
    assert!(
        created.is_err(),
        "CreateContainer in a pod whose VM died succeeded (StartContainer: {started:?})"
    );
    assert_eq!(qemu_of(&pod.id), None, "a QEMU of the pod survived");
}
