//! The tool over streamable HTTP, mounted at /mcp beside the API. Stateless: every request is
//! answered on its own (no session to keep), with JSON rather than an event stream. Host and
//! Origin are checked by the API's guard in front of it, with the bearer token.

use std::sync::Arc;

use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::{InProcess, RunPython};
use crate::server::AppState;

/// Room for the JSON-RPC envelope around a request body of the API's largest size.
const ENVELOPE_BYTES: usize = 64 << 10;

/// The /mcp route, running scripts through the service's own execution path.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let max_request_bytes = state.max_request_bytes + ENVELOPE_BYTES;
    let handler = RunPython::new(Arc::new(InProcess::new(state)));
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(max_request_bytes)
        // The API's guard decides both, for every route alike (src/server/guard.rs).
        .disable_allowed_hosts()
        .disable_allowed_origins();
    let service =
        StreamableHttpService::new(move || Ok(handler.clone()), Arc::new(LocalSessionManager::default()), config);
    Router::new().nest_service("/mcp", service)
}
