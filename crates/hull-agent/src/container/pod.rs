//! The pod's cgroup: every container of the guest lives under `<root>/hull`, so that directory is
//! the pod's, like kubelet's pod cgroup on a runc host. A CRI pod sandbox brings the pod's limits
//! in containerd's `sandbox-*` annotations (kubelet's sum of its containers' limits); they are
//! written there when the sandbox container is created and cap the sum of the containers.

use std::collections::HashMap;
use std::path::Path;

use super::cgroup::shares_to_weight;
use crate::error::AgentError;

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
const CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
const MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

/// The cgroup v2 files and values for the pod, from a CRI sandbox container's annotations;
/// empty for any other container. Unset, zero or negative values leave a file alone.
pub fn pod_limits(
    annotations: &HashMap<String, String>,
) -> Result<Vec<(&'static str, String)>, AgentError> {
    if annotations.get(CONTAINER_TYPE).map(String::as_str) != Some("sandbox") {
        return Ok(Vec::new());
    }
    let number = |key: &str| -> Result<i64, AgentError> {
        annotations.get(key).map_or(Ok(0), |v| {
            v.trim().parse().map_err(|_| {
                AgentError::InvalidArgument(format!("annotation {key}={v:?} is not a number"))
            })
        })
    };
    let mut out = Vec::new();
    let memory = number(MEMORY)?;
    if memory > 0 {
        out.push(("memory.max", memory.to_string()));
    }
    let (quota, period) = (number(CPU_QUOTA)?, number(CPU_PERIOD)?);
    if quota > 0 && period > 0 {
        out.push(("cpu.max", format!("{quota} {period}")));
    }
    let shares = number(CPU_SHARES)?;
    if shares > 0 {
        let weight = shares_to_weight(u64::try_from(shares).unwrap_or(0));
        out.push(("cpu.weight", weight.to_string()));
    }
    Ok(out)
}

/// Write the pod's limits into `dir` (the parent of the containers' cgroups).
pub fn apply(dir: &Path, limits: &[(&'static str, String)]) -> Result<(), AgentError> {
    for (file, value) in limits {
        std::fs::write(dir.join(file), value).map_err(|e| {
            AgentError::InvalidArgument(format!("cannot set the pod's {file} to {value}: {e}"))
        })?;
        tracing::info!(file, value = %value, "pod cgroup limit set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sandbox_annotations_become_pod_limits() {
        let a = ann(&[
            (CONTAINER_TYPE, "sandbox"),
            (CPU_PERIOD, "100000"),
            (CPU_QUOTA, "200000"),
            (CPU_SHARES, "0"),
            (MEMORY, "268435456"),
        ]);
        assert_eq!(
            pod_limits(&a).expect("limits"),
            vec![
                ("memory.max", "268435456".to_string()),
                ("cpu.max", "200000 100000".to_string())
            ]
        );
        let a = ann(&[(CONTAINER_TYPE, "sandbox"), (CPU_SHARES, "1024")]);
        assert_eq!(
            pod_limits(&a).expect("limits"),
            vec![("cpu.weight", "39".to_string())]
        );
    }

    #[test]
    fn other_containers_and_bad_numbers() {
        let a = ann(&[(CONTAINER_TYPE, "container"), (MEMORY, "1")]);
        assert!(pod_limits(&a).expect("none").is_empty());
        assert!(pod_limits(&HashMap::new()).expect("none").is_empty());
        let a = ann(&[(CONTAINER_TYPE, "sandbox"), (MEMORY, "lots")]);
        let e = pod_limits(&a).expect_err("bad number");
        assert!(e.to_string().contains(MEMORY), "{e}");
    }
}
