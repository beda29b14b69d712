//! Pod benchmarks through containerd's CRI, hull beside runc in one private containerd (figures,
//! not pass/fail). Built on the CRI test harness (tests/cri_common, tests/common): its own
//! containerd with the CRI plugin, CNI bridge on a private subnet, local registry, busybox.
//!
//! For runc and hull, alternating, after one warm-up each:
//! 1. pod start: RunPodSandbox + CreateContainer + StartContainer of a busybox container, and
//!    the three calls apart; StopPodSandbox + RemovePodSandbox after it;
//! 2. HTTP requests/s from the host to busybox `httpd` on the pod IP, measured by `wrk`;
//! 3. bulk TCP host -> pod IP: MiB/s of writing N MiB into busybox `nc -l` (until nc has read
//!    everything and exited);
//! 4. idle pod PSS: the pod's shim and all its descendants (hull: QEMU, virtiofsd,
//!    vhost-device-vsock; runc: pause and the container), with no other pod alive.
//!
//! Prints a markdown table (stdout) for docs/performance.md; progress goes to stderr. Everything
//! is removed at the end and checked by the harness's leak check (exit 1 on a leftover).
//! SIGINT/SIGTERM/SIGHUP stop it after the current step, with the same clean-up.
//!
//! ```text
//! bench/cri.sh [RUNS]     # builds the release shim and this example, installs wrk, runs it
//! cri-bench [--runs N] [--wrk-secs S] [--bulk-mib M] [--cmdline TEXT]
//! ```
//! Env: as the harness: `HULL_SHIM_DIR` (the shim containerd runs), `HULL_CONFIG`;
//! `CRI_BENCH_LOG=FILE` keeps a copy of containerd's log (with the shims' lines) there.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/cri_common/mod.rs"]
mod cri_common;
mod procs;

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};

use common::host::{self, Proc};
use cri_common::{scenarios, spec, CriEnv, HULL, RUNC};
use procs::*;

const USAGE: &str = "usage: cri-bench [--runs N] [--wrk-secs S] [--bulk-mib M] [--cmdline TEXT]
  --runs      measured runs per runtime and figure, after one warm-up each (default 7)
  --wrk-secs  duration of one wrk run (default 10)
  --bulk-mib  MiB written per bulk TCP run (default 256)
  --cmdline   the command line to print with the table (default: this one)";

/// runc first in each round: the reference.
const HANDLERS: [&str; 2] = [RUNC, HULL];
const HTTP_PORT: u16 = 8080;
const SINK_PORT: u16 = 5001;
/// What busybox httpd serves (index.html is this text and a newline).
const PAGE: &str = "hello-from-cri-bench";
/// Receives TCP connections on SINK_PORT one after another, throwing the bytes away. nc's stdin
/// is a pipe that never ends: with an ending stdin (/dev/null) busybox nc half-closes at once,
/// and the host could not tell when nc has read everything (it exits at the host's FIN).
const SINK_SCRIPT: &str = "sleep 2147483647 | while :; do nc -l -p 5001 >/dev/null; done";
const SETTLE: Duration = Duration::from_secs(5);
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 256 << 10;

static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Args {
    runs: usize,
    wrk_secs: u32,
    bulk_mib: u64,
    cmdline: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 7,
        wrk_secs: 10,
        bulk_mib: 256,
        cmdline: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<u64> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| anyhow!("{flag} {v:?}: not a positive number"))
        };
        match flag.as_str() {
            "--runs" => a.runs = usize::try_from(num(&value)?)?,
            "--wrk-secs" => a.wrk_secs = u32::try_from(num(&value)?)?,
            "--bulk-mib" => a.bulk_mib = num(&value)?,
            "--cmdline" => a.cmdline = value,
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    Ok(a)
}

/// SIGINT/SIGTERM/SIGHUP set [`STOP`] (checked between steps) instead of killing us with the
/// pods still up. Called before any thread starts, so every thread keeps them blocked (the
/// processes we spawn do not: std resets the signal mask of a child).
fn watch_signals() -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("block signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                eprintln!("cri-bench: {sig}: stopping after the current step, then cleaning up");
                STOP.store(true, Ordering::SeqCst);
            }
        })
        .context("spawn the signal thread")?;
    Ok(())
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, min and max of `v` (not empty).
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}

fn median(v: &[f64]) -> f64 {
    stats(v).0
}

/// One pod start and its removal, in ms.
#[derive(Debug, Default, Clone, Copy)]
struct StartRun {
    run_pod: f64,
    create: f64,
    start: f64,
    stop: f64,
    remove: f64,
}

impl StartRun {
    fn total(&self) -> f64 {
        self.run_pod + self.create + self.start
    }
}

/// RunPodSandbox + CreateContainer + StartContainer of busybox (sleeping), then
/// StopPodSandbox + RemovePodSandbox.
fn pod_start(env: &CriEnv, handler: &str, name: &str) -> Result<(String, StartRun)> {
    let cfg = spec::pod(name, &env.log_dir());
    let t0 = Instant::now();
    let pod = env
        .run_pod(&cfg, handler)
        .with_context(|| format!("RunPodSandbox ({handler})"))?;
    let t1 = Instant::now();
    let c = env
        .create_container(&pod, &spec::container("main", spec::SLEEPER), &cfg)
        .with_context(|| format!("CreateContainer ({handler})"))?;
    let t2 = Instant::now();
    env.cri()
        .start_container(&c)
        .with_context(|| format!("StartContainer ({handler})"))?;
    let t3 = Instant::now();
    env.cri().stop_pod(&pod).context("StopPodSandbox")?;
    let t4 = Instant::now();
    env.cri().remove_pod(&pod).context("RemovePodSandbox")?;
    let r = StartRun {
        run_pod: ms(t1 - t0),
        create: ms(t2 - t1),
        start: ms(t3 - t2),
        stop: ms(t4 - t3),
        remove: ms(t4.elapsed()),
    };
    Ok((pod, r))
}

fn remove_pod(env: &CriEnv, pod: &str) -> Result<()> {
    env.cri().stop_pod(pod).context("StopPodSandbox")?;
    env.cri().remove_pod(pod).context("RemovePodSandbox")?;
    Ok(())
}

/// A running pod with containers `cmds` (name, command).
fn run_pod_with(
    env: &CriEnv,
    handler: &str,
    name: &str,
    cmds: &[(&str, &[&str])],
) -> Result<String> {
    let cfg = spec::pod(name, &env.log_dir());
    let pod = env
        .run_pod(&cfg, handler)
        .with_context(|| format!("RunPodSandbox {name} ({handler})"))?;
    for (cname, cmd) in cmds {
        let c = env
            .create_container(&pod, &spec::container(cname, cmd), &cfg)
            .with_context(|| format!("CreateContainer {cname} ({handler})"))?;
        env.cri()
            .start_container(&c)
            .with_context(|| format!("StartContainer {cname} ({handler})"))?;
    }
    Ok(pod)
}

/// The pod's IP, once busybox httpd answers on it.
fn wait_http(env: &CriEnv, pod: &str) -> Result<String> {
    let ip = env.pod_ip(pod);
    let addr: SocketAddr = format!("{ip}:{HTTP_PORT}").parse()?;
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        match scenarios::http_get(addr) {
            Ok(r) if r.contains(PAGE) => return Ok(ip),
            Ok(r) if Instant::now() >= deadline => bail!("{addr} answered {r:?}"),
            Err(e) if Instant::now() >= deadline => bail!("{e}"),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// One wrk run: (requests/s, its error lines).
fn wrk(ip: &str, secs: u32) -> Result<(f64, Vec<String>)> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c8", &format!("-d{secs}s"), "--timeout", "5s"])
        .arg(format!("http://{ip}:{HTTP_PORT}/"));
    let out = common::run::run(
        cmd,
        None,
        || true,
        Duration::from_secs(u64::from(secs) + 60),
    )
    .map_err(|e| match e {
        Ok(_) => anyhow!("wrk timed out"),
        Err(e) => anyhow!("{e}"),
    })?;
    let text = common::stdout(&out);
    if !out.status.success() {
        bail!("wrk: {}{}", text, common::stderr(&out));
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output:\n{text}"))?;
    let errors = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors") || l.starts_with("Non-2xx"))
        .map(str::to_string)
        .collect();
    Ok((rps, errors))
}

/// Write `mib` MiB to the sink on `ip`; MiB/s until nc has read it all and closed.
fn bulk(ip: &str, mib: u64) -> Result<f64> {
    let addr: SocketAddr = format!("{ip}:{SINK_PORT}").parse()?;
    let deadline = Instant::now() + SERVE_TIMEOUT;
    // Refused for a moment between two connections, while the loop starts nc again.
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => bail!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    let buf = vec![0u8; CHUNK];
    let chunks = mib * (1 << 20) / CHUNK as u64;
    let t = Instant::now();
    for _ in 0..chunks {
        s.write_all(&buf)
            .with_context(|| format!("write to {addr}"))?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = [0u8; 64];
    loop {
        match s.read(&mut rest) {
            Ok(0) => break,
            Ok(_) => bail!("{addr} sent data back"),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("wait for {addr} to close")),
        }
    }
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}

/// Every figure, per handler.
#[derive(Debug, Default)]
struct Figures {
    start: BTreeMap<&'static str, Vec<StartRun>>,
    pss: BTreeMap<&'static str, Vec<(String, u64)>>,
    rps: BTreeMap<&'static str, Vec<f64>>,
    wrk_errors: BTreeMap<&'static str, Vec<String>>,
    mibs: BTreeMap<&'static str, Vec<f64>>,
    /// Sandbox ids of the measured hull pod starts (their boot_ms is in containerd's log).
    hull_pods: Vec<String>,
    /// RSS of the idle pod, kB.
    rss: BTreeMap<&'static str, u64>,
    /// QEMU processes of others on the host while the idle pod was measured.
    other_vms: BTreeMap<&'static str, usize>,
    http_cpu: BTreeMap<&'static str, Vec<Cpu>>,
    bulk_cpu: BTreeMap<&'static str, Vec<Cpu>>,
}

fn measure(env: &CriEnv, a: &Args, f: &mut Figures) -> Result<()> {
    env.pull_busybox();
    // 1. Pod start.
    for h in HANDLERS {
        check_stop()?;
        let (_, r) = pod_start(env, h, &format!("warm-{h}"))?;
        eprintln!("cri-bench: {h} pod start warm-up: {:.0} ms", r.total());
    }
    for i in 1..=a.runs {
        for h in HANDLERS {
            check_stop()?;
            let (pod, r) = pod_start(env, h, &format!("start-{h}-{i}"))?;
            eprintln!(
                "cri-bench: {h} pod start {i}/{}: {:.0} ms (RunPodSandbox {:.0}, Create {:.0}, \
                 Start {:.0}; StopPodSandbox {:.0}, RemovePodSandbox {:.0})",
                a.runs,
                r.total(),
                r.run_pod,
                r.create,
                r.start,
                r.stop,
                r.remove
            );
            f.start.entry(h).or_default().push(r);
            if h == HULL {
                f.hull_pods.push(pod);
            }
        }
    }
    // 2. Idle PSS, each pod alone.
    for h in HANDLERS {
        check_stop()?;
        let (p, rss, others) = idle_pss(env, h)?;
        let total: u64 = p.iter().map(|(_, k)| k).sum();
        f.rss.insert(h, rss);
        f.other_vms.insert(h, others);
        eprintln!(
            "cri-bench: {h} idle pod PSS {:.1} MiB",
            total as f64 / 1024.0
        );
        f.pss.insert(h, p);
    }
    // 3. HTTP and bulk TCP: one pod per runtime (httpd + sink), both up the whole time.
    let web = spec::web_server_script(HTTP_PORT, PAGE);
    let mut ips = BTreeMap::new();
    let mut pids = BTreeMap::new();
    for h in HANDLERS {
        check_stop()?;
        let pod = run_pod_with(
            env,
            h,
            "net",
            &[
                ("web", &["sh", "-c", &web]),
                ("sink", &["sh", "-c", SINK_SCRIPT]),
            ],
        )?;
        ips.insert(h, wait_http(env, &pod)?);
        let procs = pod_processes(env, h, &pod)?;
        pids.insert(h, procs.iter().map(|p| p.pid).collect::<Vec<_>>());
    }
    for h in HANDLERS {
        check_stop()?;
        wrk(&ips[h], 2)?;
        bulk(&ips[h], 16)?;
    }
    for i in 1..=a.runs {
        for h in HANDLERS {
            check_stop()?;
            let probe = CpuProbe::start(&pids[h]);
            let (rps, errors) = wrk(&ips[h], a.wrk_secs)?;
            let cpu = probe.finish();
            eprintln!(
                "cri-bench: {h} HTTP {i}/{}: {rps:.0} requests/s {errors:?}, pod CPU {:.0}%, \
                 machine {:.0}%",
                a.runs, cpu.pod, cpu.machine
            );
            f.http_cpu.entry(h).or_default().push(cpu);
            f.rps.entry(h).or_default().push(rps);
            f.wrk_errors.entry(h).or_default().extend(errors);
        }
    }
    for i in 1..=a.runs {
        for h in HANDLERS {
            check_stop()?;
            let probe = CpuProbe::start(&pids[h]);
            let mibs = bulk(&ips[h], a.bulk_mib)?;
            let cpu = probe.finish();
            eprintln!(
                "cri-bench: {h} bulk TCP {i}/{}: {mibs:.1} MiB/s, pod CPU {:.0}%, machine {:.0}%",
                a.runs, cpu.pod, cpu.machine
            );
            f.bulk_cpu.entry(h).or_default().push(cpu);
            f.mibs.entry(h).or_default().push(mibs);
        }
    }
    // Pods left running are removed (and reported) by the harness's teardown: remove ours.
    for pod in env.cri().list_pods().context("ListPodSandbox")? {
        remove_pod(env, &pod.id)?;
    }
    Ok(())
}

/// `text` of `cmd args`, trimmed, or "?".
fn output_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| common::stdout(&o).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// The accelerator the shim chose (`accelerator chosen ... accel=X`), from containerd's log.
fn accelerator(env: &CriEnv) -> String {
    let log = std::fs::read_to_string(env.containerd().log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("accelerator chosen"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("accel=")))
        .map(|a| a.trim_matches('"').to_lowercase())
        .unwrap_or_else(|| "? (not logged)".into())
}

/// One hull pod start as the shim logged it: the shim's work before QEMU starts (helpers, pod
/// network, `prepare_ms` of "sandbox ready"), QEMU start -> agent ready (`boot_ms`), then the
/// sandbox container's and the workload container's create and start through the agent
/// (`create_ms` of "task created", `start_ms` of "process started").
#[derive(Debug, Clone, Copy)]
struct Breakdown {
    prepare: f64,
    boot: f64,
    sandbox_create: f64,
    sandbox_start: f64,
    create: f64,
    start: f64,
}

/// The [`Breakdown`] of each of `pods` from the shim's lines in containerd's log.
fn breakdowns(env: &CriEnv, pods: &[String]) -> Vec<Breakdown> {
    let log = std::fs::read_to_string(env.containerd().log_path()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let field = |line: &str, name: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(|v| v.trim_matches('"').to_string())
    };
    let number = |line: &str, name: &str| field(line, name)?.parse::<f64>().ok();
    let find = |msg: &str, key: &str, value: &str| {
        lines
            .iter()
            .copied()
            .find(|l| l.contains(msg) && field(l, key).as_deref() == Some(value))
    };
    pods.iter()
        .filter_map(|id| {
            let ready = find("sandbox ready", "sandbox=", id)?;
            let sandbox_created = find("task created", "task=", id)?;
            let sandbox_started = find("process started", "task=", id)?;
            let created = lines.iter().copied().find(|l| {
                l.contains("task created")
                    && field(l, "sandbox=").as_deref() == Some(id)
                    && field(l, "task=").as_deref() != Some(id)
            })?;
            let cid = field(created, "task=")?;
            let started = find("process started", "task=", &cid)?;
            Some(Breakdown {
                prepare: number(ready, "prepare_ms=")?,
                boot: number(ready, "boot_ms=")?,
                sandbox_create: number(sandbox_created, "create_ms=")?,
                sandbox_start: number(sandbox_started, "start_ms=")?,
                create: number(created, "create_ms=")?,
                start: number(started, "start_ms=")?,
            })
        })
        .collect()
}

fn fmt_ms(v: &[f64]) -> String {
    let (m, lo, hi) = stats(v);
    format!("{m:.0} ms ({lo:.0}-{hi:.0})")
}

fn report(a: &Args, f: &Figures, boot: &[Breakdown], header: &str) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let col = |h: &str, pick: &dyn Fn(&StartRun) -> f64| -> Vec<f64> {
        f.start.get(h).into_iter().flatten().map(pick).collect()
    };
    let ratio = |pick: &dyn Fn(&str) -> f64| {
        let r = pick(HULL) / pick(RUNC);
        if r < 1.0 {
            format!("{r:.2}x")
        } else {
            format!("{r:.1}x")
        }
    };
    let num = |m: &BTreeMap<&str, Vec<f64>>, h: &str, unit: &str| {
        let (md, lo, hi) = stats(&m[h]);
        format!("{md:.1} {unit} ({lo:.1}-{hi:.1})")
    };
    let pss = |h: &str| f.pss[h].iter().map(|(_, k)| k).sum::<u64>() as f64 / 1024.0;
    line(format!("`{}`  ", a.cmdline));
    line(format!("{header}\n"));
    line("| figure | runc | hull | hull/runc |".into());
    line("| --- | --- | --- | --- |".into());
    line(format!(
        "| pod start: RunPodSandbox + CreateContainer + StartContainer (busybox), median (min-max) | {} | {} | {} |",
        fmt_ms(&col(RUNC, &StartRun::total)),
        fmt_ms(&col(HULL, &StartRun::total)),
        ratio(&|h| median(&col(h, &StartRun::total)))
    ));
    let split = |h: &str| {
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            median(&col(h, &|r| r.run_pod)),
            median(&col(h, &|r| r.create)),
            median(&col(h, &|r| r.start))
        )
    };
    line(format!(
        "| pod start split: RunPodSandbox / CreateContainer / StartContainer, medians | {} | {} | {} |",
        split(RUNC),
        split(HULL),
        ""
    ));
    line(format!(
        "| hull per-pod start breakdown from the shim's log, medians: prepare / QEMU start -> agent ready / sandbox container create + start / container create / container start | | {} | |",
        if boot.is_empty() {
            "not logged".to_string()
        } else {
            let m = |f: &dyn Fn(&Breakdown) -> f64| median(&boot.iter().map(f).collect::<Vec<_>>());
            format!(
                "{:.0} / {:.0} / {:.0} + {:.0} / {:.0} / {:.0} ms",
                m(&|b| b.prepare),
                m(&|b| b.boot),
                m(&|b| b.sandbox_create),
                m(&|b| b.sandbox_start),
                m(&|b| b.create),
                m(&|b| b.start)
            )
        }
    ));
    let removal = |r: &StartRun| r.stop + r.remove;
    line(format!(
        "| pod removal: StopPodSandbox + RemovePodSandbox, median (min-max) | {} | {} | {} |",
        fmt_ms(&col(RUNC, &removal)),
        fmt_ms(&col(HULL, &removal)),
        ratio(&|h| median(&col(h, &removal)))
    ));
    line(format!(
        "| HTTP host -> pod IP: `wrk -t2 -c8 -d{}s`, busybox httpd, {}-byte page, median (min-max) | {} | {} | {} |",
        a.wrk_secs,
        PAGE.len() + 1,
        num(&f.rps, RUNC, "req/s"),
        num(&f.rps, HULL, "req/s"),
        ratio(&|h| median(&f.rps[h]))
    ));
    line(format!(
        "| bulk TCP host -> pod IP: {} MiB into busybox `nc -l`, median (min-max) | {} | {} | {} |",
        a.bulk_mib,
        num(&f.mibs, RUNC, "MiB/s"),
        num(&f.mibs, HULL, "MiB/s"),
        ratio(&|h| median(&f.mibs[h]))
    ));
    let cpu = |h: &str| {
        let m = |v: &BTreeMap<&str, Vec<Cpu>>, pick: fn(&Cpu) -> f64| {
            median(&v[h].iter().map(pick).collect::<Vec<_>>())
        };
        format!(
            "{:.0}% / {:.0}% ({:.0}% / {:.0}%)",
            m(&f.http_cpu, |c| c.pod),
            m(&f.bulk_cpu, |c| c.pod),
            m(&f.http_cpu, |c| c.machine),
            m(&f.bulk_cpu, |c| c.machine)
        )
    };
    line(format!(
        "| pod CPU during HTTP / bulk, % of one core (machine busy, % of all {} cores), medians | {} | {} | |",
        output_of("nproc", &[]),
        cpu(RUNC),
        cpu(HULL)
    ));
    line(format!(
        "| idle pod PSS (shim and its descendants; RSS) | {:.1} MiB ({:.1}) | {:.1} MiB ({:.1}) | {} |",
        pss(RUNC),
        f.rss[RUNC] as f64 / 1024.0,
        pss(HULL),
        f.rss[HULL] as f64 / 1024.0,
        ratio(&pss)
    ));
    line(String::new());
    for h in HANDLERS {
        let mut by: Vec<(&str, Vec<String>)> = Vec::new();
        for (what, k) in &f.pss[h] {
            let v = format!("{:.1}", *k as f64 / 1024.0);
            match by.iter_mut().find(|(w, _)| w == what) {
                Some((_, vs)) => vs.push(v),
                None => by.push((what, vec![v])),
            }
        }
        let parts: Vec<String> = by
            .iter()
            .map(|(w, vs)| format!("{w} {}", vs.join(" + ")))
            .collect();
        line(format!(
            "Idle PSS by process, {h} (MiB): {}.  ",
            parts.join(", ")
        ));
    }
    line(
        "Pod CPU: hull's is QEMU's (all vCPUs and its I/O thread) and the helpers'; runc's only \
         the pod's processes: its TCP receive runs in the host kernel, mostly charged to the \
         sender.  "
            .into(),
    );
    let others = f.other_vms.get(HULL).copied().unwrap_or(0);
    line(format!(
        "Idle pods measured one at a time, no other pod of this containerd alive; {}.  ",
        if others == 0 {
            "no other QEMU on the host then (PSS carries all of QEMU's shared pages)".to_string()
        } else {
            format!(
                "{others} QEMU processes of others on the host then (shared pages split with \
                 them: the hull PSS is lower than alone)"
            )
        }
    ));
    let errors: Vec<String> = HANDLERS
        .iter()
        .flat_map(|h| {
            f.wrk_errors
                .get(h)
                .into_iter()
                .flatten()
                .map(move |e| format!("{h}: {e}"))
        })
        .collect();
    if !errors.is_empty() {
        line(format!("wrk errors: {}.  ", errors.join("; ")));
    }
    out
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cri-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = watch_signals() {
        eprintln!("cri-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    if common::setup::which("wrk").is_none() {
        eprintln!("cri-bench: wrk not found (apt-get install wrk)");
        return ExitCode::FAILURE;
    }
    let Some(env) = CriEnv::start() else {
        return ExitCode::FAILURE;
    };
    let mut figures = Figures::default();
    let result = measure(&env, &args, &mut figures);
    let boot = breakdowns(&env, &figures.hull_pods);
    if let Some(keep) = std::env::var_os("CRI_BENCH_LOG") {
        match std::fs::copy(env.containerd().log_path(), &keep) {
            Ok(_) => eprintln!(
                "cri-bench: containerd's log copied to {}",
                keep.to_string_lossy()
            ),
            Err(e) => eprintln!("cri-bench: copy containerd's log: {e}"),
        }
    }
    let header = format!(
        "{}, {} cores, {}, hull accelerator {}; runc and hull alternating, {} runs each after one \
         warm-up each.",
        output_of("date", &["-u", "+%FT%TZ"]),
        output_of("nproc", &[]),
        output_of("containerd", &["--version"])
            .split_whitespace()
            .nth(2)
            .map_or("containerd ?".into(), |v| format!("containerd {v}")),
        accelerator(&env),
        args.runs
    );
    let left = env.stop();
    let mut code = ExitCode::SUCCESS;
    match result {
        Ok(()) => print!("{}", report(&args, &figures, &boot, &header)),
        Err(e) => {
            eprintln!("cri-bench: {e:#}");
            code = ExitCode::FAILURE;
        }
    }
    if left.is_empty() {
        eprintln!("cri-bench: cleaned up, the harness's leak check found nothing left");
    } else {
        eprintln!("cri-bench: left behind (now removed by force):");
        for l in &left {
            eprintln!("  {l}");
        }
        code = ExitCode::FAILURE;
    }
    code
}
