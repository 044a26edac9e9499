//! The subcommands' bodies; `main.rs` only dispatches.

pub mod controller;
pub mod crd;
mod error;
pub mod sandbox;
pub mod serve;

pub use error::{Error, Result};
