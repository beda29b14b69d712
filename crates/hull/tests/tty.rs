//! End-to-end: `hull run -t` gives the container a terminal of the host terminal's size.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Stdio;

use common::Env;

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

#[test]
fn tty_has_the_host_terminal_size() {
    let env = Env::new("tty", "");
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    unsafe { tiocswinsz(pty.slave.as_raw_fd(), &ws) }.expect("set size");
    let root = common::rootfs().to_string_lossy().into_owned();
    let mut cmd = env.hull(&[
        "run",
        "-t",
        "--rootfs",
        &root,
        "--",
        "sh",
        "-c",
        "stty size; tty; exit 5",
    ]);
    let slave = || Stdio::from(pty.slave.try_clone().expect("dup slave"));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    let mut child = cmd.spawn().expect("spawn");
    // The Command and we hold copies of the slave; only hull's may remain for EOF to come.
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until every holder of the slave is gone (EIO).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().expect("wait");
    env.assert_clean();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("33 101"),
        "terminal size not passed on: {text:?}"
    );
    assert!(
        text.contains("/dev/pts/"),
        "no tty in the container: {text:?}"
    );
    assert_eq!(status.code(), Some(5), "{text:?}");
}
