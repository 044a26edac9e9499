//! The settings of `pyexec mcp`, parsed once by clap.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct McpArgs {
    /// Base URL of the pyexec service whose POST /execute runs the tool's scripts.
    #[arg(long, env = "PYEXEC_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File holding the service's bearer token (the one its --api-token-file holds); read once at
    /// start-up, one trailing newline ignored.
    #[arg(long, env = "PYEXEC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Seconds one call to the service may take (above its largest wall-clock limit, 60 s, with
    /// room for a queue).
    #[arg(long, env = "PYEXEC_MCP_TIMEOUT_SECONDS", default_value_t = 120)]
    pub timeout_seconds: u64,
}
