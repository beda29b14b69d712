//! `hull assets`: build and inspect the guest kernel and initrd.

use std::path::Path;
use std::process::ExitCode;

/// Subcommands of `hull assets`.
#[derive(Debug, clap::Subcommand)]
pub enum AssetsCommand {
    /// Build the guest kernel and initrd (only what changed).
    Build {},
}

/// Run `hull assets ...`.
pub fn run(_config: Option<&Path>, _cmd: AssetsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
