//! Shim logging: tracing events with structured fields, written to the `log` FIFO containerd
//! opened in the bundle directory (so they appear in containerd's log), else to stderr.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Set up logging for the serving shim. `HULL_LOG` overrides the level (default info, or
/// debug when containerd runs with debug logging).
pub fn init(debug: bool, namespace: &str, id: &str) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("HULL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // containerd holds the FIFO's read end; read-write here means opening never blocks.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let installed = match OpenOptions::new().read(true).write(true).open("log") {
        Ok(f) => builder.with_writer(Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
    if installed.is_ok() {
        tracing::info!(
            namespace,
            id,
            version = env!("CARGO_PKG_VERSION"),
            "hull shim serving"
        );
    }
}
