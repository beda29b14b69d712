//! OCI spec handling on the host: a minimal spec for `hull run --rootfs`, and the
//! translation of a host spec into the guest's (paths rewritten, host-only fields dropped).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

use crate::error::{Error, Result};

/// A host path that must appear in the guest at `<shared>/<rel>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// host source
    pub source: PathBuf,
    /// path relative to the sandbox's shared directory
    pub rel: PathBuf,
    /// bind read-only
    pub readonly: bool,
}

/// The guest-side spec and the host binds it needs, for container `cid` whose rootfs is `rootfs`.
pub fn for_guest(spec: &Spec, cid: &str, rootfs: &Path) -> Result<(Spec, Vec<HostBind>)> {
    let shared = Path::new(hull_protocol::GUEST_SHARED_DIR);
    let mut out = spec.clone();
    let mut binds = vec![HostBind {
        source: rootfs.to_path_buf(),
        rel: Path::new(cid).join("rootfs"),
        readonly: false,
    }];
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(shared.join(cid).join("rootfs"));
    out.set_root(Some(root));

    let mut mounts: Vec<Mount> = Vec::new();
    for (n, m) in spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let opts = m.options().clone().unwrap_or_default();
        let is_bind =
            m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            mounts.push(m);
            continue;
        }
        let source = m.source().clone().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "bind mount to {} has no source",
                m.destination().display()
            ))
        })?;
        if !source.is_absolute() || !source.exists() {
            return Err(Error::InvalidArgument(format!(
                "bind mount source {} does not exist on the host",
                source.display()
            )));
        }
        let rel = Path::new(cid).join("mounts").join(n.to_string());
        binds.push(HostBind {
            source,
            rel: rel.clone(),
            readonly: opts.iter().any(|o| o == "ro"),
        });
        let mut g = m.clone();
        g.set_source(Some(shared.join(rel)));
        mounts.push(g);
    }
    out.set_mounts(Some(mounts));
    // Hooks would run on the host with host paths; the guest has no use for them.
    out.set_hooks(None);
    if let Some(mut linux) = spec.linux().clone() {
        linux.set_cgroups_path(None);
        if let Some(nss) = linux.namespaces().clone() {
            // Namespace paths name host namespaces; the guest makes its own. The pod's
            // containers share the guest's own network namespace: the guest is the pod.
            let nss = nss
                .into_iter()
                .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
                .map(|mut ns| {
                    ns.set_path(None);
                    ns
                })
                .collect();
            linux.set_namespaces(Some(nss));
        }
        out.set_linux(Some(linux));
    }
    Ok((out, binds))
}

/// A spec for running `args` in `rootfs` (read-write) the way `hull run --rootfs` does.
pub fn minimal(
    args: Vec<String>,
    env: &[String],
    cwd: Option<&str>,
    terminal: bool,
) -> Result<Spec> {
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_terminal(Some(terminal));
    let mut e = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("TERM={}", if terminal { "xterm" } else { "dumb" }),
    ];
    e.extend(env.iter().cloned());
    process.set_env(Some(e));
    if let Some(c) = cwd {
        process.set_cwd(PathBuf::from(c));
    }
    spec.set_process(Some(process));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_hostname(Some("hull".to_string()));
    Ok(spec)
}

/// Check what the guest cannot do anything with, so the error is clear and early.
pub fn validate(spec: &Spec) -> Result<&Process> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("spec has no process".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidArgument("spec process has no args".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "process cwd {} is not absolute",
            process.cwd().display()
        )));
    }
    if let Some(linux) = spec.linux() {
        if let Some(nss) = linux.namespaces() {
            if nss.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
                tracing::warn!("user namespace requested; containers run in the guest without one");
            }
        }
    }
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    #[test]
    fn rewrites_root_and_bind_mounts() {
        let mut spec = minimal(vec!["true".into()], &[], None, false).expect("spec");
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source("/tmp")
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .expect("mount"),
        );
        spec.set_mounts(Some(mounts));
        let (g, binds) = for_guest(&spec, "c1", Path::new("/host/rootfs")).expect("translate");
        assert_eq!(
            g.root().as_ref().map(|r| r.path().clone()),
            Some(PathBuf::from("/run/hull/shared/c1/rootfs"))
        );
        assert_eq!(binds.len(), 2);
        assert_eq!(binds[1].source, PathBuf::from("/tmp"));
        assert!(binds[1].readonly);
        let data = g.mounts().as_ref().and_then(|m| {
            m.iter()
                .find(|m| m.destination() == Path::new("/data"))
                .cloned()
        });
        let src = data.and_then(|m| m.source().clone()).expect("bind source");
        assert!(
            src.starts_with("/run/hull/shared/c1/mounts"),
            "{}",
            src.display()
        );
    }

    #[test]
    fn missing_bind_source_is_named() {
        let mut spec = minimal(vec!["true".into()], &[], None, false).expect("spec");
        spec.set_mounts(Some(vec![MountBuilder::default()
            .destination("/x")
            .typ("bind")
            .source("/no/such/dir")
            .build()
            .expect("mount")]));
        let e = for_guest(&spec, "c1", Path::new("/r")).expect_err("must fail");
        assert!(e.to_string().contains("/no/such/dir"), "{e}");
    }

    #[test]
    fn containers_share_the_guest_network_namespace() {
        use oci_spec::runtime::LinuxNamespaceBuilder;
        let mut spec = minimal(vec!["true".into()], &[], None, false).expect("spec");
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_namespaces(Some(vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/proc/42/ns/net")
                .build()
                .expect("ns"),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Mount)
                .build()
                .expect("ns"),
        ]));
        spec.set_linux(Some(linux));
        let (g, _) = for_guest(&spec, "c1", Path::new("/r")).expect("translate");
        let types: Vec<LinuxNamespaceType> = g
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(types, vec![LinuxNamespaceType::Mount]);
    }

    #[test]
    fn empty_args_rejected() {
        let spec = minimal(vec![], &[], None, false).expect("spec");
        assert!(validate(&spec).is_err());
    }
}
