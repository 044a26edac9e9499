//! The MCP server handler: lists the one tool and answers its calls through a `Backend`.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::tool::{run_python_tool, TOOL_NAME};
use super::{tool_result, Backend};

const INSTRUCTIONS: &str = "pyexec runs untrusted Python in a sandbox. Call run_python with a script \
that defines main() returning a dict; the answer is main()'s dict with the script's output.";

/// The `run_python` tool, served over any MCP transport.
#[derive(Clone)]
pub struct RunPython {
    backend: Arc<dyn Backend>,
}

impl RunPython {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        RunPython { backend }
    }
}

impl ServerHandler for RunPython {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pyexec", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![run_python_tool()]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == TOOL_NAME).then(run_python_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != TOOL_NAME {
            let message = format!("unknown tool {:?}: this server has one, {TOOL_NAME}", request.name);
            return Err(ErrorData::invalid_params(message, None));
        }
        let result = match self.backend.execute(request.arguments.unwrap_or_default()).await {
            Ok(answer) => tool_result(answer),
            Err(err) => {
                let message = crate::telemetry::chain(&err);
                tracing::warn!(error = %message, "run_python could not be carried out");
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
        };
        Ok(result.into())
    }
}
