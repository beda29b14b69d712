//! Moving PID 1 off the initramfs. The kernel's initial rootfs cannot be pivot_root'ed away
//! from, so containers could not pivot_root; PID 1 therefore re-executes itself on a tmpfs root.

use std::ffi::{CStr, CString};
use std::os::unix::fs::PermissionsExt;

use nix::mount::{mount, MsFlags};

use crate::error::InitError;

/// Set in the environment of the re-executed agent.
const SWITCHED_ENV: &str = "HULL_AGENT_ON_TMPFS";
/// [`SWITCHED_ENV`] as the re-executed agent gets it.
const SWITCHED_ENV_SET: &CStr = c"HULL_AGENT_ON_TMPFS=1";
const NEW_ROOT: &str = "/hull-root";

/// If still on the initramfs: copy /init onto a tmpfs, make it the root and exec it again.
/// Returns only if already switched, or with the reason it could not switch.
pub fn leave_initramfs() -> Result<(), InitError> {
    if std::env::var_os(SWITCHED_ENV).is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(NEW_ROOT).map_err(InitError::io(format!("mkdir {NEW_ROOT}")))?;
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(InitError::sys(format!("mount tmpfs on {NEW_ROOT}")))?;
    let init = format!("{NEW_ROOT}/init");
    std::fs::copy("/init", &init).map_err(InitError::io("copy /init"))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(InitError::io(format!("chmod {init}")))?;
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(format!("{NEW_ROOT}/{d}"))
            .map_err(InitError::io(format!("mkdir {d}")))?;
    }
    // The initramfs copy is no longer needed; this frees its memory once we exec.
    let _ = std::fs::remove_file("/init");
    nix::unistd::chdir(NEW_ROOT).map_err(InitError::sys(format!("chdir {NEW_ROOT}")))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(InitError::sys("move root"))?;
    nix::unistd::chroot(".").map_err(InitError::sys("chroot"))?;
    nix::unistd::chdir("/").map_err(InitError::sys("chdir /"))?;
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.into_encoded_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(SWITCHED_ENV_SET.to_owned());
    match nix::unistd::execve(c"/init", &args, &env) {
        Ok(never) => match never {},
        Err(e) => Err(InitError::sys("exec /init on tmpfs")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_marker_names_the_variable() {
        assert_eq!(
            SWITCHED_ENV_SET.to_str().expect("ascii"),
            format!("{SWITCHED_ENV}=1")
        );
    }
}
