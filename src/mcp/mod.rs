//! The MCP server: one tool, `run_python`, that runs a script the way POST /execute does and
//! answers with the same fields as structured content.
//!
//! The tool's arguments are /execute's JSON body (`script`, optional `limits`), and every answer
//! is read from /execute's status and body by one pure function (`answer`). Where the body goes
//! is a `Backend`: over HTTP to a pyexec service (`pyexec mcp`, on stdio), or straight into
//! the serving process's own execution path (`/mcp`, streamable HTTP behind the API's guard).

mod answer;
mod args;
mod backend;
mod handler;
mod http;
mod tool;

pub use answer::{tool_result, HttpAnswer};
pub use args::McpArgs;
pub use backend::{Backend, InProcess, Remote};
pub use handler::RunPython;
pub use http::router;
pub use tool::{run_python_tool, TOOL_NAME};

/// Why the MCP server could not forward a call or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the pyexec URL {0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("could not reach the pyexec service at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the pyexec service's answer: {0}")]
    Answer(#[source] reqwest::Error),
    #[error("encoding the tool's arguments or reading the answer's JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("reading the execution's response: {0}")]
    Respond(#[source] axum::Error),
    #[error("starting the MCP session on stdio: {0}")]
    Start(#[source] Box<rmcp::service::ServerInitializeError>),
    #[error("the MCP session ended abnormally: {0}")]
    Session(#[source] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
