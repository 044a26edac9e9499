//! Executions as resources (POST /executions): submitted, run in the background, looked up,
//! waited for, cancelled and listed, in either placement. A finished execution shows exactly
//! the answer POST /execute would have given.
//!
//! - `local`: executions this service runs in its own sandboxes, kept in SQLite (`store`) under
//!   `--state-dir`, so that finished ones outlive a restart and none that a stop cut off silently
//!   vanishes.
//! - `kube`: each execution is a PythonExecution; the cluster keeps it, and its TTL removes it;
//!   `pod_log` streams its output from its sandbox pod's log.

pub mod kube;
pub mod local;
pub mod output;
pub mod pod_log;
pub mod record;
pub mod settings;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::executor::ExecutionRequest;
use crate::sandbox::Envelope;
pub use kube::KubeExecutions;
pub use local::LocalExecutions;
use output::OutputLog;
pub use record::{Record, State};
pub use settings::ExecutionsSettings;
pub use store::StoreError;

/// The reason given to executions a stop of the service cut off.
pub const CUT_OFF: &str = "The service stopped before this execution finished";
/// The reason given to executions cancelled by DELETE /executions/{id}.
pub const CANCELLED: &str = "Cancelled by DELETE /executions/{id}";

/// Why an execution could not be submitted, found or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionsError {
    #[error("{unfinished} executions are unfinished, the most allowed at once (--executions-max-unfinished)")]
    Busy { unfinished: usize },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("execution {id} already finished ({})", state.as_str())]
    AlreadyFinished { id: String, state: State },
    #[error("execution {id} not found")]
    NotFound { id: String },
    #[error("the page cursor {0:?} is not one this service gave")]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the Kubernetes API: {0}")]
    Kube(#[source] ::kube::Error),
}

/// An execution to start: the request for the executor, the request's warnings, and the
/// envelope when the answer is known without a sandbox (a script with no main()).
pub struct Submission {
    pub request: ExecutionRequest,
    pub warnings: Vec<String>,
    pub answered: Option<Envelope>,
}

/// One page of a listing, newest first; `next` is the cursor of the following page.
#[derive(Debug, Default)]
pub struct Page {
    pub executions: Vec<Record>,
    pub next: Option<String>,
}

/// Where executions are kept and run.
pub trait Executions: Send + Sync {
    /// Stores a new execution and starts it; answers at once with it, queued (or finished, when
    /// its answer needed no sandbox).
    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Record, ExecutionsError>>;

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>>;

    /// The execution once it has finished, or as it is when `wait` ends first.
    fn wait<'a>(&'a self, id: &'a str, wait: Duration) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>>;

    /// Cancels an unfinished execution: its sandbox is killed and its slot freed.
    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Record, ExecutionsError>>;

    /// Up to `limit` executions, newest first, from the cursor `after` (the first page when none).
    fn list<'a>(&'a self, after: Option<&'a str>, limit: usize) -> BoxFuture<'a, Result<Page, ExecutionsError>>;

    /// An unfinished execution's output so far and its state, to follow them as they happen;
    /// none once it has finished (or when it is unknown).
    fn follow(&self, id: &str) -> Option<(Arc<OutputLog>, watch::Receiver<State>)>;

    fn settings(&self) -> &ExecutionsSettings;

    /// Stops taking executions and lets the unfinished ones end within `grace`.
    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, ()>;
}
