//! Finding the helper programs a sandbox needs (QEMU, virtiofsd, vhost-device-vsock),
//! so a missing one is reported by name before anything is started.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Resolve `prog` (a path, or a name looked up on PATH and in ~/.cargo/bin) to an executable file.
pub fn resolve(name: &'static str, prog: &Path) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = if prog.components().count() > 1 || prog.is_absolute() {
        vec![prog.to_path_buf()]
    } else {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        if let Some(home) = std::env::var_os("HOME") {
            dirs.push(Path::new(&home).join(".cargo/bin"));
        }
        dirs.push(PathBuf::from("/root/.cargo/bin"));
        dirs.into_iter().map(|d| d.join(prog)).collect()
    };
    for c in &candidates {
        if let Ok(m) = std::fs::metadata(c) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(c.clone());
            }
        }
    }
    Err(Error::MissingBinary {
        name,
        path: prog.to_path_buf(),
        reason: "not found or not executable".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_names_missing() {
        assert!(resolve("sh", Path::new("sh")).is_ok());
        let e = resolve("qemu", Path::new("/nonexistent/qemu-system-x86_64")).expect_err("missing");
        assert!(e.to_string().contains("qemu"), "{e}");
    }
}
