//! Whether a signal sent now would be lost: the kernel drops a signal to a pid namespace's init
//! whose disposition is still the default. A container's PID 1 that is about to install its
//! handler (a shell's `trap`, a server's signal setup) is in that state for a moment after its
//! exec, a long one under TCG; a stop right after start must not fall into that window.

use std::time::Duration;

use nix::sys::signal::Signal;

/// How long after its start a process is given to install its handler.
pub const YOUNG: Duration = Duration::from_secs(5);
/// How long a signal is held back at most, waiting for that handler.
pub const HOLD: Duration = Duration::from_millis(1500);

/// What /proc/<pid>/status says about `sig` for a namespace init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Caught, ignored, or the process is not an init: sending now is right.
    Delivered,
    /// A namespace init with the default disposition: the kernel would drop it.
    Dropped,
}

/// The fate of `sig` sent to the process whose status file reads `status`.
pub fn fate(status: &str, sig: Signal) -> Fate {
    if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
        return Fate::Delivered;
    }
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // NSpid lists the pid in each namespace from the outermost; 1 last = init of its own.
    let is_init = field("NSpid:")
        .and_then(|v| v.split_whitespace().last())
        .is_some_and(|p| p == "1");
    if !is_init {
        return Fate::Delivered;
    }
    let bit = 1u64 << (sig as i32 - 1);
    let mask = |name: &str| {
        field(name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    if (mask("SigCgt:") | mask("SigIgn:")) & bit != 0 {
        Fate::Delivered
    } else {
        Fate::Dropped
    }
}

/// The fate of `sig` for process `pid` now (Delivered if it cannot be told).
pub fn fate_of(pid: i32, sig: Signal) -> Fate {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| fate(&s, sig))
        .unwrap_or(Fate::Delivered)
}

/// Seconds since process `pid` started, from /proc (None if it cannot be told).
pub fn age(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start_ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let started = start_ticks as f64 / hz as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT_DEFAULT: &str =
        "Name:\tsh\nNSpid:\t57\t1\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";
    const INIT_TRAPS_TERM: &str =
        "Name:\tsh\nNSpid:\t57\t1\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000004000\n";
    const NOT_INIT: &str =
        "Name:\tsh\nNSpid:\t57\t3\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";

    #[test]
    fn default_disposition_of_an_init_is_dropped() {
        assert_eq!(fate(INIT_DEFAULT, Signal::SIGTERM), Fate::Dropped);
        assert_eq!(fate(INIT_TRAPS_TERM, Signal::SIGTERM), Fate::Delivered);
        assert_eq!(fate(INIT_TRAPS_TERM, Signal::SIGINT), Fate::Dropped);
        assert_eq!(fate(NOT_INIT, Signal::SIGTERM), Fate::Delivered);
        assert_eq!(fate(INIT_DEFAULT, Signal::SIGKILL), Fate::Delivered);
    }

    #[test]
    fn own_age_is_known() {
        let a = age(std::process::id() as i32).expect("age");
        assert!(a < Duration::from_secs(3600), "{a:?}");
    }
}
