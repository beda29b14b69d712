//! `hull check`: report what this host can do; exit 1 if a sandbox cannot run here.

use std::path::Path;
use std::process::ExitCode;

use hull_runtime::Config;

/// Arguments of `hull check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run `hull check`.
pub fn run(config: Option<&Path>, _args: Args) -> anyhow::Result<ExitCode> {
    let (config, _) = Config::load(config)?;
    let items = hull_runtime::check::run(&config);
    for i in &items {
        println!(
            "{:<13} {:<4} {}",
            i.name,
            if i.ok { "ok" } else { "FAIL" },
            i.detail
        );
    }
    Ok(if items.iter().all(|i| i.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
