//! What the runtime's integration tests need from the host: a test whose requirement is
//! missing fails, unless `HULL_TEST_ALLOW_SKIP=1` lets it skip with a message.

pub use hull_protocol::test_support::require_root;
