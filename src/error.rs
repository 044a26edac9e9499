//! Errors that stop a command from starting or running.

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
    #[error("connecting to Kubernetes: {0}")]
    Kube(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
