//! What these tests need from the host: a test whose requirement is missing fails, unless
//! `HULL_TEST_ALLOW_SKIP=1` lets it skip with a message (see hull_protocol::test_support).

// Each test binary uses a different part of this.
#[allow(unused_imports)]
pub use hull_protocol::test_support::{require, require_root, ALLOW_SKIP_ENV};
