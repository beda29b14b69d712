//! hull-agent's entry point: the container-helper mode (dispatched before any runtime starts),
//! or PID 1 of the guest: early init, probe mode, and the ttrpc server on vsock.

use std::sync::Arc;

use hull_agent::container::{helper, wire::HELPER_ARG, Runtime, RuntimeConfig};
use hull_agent::{init, logging, server};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HELPER_ARG) {
        std::process::exit(helper::main(&args));
    }
    let is_init = std::process::id() == 1;
    if is_init {
        // Returns only on failure; containers then cannot pivot_root, which CreateContainer reports.
        if let Err(e) = hull_agent::rootfs::leave_initramfs() {
            eprintln!("hull-agent: staying on the initramfs: {e}");
        }
    }
    let (opts, problems) = if is_init {
        init::early_init()
    } else {
        let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let (mut opts, w) = hull_agent::cmdline::parse(&line);
        opts.probe = false;
        (opts, w)
    };
    if opts.probe && is_init {
        println!("{}", hull_protocol::PROBE_OK_MARKER);
        init::power_off();
    }
    logging::init(&opts.log);
    for p in &problems {
        tracing::warn!(problem = %p, "early init");
    }
    // `--listen ADDR` (for running outside a VM); the guest default is vsock, any CID.
    let addr = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| format!("vsock://-1:{}", hull_protocol::AGENT_VSOCK_PORT));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid1 = is_init,
        uptime_ms = hull_agent::ready::uptime_ms(),
        "hull-agent starting"
    );
    loop {
        if let Err(e) = run(&addr) {
            tracing::error!(error = %e, "agent runtime failed; restarting");
        }
        if !is_init {
            std::process::exit(1);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn run(addr: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()));
    rt.block_on(server::serve(addr, runtime))
}
