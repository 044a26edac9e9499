//! pyexec: runs untrusted Python scripts in a sandbox and returns what `main()` returned.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod controller;
pub mod crd;
pub mod executions;
pub mod executor;
pub mod health;
pub mod kube_client;
pub mod mcp;
pub mod metrics;
pub mod sandbox;
pub mod server;
pub mod telemetry;
