//! Validation of what the host sends: the OCI spec of CreateContainer and the OCI process of
//! ExecProcess (size, JSON, paths confined to the shared directory, required fields).

use std::path::{Component, Path};

use hull_protocol::MAX_SPEC_LEN;
use oci_spec::runtime::{Process, Spec};

use crate::error::AgentError;

fn invalid(msg: impl Into<String>) -> AgentError {
    AgentError::InvalidArgument(msg.into())
}

/// True for an absolute path without `..` components.
pub fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// A bind source naming one of the pod's guest volumes: `GUEST_VOLUMES_DIR/<volume id>`.
fn is_guest_volume(p: &Path) -> bool {
    p.parent() == Some(Path::new(hull_protocol::GUEST_VOLUMES_DIR))
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| hull_protocol::validate_id(n).is_ok())
}

/// Parse and check an OCI spec. The root must lie under `shared_dir`, bind-mount sources
/// under it too or be one of the pod's guest volumes.
pub fn parse_spec(json: &[u8], shared_dir: &Path) -> Result<Spec, AgentError> {
    if json.len() > MAX_SPEC_LEN {
        return Err(invalid(format!(
            "OCI spec is {} bytes, more than {MAX_SPEC_LEN}",
            json.len()
        )));
    }
    let spec: Spec =
        serde_json::from_slice(json).map_err(|e| invalid(format!("bad OCI spec: {e}")))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("OCI spec has no root"))?;
    let under_shared =
        |p: &Path| is_clean_absolute(p) && p.starts_with(shared_dir) && p != shared_dir;
    if !under_shared(root.path()) {
        return Err(invalid(format!(
            "root.path {} must be a clean path under {}",
            root.path().display(),
            shared_dir.display()
        )));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("OCI spec has no process"))?;
    check_process(process)?;
    for m in spec.mounts().iter().flatten() {
        if !is_clean_absolute(m.destination()) {
            return Err(invalid(format!(
                "mount destination {} must be a clean absolute path",
                m.destination().display()
            )));
        }
        check_proc_destination(m)?;
        if is_bind(m.typ().as_deref(), m.options().as_deref()) {
            let ok = m
                .source()
                .as_deref()
                .is_some_and(|s| under_shared(s) || is_guest_volume(s));
            if !ok {
                return Err(invalid(format!(
                    "bind mount source {:?} of {} must be under {} or a volume in {}",
                    m.source(),
                    m.destination().display(),
                    shared_dir.display(),
                    hull_protocol::GUEST_VOLUMES_DIR
                )));
            }
        }
    }
    if let Some(linux) = spec.linux() {
        for p in linux
            .masked_paths()
            .iter()
            .flatten()
            .chain(linux.readonly_paths().iter().flatten())
        {
            if !is_clean_absolute(Path::new(p)) {
                return Err(invalid(format!(
                    "masked/readonly path {p:?} must be a clean absolute path"
                )));
            }
        }
    }
    Ok(spec)
}

/// What may be mounted over inside /proc: the files lxcfs emulates, as runc allows them.
const PROC_MOUNTS_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// runc's rule for /proc: only a procfs at /proc itself, and below it only the files lxcfs
/// emulates; anything else could hide the kernel's view of the container (or fake it).
fn check_proc_destination(m: &oci_spec::runtime::Mount) -> Result<(), AgentError> {
    let dest = m.destination();
    if !dest.starts_with("/proc") {
        return Ok(());
    }
    if dest == Path::new("/proc") {
        if m.typ().as_deref() == Some("proc") {
            return Ok(());
        }
        return Err(invalid(format!(
            "only a proc filesystem may be mounted at /proc, not {:?}",
            m.typ().as_deref().unwrap_or("a bind mount")
        )));
    }
    if PROC_MOUNTS_ALLOWED.iter().any(|p| dest == Path::new(p)) {
        return Ok(());
    }
    Err(invalid(format!(
        "mount destination {} cannot be mounted because it is inside /proc",
        dest.display()
    )))
}

/// True if a mount of this type and options is a bind mount.
pub fn is_bind(typ: Option<&str>, options: Option<&[String]>) -> bool {
    typ == Some("bind")
        || options
            .into_iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Parse and check the OCI process of an ExecProcess.
pub fn parse_process(json: &[u8]) -> Result<Process, AgentError> {
    if json.len() > MAX_SPEC_LEN {
        return Err(invalid(format!(
            "OCI process is {} bytes, more than {MAX_SPEC_LEN}",
            json.len()
        )));
    }
    let process: Process =
        serde_json::from_slice(json).map_err(|e| invalid(format!("bad OCI process: {e}")))?;
    check_process(&process)?;
    Ok(process)
}

fn check_process(p: &Process) -> Result<(), AgentError> {
    let args = p.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid("process.args must not be empty"));
    }
    if !p.cwd().is_absolute() {
        return Err(invalid(format!(
            "process.cwd {} must be absolute",
            p.cwd().display()
        )));
    }
    let nul = |s: &String| s.contains('\0');
    if args.iter().any(nul) || p.env().iter().flatten().any(nul) {
        return Err(invalid("process args and env must not contain NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(root: &str, extra_mounts: &str) -> Vec<u8> {
        format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"{root}"}},
            "process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "mounts":[{{"destination":"/proc","type":"proc","source":"proc"}}{extra_mounts}]}}"#
        )
        .into_bytes()
    }

    const SHARED: &str = "/run/hull/shared";

    #[test]
    fn good_spec_passes() {
        let s = spec_json("/run/hull/shared/c1/rootfs", "");
        assert!(parse_spec(&s, Path::new(SHARED)).is_ok());
    }

    #[test]
    fn root_must_be_under_shared() {
        for root in [
            "/etc",
            "/run/hull/shared/../../etc",
            "rootfs",
            "/run/hull/shared",
        ] {
            let s = spec_json(root, "");
            assert!(
                matches!(
                    parse_spec(&s, Path::new(SHARED)),
                    Err(AgentError::InvalidArgument(_))
                ),
                "{root}"
            );
        }
    }

    #[test]
    fn bind_sources_are_confined() {
        let bad = r#",{"destination":"/x","type":"bind","source":"/etc","options":["rbind"]}"#;
        let s = spec_json("/run/hull/shared/c1/rootfs", bad);
        assert!(parse_spec(&s, Path::new(SHARED)).is_err());
        let good = r#",{"destination":"/x","type":"none","source":"/run/hull/shared/c1/x","options":["rbind"]}"#;
        let s = spec_json("/run/hull/shared/c1/rootfs", good);
        assert!(parse_spec(&s, Path::new(SHARED)).is_ok());
        let vol = r#",{"destination":"/v","type":"bind","source":"/run/hull/volumes/vol-1","options":["rbind"]}"#;
        let s = spec_json("/run/hull/shared/c1/rootfs", vol);
        assert!(parse_spec(&s, Path::new(SHARED)).is_ok());
        for bad in [
            "/run/hull/volumes/..",
            "/run/hull/volumes/a/b",
            "/run/hull/volumes",
        ] {
            let m = format!(
                r#",{{"destination":"/v","type":"bind","source":"{bad}","options":["rbind"]}}"#
            );
            let s = spec_json("/run/hull/shared/c1/rootfs", &m);
            assert!(parse_spec(&s, Path::new(SHARED)).is_err(), "{bad}");
        }
        let dotdot = r#",{"destination":"/../x","type":"tmpfs","source":"tmpfs"}"#;
        let s = spec_json("/run/hull/shared/c1/rootfs", dotdot);
        assert!(parse_spec(&s, Path::new(SHARED)).is_err());
    }

    #[test]
    fn nothing_but_procfs_and_lxcfs_files_over_proc() {
        let mount = |dest: &str, typ: &str| {
            format!(
                r#",{{"destination":"{dest}","type":"{typ}","source":"/run/hull/shared/c1/x","options":["rbind"]}}"#
            )
        };
        let root = "/run/hull/shared/c1/rootfs";
        for ok in ["/proc/meminfo", "/proc/net/dev", "/procfoo"] {
            let s = spec_json(root, &mount(ok, "bind"));
            assert!(parse_spec(&s, Path::new(SHARED)).is_ok(), "{ok}");
        }
        for bad in ["/proc/sys", "/proc/self/fd", "/proc"] {
            let s = spec_json(root, &mount(bad, "bind"));
            let e = parse_spec(&s, Path::new(SHARED)).expect_err(bad);
            assert!(e.to_string().contains("/proc"), "{e}");
        }
    }

    #[test]
    fn size_and_json_are_checked() {
        let big = vec![b' '; MAX_SPEC_LEN + 1];
        assert!(parse_spec(&big, Path::new(SHARED)).is_err());
        assert!(parse_spec(b"{not json", Path::new(SHARED)).is_err());
    }

    #[test]
    fn process_needs_args() {
        assert!(parse_process(br#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#).is_err());
        assert!(parse_process(br#"{"args":["ls"],"cwd":"rel","user":{"uid":0,"gid":0}}"#).is_err());
        assert!(parse_process(br#"{"args":["ls"],"cwd":"/","user":{"uid":0,"gid":0}}"#).is_ok());
    }
}
