//! Storage benchmark through containerd's CRI, hull beside runc in one private containerd
//! (figures, not pass/fail), on the CRI test harness (tests/cri_common).
//!
//! In one busybox container per runtime, for each place a pod writes to: the container's
//! rootfs, a hostPath volume, a disk-backed emptyDir and a memory-backed emptyDir (a 256 MiB
//! tmpfs kubelet-style; with hull a guest tmpfs), it measures inside the container:
//! - sequential write: `dd` of 64 MiB with `conv=fsync`, MiB/s;
//! - sequential read of that file back (page cache warm: containers cannot drop caches), MiB/s;
//! - small files: 2000 empty files created (shell redirections, no fork), files/s;
//! - stat: `ls -l` of those 2000 files (one lstat each), files/s.
//!
//! hostPath and disk emptyDir live in /var/tmp (the harness's directory, where containerd keeps
//! the rootfs snapshots, is under /run). Times come from the container's /proc/uptime (10 ms),
//! the median of `--runs` runs. Prints a
//! markdown table on stdout; progress on stderr. Everything is removed and leak-checked.
//!
//! ```text
//! bench/storage.sh [RUNS]     # builds the shim and this example, runs it
//! storage-bench [--runs N]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/cri_common/mod.rs"]
mod cri_common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use k8s_cri::v1 as cri;

use cri_common::{spec, CriEnv, HULL, RUNC};

const MIB: u32 = 64;
const FILES: u32 = 2000;

/// Shell text measuring directory `$1`; prints `t0 t1 t2 t3 t4` (uptime seconds): before the
/// write, after the fsync'ed write, after the read, after the creates, after the stats.
const SCRIPT: &str = r#"d=$1; up() { cut -d' ' -f1 /proc/uptime; }
mkdir -p "$d" && cd "$d" || exit 1
t0=$(up); dd if=/dev/zero of=big bs=1M count=MIBS conv=fsync 2>/dev/null || exit 2
t1=$(up); dd if=big of=/dev/null bs=1M 2>/dev/null || exit 3
t2=$(up); rm big; mkdir small; i=0
while [ $i -lt FILES ]; do : > small/f$i; i=$((i+1)); done
t3=$(up); ls -l small > /dev/null || exit 4
t4=$(up); rm -rf small
echo "$t0 $t1 $t2 $t3 $t4""#;

/// (label, path in the container).
const PLACES: [(&str, &str); 4] = [
    ("container rootfs", "/bench"),
    ("hostPath", "/hostpath/bench"),
    ("emptyDir (disk)", "/disk/bench"),
    ("emptyDir (memory)", "/mem/bench"),
];

#[derive(Debug, Default, Clone)]
struct Figures {
    write: Vec<f64>,
    read: Vec<f64>,
    create: Vec<f64>,
    stat: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn rate(amount: f64, secs: f64) -> f64 {
    amount / secs.max(0.01)
}

/// A tmpfs the bench mounted as kubelet does for medium: Memory; unmounted when dropped.
struct HostTmpfs(PathBuf);

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mount_for(path: &str, host: &Path) -> cri::Mount {
    cri::Mount {
        container_path: path.to_string(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

fn measure(env: &CriEnv, disk_root: &Path, handler: &str, runs: usize) -> Result<Vec<Figures>> {
    let cfg = spec::pod(&format!("storage-{handler}"), &env.log_dir());
    let uid = cfg
        .metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default();
    // On the host's disk (the harness's own directory is under /run, a tmpfs).
    let vols = disk_root.join("pods").join(&uid).join("volumes");
    let hostpath = vols.join("kubernetes.io~host-path/data");
    let disk = vols.join("kubernetes.io~empty-dir/disk");
    let mem = vols.join("kubernetes.io~empty-dir/mem");
    for d in [&hostpath, &disk, &mem] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    nix::mount::mount(
        Some("tmpfs"),
        &mem,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256m"),
    )
    .context("mount the memory emptyDir")?;
    let _tmpfs = HostTmpfs(mem.clone());
    let pod = env
        .run_pod(&cfg, handler)
        .map_err(|e| anyhow!("RunPodSandbox ({handler}): {e}"))?;
    let result = (|| {
        let mut c = spec::container("bench", spec::SLEEPER);
        c.mounts = vec![
            mount_for("/hostpath", &hostpath),
            mount_for("/disk", &disk),
            mount_for("/mem", &mem),
        ];
        let id = env
            .create_container(&pod, &c, &cfg)
            .map_err(|e| anyhow!("CreateContainer: {e}"))?;
        env.cri()
            .start_container(&id)
            .map_err(|e| anyhow!("StartContainer: {e}"))?;
        let script = SCRIPT
            .replace("MIBS", &MIB.to_string())
            .replace("FILES", &FILES.to_string());
        let mut out = vec![Figures::default(); PLACES.len()];
        for run in 0..=runs {
            for (i, (label, dir)) in PLACES.iter().enumerate() {
                let r = env
                    .cri()
                    .exec_sync(&id, &["sh", "-c", &script, "sh", dir], 600)
                    .map_err(|e| anyhow!("ExecSync: {e}"))?;
                let text = String::from_utf8_lossy(&r.stdout);
                let t: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if r.exit_code != 0 || t.len() != 5 {
                    bail!(
                        "{handler} {label}: exit {} out {text:?} err {:?}",
                        r.exit_code,
                        String::from_utf8_lossy(&r.stderr)
                    );
                }
                eprintln!("{handler} {label} run {run}: {:?}", &t);
                if run == 0 {
                    continue; // warm-up
                }
                let f = &mut out[i];
                f.write.push(rate(f64::from(MIB), t[1] - t[0]));
                f.read.push(rate(f64::from(MIB), t[2] - t[1]));
                f.create.push(rate(f64::from(FILES), t[3] - t[2]));
                f.stat.push(rate(f64::from(FILES), t[4] - t[3]));
            }
        }
        Ok(out)
    })();
    let _ = env.cri().stop_pod(&pod);
    let _ = env.cri().remove_pod(&pod);
    result
}

fn main() -> ExitCode {
    let mut runs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--runs", Some(n)) if n > 0 => runs = n,
            _ => {
                eprintln!("usage: storage-bench [--runs N]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(env) = CriEnv::start() else {
        eprintln!("storage-bench: prerequisites missing");
        return ExitCode::FAILURE;
    };
    env.pull_busybox();
    let disk_root = match tempfile::Builder::new()
        .prefix("hull-storage-bench.")
        .tempdir_in("/var/tmp")
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("storage-bench: a directory in /var/tmp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for handler in [RUNC, HULL] {
        match measure(&env, disk_root.path(), handler, runs) {
            Ok(f) => rows.push((handler, f)),
            Err(e) => {
                eprintln!("storage-bench: {e:#}");
                failed = true;
            }
        }
    }
    let env_dir = env.dir().to_path_buf();
    let left = env.stop();
    let fs_of = |p: &Path| {
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        table
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() > 2 && p.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
            })
            .max()
            .map(|(_, t)| t)
            .unwrap_or_default()
    };
    println!(
        "Storage, {MIB} MiB dd (conv=fsync) and {FILES} small files, median of {runs} runs, {} cores; \
         container rootfs on {} ({}), hostPath and disk emptyDir on {} ({}); times from \
         /proc/uptime (10 ms: the largest runc figures are bounds)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs_of(&env_dir),
        env_dir.display(),
        fs_of(disk_root.path()),
        disk_root.path().display(),
    );
    println!("| where | runtime | write MiB/s | read MiB/s | creates/s | stats/s |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (i, (label, _)) in PLACES.iter().enumerate() {
        for (handler, f) in &rows {
            let f = &f[i];
            println!(
                "| {label} | {handler} | {:.0} | {:.0} | {:.0} | {:.0} |",
                median(&f.write),
                median(&f.read),
                median(&f.create),
                median(&f.stat)
            );
        }
    }
    if !left.is_empty() {
        eprintln!("storage-bench: leftovers: {left:?}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
