//! The subcommands' bodies; `main.rs` only dispatches.

pub mod sandbox;
pub mod serve;
