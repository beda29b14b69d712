//! The container helper: the agent binary re-executed as `__hull-container-helper` in a fresh
//! single-threaded process; joins the cgroup and namespaces, forks the container process, waits.
//!
//! argv: `<exe> __hull-container-helper <config-fd> <status-fd> <start-fd>`, fds 0-2 = the
//! process's stdio (with a terminal: the console socket, see console.rs). The outer helper reports the child's pid, closes its stdio copies, forwards
//! catchable signals to the child and exits with the child's status (code, or 128 + signal).

use std::convert::Infallible;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2, execve, fork, sethostname, ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Spec};

use super::cgroup;
use super::seccomp::{self, Filters};
use super::wire::{HelperConfig, HelperError, HelperMode, Status};
use super::{console, rootfs, setup, signals, sysctl};

/// Exit code of a helper that could not even read its arguments.
const BAD_USAGE: i32 = 125;

/// Entry point of the helper mode; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let fd = |i: usize| {
        args.get(i)
            .and_then(|s| s.parse::<RawFd>().ok())
            .filter(|fd| *fd > 2)
    };
    let (Some(config_fd), Some(status_fd), Some(start_fd)) = (fd(2), fd(3), fd(4)) else {
        eprintln!(
            "usage: hull-agent {} <config-fd> <status-fd> <start-fd>",
            super::wire::HELPER_ARG
        );
        return BAD_USAGE;
    };
    for fd in [config_fd, status_fd, start_fd] {
        if fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
            eprintln!("hull-agent helper: fd {fd} is not open");
            return BAD_USAGE;
        }
    }
    // SAFETY: the three fds were checked open above; the agent passed them to us and nothing
    // else in this process refers to them, so we take ownership exactly once.
    let (config_fd, status, start) = unsafe {
        (
            OwnedFd::from_raw_fd(config_fd),
            File::from(OwnedFd::from_raw_fd(status_fd)),
            OwnedFd::from_raw_fd(start_fd),
        )
    };
    let config = match read_config(config_fd) {
        Ok(c) => c,
        Err(e) => {
            Status::Error(e).send(&status);
            return 1;
        }
    };
    let result = match config.mode {
        HelperMode::Create { ref spec } => {
            run_create(&config, spec, status.try_clone().ok(), start)
        }
        HelperMode::Exec {
            ref process,
            ref seccomp,
            init_pid,
        } => {
            drop(start);
            let seccomp = seccomp.as_deref();
            run_exec(&config, process, seccomp, init_pid, status.try_clone().ok())
        }
    };
    match result {
        // Every copy of the status pipe's write end must be closed before we wait on the child:
        // the agent reads EOF on it as "exec succeeded".
        Ok((child, dev_null)) => {
            drop(status);
            supervise(child, &dev_null)
        }
        Err(e) => {
            Status::Error(e).send(&status);
            1
        }
    }
}

fn read_config(fd: OwnedFd) -> Result<HelperConfig, HelperError> {
    let mut buf = Vec::new();
    let limit = (hull_protocol::MAX_SPEC_LEN * 4) as u64;
    File::from(fd)
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| HelperError::internal("read config", e))?;
    serde_json::from_slice(&buf)
        .map_err(|e| HelperError::invalid(format!("bad helper config: {e}")))
}

fn open_dev_null() -> Result<OwnedFd, HelperError> {
    open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map(|fd| {
            // SAFETY: `open` just returned this fd and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .map_err(|e| HelperError::internal("open /dev/null", e))
}

fn join_cgroup(dir: &Path) -> Result<(), HelperError> {
    cgroup::join(dir, std::process::id() as i32)
        .map_err(|e| HelperError::internal(format!("join cgroup {}", dir.display()), e))
}

fn run_create(
    config: &HelperConfig,
    spec: &Spec,
    status: Option<File>,
    start: OwnedFd,
) -> Result<(Pid, OwnedFd), HelperError> {
    let status = status.ok_or_else(|| HelperError::internal("status pipe", "cannot duplicate"))?;
    let dev_null = open_dev_null()?;
    join_cgroup(&config.cgroup_dir)?;
    let mut flags = CloneFlags::CLONE_NEWNS;
    let mut new_uts = false;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        let flag = match ns.typ() {
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            // mount: always new; network: the pod's (the guest's); user, cgroup, time: not supported
            _ => continue,
        };
        match ns.path() {
            Some(path) => {
                let fd = open(
                    path.as_path(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| {
                    HelperError::not_found(format!("namespace {}: {e}", path.display()))
                })?;
                // SAFETY: `open` just returned this fd and nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                setns(&fd, flag)
                    .map_err(|e| HelperError::internal(format!("setns {}", path.display()), e))?;
            }
            None => {
                flags |= flag;
                new_uts |= flag == CloneFlags::CLONE_NEWUTS;
            }
        }
    }
    unshare(flags).map_err(|e| HelperError::internal("unshare", e))?;
    // SAFETY: the helper is single-threaded (no tokio runtime, no threads), so the child may
    // run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| HelperError::internal("fork", e))? {
        ForkResult::Child => {
            let Err(e) = container_init(config, spec, new_uts, &status, &start);
            Status::Error(e).send(&status);
            std::process::exit(1);
        }
        ForkResult::Parent { child } => {
            Status::Pid(child.as_raw()).send(&status);
            drop(status);
            drop(start);
            Ok((child, dev_null))
        }
    }
}

fn container_init(
    config: &HelperConfig,
    spec: &Spec,
    new_uts: bool,
    status: &File,
    start: &OwnedFd,
) -> Result<Infallible, HelperError> {
    set_pdeathsig(Signal::SIGKILL).map_err(|e| HelperError::internal("pdeathsig", e))?;
    // Through the guest's /proc, before the root is switched: the values land in the
    // namespaces of this process, the container's.
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        sysctl::apply(sysctls).map_err(|e| HelperError::invalid(e.to_string()))?;
    }
    rootfs::prepare(spec)?;
    if config.terminal {
        console::open_in_container()?;
    }
    setup::session(config.terminal)?;
    if let Some(name) = spec.hostname().as_deref().filter(|_| new_uts) {
        sethostname(name)
            .map_err(|e| HelperError::invalid(format!("sethostname {name:?}: {e}")))?;
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| HelperError::invalid("no process"))?;
    let filters = compile_seccomp(spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()))?;
    let prepared = setup::prepare(process, filters.as_ref())?;
    Status::Ready.send(status);
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(start.as_raw_fd(), &mut byte) {
            Ok(1) => break,
            Err(Errno::EINTR) => continue,
            // The agent dropped the container without starting it.
            _ => std::process::exit(0),
        }
    }
    Err(exec(&prepared))
}

fn compile_seccomp(profile: Option<&LinuxSeccomp>) -> Result<Option<Filters>, HelperError> {
    profile
        .map(seccomp::compile)
        .transpose()
        .map_err(|e| HelperError::invalid(e.to_string()))
}

/// Reset the signal state, load late seccomp filters, and exec; returns only on failure.
fn exec(p: &setup::Prepared) -> HelperError {
    signals::reset();
    if let Some(f) = &p.late_seccomp {
        if let Err(e) = seccomp::load(f) {
            return HelperError::internal("load seccomp filter", e);
        }
    }
    match execve(&p.path, &p.args, &p.env) {
        Ok(never) => match never {},
        Err(e) => exec_error(&p.path, e),
    }
}

fn exec_error(path: &std::ffi::CStr, e: Errno) -> HelperError {
    let path = path.to_string_lossy();
    match e {
        Errno::ENOENT => HelperError::not_found(format!(
            "exec {path}: no such file (missing interpreter or loader?)"
        )),
        Errno::EACCES => HelperError::invalid(format!("exec {path}: permission denied")),
        e => HelperError::internal(format!("exec {path}"), e),
    }
}

fn run_exec(
    config: &HelperConfig,
    process: &oci_spec::runtime::Process,
    seccomp: Option<&LinuxSeccomp>,
    init_pid: i32,
    status: Option<File>,
) -> Result<(Pid, OwnedFd), HelperError> {
    let status = status.ok_or_else(|| HelperError::internal("status pipe", "cannot duplicate"))?;
    let dev_null = open_dev_null()?;
    join_cgroup(&config.cgroup_dir)?;
    let mut fds = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{init_pid}/ns/{name}");
        let fd = open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| HelperError::not_found(format!("container is not running ({path}: {e})")))?;
        // SAFETY: `open` just returned this fd and nothing else owns it.
        fds.push((unsafe { OwnedFd::from_raw_fd(fd) }, flag, name));
    }
    for (fd, flag, name) in &fds {
        setns(fd, *flag).map_err(|e| HelperError::internal(format!("setns {name}"), e))?;
    }
    drop(fds);
    // SAFETY: the helper is single-threaded, so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| HelperError::internal("fork", e))? {
        ForkResult::Child => {
            let result = (|| {
                set_pdeathsig(Signal::SIGKILL)
                    .map_err(|e| HelperError::internal("pdeathsig", e))?;
                if config.terminal {
                    console::open_in_container()?;
                }
                setup::session(config.terminal)?;
                let filters = compile_seccomp(seccomp)?;
                let prepared = setup::prepare(process, filters.as_ref())?;
                Err::<Infallible, _>(exec(&prepared))
            })();
            let Err(e) = result;
            Status::Error(e).send(&status);
            std::process::exit(1);
        }
        ForkResult::Parent { child } => {
            Status::Pid(child.as_raw()).send(&status);
            drop(status);
            Ok((child, dev_null))
        }
    }
}

/// The outer helper after fork: drop our stdio copies (so EOF reaches the agent when the
/// container's processes are gone), forward signals, and return the child's encoded status.
fn supervise(child: Pid, dev_null: &OwnedFd) -> i32 {
    for fd in 0..=2 {
        let _ = dup2(dev_null.as_raw_fd(), fd);
    }
    let all = SigSet::all();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None) {
        eprintln!("hull-agent helper: sigprocmask: {e}");
    }
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => {
                if let Some(code) = crate::exit::encode(status) {
                    return code;
                }
            }
            Err(_) => return 1,
        }
        match all.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
        }
    }
}
