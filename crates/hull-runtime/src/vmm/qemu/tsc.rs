//! The host TSC rate, for TCG guests: under TCG the guest's TSC is the host's, and a guest that
//! must calibrate it against the emulated PIT on a busy host fails and hangs (microvm has no HPET).

use std::time::Duration;

/// Kernel parameters that give a TCG guest its TSC rate, or "" if the host's TSC is not invariant.
pub fn tcg_kernel_params(khz: Option<u64>) -> String {
    match khz {
        Some(khz) => format!("tsc_early_khz={khz} tsc=reliable"),
        None => String::new(),
    }
}

/// Measure the host TSC rate in kHz, if the TSC is invariant (constant_tsc and nonstop_tsc).
pub fn host_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    measure(Duration::from_millis(25))
}

#[cfg(target_arch = "x86_64")]
fn measure(window: Duration) -> Option<u64> {
    let now = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_RAW)
            .ok()
            .map(|t| t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128)
    };
    // SAFETY: rdtsc has no preconditions on x86_64.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() } as u128;
    let (t0, c0) = (now()?, tsc());
    std::thread::sleep(window);
    let (t1, c1) = (now()?, tsc());
    let ns = t1.checked_sub(t0).filter(|ns| *ns > 0)?;
    let khz = (c1.checked_sub(c0)? * 1_000_000 / ns) as u64;
    // Plausible TSC rates only (100 MHz .. 10 GHz).
    (100_000..=10_000_000).contains(&khz).then_some(khz)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure(_window: Duration) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_rate_is_stable() {
        let (Some(a), Some(b)) = (host_khz(), host_khz()) else {
            return; // host without an invariant TSC: nothing to pass on
        };
        let diff = a.abs_diff(b) as f64 / a as f64;
        assert!(
            diff < 0.01,
            "two measurements differ by {:.3}%: {a} vs {b}",
            diff * 100.0
        );
        assert_eq!(
            tcg_kernel_params(Some(a)),
            format!("tsc_early_khz={a} tsc=reliable")
        );
    }
}
