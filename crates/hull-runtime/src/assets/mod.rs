//! Guest assets: building, locating and verifying the guest kernel and initrd.
//! `build` makes each only when its input key changed; `verify` is the cheap pre-boot check.

mod agent;
mod elf;
mod error;
mod initrd;
mod install;
mod kernel;
mod key;
mod verify;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::config::AssetsConfig;

pub use agent::{candidates as agent_candidates, locate as locate_agent, AGENT_NAME};
pub use elf::{linkage, pvh_entry, require_static, ElfError, Linkage};
pub use error::AssetsError;
pub use initrd::{write_archive, NEWC_MAGIC};
pub use install::{read_stamp, stamp_path, Stamp};
pub use kernel::{cached_image, check_vmlinux, missing_options, FRAGMENT as KERNEL_FRAGMENT};
pub use key::{initrd_key, kernel_key, source_identity, INITRD_LAYOUT, KERNEL_RECIPE};
pub use verify::{status, verify, verify_initrd, verify_kernel, AssetStatus, Status};

/// Which assets [`build`] considers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Which {
    /// Kernel and initrd.
    #[default]
    Both,
    /// Only the kernel.
    KernelOnly,
    /// Only the initrd.
    InitrdOnly,
}

/// Options of [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The agent binary for the initrd (else assets.agent, else next to the executable).
    pub agent: Option<PathBuf>,
    /// Rebuild even when the installed asset or the cache matches the inputs.
    pub force: bool,
    /// What to build.
    pub which: Which,
    /// Parallel make jobs for the kernel (default: the number of CPUs).
    pub jobs: Option<usize>,
    /// Called with a one-line message before a slow step (e.g. the kernel compile).
    pub progress: Option<fn(&str)>,
}

/// What [`build`] did for one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The installed asset already matched its inputs.
    UpToDate,
    /// Installed from the build cache without compiling.
    FromCache,
    /// Built now and installed.
    Built,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::UpToDate => "up to date",
            Outcome::FromCache => "installed from cache",
            Outcome::Built => "built",
        })
    }
}

/// The result for one asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetReport {
    /// "kernel" or "initrd".
    pub what: &'static str,
    /// Where it is installed.
    pub path: PathBuf,
    /// Its input key.
    pub key: String,
    /// What was done.
    pub outcome: Outcome,
    /// Its size in bytes.
    pub size: u64,
    /// The main input: the kernel source tarball or the agent binary.
    pub input: PathBuf,
    /// Time spent on this asset.
    pub elapsed: Duration,
}

/// The result of [`build`]: one report per asset considered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    /// The kernel, unless only the initrd was asked for.
    pub kernel: Option<AssetReport>,
    /// The initrd, unless only the kernel was asked for.
    pub initrd: Option<AssetReport>,
}

/// Build what is out of date and install it at `cfg.kernel` / `cfg.initrd` (atomically).
///
/// The initrd comes first (seconds, and a missing agent should fail before a long kernel build).
/// Concurrent builds against one cache directory are serialised by a lock file in it.
pub fn build(cfg: &AssetsConfig, opts: &BuildOptions) -> Result<BuildReport, AssetsError> {
    std::fs::create_dir_all(&cfg.cache_dir)
        .map_err(|e| AssetsError::io(format!("create cache dir {}", cfg.cache_dir.display()), e))?;
    let _lock = lock(&cfg.cache_dir, opts)?;
    let mut report = BuildReport::default();
    if opts.which != Which::KernelOnly {
        report.initrd = Some(build_initrd(cfg, opts)?);
    }
    if opts.which != Which::InitrdOnly {
        report.kernel = Some(build_kernel(cfg, opts)?);
    }
    Ok(report)
}

fn lock(cache_dir: &Path, opts: &BuildOptions) -> Result<Flock<std::fs::File>, AssetsError> {
    let path = cache_dir.join("build.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AssetsError::io(format!("open {}", path.display()), e))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(l),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => {
            return Err(AssetsError::io(
                format!("lock {}", path.display()),
                errno.into(),
            ))
        }
    };
    say(
        opts,
        &format!("waiting for another asset build holding {}", path.display()),
    );
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| AssetsError::io(format!("lock {}", path.display()), errno.into()))
}

fn say(opts: &BuildOptions, msg: &str) {
    tracing::info!(message = msg);
    if let Some(p) = opts.progress {
        p(msg);
    }
}

/// Whether `path` is installed, valid and stamped with `key`.
fn up_to_date(path: &Path, key: &str, check: fn(&Path) -> Result<(), AssetsError>) -> Option<u64> {
    let stamp = install::read_stamp(path)?;
    let size = std::fs::metadata(path).ok()?.len();
    (stamp.key == key && stamp.size == size && check(path).is_ok()).then_some(size)
}

fn build_initrd(cfg: &AssetsConfig, opts: &BuildOptions) -> Result<AssetReport, AssetsError> {
    let started = Instant::now();
    let agent = agent::locate(opts.agent.as_deref(), &cfg.agent)?;
    elf::require_static(&agent)?;
    let key = key::initrd_key(&key::sha256_file(&agent)?, key::INITRD_LAYOUT);
    let done = |outcome, size| AssetReport {
        what: "initrd",
        path: cfg.initrd.clone(),
        key: key.clone(),
        outcome,
        size,
        input: agent.clone(),
        elapsed: started.elapsed(),
    };
    if !opts.force {
        if let Some(size) = up_to_date(&cfg.initrd, &key, verify::verify_initrd) {
            tracing::debug!(path = %cfg.initrd.display(), %key, "initrd up to date");
            return Ok(done(Outcome::UpToDate, size));
        }
    }
    let size = install::write_with(&cfg.initrd, 0o644, |f| initrd::write_file(&agent, f))?;
    install::write_stamp(&cfg.initrd, &key, size)?;
    tracing::info!(path = %cfg.initrd.display(), agent = %agent.display(), %key, size, "initrd built");
    Ok(done(Outcome::Built, size))
}

fn build_kernel(cfg: &AssetsConfig, opts: &BuildOptions) -> Result<AssetReport, AssetsError> {
    let started = Instant::now();
    let memo = kernel::kernel_cache(&cfg.cache_dir).join("source-id.json");
    let source_id = key::source_identity(&cfg.kernel_source, &memo)?;
    let key = key::kernel_key(kernel::FRAGMENT, key::KERNEL_RECIPE, &source_id);
    let done = |outcome, size| AssetReport {
        what: "kernel",
        path: cfg.kernel.clone(),
        key: key.clone(),
        outcome,
        size,
        input: cfg.kernel_source.clone(),
        elapsed: started.elapsed(),
    };
    if !opts.force {
        if let Some(size) = up_to_date(&cfg.kernel, &key, verify::verify_kernel) {
            tracing::debug!(path = %cfg.kernel.display(), %key, "kernel up to date");
            return Ok(done(Outcome::UpToDate, size));
        }
    }
    let cached = kernel::cached_image(&cfg.cache_dir, &key);
    let outcome = if !opts.force && kernel::check_vmlinux(&cached).is_ok() {
        Outcome::FromCache
    } else {
        let jobs = opts.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        say(
            opts,
            &format!(
                "kernel: building from {} with {jobs} jobs (about 8 minutes on 2 cores); log: {}",
                cfg.kernel_source.display(),
                kernel::log_path(&cfg.cache_dir, &key).display()
            ),
        );
        kernel::build_into_cache(&cfg.kernel_source, &cfg.cache_dir, &key, jobs)?;
        Outcome::Built
    };
    let size = install::copy_atomic(&cached, &cfg.kernel, 0o644)?;
    install::write_stamp(&cfg.kernel, &key, size)?;
    tracing::info!(path = %cfg.kernel.display(), %key, size, %outcome, secs = started.elapsed().as_secs_f64(), "kernel installed");
    Ok(done(outcome, size))
}

#[cfg(test)]
mod tests;
