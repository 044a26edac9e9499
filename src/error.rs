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
    #[error(transparent)]
    Kube(#[from] crate::executor::kube::KubeExecutorError),
    #[error(transparent)]
    Controller(#[from] crate::controller::Error),
    #[error(transparent)]
    Crd(#[from] crate::crd::CrdError),
    #[error("writing the CRD to stdout: {0}")]
    WriteCrd(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `err` and its chain of sources, each cause that the message before it does not already
/// quote appended after ": ", for logs and the command line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        let message = source.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let quiet = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&quiet), "outer: disk on fire");
        let quoting = Error::Serve(std::io::Error::other("address in use"));
        assert_eq!(chain(&quoting), "serving HTTP: address in use");
    }
}
