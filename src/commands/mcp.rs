//! `pyexec mcp`: the run_python tool over MCP on stdio, forwarding each call to a pyexec
//! service's POST /execute. Logs go to stderr; stdout carries the protocol.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;

use super::Result;
use crate::mcp::{self, McpArgs, Remote, RunPython};
use crate::server::guard::ApiToken;

pub async fn run(args: McpArgs) -> Result<()> {
    let token = args.token_file.as_deref().map(ApiToken::read).transpose()?;
    let remote = Remote::new(&args.url, token.as_ref(), Duration::from_secs(args.timeout_seconds))?;
    tracing::info!(url = %args.url, token = token.is_some(), "serving run_python over MCP on stdio");
    let session = RunPython::new(Arc::new(remote))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|err| mcp::Error::Start(Box::new(err)))?;
    session.waiting().await.map_err(mcp::Error::Session)?;
    Ok(())
}
