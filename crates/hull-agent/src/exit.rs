//! Encoding of a process's end as the single exit status the host sees:
//! the exit code, or 128 + signal number when the process was killed by a signal.

use nix::sys::wait::WaitStatus;

/// The exit status of a terminated process, or None if `status` is not a termination.
pub fn encode(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::encode;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn exit_and_signal_statuses() {
        let p = Pid::from_raw(42);
        assert_eq!(encode(WaitStatus::Exited(p, 7)), Some(7));
        assert_eq!(encode(WaitStatus::Exited(p, 0)), Some(0));
        assert_eq!(
            encode(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            encode(WaitStatus::Signaled(p, Signal::SIGTERM, true)),
            Some(143)
        );
        assert_eq!(encode(WaitStatus::StillAlive), None);
    }
}
