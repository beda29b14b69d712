//! The terminal of a container process, opened inside the container's own devpts instance
//! (so the slave's /dev/pts/N exists there) and handed to the agent over a socket, as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::dup2;

use super::wire::HelperError;

/// In the container process, with fd 0 = the console socket from the agent: open a pty in the
/// current mount namespace, send its master to the agent, and make the slave fds 0, 1 and 2.
pub fn open_in_container() -> Result<(), HelperError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| HelperError::internal(format!("terminal: {what}"), e)
    };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(err("open /dev/ptmx"))?;
    grantpt(&master).map_err(err("grantpt"))?;
    unlockpt(&master).map_err(err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(err("ptsname"))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(|e| HelperError::internal(format!("terminal: open {name}"), e))?;
    // SAFETY: PtyMaster owns a valid open fd; into_raw_fd hands that ownership to us once.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        0,
        &[IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(err("send master to agent"))?;
    drop(master);
    for fd in 0..=2 {
        dup2(slave.as_raw_fd(), fd).map_err(err("dup2 slave"))?;
    }
    Ok(())
}
