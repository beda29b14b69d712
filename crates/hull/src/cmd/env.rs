//! `hull env`: the effective configuration (as TOML) and the versions of Hull and its helpers.

use std::path::Path;
use std::process::ExitCode;

use hull_runtime::check::version_of;
use hull_runtime::{binaries, Config};

/// Arguments of `hull env`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the built-in defaults with their comments instead.
    #[arg(long)]
    default: bool,
}

/// Run `hull env`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    if args.default {
        print!("{}", hull_runtime::config::DEFAULT_TOML);
        return Ok(ExitCode::SUCCESS);
    }
    let (config, path) = Config::load(config)?;
    println!("# hull {}", env!("CARGO_PKG_VERSION"));
    match &path {
        Some(p) => println!("# config file: {}", p.display()),
        None => println!("# config file: none (built-in defaults)"),
    }
    let version = |name: &'static str, p: &Path, flag: &str| match binaries::resolve(name, p) {
        Ok(found) => format!("{} ({})", version_of(&found, flag), found.display()),
        Err(_) => "not found".to_string(),
    };
    println!(
        "# qemu: {}",
        version("qemu", &config.hypervisor.qemu, "--version")
    );
    println!(
        "# vhost-device-vsock: {}",
        version(
            "vhost-device-vsock",
            &config.vsock.vhost_device_vsock,
            "--version"
        )
    );
    println!(
        "# virtiofsd: {}",
        version("virtiofsd", &config.shared_fs.virtiofsd, "--version")
    );
    println!();
    print!("{}", config.to_toml());
    Ok(ExitCode::SUCCESS)
}
