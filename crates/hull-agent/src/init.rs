//! Early init of the guest as PID 1: pseudo filesystems, console, cgroup2, loopback, kernel
//! command line and the shared directory; plus powering the guest off.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use hull_protocol::{GUEST_SHARED_DIR, SHARED_FS_TAG};
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::cmdline::{self, BootOptions, SharedFs};
use crate::error::InitError;

const NONE: Option<&str> = None;

fn mount_fs(
    errors: &mut Vec<String>,
    fstype: &str,
    target: &str,
    flags: MsFlags,
    data: Option<&str>,
) {
    if let Err(e) = fs::create_dir_all(target) {
        errors.push(format!("mkdir {target}: {e}"));
    }
    match mount(Some(fstype), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => errors.push(format!("mount {fstype} on {target}: {e}")),
    }
}

fn reopen_console() {
    if let Ok(console) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(console.as_raw_fd(), fd);
        }
    }
}

/// Bring the loopback interface up.
pub fn loopback_up() -> Result<(), InitError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(InitError::sys("socket"))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the valid, NUL-terminated ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(InitError::io("SIOCGIFFLAGS lo")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel just filled ifru_flags, so reading and updating that union field is valid.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the valid ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(InitError::io("SIOCSIFFLAGS lo")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Everything PID 1 does before serving; never fails, returns the boot options and the
/// problems met (to be logged once logging is up).
pub fn early_init() -> (BootOptions, Vec<String>) {
    let mut errors = Vec::new();
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_fs(
        &mut errors,
        "devtmpfs",
        "/dev",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    reopen_console();
    mount_fs(&mut errors, "proc", "/proc", nodev, None);
    mount_fs(&mut errors, "sysfs", "/sys", nodev, None);
    mount_fs(
        &mut errors,
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    );
    mount_fs(&mut errors, "tmpfs", "/dev/shm", nodev, Some("mode=1777"));
    mount_fs(
        &mut errors,
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    mount_fs(
        &mut errors,
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mount_fs(&mut errors, "cgroup2", "/sys/fs/cgroup", nodev, None);
    crate::container::enable_controllers(Path::new("/sys/fs/cgroup"));
    if let Err(e) = loopback_up() {
        errors.push(e.to_string());
    }
    let line = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (opts, warnings) = cmdline::parse(&line);
    errors.extend(warnings);
    if !opts.probe {
        mount_shared(&mut errors, opts.shared_fs);
    }
    (opts, errors)
}

fn mount_shared(errors: &mut Vec<String>, kind: SharedFs) {
    let (fstype, data) = match kind {
        SharedFs::None => return,
        SharedFs::VirtioFs => ("virtiofs", None),
        SharedFs::NineP => ("9p", Some("trans=virtio,version=9p2000.L,msize=262144")),
    };
    if let Err(e) = fs::create_dir_all(GUEST_SHARED_DIR) {
        errors.push(format!("mkdir {GUEST_SHARED_DIR}: {e}"));
    }
    if let Err(e) = mount(
        Some(SHARED_FS_TAG),
        GUEST_SHARED_DIR,
        Some(fstype),
        // Not nosuid: the guest is the isolation boundary, and setuid binaries of an image
        // must work as with runc (no_new_privs still stops them where the spec asks).
        MsFlags::MS_NODEV,
        data,
    ) {
        errors.push(format!(
            "mount {fstype} {SHARED_FS_TAG} on {GUEST_SHARED_DIR}: {e}"
        ));
    }
    let _ = NONE;
}

/// Sync and power the guest off (the host runs QEMU with -no-reboot, so a reboot ends the VM).
pub fn power_off() -> ! {
    nix::unistd::sync();
    loop {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
