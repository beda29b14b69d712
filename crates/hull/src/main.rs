//! `hull`: the operator CLI. Thin: every subcommand calls into hull-runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(name = "hull", version, about = "Hull: containers in lightweight VMs")]
struct Cli {
    /// Config file (default: $HULL_CONFIG, else /etc/hull/config.toml if present, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log filter for hull's own log on stderr (e.g. info, debug, hull_runtime=trace); errors are always reported.
    #[arg(long, global = true, env = "HULL_LOG", default_value = "off")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what this host can do: accelerator, QEMU, vsock backend, virtiofsd, guest assets.
    Check(cmd::check::Args),
    /// Print the effective configuration and versions.
    Env(cmd::env::Args),
    /// Build or inspect the guest kernel and initrd.
    #[command(subcommand)]
    Assets(cmd::assets::AssetsCommand),
    /// Run a command or an OCI bundle in a new VM sandbox.
    Run(cmd::run::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Check(a) => cmd::check::run(cli.config.as_deref(), a),
        Command::Env(a) => cmd::env::run(cli.config.as_deref(), a),
        Command::Assets(a) => cmd::assets::run(cli.config.as_deref(), a),
        Command::Run(a) => cmd::run::run(cli.config.as_deref(), a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hull: {}", one_line(&e));
            ExitCode::from(125)
        }
    }
}

/// One readable line: the error and its causes joined by ": ".
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " | ")
}
