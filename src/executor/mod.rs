//! Where a script runs: the `Executor` trait and its placements.

mod abandoned;
pub mod kube;
pub mod local;
mod overload;
mod places;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::sandbox::run::capture::Tap;
use crate::sandbox::{Envelope, Job, Limits};

pub use self::kube::KubeExecutor;
pub use local::LocalExecutor;

/// One job to run: the script, its limits already resolved, its input files.
#[derive(Clone, Debug)]
pub struct ExecutionRequest {
    /// Unique id of the execution, used in logs, metrics and resource names.
    pub id: String,
    pub job: Job,
    /// Told once the execution leaves the queue and its sandbox starts (an execution's
    /// `running` state); none when nobody asks.
    pub started: Option<Arc<Notify>>,
    /// Where stdout and stderr also go as they are read (an execution's events); none when
    /// nobody watches. The kubernetes placement reports output only at the end.
    pub output: Option<Tap>,
}

/// Why an execution could not be carried out (a script's own failure is an envelope, not this).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("too many executions are queued; retry in {retry_after_seconds} s")]
    Busy { retry_after_seconds: u64 },
    #[error(
        "overloaded: the executions already waiting would keep this one from starting for about {expected_seconds:.1} s, past its {timeout_seconds} s timeout; retry in {retry_after_seconds} s"
    )]
    Overloaded { expected_seconds: f64, timeout_seconds: f64, retry_after_seconds: u64 },
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

    /// Whether a request with `limits` is taken now: refused (`ExecuteError::Overloaded`) when
    /// the work already waiting would keep it from starting within its timeout. Decided before
    /// the request is queued or submitted.
    fn admit(&self, _limits: &Limits) -> Result<(), ExecuteError> {
        Ok(())
    }

    /// Whether executions can run now (for GET /readyz).
    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>>;

    /// Which placement this is, for logs.
    fn name(&self) -> &'static str;

    /// Why this placement cannot take `job` (already within the server's caps), in words for
    /// a 400 answer; none when it can.
    fn refusal(&self, _job: &Job) -> Option<String> {
        None
    }
}
