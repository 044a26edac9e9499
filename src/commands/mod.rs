//! The subcommands' bodies; `main.rs` only dispatches.

pub mod controller;
pub mod crd;
pub mod docs;
mod error;
pub mod mcp;
pub mod sandbox;
pub mod serve;

pub use error::{Error, Result};
