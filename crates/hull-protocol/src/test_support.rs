//! What Hull's tests need from the host (root, busybox-static, ...): a test whose
//! requirement is missing fails, unless `HULL_TEST_ALLOW_SKIP=1` lets it skip with a message.

use std::path::{Path, PathBuf};

/// Set to `1` to let tests skip (and pass) when the host lacks what they need.
pub const ALLOW_SKIP_ENV: &str = "HULL_TEST_ALLOW_SKIP";

/// Whether the test can go on: true when `have`; otherwise it fails naming `need`, or, with
/// `HULL_TEST_ALLOW_SKIP=1`, says it is skipped and returns false (the test then returns).
pub fn require(have: bool, need: &str) -> bool {
    if have {
        return true;
    }
    if std::env::var_os(ALLOW_SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("skipped: needs {need} ({ALLOW_SKIP_ENV}=1)");
        return false;
    }
    panic!("this test needs {need}; provide it, or set {ALLOW_SKIP_ENV}=1 to skip such tests");
}

/// [`require`] root.
pub fn require_root() -> bool {
    require(nix::unistd::Uid::effective().is_root(), "root")
}

/// [`require`] that `path` exists; `what` says which package provides it.
pub fn require_file(path: &Path, what: &str) -> bool {
    require(path.exists(), &format!("{} ({what})", path.display()))
}

/// Where the C virtiofsd writes `<socket path with '/' turned into '.'>.pid` when it is given
/// `--socket-path` (and never removes it); Hull passes `--fd`, so a leak check finds none.
pub const VIRTIOFSD_PID_DIR: &str = "/run/virtiofsd";

/// virtiofsd pid files that name a socket at or below `dir` (a sandbox's run directory).
pub fn virtiofsd_pid_files(dir: &Path) -> Vec<PathBuf> {
    let mangled = format!(
        "{}.",
        dir.to_string_lossy()
            .trim_end_matches('/')
            .replace('/', ".")
    );
    std::fs::read_dir(VIRTIOFSD_PID_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&mangled))
        .map(|e| e.path())
        .collect()
}
