//! A real Kubernetes pod through containerd's CRI, as kubelet runs one, with the `hull` runtime
//! handler: RunPodSandbox (boots the pod's VM), CreateContainer + StartContainer of busybox
//! running `uname -r`, wait for it to exit, print its log (the guest kernel's release, not the
//! host's), then StopPodSandbox + RemovePodSandbox, on every path: also after an error, a
//! panic, or SIGINT/SIGTERM (after the CRI call in flight returns). scripts/setup.sh runs it as
//! its CRI demo; scripts/setup-cri.sh configures the `hull` handler and imports the images into
//! containerd's `k8s.io` namespace (CreateContainer never pulls).
//!
//! ```text
//! cargo run -p hull-shim --example cri-demo -- [--address SOCK] [--handler NAME] [--image REF]
//! ```
//!
//! The gRPC client and the pod/container configs are the CRI test harness's
//! (tests/cri_common/client.rs and spec.rs).

#[path = "../tests/cri_common/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/cri_common/spec.rs"]
#[allow(dead_code)]
mod spec;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use nix::sys::signal::{SigSet, Signal};

use client::Cri;

const USAGE: &str =
    "usage: cri-demo [--address SOCK] [--handler NAME] [--image REF] [--timeout SECS]
  --address  containerd's gRPC socket (default /run/containerd/containerd.sock)
  --handler  CRI runtime handler (default hull)
  --image    container image, present in containerd's k8s.io namespace
             (default docker.io/library/busybox:latest)
  --timeout  seconds to wait for the container to exit (default 120)";

#[derive(Debug)]
struct Args {
    address: String,
    handler: String,
    image: String,
    timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        address: "/run/containerd/containerd.sock".into(),
        handler: "hull".into(),
        image: spec::BUSYBOX.into(),
        timeout: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if !["--address", "--handler", "--image", "--timeout"].contains(&flag.as_str()) {
            bail!("unknown argument {flag:?}\n{USAGE}");
        }
        let Some(value) = it.next() else {
            bail!("{flag} needs a value\n{USAGE}");
        };
        match flag.as_str() {
            "--address" => a.address = value,
            "--handler" => a.handler = value,
            "--image" => a.image = value,
            "--timeout" => {
                a.timeout = Duration::from_secs(
                    value
                        .parse()
                        .with_context(|| format!("--timeout {value:?}"))?,
                )
            }
            _ => unreachable!("checked above"),
        }
    }
    Ok(a)
}

/// SIGINT and SIGTERM set a flag (read between steps) instead of killing the demo before it
/// has removed its pod: blocked here, before any other thread exists, and taken by one thread.
fn catch_signals() -> Result<Arc<AtomicBool>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("block SIGINT/SIGTERM")?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("cri-demo: {sig}: still removing the pod");
            } else {
                eprintln!(
                    "cri-demo: {sig}: stopping after the current CRI call, then removing the pod"
                );
            }
        }
    });
    Ok(flag)
}

/// The pod this demo made: StopPodSandbox + RemovePodSandbox (which removes its containers
/// too) at the latest when dropped.
struct PodGuard<'a> {
    cri: &'a Cri,
    id: Option<String>,
}

impl PodGuard<'_> {
    fn remove(&mut self) -> Result<()> {
        let Some(id) = self.id.take() else {
            return Ok(());
        };
        let t = Instant::now();
        let stopped = self.cri.stop_pod(&id);
        let removed = self.cri.remove_pod(&id);
        stopped.with_context(|| format!("StopPodSandbox {id}"))?;
        removed.with_context(|| format!("RemovePodSandbox {id}"))?;
        println!(
            "cri-demo: StopPodSandbox + RemovePodSandbox: pod and container removed in {:.2?}",
            t.elapsed()
        );
        Ok(())
    }
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("cri-demo: cleanup: {e:#}");
        }
    }
}

fn main() {
    let result = parse_args().and_then(|args| {
        let stop = catch_signals()?;
        run(&args, &stop)
    });
    if let Err(e) = result {
        eprintln!("cri-demo: error: {e:#}");
        std::process::exit(1);
    }
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn run(args: &Args, stop: &AtomicBool) -> Result<()> {
    let cri = Cri::try_connect(&args.address).map_err(anyhow::Error::msg)?;
    let v = cri.version().map_err(|e| {
        let hint = if e.code() == tonic::Code::Unimplemented {
            " (containerd's CRI plugin is not loaded: see `ctr plugins ls` and \"failed to load \
             plugin io.containerd.grpc.v1.cri\" in containerd's log)"
        } else {
            ""
        };
        anyhow::anyhow!("CRI Version: {}{hint}", e.message())
    })?;
    println!(
        "cri-demo: {} {} (CRI {}) at {}",
        v.runtime_name, v.runtime_version, v.runtime_api_version, args.address
    );
    if cri.image_id(&args.image).context("ImageStatus")?.is_none() {
        bail!(
            "image {} is not in containerd's k8s.io namespace (scripts/setup-cri.sh imports it)",
            args.image
        );
    }
    let logs = tempfile::Builder::new()
        .prefix("hull-cri-demo.")
        .tempdir()
        .context("temporary log directory")?;
    let mut pod = PodGuard {
        cri: &cri,
        id: None,
    };
    let outcome = run_pod(args, &cri, &mut pod, logs.path(), stop);
    // Remove the pod before its log directory; report the first error.
    let removed = pod.remove();
    drop(logs);
    outcome.and(removed)
}

fn run_pod(
    args: &Args,
    cri: &Cri,
    pod: &mut PodGuard<'_>,
    logs: &Path,
    stop: &AtomicBool,
) -> Result<()> {
    let mut config = spec::pod("hull-demo", logs);
    if let Some(m) = config.metadata.as_mut() {
        m.namespace = "default".into();
    }
    config.labels = HashMap::from([("app".to_string(), "hull-cri-demo".to_string())]);
    let t = Instant::now();
    let id = cri
        .run_pod(&config, &args.handler)
        .with_context(|| format!("RunPodSandbox with runtime handler {:?}", args.handler))?;
    pod.id = Some(id.clone());
    println!(
        "cri-demo: RunPodSandbox (handler {}): pod {} ready in {:.2?}",
        args.handler,
        short(&id),
        t.elapsed()
    );
    check(stop)?;

    let mut c = spec::container("uname", &["uname", "-r"]);
    c.labels = HashMap::from([("app".to_string(), "hull-cri-demo".to_string())]);
    if let Some(image) = c.image.as_mut() {
        image.image = args.image.clone();
    }
    let t = Instant::now();
    let cid = cri
        .create_container(&id, &c, &config)
        .context("CreateContainer")?;
    check(stop)?;
    cri.start_container(&cid).context("StartContainer")?;
    println!(
        "cri-demo: CreateContainer + StartContainer: container {} running `uname -r` ({:.2?})",
        short(&cid),
        t.elapsed()
    );

    let deadline = Instant::now() + args.timeout;
    let status = loop {
        check(stop)?;
        let st = cri.container_status(&cid).context("ContainerStatus")?;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            break st;
        }
        if Instant::now() > deadline {
            bail!("the container has not exited after {:?}", args.timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log_file = Path::new(&config.log_directory).join(&c.log_path);
    let log = std::fs::read_to_string(&log_file)
        .with_context(|| format!("the container's log {}", log_file.display()))?;
    let out = log_text(&log);
    println!(
        "cri-demo: the container exited {} ({}); its log (kubectl logs):",
        status.exit_code, status.reason
    );
    for line in out.lines() {
        println!("    {line}");
    }
    if status.exit_code != 0 {
        bail!(
            "the container exited {}: {}",
            status.exit_code,
            status.message
        );
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let guest = out.trim();
    if guest.is_empty() {
        bail!("the container printed nothing (log {log:?})");
    }
    if args.handler == "hull" && guest == host.trim() {
        bail!("the container ran on the host's kernel {guest}, not in a VM");
    }
    println!(
        "cri-demo: the pod ran on kernel {guest} (the host runs {})",
        host.trim()
    );
    Ok(())
}

/// The text of CRI log lines (`<time> <stream> <P|F> <text>`; P: a partial line).
fn log_text(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        if f.len() == 4 {
            out.push_str(f[3]);
            if f[2] == "F" {
                out.push('\n');
            }
        }
    }
    out
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
