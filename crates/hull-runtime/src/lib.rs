//! Hull runtime library: a sandbox is one lightweight VM holding containers.
//! The shim and the `hull` CLI are thin layers over what lives here.

pub mod config;

pub use config::Config;
pub mod assets;
