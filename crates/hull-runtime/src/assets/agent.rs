//! Finding the hull-agent binary that becomes the initrd's /init.
//! Order: an explicit path, else assets.agent, else next to the running executable.

use std::path::{Path, PathBuf};

use super::AssetsError;

/// File name of the agent binary.
pub const AGENT_NAME: &str = "hull-agent";

/// The candidate paths for the agent, in the order they are tried.
///
/// `explicit` (e.g. `--agent`) or a non-empty `configured` path is the only candidate when given.
/// Otherwise: `<exe_dir>/hull-agent` (next to hull), `<exe_dir>/../lib/hull/hull-agent`
/// (an install under a prefix, e.g. /usr/local), and for a cargo build tree where hull is at
/// `<target>/<profile>/hull`, `<target>/x86_64-unknown-linux-musl/release-agent/hull-agent`.
pub fn candidates(explicit: Option<&Path>, configured: &Path, exe: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if !configured.as_os_str().is_empty() {
        return vec![configured.to_path_buf()];
    }
    let Some(dir) = exe.and_then(Path::parent) else {
        return Vec::new();
    };
    let mut out = vec![dir.join(AGENT_NAME)];
    // current_exe() is already resolved, so taking the parent lexically equals `<exe_dir>/..`.
    if let Some(up) = dir.parent() {
        out.push(up.join("lib/hull").join(AGENT_NAME));
        out.push(
            up.join("x86_64-unknown-linux-musl/release-agent")
                .join(AGENT_NAME),
        );
    }
    out
}

/// The first existing regular file among [`candidates`] for the current executable.
pub fn locate(explicit: Option<&Path>, configured: &Path) -> Result<PathBuf, AssetsError> {
    let exe = std::env::current_exe().ok();
    let tried = candidates(explicit, configured, exe.as_deref());
    pick(&tried)
}

fn pick(tried: &[PathBuf]) -> Result<PathBuf, AssetsError> {
    for p in tried {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    let tried = if tried.is_empty() {
        "nothing: the current executable's path is unknown".to_string()
    } else {
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(AssetsError::AgentNotFound { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_config_then_next_to_exe() {
        let exe = Path::new("/opt/hull/bin/hull");
        assert_eq!(
            candidates(Some(Path::new("/a")), Path::new("/b"), Some(exe)),
            vec![PathBuf::from("/a")]
        );
        assert_eq!(
            candidates(None, Path::new("/b"), Some(exe)),
            vec![PathBuf::from("/b")]
        );
        let c = candidates(None, Path::new(""), Some(exe));
        assert_eq!(c[0], PathBuf::from("/opt/hull/bin/hull-agent"));
        assert_eq!(c[1], PathBuf::from("/opt/hull/lib/hull/hull-agent"));
    }

    #[test]
    fn not_found_names_every_path_tried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("bin/hull");
        let tried = candidates(None, Path::new(""), Some(&exe));
        let msg = pick(&tried).expect_err("nothing there").to_string();
        for p in &tried {
            assert!(msg.contains(&p.display().to_string()), "{msg}");
        }
        std::fs::create_dir_all(dir.path().join("lib/hull")).expect("mkdir");
        std::fs::write(dir.path().join("lib/hull/hull-agent"), b"x").expect("write");
        assert_eq!(
            pick(&tried).expect("found"),
            dir.path().join("lib/hull/hull-agent")
        );
    }
}
