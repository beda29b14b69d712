//! The tap QEMU's virtio-net uses: made in the pod netns by TUNSETIFF on /dev/net/tun. It is
//! not persistent, so it vanishes with the last fd on it (QEMU's, after ours is closed).

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// The tap's name in the pod netns (one tap per netns; the netns is the pod's alone).
pub const TAP_NAME: &str = "tap0_hull";

/// The flags of the tap: Ethernet frames, no packet-info header, virtio-net header (QEMU
/// passes checksum/GSO offloads through it).
pub const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// The ifreq TUNSETIFF takes for `name` with `flags`.
pub fn ifreq(name: &str, flags: libc::c_int) -> std::io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    Ok(req)
}

/// Create tap `name` in the calling thread's netns; returns its queue fd (close-on-exec).
pub fn create(name: &str) -> std::io::Result<OwnedFd> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let req = ifreq(name, TAP_FLAGS)?;
    // SAFETY: TUNSETIFF reads (and updates) the valid, NUL-terminated ifreq we pass.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_holds_name_and_flags() {
        let r = ifreq(TAP_NAME, TAP_FLAGS).expect("ifreq");
        let name: Vec<u8> = r
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        assert_eq!(name, TAP_NAME.as_bytes());
        // SAFETY: ifru_flags is the field we set.
        let flags = unsafe { r.ifr_ifru.ifru_flags } as libc::c_int;
        assert_eq!(flags, 0x0002 | 0x1000 | 0x4000);
        assert!(ifreq("sixteen-chars-xx", TAP_FLAGS).is_err());
        assert!(ifreq("", TAP_FLAGS).is_err());
    }
}
