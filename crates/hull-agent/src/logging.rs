//! Agent logging: tracing events to the console (stderr), one line each, every line prefixed
//! with `hull-agent:` so it stands out in the host's copy of the guest console.

use std::io::Write;
use tracing_subscriber::EnvFilter;

/// The prefix of every agent log line on the console.
pub const PREFIX: &[u8] = b"hull-agent: ";

/// A writer that prepends [`PREFIX`] to every formatted event (the fmt layer writes one event
/// per `write` call) and writes it to stderr in one go.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut line = Vec::with_capacity(PREFIX.len() + buf.len());
        line.extend_from_slice(PREFIX);
        line.extend_from_slice(buf);
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Install the global subscriber; `level` is a tracing filter such as `info` or `hull_agent=debug`.
pub fn init(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(|| ConsoleWriter)
        .try_init();
}
