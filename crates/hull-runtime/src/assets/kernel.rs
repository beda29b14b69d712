//! The guest kernel build: Debian's linux-source tarball + tinyconfig + the project's fragment,
//! built once per input key into `<cache_dir>/kernel/<key>/bzImage`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::install::copy_atomic;
use super::AssetsError;

/// The kernel config fragment (guest/kernel/hull.config), embedded so the binary is self-contained.
pub const FRAGMENT: &str = include_str!("../../../../guest/kernel/hull.config");

/// Offset and value of the bzImage setup header magic.
pub const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
/// The bzImage setup header magic.
pub const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";

/// The `CONFIG_X=y` lines of `fragment` that `dotconfig` does not contain.
pub fn missing_options(fragment: &str, dotconfig: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = dotconfig.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y"))
        .filter(|l| !have.contains(l))
        .map(str::to_string)
        .collect()
}

/// `<cache_dir>/kernel`.
pub fn kernel_cache(cache_dir: &Path) -> PathBuf {
    cache_dir.join("kernel")
}

/// Where the bzImage built from `key` is cached.
pub fn cached_image(cache_dir: &Path, key: &str) -> PathBuf {
    kernel_cache(cache_dir).join(key).join("bzImage")
}

/// The build log of the kernel with `key`.
pub fn log_path(cache_dir: &Path, key: &str) -> PathBuf {
    kernel_cache(cache_dir).join(format!("{key}.log"))
}

/// Whether `path` starts like a bzImage ("HdrS" at 0x202). Errors say what is wrong.
pub fn check_bzimage(path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut magic = [0u8; 4];
    f.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))
        .and_then(|_| f.read_exact(&mut magic))
        .map_err(|_| "too short to be a bzImage".to_string())?;
    if &magic != BZIMAGE_MAGIC {
        return Err("not a bzImage (no \"HdrS\" magic at offset 0x202)".to_string());
    }
    Ok(())
}

/// Removes the (>1 GB) build tree however the build ends.
#[derive(Debug)]
struct BuildDir(PathBuf);

impl Drop for BuildDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove kernel build tree");
            }
        }
    }
}

/// One kernel build: its log and where it runs.
#[derive(Debug)]
struct Builder {
    log_path: PathBuf,
    log: File,
}

impl Builder {
    /// Run one step with its output appended to the log; on failure the error has the log's tail.
    fn run(&mut self, cwd: &Path, program: &str, args: &[&str]) -> Result<(), AssetsError> {
        let step = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(self.log, "\n==> [{}] {step}", cwd.display());
        let io = |e| AssetsError::io(format!("write {}", self.log_path.display()), e);
        let out = self.log.try_clone().map_err(io)?;
        let err = self.log.try_clone().map_err(io)?;
        tracing::info!(%step, cwd = %cwd.display(), "kernel build step");
        let started = std::time::Instant::now();
        let status = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("LC_ALL", "C")
            .env("KBUILD_BUILD_USER", "hull")
            .env("KBUILD_BUILD_HOST", "hull")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .status()
            .map_err(|e| AssetsError::io(format!("run {program}"), e))?;
        tracing::info!(%step, secs = started.elapsed().as_secs_f64(), %status, "kernel build step done");
        if status.success() {
            return Ok(());
        }
        Err(AssetsError::BuildStep {
            step,
            status: status.to_string(),
            log: self.log_path.clone(),
            tail: log_tail(&self.log_path),
        })
    }
}

/// The last lines of a log file, on one line (reads only its end).
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    crate::tail_lines(&String::from_utf8_lossy(&buf), 12)
}

/// The one directory a tarball extracted into `dir`.
fn source_root(dir: &Path) -> Result<PathBuf, AssetsError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| AssetsError::io(format!("list {}", dir.display()), e))?;
    let dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Makefile").is_file())
        .collect();
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(AssetsError::io(
            format!("find the kernel tree in {}", dir.display()),
            std::io::Error::other("expected exactly one top-level directory with a Makefile"),
        )),
    }
}

/// Remove build trees an interrupted earlier build left behind. Only called with the cache lock
/// held (see `assets::build`), so no other build can be using them.
fn remove_stale_trees(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with("build-") {
            tracing::info!(dir = %e.path().display(), "removing stale kernel build tree");
            drop(BuildDir(e.path()));
        }
    }
}

/// Build the kernel for `key` from `source` and leave it at [`cached_image`]. Streams all output
/// to [`log_path`]; the build tree lives under the cache dir and is removed however this ends.
pub fn build_into_cache(
    source: &Path,
    cache_dir: &Path,
    key: &str,
    jobs: usize,
) -> Result<PathBuf, AssetsError> {
    let root = kernel_cache(cache_dir);
    let short = key.get(..16).unwrap_or(key);
    let build = BuildDir(root.join(format!("build-{short}")));
    remove_stale_trees(&root);
    std::fs::create_dir_all(&build.0)
        .map_err(|e| AssetsError::io(format!("create {}", build.0.display()), e))?;
    let log_path = log_path(cache_dir, key);
    let log = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&log_path)
        .map_err(|e| AssetsError::io(format!("create {}", log_path.display()), e))?;
    let mut b = Builder { log_path, log };
    let source_arg = source.to_string_lossy();
    b.run(&build.0, "tar", &["-xf", &source_arg])?;
    let tree = source_root(&build.0)?;
    let fragment = build.0.join("hull.config");
    std::fs::write(&fragment, FRAGMENT)
        .map_err(|e| AssetsError::io(format!("write {}", fragment.display()), e))?;
    let fragment_arg = fragment.to_string_lossy();
    b.run(&tree, "make", &["ARCH=x86_64", "tinyconfig"])?;
    b.run(
        &tree,
        "scripts/kconfig/merge_config.sh",
        &["-m", ".config", &fragment_arg],
    )?;
    b.run(&tree, "make", &["ARCH=x86_64", "olddefconfig"])?;
    let dotconfig = tree.join(".config");
    let config = std::fs::read_to_string(&dotconfig)
        .map_err(|e| AssetsError::io(format!("read {}", dotconfig.display()), e))?;
    let missing = missing_options(FRAGMENT, &config);
    if !missing.is_empty() {
        return Err(AssetsError::KernelConfig { missing });
    }
    let jobs_arg = format!("-j{}", jobs.max(1));
    b.run(&tree, "make", &["ARCH=x86_64", &jobs_arg, "bzImage"])?;
    let image = tree.join("arch/x86/boot/bzImage");
    check_bzimage(&image).map_err(|reason| AssetsError::Invalid {
        what: "kernel",
        path: image.clone(),
        reason,
    })?;
    let cached = cached_image(cache_dir, key);
    copy_atomic(&image, &cached, 0o644)?;
    Ok(cached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_is_embedded_and_has_the_essentials() {
        for opt in [
            "CONFIG_VIRTIO_VSOCKETS=y",
            "CONFIG_VIRTIO_FS=y",
            "CONFIG_BLK_DEV_INITRD=y",
        ] {
            assert!(FRAGMENT.lines().any(|l| l == opt), "{opt}");
        }
    }

    #[test]
    fn missing_options_names_only_absent_y_lines() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_NR=64\nCONFIG_C=y\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n";
        assert_eq!(
            missing_options(fragment, config),
            vec!["CONFIG_B=y".to_string()]
        );
        assert!(missing_options(fragment, "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y").is_empty());
    }

    #[test]
    fn bzimage_magic_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        std::fs::write(&p, b"short").expect("write");
        assert!(check_bzimage(&p).expect_err("short").contains("too short"));
        let mut img = vec![0u8; 0x300];
        std::fs::write(&p, &img).expect("write");
        assert!(check_bzimage(&p).expect_err("garbage").contains("HdrS"));
        img[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(&p, &img).expect("write");
        check_bzimage(&p).expect("magic");
    }

    #[test]
    fn failed_step_error_has_log_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("x.log");
        let log = File::create(&log_path).expect("log");
        let mut b = Builder {
            log_path: log_path.clone(),
            log,
        };
        let e = b
            .run(
                dir.path(),
                "sh",
                &["-c", "echo compiling; echo 'error: boom' >&2; exit 3"],
            )
            .expect_err("fails");
        let msg = e.to_string();
        assert!(
            msg.contains("error: boom") && msg.contains("x.log") && msg.contains("exit status: 3"),
            "{msg}"
        );
    }

    #[test]
    fn missing_tarball_fails_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join("kernel/build-0123456789abcdef/linux");
        std::fs::create_dir_all(&stale).expect("stale tree");
        let e = build_into_cache(&dir.path().join("none.tar.xz"), dir.path(), "k", 1)
            .expect_err("no source");
        assert!(e.to_string().contains("tar -xf"), "{e}");
        assert!(!dir.path().join("kernel/build-k").exists());
        assert!(!dir.path().join("kernel/build-0123456789abcdef").exists());
    }
}
