//! Which processes make up a pod and what they cost: PSS/RSS from /proc and CPU ticks.

use super::*;

/// PSS and RSS of one process, kB.
pub(super) fn pss_rss_kb(pid: i32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no {name} line in {path}"))
    };
    Ok((field("Pss:")?, field("Rss:")?))
}

/// The processes of pod `pod`: its shim (found by its binary, `-id <pod>` and our containerd's
/// `-address`) and every descendant of it; for hull also the pod's QEMU (`-name hull-<pod>,...`),
/// which must be one of those.
pub(super) fn pod_processes(env: &CriEnv, handler: &str, pod: &str) -> Result<Vec<Proc>> {
    let binary = if handler == HULL {
        "containerd-shim-hull-v2"
    } else {
        "containerd-shim-runc-v2"
    };
    let address = env.containerd().address();
    let pair = |p: &Proc, k: &str, v: &dyn Fn(&str) -> bool| {
        p.args.windows(2).any(|w| w[0] == k && v(&w[1]))
    };
    let procs = host::processes();
    let shims: Vec<&Proc> = procs
        .iter()
        .filter(|p| {
            p.args
                .first()
                .is_some_and(|a| Path::new(a).file_name().is_some_and(|f| f == binary))
                && pair(p, "-id", &|v| v == pod)
                && pair(p, "-address", &|v| v == address)
        })
        .collect();
    let [shim] = shims[..] else {
        bail!("{} {binary} processes serve pod {pod}", shims.len());
    };
    let children: HashMap<i32, Vec<i32>> = procs.iter().fold(HashMap::new(), |mut m, p| {
        m.entry(p.ppid).or_default().push(p.pid);
        m
    });
    let mut mine = vec![shim.pid];
    let mut i = 0;
    while i < mine.len() {
        mine.extend(children.get(&mine[i]).into_iter().flatten());
        i += 1;
    }
    if handler == HULL {
        let name = format!("hull-{pod},");
        let qemu = procs
            .iter()
            .find(|p| pair(p, "-name", &|v| v.starts_with(&name)))
            .ok_or_else(|| anyhow!("no QEMU with -name {name}..."))?;
        if !mine.contains(&qemu.pid) {
            bail!("QEMU {} of pod {pod} is not below its shim", qemu.pid);
        }
    }
    Ok(procs
        .into_iter()
        .filter(|p| mine.contains(&p.pid))
        .collect())
}

/// The pod's sandbox pid (containerd's verbose PodSandboxStatus): runc's pause process.
pub(super) fn sandbox_pid(env: &CriEnv, pod: &str) -> Option<i32> {
    let st = env.cri().pod_status(pod).ok()?;
    let info: serde_json::Value = serde_json::from_str(st.info.get("info")?).ok()?;
    i32::try_from(info["pid"].as_i64()?).ok()
}

/// What a process of a pod is, for the PSS figures: runc's pause (the sandbox process and its
/// descendants) and container processes apart; else the binary's name (comm is cut to 15 bytes).
pub(super) fn label(p: &Proc, procs: &[Proc], pause: Option<i32>, handler: &str) -> String {
    let name = p
        .args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map_or_else(|| p.comm.clone(), |n| n.to_string_lossy().into_owned());
    if handler != RUNC || name.starts_with("containerd-shim") {
        return name;
    }
    let mut pid = p.pid;
    while pid > 1 {
        if Some(pid) == pause {
            return format!("pause ({name})");
        }
        pid = procs.iter().find(|q| q.pid == pid).map_or(0, |q| q.ppid);
    }
    format!("container ({name})")
}

/// One idle pod, the only one of ours: (what, PSS kB) per process, the RSS sum (kB), and how
/// many QEMU processes of others run on the host (they share pages with ours, lowering its PSS).
type Idle = (Vec<(String, u64)>, u64, usize);

pub(super) fn idle_pss(env: &CriEnv, handler: &str) -> Result<Idle> {
    let pod = run_pod_with(env, handler, "idle", &[("main", spec::SLEEPER)])?;
    std::thread::sleep(SETTLE);
    let pause = sandbox_pid(env, &pod);
    let measured = pod_processes(env, handler, &pod).and_then(|procs| {
        let mut rss = 0;
        let mut pss = Vec::new();
        for p in &procs {
            let (k, r) = pss_rss_kb(p.pid)?;
            pss.push((label(p, &procs, pause, handler), k));
            rss += r;
        }
        let others = host::processes()
            .iter()
            .filter(|p| p.comm.starts_with("qemu-system") && !procs.iter().any(|q| q.pid == p.pid))
            .count();
        Ok((pss, rss, others))
    });
    remove_pod(env, &pod)?;
    measured
}

/// CPU time (utime + stime + reaped children's) of `pids` and of the whole machine, to say
/// how busy a pod and the host were during one measurement.
#[derive(Debug)]
pub(super) struct CpuProbe {
    pub(super) ticks: HashMap<i32, u64>,
    pub(super) machine: (u64, u64),
    pub(super) t: Instant,
}

/// One run's CPU: the pod's processes in % of one core, the machine's busy % of all cores.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Cpu {
    pub(super) pod: f64,
    pub(super) machine: f64,
}

impl CpuProbe {
    pub(super) fn start(pids: &[i32]) -> CpuProbe {
        CpuProbe {
            ticks: pids.iter().filter_map(|&p| Some((p, ticks(p)?))).collect(),
            machine: machine_ticks(),
            t: Instant::now(),
        }
    }

    pub(super) fn finish(&self) -> Cpu {
        let secs = self.t.elapsed().as_secs_f64();
        let used: u64 = self
            .ticks
            .iter()
            .filter_map(|(&p, &before)| Some(ticks(p)?.saturating_sub(before)))
            .sum();
        let (busy, total) = machine_ticks();
        let total = total.saturating_sub(self.machine.1).max(1);
        Cpu {
            pod: used as f64 * 100.0 / clock_ticks() / secs,
            machine: busy.saturating_sub(self.machine.0) as f64 * 100.0 / total as f64,
        }
    }
}

/// Clock ticks per second of /proc's CPU times.
pub(super) fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime + cutime + cstime of `pid` (fields 14-17 of /proc/PID/stat).
pub(super) fn ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): fields 14-17 are rest[11..15].
    f.get(11..15)?.iter().map(|v| v.parse::<u64>().ok()).sum()
}

/// (busy, total) ticks of all CPUs from /proc/stat (idle and iowait are not busy).
pub(super) fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total)
}
