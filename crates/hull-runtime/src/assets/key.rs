//! Input keys: a sha256 over everything an asset is built from, so "up to date" is a string compare.
//! Also the kernel source tarball's identity, hashed once and remembered by (size, mtime, inode).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AssetsError;

/// Bumped whenever the kernel build recipe (the make steps) changes meaning.
pub const KERNEL_RECIPE: &str =
    "hull-kernel-recipe-2: tinyconfig + merge_config -m + olddefconfig \
     + vmlinux + strip --strip-all (PVH-booted ELF), ARCH=x86_64";
/// Bumped whenever the initrd's layout (dirs, nodes, modes) changes.
pub const INITRD_LAYOUT: &str = "hull-initrd-layout-1";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 over `parts`, each prefixed by its length so that no two part lists collide.
pub fn digest_parts(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// The kernel key: fragment text, recipe version and the source tarball's sha256.
pub fn kernel_key(fragment: &str, recipe: &str, source_sha256: &str) -> String {
    digest_parts(&[
        b"kernel",
        fragment.as_bytes(),
        recipe.as_bytes(),
        source_sha256.as_bytes(),
    ])
}

/// The initrd key: the agent binary's sha256 and the layout version.
pub fn initrd_key(agent_sha256: &str, layout: &str) -> String {
    digest_parts(&[b"initrd", agent_sha256.as_bytes(), layout.as_bytes()])
}

/// sha256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, AssetsError> {
    let mut f =
        File::open(path).map_err(|e| AssetsError::io(format!("open {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| AssetsError::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// What the source-identity memo remembers about a tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceMemo {
    path: String,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

/// The identity of the kernel source tarball: the sha256 of its content.
///
/// A content hash (rather than dpkg's package version) names the real input whatever installed it,
/// and catches a tarball replaced outside dpkg. Hashing 130 MB costs about a second, so the result
/// is remembered in `memo` and reused while the file's size, mtime and inode are unchanged.
/// A memo that cannot be written (read-only cache) only costs a re-hash next time.
pub fn source_identity(tarball: &Path, memo: &Path) -> Result<String, AssetsError> {
    let meta = std::fs::metadata(tarball).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AssetsError::KernelSourceMissing {
            path: tarball.to_path_buf(),
        },
        _ => AssetsError::io(format!("stat {}", tarball.display()), e),
    })?;
    let now = SourceMemo {
        path: tarball.display().to_string(),
        size: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ino: meta.ino(),
        sha256: String::new(),
    };
    if let Some(old) = std::fs::read(memo)
        .ok()
        .and_then(|b| serde_json::from_slice::<SourceMemo>(&b).ok())
    {
        let same_file = SourceMemo {
            sha256: String::new(),
            ..old.clone()
        } == now;
        if same_file && old.sha256.len() == 64 {
            return Ok(old.sha256);
        }
    }
    let sha256 = sha256_file(tarball)?;
    tracing::debug!(tarball = %tarball.display(), %sha256, "hashed kernel source");
    let fresh = SourceMemo {
        sha256: sha256.clone(),
        ..now
    };
    if let Ok(text) = serde_json::to_vec_pretty(&fresh) {
        if let Err(e) = super::install::write_atomic(memo, &text, 0o644) {
            tracing::debug!(memo = %memo.display(), error = %e, "cannot remember kernel source hash");
        }
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_key_changes_with_each_input() {
        let base = kernel_key("CONFIG_A=y\n", KERNEL_RECIPE, "aa");
        assert_eq!(base, kernel_key("CONFIG_A=y\n", KERNEL_RECIPE, "aa"));
        assert_ne!(
            base,
            kernel_key("CONFIG_A=y\nCONFIG_B=y\n", KERNEL_RECIPE, "aa")
        );
        assert_ne!(base, kernel_key("CONFIG_A=y\n", "another recipe", "aa"));
        assert_ne!(base, kernel_key("CONFIG_A=y\n", KERNEL_RECIPE, "ab"));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn initrd_key_changes_with_each_input() {
        let base = initrd_key("aa", INITRD_LAYOUT);
        assert_ne!(base, initrd_key("ab", INITRD_LAYOUT));
        assert_ne!(base, initrd_key("aa", "layout-2"));
        assert_ne!(base, kernel_key("aa", INITRD_LAYOUT, ""));
    }

    #[test]
    fn parts_do_not_collide_by_concatenation() {
        assert_ne!(digest_parts(&[b"ab", b"c"]), digest_parts(&[b"a", b"bc"]));
    }

    #[test]
    fn source_identity_is_content_hash_and_memo_follows_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.tar.xz");
        let memo = dir.path().join("memo.json");
        std::fs::write(&src, b"one").expect("write");
        let one = source_identity(&src, &memo).expect("hash");
        assert_eq!(one, sha256_file(&src).expect("hash"));
        assert!(memo.exists());
        assert_eq!(one, source_identity(&src, &memo).expect("memo hit"));
        std::fs::write(&src, b"two!").expect("rewrite");
        let two = source_identity(&src, &memo).expect("rehash");
        assert_ne!(one, two);
    }

    #[test]
    fn missing_source_says_which_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = source_identity(&dir.path().join("nope.tar.xz"), &dir.path().join("m"))
            .expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("nope.tar.xz") && msg.contains("linux-source-6.1"),
            "{msg}"
        );
    }
}
