//! Cheap checks of the installed assets, run before every VM boot, and the status report
//! behind `hull check` and `hull assets status`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::initrd::NEWC_MAGIC;
use super::install::{read_stamp, Stamp};
use super::kernel::check_vmlinux;
use super::AssetsError;
use crate::config::AssetsConfig;

/// Check that `path` is an x86-64 ELF executable with a PVH entry note (Xen ELF note type 18,
/// name "Xen"), which QEMU boots directly; errors name the file and say to run `hull assets build`.
pub fn verify_kernel(path: &Path) -> Result<(), AssetsError> {
    check_asset("kernel", path, check_vmlinux)
}

/// Check that `path` starts with the newc magic; errors name the file and say to run `hull assets build`.
pub fn verify_initrd(path: &Path) -> Result<(), AssetsError> {
    check_asset("initrd", path, check_newc)
}

/// Why a file is not an initrd Hull can boot.
#[derive(Debug, thiserror::Error)]
enum NewcError {
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    #[error("too short to be a cpio archive")]
    TooShort,
    #[error("not an uncompressed cpio newc archive (no \"070701\" magic)")]
    NoMagic,
}

fn check_newc(path: &Path) -> Result<(), NewcError> {
    let mut f = File::open(path).map_err(NewcError::Open)?;
    let mut magic = [0u8; 6];
    f.read_exact(&mut magic).map_err(|_| NewcError::TooShort)?;
    if &magic != NEWC_MAGIC {
        return Err(NewcError::NoMagic);
    }
    Ok(())
}

fn check_asset<E: std::fmt::Display>(
    what: &'static str,
    path: &Path,
    check: fn(&Path) -> Result<(), E>,
) -> Result<(), AssetsError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AssetsError::Missing {
            what,
            path: path.to_path_buf(),
        }),
        Err(e) => Err(AssetsError::io(
            format!("stat guest {what} {}", path.display()),
            e,
        )),
        Ok(m) if !m.is_file() => Err(AssetsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        }),
        Ok(_) => check(path).map_err(|reason| AssetsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }),
    }
}

/// The cheap checks used before every VM boot: the kernel is a PVH-bootable ELF vmlinux and the
/// initrd a newc archive.
pub fn verify(cfg: &AssetsConfig) -> Result<(), AssetsError> {
    verify_kernel(&cfg.kernel)?;
    verify_initrd(&cfg.initrd)
}

/// The state of one installed asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetStatus {
    /// "kernel" or "initrd".
    pub what: &'static str,
    /// Where it is installed.
    pub path: PathBuf,
    /// Its size, when it exists.
    pub size: Option<u64>,
    /// Why it is unusable, or None when it passes [`verify`]'s checks.
    pub problem: Option<String>,
    /// What `hull assets build` recorded when it installed it (None if installed some other way).
    pub stamp: Option<Stamp>,
}

impl AssetStatus {
    /// Present and valid.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }

    /// The input key it was built from, if known and the file is still the one that was stamped.
    pub fn key(&self) -> Option<&str> {
        match (&self.stamp, self.size) {
            (Some(s), Some(size)) if s.size == size => Some(&s.key),
            _ => None,
        }
    }
}

/// The state of the guest assets.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The guest kernel.
    pub kernel: AssetStatus,
    /// The initrd.
    pub initrd: AssetStatus,
    /// The kernel source tarball and whether it exists.
    pub kernel_source: (PathBuf, bool),
    /// The build cache directory.
    pub cache_dir: PathBuf,
}

fn asset_status(
    what: &'static str,
    path: &Path,
    check: fn(&Path) -> Result<(), AssetsError>,
) -> AssetStatus {
    AssetStatus {
        what,
        path: path.to_path_buf(),
        size: std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()),
        problem: check(path).err().map(|e| e.to_string()),
        stamp: read_stamp(path),
    }
}

/// Paths, sizes, validity and recorded keys of the installed assets. Reads only small files.
pub fn status(cfg: &AssetsConfig) -> Status {
    Status {
        kernel: asset_status("kernel", &cfg.kernel, verify_kernel),
        initrd: asset_status("initrd", &cfg.initrd, verify_initrd),
        kernel_source: (cfg.kernel_source.clone(), cfg.kernel_source.is_file()),
        cache_dir: cfg.cache_dir.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> AssetsConfig {
        AssetsConfig {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initrd.img"),
            kernel_source: dir.join("src.tar.xz"),
            cache_dir: dir.join("cache"),
            agent: PathBuf::new(),
        }
    }

    fn good_kernel() -> Vec<u8> {
        super::super::elf::fake_vmlinux(true)
    }

    fn bzimage() -> Vec<u8> {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    #[test]
    fn missing_assets_are_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        let msg = verify(&c).expect_err("missing").to_string();
        assert!(
            msg.contains("vmlinux")
                && msg.contains("does not exist")
                && msg.contains("hull assets build"),
            "{msg}"
        );
        std::fs::write(&c.kernel, good_kernel()).expect("write");
        let msg = verify(&c).expect_err("missing initrd").to_string();
        assert!(
            msg.contains("initrd.img") && msg.contains("hull assets build"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_or_garbage_kernel_is_rejected_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        std::fs::write(&c.initrd, b"070701rest").expect("write");
        let good = good_kernel();
        for (bad, why) in [
            (&good[..good.len() - 3], "past the end"),
            (&good[..100], "truncated program header table"),
            (b"garbage garbage".as_slice(), "not an ELF file"),
            (&[0u8; 4096][..], "not an ELF file"),
            (&bzimage()[..], "not a bzImage"),
            (
                &super::super::elf::fake_vmlinux(false)[..],
                "no PVH entry note",
            ),
        ] {
            std::fs::write(&c.kernel, bad).expect("write");
            let msg = verify(&c).expect_err("bad kernel").to_string();
            assert!(
                msg.starts_with(&format!(
                    "guest kernel {} is not usable: ",
                    c.kernel.display()
                )) && msg.contains(why)
                    && msg.ends_with("; run `hull assets build`"),
                "{msg}"
            );
        }
        std::fs::write(&c.kernel, good_kernel()).expect("write");
        verify(&c).expect("valid");
    }

    #[test]
    fn truncated_gzipped_or_garbage_initrd_is_rejected_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        std::fs::write(&c.kernel, good_kernel()).expect("write");
        for bad in [&b"0707"[..], &b"\x1f\x8b\x08\x00gzip"[..], &b""[..]] {
            std::fs::write(&c.initrd, bad).expect("write");
            let msg = verify(&c).expect_err("bad initrd").to_string();
            assert!(
                msg.contains(&c.initrd.display().to_string()) && msg.contains("hull assets build"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_directory_is_not_a_kernel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = verify_kernel(dir.path()).expect_err("dir").to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
    }

    #[test]
    fn status_reports_presence_validity_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        let s = status(&c);
        assert!(!s.kernel.ok() && s.kernel.size.is_none() && s.kernel.key().is_none());
        let k = good_kernel();
        std::fs::write(&c.kernel, &k).expect("write");
        super::super::install::write_stamp(&c.kernel, "kkey", k.len() as u64).expect("stamp");
        let s = status(&c);
        assert!(s.kernel.ok());
        assert_eq!(s.kernel.key(), Some("kkey"));
        assert!(!s.initrd.ok());
        assert!(!s.kernel_source.1);
    }
}
