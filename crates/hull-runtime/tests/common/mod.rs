//! What the runtime's integration tests need from the host: a test whose requirement is
//! missing fails, unless `HULL_TEST_ALLOW_SKIP=1` lets it skip with a message.

/// Whether the test may go on as root: true as root; otherwise it fails, or with
/// `HULL_TEST_ALLOW_SKIP=1` says it is skipped and returns false (the test then returns).
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("HULL_TEST_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped: needs root (HULL_TEST_ALLOW_SKIP=1)");
        return false;
    }
    panic!("this test needs root; provide it, or set HULL_TEST_ALLOW_SKIP=1 to skip such tests");
}
