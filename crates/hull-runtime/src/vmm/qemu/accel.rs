//! Choosing KVM or TCG by trying: KVM is used only when a probe boot of the real guest kernel
//! under KVM reaches the agent; the verdict is cached per boot of the host in the run directory.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::AccelChoice;
use crate::daemon::Daemon;

/// A hardware accelerator, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

/// The accelerator chosen and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    /// The choice.
    pub accel: Accel,
    /// Why, in a few words (printed by `hull check`, logged at boot).
    pub reason: String,
    /// With TCG: the host TSC rate in kHz, passed to the guest (see `tsc`).
    #[serde(default)]
    pub tsc_khz: Option<u64>,
}

/// How long the KVM probe VM may take to print its marker (a real KVM guest takes well under 1 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
const KVM_GET_API_VERSION: u64 = 0xAE00;

/// Decide which accelerator to use.
pub fn decide(
    choice: AccelChoice,
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    run_dir: &Path,
) -> AccelDecision {
    match choice {
        AccelChoice::Tcg => {
            return decision(Accel::Tcg, "forced by config (hypervisor.accel = tcg)")
        }
        AccelChoice::Kvm => {
            return decision(Accel::Kvm, "forced by config (hypervisor.accel = kvm)")
        }
        AccelChoice::Auto => {}
    }
    if let Err(why) = kvm_api_usable() {
        return decision(Accel::Tcg, &format!("KVM unusable: {why}"));
    }
    let key = probe_key(qemu, kernel, initrd);
    let cache = run_dir.join("accel-probe.json");
    if let Some(d) = read_cache(&cache, &key) {
        return d;
    }
    let d = match probe(qemu, kernel, initrd, run_dir) {
        Ok(()) => decision(Accel::Kvm, "KVM probe boot reached the agent"),
        Err(why) => decision(Accel::Tcg, &format!("KVM cannot run the guest ({why})")),
    };
    write_cache(&cache, &key, &d);
    d
}

fn decision(accel: Accel, reason: &str) -> AccelDecision {
    AccelDecision {
        accel,
        reason: reason.to_string(),
        tsc_khz: match accel {
            Accel::Tcg => super::tsc::host_khz(),
            Accel::Kvm => None,
        },
    }
}

/// Why KVM cannot be used.
#[derive(Debug, thiserror::Error)]
enum KvmUnusable {
    #[error("/dev/kvm: {0}")]
    Open(std::io::Error),
    #[error("KVM_GET_API_VERSION returned {0}")]
    Api(i32),
    #[error("create {path}: {source}")]
    ProbeDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(crate::Error),
    #[error("qemu exited: {0}")]
    QemuExited(String),
    #[error("no agent after {0}s")]
    NoAgent(u64),
}

/// /dev/kvm opens and speaks the stable API.
fn kvm_api_usable() -> Result<(), KvmUnusable> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(KvmUnusable::Open)?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if v != 12 {
        return Err(KvmUnusable::Api(v));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    decision: AccelDecision,
}

fn probe_key(qemu: &Path, kernel: &Path, initrd: &Path) -> String {
    let id = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| format!("{}:{}:{:?}", p.display(), m.len(), m.modified().ok()))
            .unwrap_or_else(|_| format!("{}:missing", p.display()))
    };
    format!("v2|{}|{}|{}", id(qemu), id(kernel), id(initrd))
}

fn read_cache(path: &Path, key: &str) -> Option<AccelDecision> {
    let text = std::fs::read_to_string(path).ok()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    (entry.key == key).then_some(entry.decision)
}

fn write_cache(path: &Path, key: &str, d: &AccelDecision) {
    let entry = CacheEntry {
        key: key.to_string(),
        decision: d.clone(),
    };
    if let Ok(text) = serde_json::to_string(&entry) {
        let tmp = path.with_extension("tmp");
        if std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/"))).is_ok()
            && std::fs::write(&tmp, text).is_ok()
        {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Boot the guest under KVM with `hull.probe=1`; Ok when the agent printed its marker.
fn probe(qemu: &Path, kernel: &Path, initrd: &Path, run_dir: &Path) -> Result<(), KvmUnusable> {
    let dir = ProbeDir::new(run_dir)?;
    let console = dir.0.join("console.log");
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-machine",
        "microvm,accel=kvm",
        "-cpu",
        "host",
        "-m",
        "128M",
    ]);
    cmd.args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    cmd.args([
        "-append",
        "console=ttyS0 reboot=t panic=-1 quiet hull.sharedfs=none hull.probe=1",
    ]);
    cmd.arg("-serial")
        .arg(format!("file:{}", console.display()));
    let vm = Daemon::spawn("qemu (kvm probe)", cmd, Some(&dir.0.join("qemu.log")))
        .map_err(KvmUnusable::Start)?;
    let marker = hull_protocol::PROBE_OK_MARKER;
    let seen = || {
        std::fs::read_to_string(&console)
            .map(|t| t.contains(marker))
            .unwrap_or(false)
    };
    let ok = crate::daemon::poll_until(PROBE_TIMEOUT, || seen() || vm.exited().is_some());
    let result = if seen() {
        Ok(())
    } else if ok {
        let log = std::fs::read_to_string(dir.0.join("qemu.log")).unwrap_or_default();
        Err(KvmUnusable::QemuExited(crate::tail_line(&log)))
    } else {
        Err(KvmUnusable::NoAgent(PROBE_TIMEOUT.as_secs()))
    };
    vm.stop(Duration::from_millis(200));
    result
}

/// A scratch directory removed on drop.
struct ProbeDir(PathBuf);

impl ProbeDir {
    fn new(run_dir: &Path) -> Result<ProbeDir, KvmUnusable> {
        let p = run_dir.join(format!(".accel-probe-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|source| KvmUnusable::ProbeDir {
            path: p.clone(),
            source,
        })?;
        Ok(ProbeDir(p))
    }
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_choices_skip_the_probe() {
        let p = Path::new("/nonexistent");
        assert_eq!(decide(AccelChoice::Tcg, p, p, p, p).accel, Accel::Tcg);
        assert_eq!(decide(AccelChoice::Kvm, p, p, p, p).accel, Accel::Kvm);
    }

    #[test]
    fn cache_is_keyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.json");
        let d = decision(Accel::Tcg, "x");
        write_cache(&f, "k1", &d);
        assert_eq!(read_cache(&f, "k1"), Some(d));
        assert_eq!(read_cache(&f, "k2"), None);
    }
}
