//! Applying an OCI `process` in the helper's child just before exec: session and tty, rlimits,
//! user and groups, cwd, environment, no_new_privs, and resolving args[0] through $PATH.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, setgid, setgroups, setsid, setuid, Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use super::seccomp::{self, Filters};
use super::wire::HelperError;

/// The default $PATH when the process env has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What execve needs, fully resolved.
#[derive(Debug)]
pub struct Prepared {
    /// the resolved executable
    pub path: CString,
    /// argv
    pub args: Vec<CString>,
    /// envp
    pub env: Vec<CString>,
    /// seccomp filters still to load, right before execve (with no_new_privs)
    pub late_seccomp: Option<Filters>,
}

fn cstring(s: &str) -> Result<CString, HelperError> {
    CString::new(s).map_err(|_| HelperError::invalid(format!("{s:?} contains NUL")))
}

/// New session; with a terminal, make fd 0 (the pty slave) the controlling tty.
pub fn session(terminal: bool) -> Result<(), HelperError> {
    // Fails only if we already lead a group, which a freshly forked child does not.
    let _ = setsid();
    if terminal {
        // SAFETY: TIOCSCTTY takes an int argument; fd 0 is the pty slave set up by the agent.
        let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        if rc < 0 {
            return Err(HelperError::internal(
                "TIOCSCTTY",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn resource(t: PosixRlimitType) -> Option<Resource> {
    use PosixRlimitType as T;
    Some(match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Apply everything of `p` that must happen before exec and resolve the executable. Without
/// no_new_privs the `seccomp` filters are loaded here, while the capability to do so is still
/// held; with it they are left in [`Prepared`] for the last moment, as runc does.
pub fn prepare(p: &Process, seccomp: Option<&Filters>) -> Result<Prepared, HelperError> {
    let nnp = p.no_new_privileges().unwrap_or(false);
    for rl in p.rlimits().iter().flatten() {
        let res = resource(rl.typ())
            .ok_or_else(|| HelperError::invalid(format!("unsupported rlimit {:?}", rl.typ())))?;
        setrlimit(res, rl.soft(), rl.hard())
            .map_err(|e| HelperError::invalid(format!("cannot set rlimit {:?}: {e}", rl.typ())))?;
    }
    if let Some(mask) = p.user().umask() {
        umask(Mode::from_bits_truncate(mask));
    }
    let user = p.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Some(f) = seccomp.filter(|_| !nnp) {
        seccomp::load(f).map_err(|e| HelperError::internal("load seccomp filter", e))?;
    }
    super::caps::before_user_switch(p)?;
    setgroups(&groups).map_err(|e| HelperError::internal("setgroups", e))?;
    setgid(Gid::from_raw(user.gid()))
        .map_err(|e| HelperError::invalid(format!("setgid {}: {e}", user.gid())))?;
    setuid(Uid::from_raw(user.uid()))
        .map_err(|e| HelperError::invalid(format!("setuid {}: {e}", user.uid())))?;
    super::caps::after_user_switch(p)?;
    chdir(p.cwd()).map_err(|e| match e {
        Errno::ENOENT | Errno::ENOTDIR => HelperError::not_found(format!(
            "cwd {} does not exist in the container",
            p.cwd().display()
        )),
        e => HelperError::invalid(format!("cannot chdir to cwd {}: {e}", p.cwd().display())),
    })?;
    let env: Vec<String> = p.env().clone().unwrap_or_default();
    let args: Vec<String> = p.args().clone().unwrap_or_default();
    let name = args
        .first()
        .ok_or_else(|| HelperError::invalid("process.args is empty"))?;
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let exe = resolve(name, path_var)?;
    if nnp {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| HelperError::internal("no_new_privs", e))?;
    }
    Ok(Prepared {
        path: CString::new(exe.as_os_str().as_bytes())
            .map_err(|_| HelperError::invalid("NUL in path"))?,
        args: args.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        late_seccomp: seccomp.filter(|_| nnp).cloned(),
    })
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolve `name` like execvp: names with a '/' are used as they are, others searched in `path_var`.
pub fn resolve(name: &str, path_var: &str) -> Result<PathBuf, HelperError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(HelperError::not_found(format!(
                "executable file not found: {name}"
            )))
        };
    }
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| {
            HelperError::not_found(format!("executable file not found in $PATH: {name}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_through_path() {
        let sh = resolve("sh", "/nonexistent:/bin:/usr/bin").expect("sh in /bin");
        assert!(sh.ends_with("sh"));
        let e = resolve("no-such-cmd-hull", "/bin").expect_err("missing");
        assert_eq!(
            e.message,
            "executable file not found in $PATH: no-such-cmd-hull"
        );
        assert!(resolve("/nonexistent/x", "/bin").is_err());
    }
}
