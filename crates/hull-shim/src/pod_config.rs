//! What a CRI pod's sandbox spec asks of its VM: the namespaces a VM can and cannot give
//! (host network, pid and ipc are refused), the pod's network namespace, the VM's size from
//! the pod's resources, and the `io.hull.*` annotations a cluster lets pods pass.

use std::collections::HashMap;

use hull_runtime::config::Config;
use hull_runtime::SandboxOptions;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Result, ShimError};

/// Annotation telling a CRI pod's sandbox container from its other containers.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
const MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// Prefix of the hull settings a pod may pass (through containerd's `pod_annotations`).
pub const HULL_PREFIX: &str = "io.hull.";
/// vCPUs of the pod's VM, instead of the computed size.
pub const VM_CPUS: &str = "io.hull.vm.cpus";
/// Memory of the pod's VM in MiB, instead of the computed size.
pub const VM_MEMORY_MIB: &str = "io.hull.vm.memory_mib";
/// Space-separated kernel parameters, each allowed by `pod.allowed_kernel_params`.
pub const KERNEL_PARAMS: &str = "io.hull.kernel_params";

/// Whether `spec` is a CRI pod's sandbox (pause) container.
pub fn is_pod_sandbox(spec: &Spec) -> bool {
    annotations(spec).get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox")
}

fn annotations(spec: &Spec) -> HashMap<String, String> {
    spec.annotations().clone().unwrap_or_default()
}

/// The sandbox options for a CRI pod whose sandbox container has `spec`.
pub fn sandbox_options(config: &Config, spec: &Spec) -> Result<SandboxOptions> {
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let ns = |t: LinuxNamespaceType| nss.iter().find(|n| n.typ() == t);
    for (t, field) in [
        (LinuxNamespaceType::Network, "hostNetwork"),
        (LinuxNamespaceType::Pid, "hostPID"),
        (LinuxNamespaceType::Ipc, "hostIPC"),
    ] {
        if ns(t).is_none() {
            return Err(ShimError::InvalidArgument(format!(
                "{field}: a hull pod runs in its own VM and cannot share the host's namespace"
            )));
        }
    }
    let netns = ns(LinuxNamespaceType::Network).and_then(|n| n.path().clone());
    if let Some(p) = &netns {
        if !p.exists() {
            return Err(ShimError::InvalidArgument(format!(
                "network namespace {} does not exist",
                p.display()
            )));
        }
    }
    let a = annotations(spec);
    let (cpus, memory_mib) = size(config, &a)?;
    Ok(SandboxOptions {
        cpus: Some(cpus),
        memory_mib: Some(memory_mib),
        netns,
        kernel_params: kernel_params(config, &a)?,
        ..host_placement(spec)
    })
}

/// Where the VM goes on the host: the spec's cgroup (containerd's, under kubelet's pod
/// cgroup) and OOM score bias, as runc would place the container's processes.
pub fn host_placement(spec: &Spec) -> SandboxOptions {
    SandboxOptions {
        cgroups_path: spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty()),
        oom_score_adj: spec.process().as_ref().and_then(|p| p.oom_score_adj()),
        ..SandboxOptions::default()
    }
}

fn number(a: &HashMap<String, String>, key: &str) -> Result<Option<u64>> {
    a.get(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map(|n| n.max(0) as u64)
                .map_err(|_| {
                    ShimError::InvalidArgument(format!("annotation {key}={v:?} is not a number"))
                })
        })
        .transpose()
}

/// vCPUs and MiB: the VM's own share plus the pod's limits, or what io.hull.vm.* says; never
/// more than the configured maximum.
fn size(config: &Config, a: &HashMap<String, String>) -> Result<(u32, u32)> {
    const MIB: u64 = 1 << 20;
    let h = &config.hypervisor;
    let quota = number(a, CPU_QUOTA)?.unwrap_or(0);
    let period = number(a, CPU_PERIOD)?.unwrap_or(0);
    let pod_cpus = if quota > 0 && period > 0 {
        quota.div_ceil(period)
    } else {
        0
    };
    let pod_mib = number(a, MEMORY)?.unwrap_or(0).div_ceil(MIB);
    let cpus = match number(a, VM_CPUS)? {
        Some(n) => n,
        None => u64::from(h.cpus) + pod_cpus,
    };
    let mib = match number(a, VM_MEMORY_MIB)? {
        Some(n) => n,
        None => u64::from(h.memory_mib) + pod_mib,
    };
    let p = &config.pod;
    if cpus == 0 || cpus > u64::from(p.max_cpus) {
        return Err(ShimError::InvalidArgument(format!(
            "the pod's VM would have {cpus} vCPUs; allowed 1..={} (pod.max_cpus)",
            p.max_cpus
        )));
    }
    if mib < 64 || mib > u64::from(p.max_memory_mib) {
        return Err(ShimError::InvalidArgument(format!(
            "the pod's VM would have {mib} MiB; allowed 64..={} (pod.max_memory_mib)",
            p.max_memory_mib
        )));
    }
    Ok((cpus as u32, mib as u32))
}

/// The kernel parameters of io.hull.kernel_params, each allowed by the config; any other
/// io.hull.* annotation is refused by name.
fn kernel_params(config: &Config, a: &HashMap<String, String>) -> Result<Vec<String>> {
    let mut keys: Vec<&String> = a.keys().filter(|k| k.starts_with(HULL_PREFIX)).collect();
    keys.sort();
    for k in keys {
        if ![VM_CPUS, VM_MEMORY_MIB, KERNEL_PARAMS].contains(&k.as_str()) {
            return Err(ShimError::InvalidArgument(format!(
                "annotation {k} is not a hull setting a pod may pass"
            )));
        }
    }
    let Some(params) = a.get(KERNEL_PARAMS) else {
        return Ok(Vec::new());
    };
    let allowed = &config.pod.allowed_kernel_params;
    params
        .split_whitespace()
        .map(|p| {
            let name = p.split('=').next().unwrap_or_default();
            let ok = p.len() <= 256
                && p.chars().all(|c| c.is_ascii_graphic())
                && allowed.iter().any(|a| a == p || a == name);
            if ok {
                Ok(p.to_string())
            } else {
                Err(ShimError::InvalidArgument(format!(
                    "annotation {KERNEL_PARAMS}: kernel parameter {p:?} is not allowed (pod.allowed_kernel_params)"
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)], host: Option<LinuxNamespaceType>) -> Spec {
        let mut spec: Spec =
            serde_json::from_str(include_str!("fixtures/containerd-1.6-sandbox-spec.json"))
                .expect("captured sandbox spec");
        let mut a = spec.annotations().clone().unwrap_or_default();
        for (k, v) in annotations {
            a.insert(k.to_string(), v.to_string());
        }
        spec.set_annotations(Some(a));
        let mut linux = spec.linux().clone().expect("linux");
        let nss: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| Some(n.typ()) != host)
            .map(|mut n| {
                // The captured netns is long gone: no path, as for a pod without CNI.
                n.set_path(None);
                n
            })
            .collect();
        linux.set_namespaces(Some(nss));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn captured_sandbox_is_a_pod_sandbox() {
        assert!(is_pod_sandbox(&spec(&[], None)));
    }

    #[test]
    fn host_namespaces_are_refused_by_field() {
        let c = Config::defaults();
        for (t, field) in [
            (LinuxNamespaceType::Network, "hostNetwork"),
            (LinuxNamespaceType::Pid, "hostPID"),
            (LinuxNamespaceType::Ipc, "hostIPC"),
        ] {
            let e = sandbox_options(&c, &spec(&[], Some(t))).expect_err(field);
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    #[test]
    fn vm_size_is_own_share_plus_pod_limits() {
        let c = Config::defaults();
        let o = sandbox_options(
            &c,
            &spec(
                &[
                    (CPU_QUOTA, "150000"),
                    (CPU_PERIOD, "100000"),
                    (MEMORY, &(300u64 << 20).to_string()),
                ],
                None,
            ),
        )
        .expect("options");
        assert_eq!(o.cpus, Some(c.hypervisor.cpus + 2));
        assert_eq!(o.memory_mib, Some(c.hypervisor.memory_mib + 300));
        let big = spec(&[(MEMORY, &(1u64 << 40).to_string())], None);
        let e = sandbox_options(&c, &big).expect_err("too big");
        assert!(e.to_string().contains("pod.max_memory_mib"), "{e}");
        let e = sandbox_options(&c, &spec(&[(VM_CPUS, "100")], None)).expect_err("cpus");
        assert!(e.to_string().contains("pod.max_cpus"), "{e}");
    }

    #[test]
    fn hull_annotations_are_checked_by_name() {
        let mut c = Config::defaults();
        c.pod.allowed_kernel_params = vec!["loglevel".into(), "mitigations=off".into()];
        let o = sandbox_options(
            &c,
            &spec(
                &[
                    (KERNEL_PARAMS, "loglevel=7 mitigations=off"),
                    (VM_MEMORY_MIB, "512"),
                ],
                None,
            ),
        )
        .expect("allowed");
        assert_eq!(o.kernel_params, vec!["loglevel=7", "mitigations=off"]);
        assert_eq!(o.memory_mib, Some(512));
        let e = sandbox_options(&c, &spec(&[(KERNEL_PARAMS, "init=/bin/sh")], None))
            .expect_err("not allowed");
        assert!(e.to_string().contains("init=/bin/sh"), "{e}");
        let e = sandbox_options(&c, &spec(&[(KERNEL_PARAMS, "mitigations=auto")], None))
            .expect_err("other value");
        assert!(e.to_string().contains("mitigations=auto"), "{e}");
        let e = sandbox_options(&c, &spec(&[("io.hull.privileged", "true")], None))
            .expect_err("unknown key");
        assert!(e.to_string().contains("io.hull.privileged"), "{e}");
    }

    #[test]
    fn a_missing_netns_is_named() {
        let c = Config::defaults();
        let mut s = spec(&[], None);
        let mut linux = s.linux().clone().expect("linux");
        let nss = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|mut n| {
                if n.typ() == LinuxNamespaceType::Network {
                    n.set_path(Some("/var/run/netns/cni-gone".into()));
                }
                n
            })
            .collect();
        linux.set_namespaces(Some(nss));
        s.set_linux(Some(linux));
        let e = sandbox_options(&c, &s).expect_err("gone");
        assert!(e.to_string().contains("/var/run/netns/cni-gone"), "{e}");
    }
}
