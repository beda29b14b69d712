//! The subcommands, one file each.

pub mod assets;
pub mod check;
pub mod env;
pub mod run;
pub mod signals;
pub mod tty;
