//! Integration: a real VM whose /init floods the serial console and never starts an agent.
//! Creating its sandbox must fail in time, name the console tail, and cost bounded memory and disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpio::newc::{Builder, ModeFileType};
use hull_runtime::{Config, Sandbox, SandboxOptions};

const RUN_ROOT: &str = "/run/hull-tests";
const KERNEL: &str = "/var/lib/hull/assets/vmlinux";
const BUSYBOX: &str = "/bin/busybox";
const BOUND_KIB: u64 = 256;
const BOOT_TIMEOUT_SECS: u64 = 10;
/// What the flooding guest prints, numbered so the tail tells how much it wrote.
const FLOOD: &str = "flood-flood-flood-flood-flood-flood-flood-flood";

/// /init: busybox sh writing numbered lines to the console forever.
fn init_script() -> String {
    format!("#!/bin/sh\ni=0\nwhile :; do echo \"{FLOOD} $i\"; i=$((i+1)); done\n")
}

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it must run as root (QEMU, run dir, mounts)".into());
    }
    for (what, path) in [("guest kernel", KERNEL), ("busybox-static", BUSYBOX)] {
        if !Path::new(path).exists() {
            return Some(format!("{what} {path} is missing"));
        }
    }
    None
}

/// An uncompressed newc initrd: /dev/console, /bin/busybox, /bin/sh -> busybox, /init.
fn write_initrd(out: &Path) {
    let busybox = std::fs::read(BUSYBOX).expect("read busybox");
    let script = init_script();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).expect("create initrd"));
    let mut ino = 0u32;
    let mut entry = |w: std::io::BufWriter<std::fs::File>, b: Builder, data: &[u8]| {
        ino += 1;
        let size = u32::try_from(data.len()).expect("entry size");
        let mut e = b.ino(ino).write(w, size);
        e.write_all(data).expect("write entry");
        e.finish().expect("finish entry")
    };
    let dir = |name: &str| {
        Builder::new(name)
            .mode(0o755)
            .set_mode_file_type(ModeFileType::Directory)
            .nlink(2)
    };
    for d in ["dev", "bin", "proc", "sys", "tmp"] {
        w = entry(w, dir(d), &[]);
    }
    let console = Builder::new("dev/console")
        .mode(0o600)
        .set_mode_file_type(ModeFileType::Char)
        .rdev_major(5)
        .rdev_minor(1);
    w = entry(w, console, &[]);
    let exe = |name: &str| {
        Builder::new(name)
            .mode(0o755)
            .set_mode_file_type(ModeFileType::Regular)
    };
    w = entry(w, exe("bin/busybox"), &busybox);
    let sh = Builder::new("bin/sh")
        .mode(0o777)
        .set_mode_file_type(ModeFileType::Symlink);
    w = entry(w, sh, b"busybox");
    w = entry(w, exe("init"), script.as_bytes());
    let mut w = cpio::newc::trailer(w).expect("trailer");
    w.flush().expect("flush initrd");
}

/// A field of /proc/self/status in KiB (e.g. "VmHWM").
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Bytes in the regular files directly under `dir` (0 when it does not exist).
fn files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Pids and names of this process's children (QEMU and the helpers are started as such).
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold anything, so split after its last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(me.as_str()) {
            found.push(format!("{head})"));
        }
    }
    found
}

/// The highest flood line number in `text`.
fn last_flood_number(text: &str) -> Option<u64> {
    text.split(FLOOD)
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .max()
}

#[test]
fn a_flooding_guest_fails_its_boot_with_bounded_memory_and_disk() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var("HULL_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
            eprintln!("skipped: {why}");
            return;
        }
        panic!("cannot run the console flood test: {why} (HULL_TEST_ALLOW_SKIP=1 skips it)");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let initrd = tmp.path().join("flood.img");
    write_initrd(&initrd);
    // TCG is forced: "auto" would spend a KVM probe boot on this agent-less initrd.
    let text = format!(
        "[assets]\ninitrd = \"{}\"\n\
         [hypervisor]\nboot_timeout_secs = {BOOT_TIMEOUT_SECS}\naccel = \"tcg\"\n\
         [runtime]\nrun_dir = \"{RUN_ROOT}\"\nconsole_bound_kib = {BOUND_KIB}\n",
        initrd.display()
    );
    let config_path = tmp.path().join("config.toml");
    std::fs::write(&config_path, &text).expect("write config");
    let (config, _) = Config::load(Some(&config_path)).expect("config");
    let id = format!("console-flood-{}", std::process::id());
    let run_dir = PathBuf::from(RUN_ROOT).join(&id);

    // Watch the run dir's files while the guest floods.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, run_dir) = (done.clone(), run_dir.clone());
        std::thread::spawn(move || {
            let mut max = 0;
            while !done.load(Ordering::SeqCst) {
                max = max.max(files_size(&run_dir));
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        })
    };
    let hwm_before = status_kib("VmHWM");
    let t0 = Instant::now();
    let result = Sandbox::create(&config, &id, &SandboxOptions::default());
    let took = t0.elapsed();
    let hwm_after = status_kib("VmHWM");
    done.store(true, Ordering::SeqCst);
    let max_disk = watcher.join().expect("watcher");

    let err = match result {
        Ok(sandbox) => {
            drop(sandbox);
            panic!("a guest without an agent booted");
        }
        Err(e) => e.to_string(),
    };
    let bound = BOUND_KIB * 1024;
    let grew_kib = hwm_after.saturating_sub(hwm_before);
    let flood_lines = last_flood_number(&err).unwrap_or(0);
    let flood_bytes = flood_lines * (FLOOD.len() as u64 + 8);
    eprintln!(
        "failed after {took:?}: {err}\nVmHWM {hwm_before} -> {hwm_after} KiB (+{grew_kib} KiB); \
         max run dir files {max_disk} bytes; guest wrote ~{flood_lines} lines (~{} KiB)",
        flood_bytes / 1024
    );

    assert!(
        took < Duration::from_secs(BOOT_TIMEOUT_SECS + 20),
        "failing took {took:?}"
    );
    assert!(err.contains("flood"), "error lacks the console tail: {err}");
    assert!(
        err.len() < 16 * 1024,
        "error message of {} bytes",
        err.len()
    );
    assert!(
        flood_bytes > 2 * bound,
        "the guest wrote only ~{flood_bytes} bytes, too little to test the bound"
    );
    // The ring and one read buffer, plus room for the threads and buffers of a boot (seen:
    // 0.5-1.8 MiB); reading the whole flood (~3 MiB here), as before the bound, adds all of it.
    assert!(
        grew_kib < BOUND_KIB + 2048,
        "peak memory grew by {grew_kib} KiB for a {BOUND_KIB} KiB console bound"
    );
    // The console files hold at most the bound; QEMU's own log and the helpers' are small.
    assert!(
        max_disk < bound + 64 * 1024,
        "run dir files reached {max_disk} bytes for a {bound} byte bound"
    );
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
    let left = children();
    assert!(left.is_empty(), "child processes left behind: {left:?}");
}
