//! Namespaced sysctls (`linux.sysctl`, from the pod's sysctls): checked as runc checks them
//! (only those of a namespace the container has of its own) and written under /proc/sys by
//! the container's process, in its namespaces, before the root is switched.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

/// The sysctls of the IPC namespace besides `fs.mqueue.*`.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// A sysctl that cannot be set; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    /// Not a well-formed name (empty parts, `..`, a slash).
    #[error("sysctl {0:?} is not a valid name")]
    BadName(String),
    /// A sysctl of the whole kernel, not of a namespace the container has.
    #[error("sysctl {0:?} is not in a separate kernel namespace")]
    NotNamespaced(String),
    /// kernel.hostname, which the OCI `hostname` field sets.
    #[error(
        "sysctl \"kernel.hostname\" is not allowed as it conflicts with the OCI \"hostname\" field"
    )]
    Hostname,
    /// The guest kernel has no such sysctl.
    #[error("sysctl {0:?} does not exist in the guest kernel")]
    Unknown(String),
    /// Writing the value failed.
    #[error("sysctl {key:?} = {value:?}: {reason}")]
    Write {
        /// the sysctl
        key: String,
        /// the value asked for
        value: String,
        /// the OS error
        reason: String,
    },
}

fn has(nss: &[LinuxNamespace], t: LinuxNamespaceType) -> bool {
    nss.iter().any(|n| n.typ() == t)
}

/// The /proc/sys path of `key` (dots become slashes).
fn path(key: &str) -> Result<PathBuf, SysctlError> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == ".." || p.contains('/') || p.contains('\0'))
    {
        return Err(SysctlError::BadName(key.to_string()));
    }
    Ok(PathBuf::from("/proc/sys").join(parts.join("/")))
}

/// Check `sysctls` against the container's namespaces as runc does. The network namespace is
/// always the pod's own in the guest, so every `net.*` sysctl is namespaced.
pub fn validate(
    sysctls: &HashMap<String, String>,
    nss: &[LinuxNamespace],
) -> Result<(), SysctlError> {
    let mut keys: Vec<&String> = sysctls.keys().collect();
    keys.sort();
    for key in keys {
        path(key)?;
        let ipc = IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.");
        if (ipc && has(nss, LinuxNamespaceType::Ipc)) || key.starts_with("net.") {
            continue;
        }
        if has(nss, LinuxNamespaceType::Uts) {
            match key.as_str() {
                "kernel.domainname" => continue,
                "kernel.hostname" => return Err(SysctlError::Hostname),
                _ => {}
            }
        }
        return Err(SysctlError::NotNamespaced(key.clone()));
    }
    Ok(())
}

/// Write every sysctl (sorted by name) through the current /proc; the calling process must be
/// in the container's namespaces.
pub fn apply(sysctls: &HashMap<String, String>) -> Result<(), SysctlError> {
    let mut all: Vec<(&String, &String)> = sysctls.iter().collect();
    all.sort();
    for (key, value) in all {
        let p = path(key)?;
        if !p.exists() {
            return Err(SysctlError::Unknown(key.clone()));
        }
        std::fs::write(&p, value).map_err(|e| SysctlError::Write {
            key: key.clone(),
            value: value.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn nss(types: &[LinuxNamespaceType]) -> Vec<LinuxNamespace> {
        types
            .iter()
            .map(|t| {
                LinuxNamespaceBuilder::default()
                    .typ(*t)
                    .build()
                    .expect("ns")
            })
            .collect()
    }

    fn one(key: &str) -> HashMap<String, String> {
        HashMap::from([(key.to_string(), "1".to_string())])
    }

    #[test]
    fn namespaced_sysctls_pass_as_with_runc() {
        use LinuxNamespaceType as T;
        let all = nss(&[T::Ipc, T::Uts, T::Pid, T::Mount]);
        for key in [
            "net.ipv4.ip_unprivileged_port_start",
            "net.ipv4.ping_group_range",
            "kernel.shm_rmid_forced",
            "kernel.msgmax",
            "fs.mqueue.msg_max",
            "kernel.domainname",
        ] {
            assert_eq!(validate(&one(key), &all), Ok(()), "{key}");
        }
        // Without its own IPC or UTS namespace those are the whole guest's.
        let none = nss(&[T::Mount]);
        assert_eq!(
            validate(&one("kernel.shmmax"), &none),
            Err(SysctlError::NotNamespaced("kernel.shmmax".into()))
        );
        assert!(validate(&one("kernel.domainname"), &none).is_err());
        assert_eq!(validate(&one("net.core.somaxconn"), &none), Ok(()));
    }

    #[test]
    fn other_sysctls_are_refused_by_name() {
        use LinuxNamespaceType as T;
        let all = nss(&[T::Ipc, T::Uts, T::Pid, T::Mount]);
        assert_eq!(
            validate(&one("kernel.panic"), &all)
                .expect_err("not namespaced")
                .to_string(),
            "sysctl \"kernel.panic\" is not in a separate kernel namespace"
        );
        assert_eq!(
            validate(&one("kernel.hostname"), &all),
            Err(SysctlError::Hostname)
        );
        for bad in ["net..x", "net.ipv4/../../x", "net.", ".net"] {
            assert_eq!(
                validate(&one(bad), &all),
                Err(SysctlError::BadName(bad.into()))
            );
        }
    }

    #[test]
    fn keys_map_to_proc_sys_paths() {
        assert_eq!(
            path("net.ipv4.ping_group_range").expect("path"),
            PathBuf::from("/proc/sys/net/ipv4/ping_group_range")
        );
    }
}
