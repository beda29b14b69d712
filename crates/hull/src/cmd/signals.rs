//! Signals of `hull run`: blocked in every thread at start, then one thread waits for them
//! and forwards each to the container process (and SIGWINCH as a terminal resize).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hull_runtime::Process;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Signals `hull run` passes on to the container.
pub const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The blocked signal set.
#[derive(Debug)]
pub struct Signals {
    set: SigSet,
}

/// A running forwarder.
#[derive(Debug)]
pub struct Forwarder {
    done: Arc<AtomicBool>,
}

impl Forwarder {
    /// Stop forwarding (the thread ends at the next signal or with the process).
    pub fn stop(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl Signals {
    /// Block the forwarded signals and SIGWINCH in this thread and all later ones.
    pub fn block() -> anyhow::Result<Signals> {
        let mut set = SigSet::empty();
        for s in FORWARDED {
            set.add(s);
        }
        set.add(Signal::SIGWINCH);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        Ok(Signals { set })
    }

    /// Whether an interrupting signal is pending (arrived while the sandbox was booting).
    pub fn interrupted(&self) -> bool {
        // sigpending: signals blocked and delivered but not yet taken.
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given.
        let rc = unsafe { libc::sigpending(set.as_mut_ptr()) };
        if rc != 0 {
            return false;
        }
        // SAFETY: sigpending succeeded, so the set is initialised.
        let set = unsafe { set.assume_init() };
        FORWARDED.iter().any(|s| {
            // SAFETY: `set` is a valid sigset_t.
            unsafe { libc::sigismember(&set, *s as i32) == 1 }
        })
    }

    /// Forward signals to `process` until stopped.
    pub fn forward(&self, process: Arc<Process>, terminal: bool) -> Forwarder {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let set = self.set;
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let Ok(sig) = set.wait() else { return };
                if d.load(Ordering::SeqCst) {
                    return;
                }
                if sig == Signal::SIGWINCH {
                    if terminal {
                        if let Some((rows, cols)) = crate::cmd::tty::size() {
                            let _ = process.resize(rows, cols);
                        }
                    }
                    continue;
                }
                tracing::debug!(signal = %sig, "forwarding");
                if let Err(e) = process.signal(sig as i32, false) {
                    tracing::warn!(signal = %sig, error = %e, "could not forward signal");
                }
            });
        Forwarder { done }
    }
}
