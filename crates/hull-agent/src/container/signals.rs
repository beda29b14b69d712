//! The signal state a container process starts with, as runc leaves it: an empty signal mask
//! and every disposition at SIG_DFL (the helper, a Rust binary, ignores SIGPIPE, and execve
//! keeps ignored signals ignored).

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};

/// Highest signal number on Linux (SIGRTMAX).
const NSIG: libc::c_long = 64;

/// The kernel's `struct sigaction` for rt_sigaction on x86_64 (handler, flags, restorer, mask).
#[repr(C)]
struct KernelSigaction {
    handler: libc::c_ulong,
    flags: libc::c_ulong,
    restorer: libc::c_ulong,
    mask: u64,
}

/// Reset every disposition to SIG_DFL and unblock all signals. Call right before execve.
pub fn reset() {
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL as libc::c_ulong,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL as libc::c_long || sig == libc::SIGSTOP as libc::c_long {
            continue;
        }
        // SAFETY: the raw system call (the C library refuses the real-time signals it keeps
        // for itself, which may still be ignored) reads a valid struct of the kernel's layout
        // and size 8 for the mask; SIG_DFL needs no handler memory.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    // Cannot fail: the set is valid and SIG_SETMASK is a valid `how`.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
