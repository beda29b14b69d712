//! The guest kernel a container expects of a Linux host: SysV IPC and the namespaced sysctls,
//! bridge, veth and tun, netfilter (iptables and nftables), IPVS, fuse, overlayfs, squashfs
//! and erofs, user namespaces, the cgroup v2 controllers, BPF. Each probe is a shell test that
//! prints `ok <name>` or `missing <name>`.

use super::*;

/// `(name, shell condition)`: what a container of a normal Linux host finds.
const PROBES: &[(&str, &str)] = &[
    ("sysv-ipc", "test -e /proc/sysvipc/shm -a -e /proc/sys/kernel/shm_rmid_forced"),
    ("ipc-sysctls", "test -e /proc/sys/kernel/msgmax -a -e /proc/sys/kernel/sem -a -e /proc/sys/kernel/shmmax"),
    ("posix-mqueue", "test -e /proc/sys/fs/mqueue/msg_max"),
    ("bridge", "brctl addbr hullbr0 && brctl delbr hullbr0"),
    ("veth", "ip link add hullv0 type veth peer name hullv1 && ip link del hullv0"),
    ("tun", "grep -qw tun /proc/misc"),
    ("iptables", "test -e /proc/net/ip_tables_names -a -e /proc/net/ip6_tables_names"),
    ("nftables", "test -d /proc/sys/net/netfilter"),
    ("ipvs", "test -e /proc/net/ip_vs"),
    ("fuse", "grep -qw fuse /proc/filesystems"),
    ("overlay", "grep -qw overlay /proc/filesystems"),
    ("squashfs", "grep -qw squashfs /proc/filesystems"),
    ("erofs", "grep -qw erofs /proc/filesystems"),
    ("user-ns", "test \"$(cat /proc/sys/user/max_user_namespaces)\" -gt 0"),
    ("bpf", "test -e /proc/sys/kernel/unprivileged_bpf_disabled && grep -qw bpf /proc/filesystems"),
    ("hugetlbfs", "grep -qw hugetlbfs /proc/filesystems"),
    ("cgroup-controllers", "for c in cpu cpuset io memory hugetlb pids misc; do grep -qw $c /sys/fs/cgroup/cgroup.controllers || exit 1; done"),
];

fn script() -> String {
    PROBES
        .iter()
        .map(|(name, cond)| format!("if ( {cond} ) >/dev/null 2>&1; then echo ok {name}; else echo missing {name}; fi\n"))
        .collect()
}

/// The probes in a container with NET_ADMIN, with each of `handlers`. hull's guest kernel must
/// pass every one; runc's answers are printed beside them as the reference (the host kernel
/// loads modules on demand, so they depend on what the node has loaded).
pub fn guest_kernel_features(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    for &handler in handlers {
        let pod = run_pod(env, spec::pod("kernel", &env.log_dir()), handler);
        let mut c = spec::container("probe", spec::SLEEPER);
        c.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .capabilities = Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        });
        let id = start(env, &pod, &c);
        let out = exec_ok(env, &id, &["sh", "-c", &script()]);
        eprintln!("{handler}:\n{out}");
        if handler == HULL {
            let missing: Vec<&str> = out.lines().filter(|l| !l.starts_with("ok ")).collect();
            assert_eq!(
                missing,
                Vec::<&str>::new(),
                "what hull's guest kernel lacks"
            );
            assert_eq!(out.lines().count(), PROBES.len(), "{out}");
        }
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
    }
}
