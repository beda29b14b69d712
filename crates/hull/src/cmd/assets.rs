//! `hull assets`: build and inspect the guest kernel and initrd.
//! A thin layer over `hull_runtime::assets`: options in, one line per asset out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hull_runtime::assets::{self, AssetReport, AssetStatus, BuildOptions, Which};
use hull_runtime::Config;

/// Subcommands of `hull assets`.
#[derive(Debug, clap::Subcommand)]
pub enum AssetsCommand {
    /// Build the guest kernel and initrd (only what changed) and install them.
    Build {
        /// Static hull-agent binary for the initrd (default: assets.agent, else next to hull).
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
        /// Rebuild even if the installed assets and the cache match their inputs.
        #[arg(long)]
        force: bool,
        /// Only the kernel.
        #[arg(long, conflicts_with = "initrd_only")]
        kernel_only: bool,
        /// Only the initrd.
        #[arg(long)]
        initrd_only: bool,
        /// Parallel make jobs for the kernel (default: number of CPUs).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
    },
    /// Show the installed assets: paths, sizes, validity, input keys.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Run `hull assets ...`.
pub fn run(config: Option<&Path>, cmd: AssetsCommand) -> anyhow::Result<ExitCode> {
    let (config, _) = Config::load(config)?;
    match cmd {
        AssetsCommand::Build {
            agent,
            force,
            kernel_only,
            initrd_only,
            jobs,
        } => {
            let which = match (kernel_only, initrd_only) {
                (true, _) => Which::KernelOnly,
                (_, true) => Which::InitrdOnly,
                _ => Which::Both,
            };
            let opts = BuildOptions {
                agent,
                force,
                which,
                jobs,
                progress: Some(progress),
            };
            let report = assets::build(&config.assets, &opts).context("hull assets build")?;
            for r in [report.initrd, report.kernel].iter().flatten() {
                println!("{}", build_line(r));
            }
            Ok(ExitCode::SUCCESS)
        }
        AssetsCommand::Status { json } => {
            let s = assets::status(&config.assets);
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", status_line(&s.kernel));
                println!("{}", status_line(&s.initrd));
                let (src, present) = &s.kernel_source;
                println!(
                    "kernel source  {} ({})",
                    src.display(),
                    if *present {
                        "present"
                    } else {
                        "missing: apt-get install linux-source-6.1"
                    }
                );
                println!("cache          {}", s.cache_dir.display());
            }
            Ok(if s.kernel.ok() && s.initrd.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn progress(msg: &str) {
    eprintln!("hull: {msg}");
}

fn short(key: &str) -> &str {
    key.get(..16).unwrap_or(key)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn build_line(r: &AssetReport) -> String {
    format!(
        "{:<6} {:<20} {}  key {}  {}  {:.1}s",
        r.what,
        r.outcome.to_string(),
        r.path.display(),
        short(&r.key),
        mib(r.size),
        r.elapsed.as_secs_f64()
    )
}

fn status_line(a: &AssetStatus) -> String {
    let state = match (&a.problem, a.size) {
        (None, _) => "ok",
        (Some(_), None) => "missing",
        (Some(_), Some(_)) => "invalid",
    };
    let mut line = format!("{:<6} {:<8} {}", a.what, state, a.path.display());
    if let Some(size) = a.size {
        line.push_str(&format!("  {}", mib(size)));
    }
    match a.key() {
        Some(k) => line.push_str(&format!("  key {}", short(k))),
        None if a.size.is_some() => {
            line.push_str("  key unknown (not installed by `hull assets build`)")
        }
        None => {}
    }
    if let Some(p) = &a.problem {
        line.push_str(&format!("\n       {p}"));
    }
    line
}
