//! The host terminal of `hull run -t`: raw mode for the session (restored on drop) and its size.

use std::os::fd::AsFd;

use nix::sys::termios::{self, SetArg, Termios};

/// Raw mode on stdin, undone on drop.
#[derive(Debug)]
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Put stdin in raw mode if it is a terminal.
    pub fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// (rows, cols) of the terminal on stdout or stdin.
pub fn size() -> Option<(u16, u16)> {
    for fd in [1, 0] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
        if unsafe { tiocgwinsz(fd, &mut ws) }.is_ok() && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}
