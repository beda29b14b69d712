//! `hull run`: one container in a new sandbox VM, attached to this terminal;
//! exits with the container's status, and removes the sandbox on every path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use hull_runtime::{spec, Config, Sandbox, SandboxOptions, Stdio};

use crate::cmd::signals::Signals;
use crate::cmd::tty::RawTerminal;

/// Arguments of `hull run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root filesystem directory to run the command in.
    #[arg(long, conflicts_with = "bundle", required_unless_present = "bundle")]
    rootfs: Option<PathBuf>,
    /// OCI runtime bundle (config.json + rootfs) to run.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Keep stdin open and copy it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal (implies --interactive).
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    cwd: Option<String>,
    /// VM memory in MiB.
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// VM vCPUs.
    #[arg(long)]
    cpus: Option<u32>,
    /// Connect the VM to the one interface of this network namespace (e.g. /var/run/netns/x)
    /// and run it there; default: no network but loopback.
    #[arg(long, value_name = "PATH")]
    netns: Option<std::path::PathBuf>,
    /// Sandbox id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// The command and its arguments (with --rootfs; overrides the bundle's args).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Run `hull run`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    // Before any thread exists: mounts made from here on vanish with this process,
    // and the signals we forward are blocked in every thread we start.
    hull_runtime::enter_private_mount_namespace().context("hull run needs root")?;
    let signals = Signals::block()?;
    let (config, _) = Config::load(config)?;
    let (spec, rootfs) = build_spec(&args)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if let Some(m) = args.memory {
        if !(64..=65536).contains(&m) {
            bail!("--memory {m}: must be 64..=65536 MiB");
        }
    }
    if let Some(c) = args.cpus {
        if !(1..=64).contains(&c) {
            bail!("--cpus {c}: must be 1..=64");
        }
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("run-{}", std::process::id()));
    let opts = SandboxOptions {
        cpus: args.cpus,
        memory_mib: args.memory,
        netns: args.netns.clone(),
        ..SandboxOptions::default()
    };
    let sandbox = Sandbox::create(&config, &id, &opts)?;
    if signals.interrupted() {
        sandbox.stop()?;
        return Ok(ExitCode::from(130));
    }
    let result = run_container(
        &sandbox,
        &id,
        &spec,
        &rootfs,
        terminal,
        args.interactive || args.tty,
        &signals,
    );
    let stopped = sandbox.stop();
    let status = result?;
    stopped?;
    Ok(ExitCode::from(status as u8))
}

fn run_container(
    sandbox: &Sandbox,
    id: &str,
    spec: &oci_spec::runtime::Spec,
    rootfs: &Path,
    terminal: bool,
    interactive: bool,
    signals: &Signals,
) -> anyhow::Result<i32> {
    let container = sandbox.create_container(id, spec, rootfs)?;
    let raw = if terminal { RawTerminal::enter() } else { None };
    let stdio = Stdio {
        stdin: interactive.then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>),
        stdout: Box::new(std::io::stdout()),
        stderr: (!terminal).then(|| Box::new(std::io::stderr()) as Box<dyn std::io::Write + Send>),
    };
    let process = Arc::new(container.start(stdio)?);
    if terminal {
        if let Some((rows, cols)) = crate::cmd::tty::size() {
            let _ = process.resize(rows, cols);
        }
    }
    let forwarder = signals.forward(process.clone(), terminal);
    let exit = process.wait();
    forwarder.stop();
    drop(raw);
    let exit = exit?;
    if let Err(e) = container.remove() {
        tracing::warn!(error = %e, "remove container");
    }
    Ok(exit.status)
}

/// The spec to run and the host rootfs directory.
fn build_spec(args: &Args) -> anyhow::Result<(oci_spec::runtime::Spec, PathBuf)> {
    let (mut spec, rootfs) = match (&args.bundle, &args.rootfs) {
        (Some(bundle), _) => {
            let path = bundle.join("config.json");
            let spec = oci_spec::runtime::Spec::load(&path)
                .map_err(|e| anyhow::anyhow!("invalid bundle {}: {}", path.display(), e))?;
            let root = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_else(|| PathBuf::from("rootfs"));
            let rootfs = if root.is_absolute() {
                root
            } else {
                bundle.join(root)
            };
            (spec, rootfs)
        }
        (None, Some(rootfs)) => {
            if args.command.is_empty() {
                bail!("no command given: hull run --rootfs DIR -- COMMAND [ARGS...]");
            }
            let spec = spec::minimal(args.command.clone(), &[], None, args.tty)?;
            (spec, rootfs.clone())
        }
        (None, None) => bail!("give --rootfs DIR or --bundle DIR"),
    };
    if !rootfs.is_dir() {
        bail!("rootfs {} is not a directory", rootfs.display());
    }
    let mut process = spec.process().clone().unwrap_or_default();
    if args.bundle.is_some() && !args.command.is_empty() {
        process.set_args(Some(args.command.clone()));
    }
    for kv in &args.env {
        if !kv.contains('=') || kv.starts_with('=') {
            bail!("--env {kv:?}: expected KEY=VALUE");
        }
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for kv in &args.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(cwd) = &args.cwd {
        if !cwd.starts_with('/') {
            bail!("--cwd {cwd}: must be an absolute path");
        }
        process.set_cwd(PathBuf::from(cwd));
    }
    if args.tty {
        process.set_terminal(Some(true));
    }
    spec.set_process(Some(process));
    spec::validate(&spec)?;
    Ok((spec, rootfs))
}
