//! `hull check`.

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `hull check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run `hull check`.
pub fn run(_config: Option<&Path>, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
