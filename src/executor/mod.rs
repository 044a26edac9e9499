//! Where a script runs: the `Executor` trait and its placements.

mod abandoned;
pub mod kube;
pub mod local;
mod places;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::sandbox::{Envelope, Job};

pub use self::kube::KubeExecutor;
pub use local::LocalExecutor;

/// One job to run: the script, its limits already resolved, its input files.
#[derive(Clone, Debug)]
pub struct ExecutionRequest {
    /// Unique id of the execution, used in logs, metrics and resource names.
    pub id: String,
    pub job: Job,
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
    #[error("the sandbox task failed: {0}")]
    TaskFailed(#[source] tokio::task::JoinError),
    #[error("creating a PythonExecution: {0}")]
    CreateFailed(#[source] ::kube::Error),
    #[error("PythonExecution {name} was deleted before it finished")]
    Deleted { name: String },
    #[error("PythonExecution {name} finished without a status")]
    NoStatus { name: String },
}

/// Why executions cannot run now (GET /readyz answers 503 with it).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the watch of PythonExecutions has not synced yet")]
    WatchNotSynced,
    #[error("the Kubernetes API server refused: {0}")]
    ApiServerRefused(#[source] ::kube::Error),
    #[error("the Kubernetes API server did not answer within {seconds} s")]
    ApiServerSilent { seconds: u64 },
    /// The sandbox ran a trivial script and it failed; `error` is the envelope's own message.
    #[error("a trivial script ended in {outcome}: {error}")]
    SandboxFailed { outcome: &'static str, error: String },
}

/// Runs scripts somewhere and reports their envelopes.
pub trait Executor: Send + Sync {
    fn execute(&self, request: ExecutionRequest) -> BoxFuture<'_, Result<Envelope, ExecuteError>>;

    /// Whether executions can run now (for GET /readyz).
    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>>;

    /// Which placement this is, for logs.
    fn name(&self) -> &'static str;

    /// Whether this placement takes jobs with input files.
    fn carries_input_files(&self) -> bool {
        true
    }

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
