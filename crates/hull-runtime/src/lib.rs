//! Hull runtime library: a sandbox is one lightweight VM holding containers.
//! The shim and the `hull` CLI are thin layers over what lives here.

pub mod agent;
pub mod assets;
pub mod binaries;
pub mod check;
pub mod config;
pub(crate) mod console;
pub mod container;
pub mod daemon;
pub mod error;
pub mod io;
pub mod mounts;
pub mod owner;
pub mod sandbox;
pub mod sharedfs;
pub mod spec;
pub mod vmm;
pub mod vsock;

pub use config::Config;
pub use error::{Error, Result};
pub use sandbox::{Sandbox, SandboxOptions};

/// The last non-empty line of `text`, trimmed (for one-line error messages).
pub fn tail_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The last `n` non-empty lines of `text`, joined with " | " (for one-line error messages).
pub fn tail_lines(text: &str, n: usize) -> String {
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .take(n)
        .collect();
    lines.reverse();
    lines.join(" | ")
}
