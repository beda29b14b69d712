//! `hull run`.

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `hull run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run `hull run`.
pub fn run(_config: Option<&Path>, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
