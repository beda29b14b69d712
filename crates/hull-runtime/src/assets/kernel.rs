//! The guest kernel build: Debian's linux-source tarball + tinyconfig + the project's fragment,
//! built once per input key into `<cache_dir>/kernel/<key>/vmlinux` (stripped, PVH-bootable ELF).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::elf::ElfError;
use super::install::copy_atomic;
use super::AssetsError;

/// The kernel config fragment (guest/kernel/hull.config), embedded so the binary is self-contained.
pub const FRAGMENT: &str = include_str!("../../../../guest/kernel/hull.config");

/// File name of the kernel in the cache (and of the build output in the kernel tree).
pub const IMAGE_NAME: &str = "vmlinux";

/// The option lines of `fragment` that `dotconfig` does not honour: a `CONFIG_X=value` line
/// missing from it, or a `# CONFIG_X is not set` line whose option it sets anyway.
pub fn missing_options(fragment: &str, dotconfig: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = dotconfig.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| {
            if l.starts_with("CONFIG_") && l.contains('=') {
                return !have.contains(l);
            }
            match l
                .strip_prefix("# ")
                .and_then(|r| r.strip_suffix(" is not set"))
            {
                Some(name) if name.starts_with("CONFIG_") => {
                    let set = format!("{name}=");
                    have.iter().any(|h| h.starts_with(&set))
                }
                _ => false,
            }
        })
        .map(str::to_string)
        .collect()
}

/// `<cache_dir>/kernel`.
pub fn kernel_cache(cache_dir: &Path) -> PathBuf {
    cache_dir.join("kernel")
}

/// Where the kernel built from `key` is cached.
pub fn cached_image(cache_dir: &Path, key: &str) -> PathBuf {
    kernel_cache(cache_dir).join(key).join(IMAGE_NAME)
}

/// The build log of the kernel with `key`.
pub fn log_path(cache_dir: &Path, key: &str) -> PathBuf {
    kernel_cache(cache_dir).join(format!("{key}.log"))
}

/// Whether `path` is a kernel QEMU can boot through the PVH entry point: an x86-64 ELF
/// executable with a Xen PHYS32_ENTRY note (type 18, name "Xen"). Errors say what is wrong.
pub fn check_vmlinux(path: &Path) -> Result<(), ElfError> {
    super::elf::pvh_entry(path).map(|_| ())
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
    b.run(&tree, "make", &["ARCH=x86_64", &jobs_arg, IMAGE_NAME])?;
    // Symbols and debug info are of no use to the boot and only make QEMU read more.
    let image = tree.join("vmlinux.stripped");
    let image_arg = image.to_string_lossy();
    b.run(
        &tree,
        "strip",
        &["--strip-all", "-o", &image_arg, IMAGE_NAME],
    )?;
    check_vmlinux(&image).map_err(|reason| AssetsError::KernelOutput {
        path: image.clone(),
        reason,
        log: b.log_path.clone(),
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
            "CONFIG_VIRTIO_CONSOLE=y",
            "CONFIG_BLK_DEV_INITRD=y",
        ] {
            assert!(FRAGMENT.lines().any(|l| l == opt), "{opt}");
        }
    }

    #[test]
    fn fragment_boots_through_pvh_without_legacy_ptys() {
        for line in [
            "CONFIG_PVH=y",
            "# CONFIG_LEGACY_PTYS is not set",
            "CONFIG_SERIAL_8250_NR_UARTS=1",
            "CONFIG_SERIAL_8250_RUNTIME_UARTS=1",
        ] {
            assert!(FRAGMENT.lines().any(|l| l == line), "{line}");
        }
    }

    #[test]
    fn missing_options_names_unmet_lines_only() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_NR=64\nCONFIG_C=y\n\
                        # CONFIG_OFF is not set\n# CONFIG_GONE is not set\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_NR=64\n\
                      # CONFIG_OFF is not set\n";
        assert_eq!(
            missing_options(fragment, config),
            vec!["CONFIG_B=y".to_string()]
        );
        let config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_NR=8\nCONFIG_OFF=y\n";
        assert_eq!(
            missing_options(fragment, config),
            vec![
                "CONFIG_NR=64".to_string(),
                "# CONFIG_OFF is not set".to_string()
            ]
        );
        let config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_NR=64\nCONFIG_OFFSET=y\n";
        assert!(missing_options(fragment, config).is_empty());
    }

    #[test]
    fn only_a_pvh_elf_passes_the_kernel_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        std::fs::write(&p, b"short").expect("write");
        let msg = |p: &Path| check_vmlinux(p).expect_err("refused").to_string();
        assert!(msg(&p).contains("not an ELF"));
        std::fs::write(&p, super::super::elf::fake_vmlinux(false)).expect("write");
        assert!(msg(&p).contains("PVH"));
        std::fs::write(&p, super::super::elf::fake_vmlinux(true)).expect("write");
        check_vmlinux(&p).expect("pvh");
        assert!(msg(&dir.path().join("none")).contains("cannot open"));
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
