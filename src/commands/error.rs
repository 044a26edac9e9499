//! Errors that stop a command from starting or running: one type for the commands' layer, each
//! variant keeping the error it wraps as its source.

use crate::sandbox::SandboxError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("invalid limit settings: {0}")]
    Limits(#[from] crate::sandbox::limits::LimitError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error("reading the script from {path}: {source}")]
    ReadScript {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the envelope: {0}")]
    WriteEnvelope(#[source] std::io::Error),
    #[error(transparent)]
    ApiToken(#[from] crate::server::guard::TokenError),
    #[error("opening the executions store (--state-dir): {0}")]
    Executions(#[from] crate::executions::StoreError),
    #[error(transparent)]
    Kube(#[from] crate::executor::kube::KubeExecutorError),
    #[error(transparent)]
    Controller(#[from] crate::controller::Error),
    #[error(transparent)]
    Crd(#[from] crate::crd::CrdError),
    #[error(transparent)]
    Mcp(#[from] crate::mcp::Error),
    #[error("writing the CRD to stdout: {0}")]
    WriteCrd(#[source] std::io::Error),
    #[error("writing the reference page to stdout: {0}")]
    WriteReference(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::telemetry::chain;

    #[test]
    fn an_error_that_quotes_its_cause_is_printed_without_repeating_it() {
        let quoting = Error::Serve(std::io::Error::other("address in use"));
        assert_eq!(chain(&quoting), "serving HTTP: address in use");
    }
}
