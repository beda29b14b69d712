//! OCI spec handling on the host: a minimal spec for `hull run --rootfs`, and the
//! translation of a host spec into the guest's (paths rewritten, host-only fields dropped).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Mount, Process, Spec};

use crate::error::{Error, Result};
use crate::volumes::{classify, guest_path, volume_id, GuestVolume, VolumeKind};

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

/// Where the pod's shared namespaces are: containerd names them `/proc/<host_pid>/ns/<type>`
/// (the sandbox task's pid, the VMM's); inside the guest they are those of the pod sandbox
/// container's init, `guest_pid` (None until it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The pid containerd knows the sandbox task by.
    pub host_pid: i32,
    /// The guest pid of the sandbox container's init process.
    pub guest_pid: Option<u32>,
}

/// The guest's namespaces for a container: the network namespace is dropped (the guest is
/// the pod, and its network is the guest's own); ipc, uts and pid paths that name the pod's
/// namespaces are rewritten to the sandbox container's in the guest; any other path names a
/// host namespace that cannot be joined from inside a VM and is refused.
fn guest_namespaces(
    nss: Vec<LinuxNamespace>,
    pod: Option<PodNamespaces>,
) -> Result<Vec<LinuxNamespace>> {
    let mut out = Vec::with_capacity(nss.len());
    for mut ns in nss {
        let kind = match ns.typ() {
            LinuxNamespaceType::Network => continue,
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            LinuxNamespaceType::Pid => "pid",
            _ => "",
        };
        if let Some(path) = ns.path().clone() {
            let guest = pod.and_then(|p| {
                (path == Path::new(&format!("/proc/{}/ns/{kind}", p.host_pid))).then_some(p)
            });
            match guest {
                Some(PodNamespaces {
                    guest_pid: Some(g), ..
                }) if !kind.is_empty() => {
                    ns.set_path(Some(PathBuf::from(format!("/proc/{g}/ns/{kind}"))));
                }
                Some(_) if !kind.is_empty() => {
                    return Err(Error::FailedPrecondition(format!(
                        "{kind} namespace {}: the pod's sandbox container has not started",
                        path.display()
                    )))
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "namespace path {}: a host namespace cannot be joined inside the VM",
                        path.display()
                    )))
                }
            }
        }
        out.push(ns);
    }
    Ok(out)
}

/// The guest-side spec and the host binds and guest volumes it needs, for container `cid`
/// whose rootfs is `rootfs`, in a sandbox whose pod namespaces are `pod`; `mountinfo` is the
/// host's mount table (it tells a pod's tmpfs from a directory).
pub fn for_guest(
    spec: &Spec,
    cid: &str,
    rootfs: &Path,
    pod: Option<PodNamespaces>,
    mountinfo: &[u8],
) -> Result<(Spec, Vec<HostBind>, Vec<GuestVolume>)> {
    let shared = Path::new(hull_protocol::GUEST_SHARED_DIR);
    let mut out = spec.clone();
    let mut binds = vec![HostBind {
        source: rootfs.to_path_buf(),
        rel: Path::new(cid).join("rootfs"),
        readonly: false,
    }];
    let mut volumes: Vec<GuestVolume> = Vec::new();
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
        if opts.iter().any(|o| o == "rshared" || o == "shared") {
            return Err(Error::InvalidArgument(format!(
                "mount {} (from {}): bidirectional mount propagation cannot cross the VM boundary; \
                 mounts made in the container would never reach the host",
                m.destination().display(),
                source.display()
            )));
        }
        if !source.is_absolute() || !source.exists() {
            return Err(Error::InvalidArgument(format!(
                "bind mount source {} (for {}) does not exist on the host",
                source.display(),
                m.destination().display()
            )));
        }
        let mut g = m.clone();
        match classify(&source, mountinfo) {
            VolumeKind::Shared => {
                let rel = Path::new(cid).join("mounts").join(n.to_string());
                binds.push(HostBind {
                    source,
                    rel: rel.clone(),
                    readonly: opts.iter().any(|o| o == "ro"),
                });
                g.set_source(Some(shared.join(rel)));
            }
            kind => {
                let id = volume_id(&source);
                g.set_source(Some(guest_path(&id)));
                if !volumes.iter().any(|v| v.id == id) {
                    volumes.push(GuestVolume { id, source, kind });
                }
            }
        }
        mounts.push(g);
    }
    out.set_mounts(Some(mounts));
    // Hooks would run on the host with host paths; the guest has no use for them.
    out.set_hooks(None);
    if let Some(mut linux) = spec.linux().clone() {
        linux.set_cgroups_path(None);
        if let Some(nss) = linux.namespaces().clone() {
            linux.set_namespaces(Some(guest_namespaces(nss, pod)?));
        }
        out.set_linux(Some(linux));
    }
    Ok((out, binds, volumes))
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
        let (g, binds, _) =
            for_guest(&spec, "c1", Path::new("/host/rootfs"), None, b"").expect("translate");
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
        let e = for_guest(&spec, "c1", Path::new("/r"), None, b"").expect_err("must fail");
        assert!(e.to_string().contains("/no/such/dir"), "{e}");
    }

    #[test]
    fn bidirectional_propagation_is_refused_and_volumes_go_to_the_guest() {
        let mut spec = minimal(vec!["true".into()], &[], None, false).expect("spec");
        let bind = |dst: &str, src: &Path, extra: &str| {
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src)
                .options(vec!["rbind".to_string(), extra.to_string()])
                .build()
                .expect("mount")
        };
        let t = tempfile::tempdir().expect("tempdir");
        spec.set_mounts(Some(vec![bind("/shared", t.path(), "rshared")]));
        let e = for_guest(&spec, "c1", Path::new("/r"), None, b"").expect_err("rshared");
        assert!(
            e.to_string().contains("/shared") && e.to_string().contains("propagation"),
            "{e}"
        );
        let cm = t.path().join("volumes/kubernetes.io~configmap/cfg");
        std::fs::create_dir_all(&cm).expect("mkdir");
        spec.set_mounts(Some(vec![
            bind("/cfg", &cm, "ro"),
            bind("/cfg2", &cm, "ro"),
            bind("/host", t.path(), "rslave"),
        ]));
        let (g, binds, vols) =
            for_guest(&spec, "c1", Path::new("/r"), None, b"").expect("translate");
        assert_eq!(vols.len(), 1, "one volume per source: {vols:?}");
        assert_eq!(vols[0].kind, VolumeKind::Synced);
        assert_eq!(binds.len(), 2, "rootfs and the hostPath");
        let sources: Vec<PathBuf> = g
            .mounts()
            .iter()
            .flatten()
            .filter_map(|m| m.source().clone())
            .collect();
        assert_eq!(sources[0], guest_path(&vols[0].id));
        assert_eq!(sources[1], guest_path(&vols[0].id));
        assert!(sources[2].starts_with("/run/hull/shared/c1/mounts"));
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
        let (g, _, _) = for_guest(&spec, "c1", Path::new("/r"), None, b"").expect("translate");
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

    #[test]
    fn pod_namespaces_are_rewritten_and_network_dropped() {
        use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder};
        let ns = |t: LinuxNamespaceType, p: Option<&str>| {
            let mut b = LinuxNamespaceBuilder::default().typ(t);
            if let Some(p) = p {
                b = b.path(p);
            }
            b.build().expect("ns")
        };
        let mut spec = minimal(vec!["true".into()], &[], None, false).expect("spec");
        spec.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![
                    ns(LinuxNamespaceType::Pid, None),
                    ns(LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc")),
                    ns(LinuxNamespaceType::Uts, Some("/proc/42/ns/uts")),
                    ns(LinuxNamespaceType::Network, Some("/proc/42/ns/net")),
                    ns(LinuxNamespaceType::Mount, None),
                ])
                .build()
                .expect("linux"),
        ));
        let pod = PodNamespaces {
            host_pid: 42,
            guest_pid: Some(7),
        };
        let (g, _, _) = for_guest(&spec, "c1", Path::new("/r"), Some(pod), b"").expect("translate");
        let nss = g
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .expect("namespaces");
        let paths: Vec<_> = nss.iter().map(|n| (n.typ(), n.path().clone())).collect();
        assert_eq!(
            paths,
            vec![
                (LinuxNamespaceType::Pid, None),
                (
                    LinuxNamespaceType::Ipc,
                    Some(PathBuf::from("/proc/7/ns/ipc"))
                ),
                (
                    LinuxNamespaceType::Uts,
                    Some(PathBuf::from("/proc/7/ns/uts"))
                ),
                (LinuxNamespaceType::Mount, None),
            ]
        );
        let early = PodNamespaces {
            host_pid: 42,
            guest_pid: None,
        };
        let e = for_guest(&spec, "c1", Path::new("/r"), Some(early), b"").expect_err("not started");
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        let e = for_guest(&spec, "c1", Path::new("/r"), None, b"").expect_err("host path");
        assert!(e.to_string().contains("/proc/42/ns/ipc"), "{e}");
    }
}
