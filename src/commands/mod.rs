//! The subcommands' bodies; `main.rs` only dispatches.

pub mod controller;
pub mod crd;
pub mod sandbox;
pub mod serve;
