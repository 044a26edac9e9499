//! Where a script runs: the `Executor` trait and its placements.

mod abandoned;
pub mod kube;
pub mod local;
mod places;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::sandbox::{Envelope, Limits};

pub use self::kube::KubeExecutor;
pub use local::LocalExecutor;

/// One script to run, with the limits already resolved.
#[derive(Clone, Debug)]
pub struct ExecutionRequest {
    /// Unique id of the execution, used in logs, metrics and resource names.
    pub id: String,
    pub script: String,
    pub limits: Limits,
}

/// Why an execution could not be carried out (a script's own failure is an envelope, not this).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("too many executions are queued; retry in {retry_after_seconds} s")]
    Busy { retry_after_seconds: u64 },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("execution {name} did not finish in time")]
    NotFinished { name: String },
    #[error("{0}")]
    Internal(String),
}

/// Runs scripts somewhere and reports their envelopes.
pub trait Executor: Send + Sync {
    fn execute(&self, request: ExecutionRequest) -> BoxFuture<'_, Result<Envelope, ExecuteError>>;

    /// Whether executions can run now (for GET /readyz).
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Which placement this is, for logs.
    fn name(&self) -> &'static str;

    /// A stored execution, by name or request id (GET /executions/{name}).
    fn get(&self, name: &str) -> BoxFuture<'_, Lookup> {
        let _ = name;
        async { Lookup::NotStored }.boxed()
    }
}

/// What a placement knows of a stored execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// This placement keeps no executions.
    NotStored,
    /// No such execution (finished ones may have been deleted).
    Missing,
    /// Not finished yet.
    Running {
        name: String,
        phase: String,
    },
    Finished {
        name: String,
        envelope: Envelope,
    },
}
