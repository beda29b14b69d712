//! Moving PID 1 off the initramfs. The kernel's initial rootfs cannot be pivot_root'ed away
//! from, so containers could not pivot_root; PID 1 therefore re-executes itself on a tmpfs root.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;

use nix::mount::{mount, MsFlags};

/// Set in the environment of the re-executed agent.
const SWITCHED_ENV: &str = "HULL_AGENT_ON_TMPFS";
const NEW_ROOT: &str = "/hull-root";

/// If still on the initramfs: copy /init onto a tmpfs, make it the root and exec it again.
/// Returns only if already switched, or with the reason it could not switch.
pub fn leave_initramfs() -> Result<(), String> {
    if std::env::var_os(SWITCHED_ENV).is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(NEW_ROOT).map_err(|e| format!("mkdir {NEW_ROOT}: {e}"))?;
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| format!("mount tmpfs on {NEW_ROOT}: {e}"))?;
    let init = format!("{NEW_ROOT}/init");
    std::fs::copy("/init", &init).map_err(|e| format!("copy /init: {e}"))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {init}: {e}"))?;
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(format!("{NEW_ROOT}/{d}"))
            .map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    // The initramfs copy is no longer needed; this frees its memory once we exec.
    let _ = std::fs::remove_file("/init");
    nix::unistd::chdir(NEW_ROOT).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move root: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
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
    env.push(CString::new(format!("{SWITCHED_ENV}=1")).map_err(|e| e.to_string())?);
    let path = CString::new("/init").map_err(|e| e.to_string())?;
    let err = nix::unistd::execve(&path, &args, &env).err();
    Err(format!("exec /init on tmpfs: {err:?}"))
}
