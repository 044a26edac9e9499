//! Executions as resources (POST /executions): submitted and run in the background by the
//! placement's executor, looked up, waited for, cancelled, listed, and removed once finished for
//! `--executions-keep-seconds`. They are kept in SQLite (`store`) under `--state-dir`, so that
//! finished ones outlive a restart and none that a stop cut off silently vanishes.
//!
//! An execution waits for a sandbox like a request to POST /execute does (the executor's queue);
//! cancelling it drops its run, which kills its sandbox and frees its slot the way a client that
//! disconnects from POST /execute does.

pub mod output;
pub mod record;
pub mod settings;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::executor::{ExecuteError, ExecutionRequest, Executor};
use crate::metrics::Metrics;
use crate::sandbox::Envelope;
use output::OutputLog;
pub use record::{Record, State};
pub use settings::ExecutionsSettings;
pub use store::{Listed, Store, StoreError};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An execution to start: the request for the executor, the request's warnings, and the
/// envelope when the answer is known without a sandbox (a script with no main()).
pub struct Submission {
    pub request: ExecutionRequest,
    pub warnings: Vec<String>,
    pub answered: Option<Envelope>,
}

/// An unfinished execution: who waits for its state, and how to stop it.
struct Live {
    state: Arc<watch::Sender<State>>,
    cancel: CancellationToken,
    output: Arc<OutputLog>,
}

pub struct Executions {
    executor: Arc<dyn Executor>,
    store: Store,
    settings: ExecutionsSettings,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<String, Live>>,
    /// Set when the service stops: no new executions; the unfinished are cut off after the grace.
    closed: CancellationToken,
    cut_off: CancellationToken,
}

impl Executions {
    /// Opens the store (marking what the last stop cut off) and starts removing finished
    /// executions past their time.
    pub fn open(
        settings: ExecutionsSettings,
        executor: Arc<dyn Executor>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Executions>, StoreError> {
        let (store, cut_off) = Store::open(&settings.state_dir, CUT_OFF, record::now_ms())?;
        tracing::info!(
            database = %settings.state_dir.join(store::FILE_NAME).display(),
            cut_off_by_the_last_stop = cut_off,
            keep_seconds = settings.executions_keep_seconds,
            "executions store open (POST /executions)"
        );
        let executions = Arc::new(Executions {
            executor,
            store,
            settings,
            metrics,
            live: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            cut_off: CancellationToken::new(),
        });
        tokio::spawn(sweep(Arc::downgrade(&executions), executions.settings.sweep_every()));
        Ok(executions)
    }

    pub fn settings(&self) -> &ExecutionsSettings {
        &self.settings
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // The map holds no invariant a panic could break halfway: keep using it.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a new execution and starts it; answers at once with it, queued (or finished, when
    /// its answer needed no sandbox).
    pub async fn submit(self: &Arc<Self>, submission: Submission) -> Result<Record, ExecutionsError> {
        let Submission { request, warnings, answered } = submission;
        let mut record = Record::queued(request.id.clone(), record::now_ms(), warnings);
        if let Some(envelope) = answered {
            record.state = State::after(envelope.outcome);
            record.finished_ms = Some(record.created_ms);
            record.envelope = Some(envelope);
            self.store.insert(record.clone()).await?;
            return Ok(record);
        }
        let state = Arc::new(watch::channel(State::Queued).0);
        let cancel = CancellationToken::new();
        let output = OutputLog::new();
        {
            let mut live = self.live();
            if self.closed.is_cancelled() {
                return Err(ExecutionsError::ShuttingDown);
            }
            if live.len() >= self.settings.executions_max_unfinished {
                return Err(ExecutionsError::Busy { unfinished: live.len() });
            }
            let live_one = Live { state: state.clone(), cancel: cancel.clone(), output: output.clone() };
            live.insert(record.id.clone(), live_one);
        }
        if let Err(err) = self.store.insert(record.clone()).await {
            self.live().remove(&record.id);
            return Err(err.into());
        }
        self.metrics.executions_unfinished.inc();
        let request = ExecutionRequest { output: Some(output), ..request };
        tokio::spawn(self.clone().run(request, state, cancel));
        Ok(record)
    }

    /// Runs one execution to its end and records that end.
    async fn run(
        self: Arc<Self>,
        mut request: ExecutionRequest,
        state: Arc<watch::Sender<State>>,
        cancel: CancellationToken,
    ) {
        let id = request.id.clone();
        let started = Arc::new(Notify::new());
        request.started = Some(started.clone());
        let mut attempt = Box::pin(run_when_accepted(self.executor.clone(), request));
        let mut running = false;
        let ended = loop {
            tokio::select! {
                result = &mut attempt => break Ended::Ran(result),
                () = started.notified(), if !running => {
                    running = true;
                    if let Err(err) = self.store.started(&id, record::now_ms()).await {
                        tracing::warn!(id, error = %crate::telemetry::chain(&err), "could not record an execution's start");
                    }
                    state.send_replace(State::Running);
                }
                () = cancel.cancelled() => break Ended::Cancelled,
                () = self.cut_off.cancelled() => break Ended::CutOff,
            }
        };
        // Dropping the run kills its sandbox and frees its slot, if it still has them.
        drop(attempt);
        let (final_state, envelope, reason) = match ended {
            Ended::Ran(Ok(envelope)) => (State::after(envelope.outcome), Some(envelope), None),
            Ended::Ran(Err(err)) => {
                tracing::error!(id, error = %crate::telemetry::chain(&err), "execution failed inside the service");
                (State::Failed, None, Some(format!("The service could not run it: {err}")))
            }
            Ended::Cancelled => (State::Cancelled, None, Some(CANCELLED.to_string())),
            Ended::CutOff => (State::Failed, None, Some(CUT_OFF.to_string())),
        };
        tracing::info!(id, state = final_state.as_str(), reason = reason.as_deref(), "execution finished");
        if let Err(err) = self.store.finished(&id, final_state, record::now_ms(), envelope, reason).await {
            tracing::error!(id, error = %crate::telemetry::chain(&err), "could not record an execution's end");
        }
        state.send_replace(final_state);
        self.live().remove(&id);
        self.metrics.executions_unfinished.dec();
    }

    pub async fn get(&self, id: &str) -> Result<Option<Record>, ExecutionsError> {
        Ok(self.store.get(id).await?)
    }

    /// The execution once it has finished, or as it is when `wait` ends first.
    pub async fn wait(&self, id: &str, wait: Duration) -> Result<Option<Record>, ExecutionsError> {
        let watching = self.live().get(id).map(|live| live.state.subscribe());
        if let Some(mut state) = watching {
            // An error means it finished and was forgotten meanwhile: the store has its end.
            let _ = tokio::time::timeout(wait, state.wait_for(|state| state.is_finished())).await;
        }
        self.get(id).await
    }

    /// An unfinished execution's output so far and its state, to follow them; none once it has
    /// finished (its envelope then has its output).
    pub fn follow(&self, id: &str) -> Option<(Arc<OutputLog>, watch::Receiver<State>)> {
        self.live().get(id).map(|live| (live.output.clone(), live.state.subscribe()))
    }

    /// Cancels an unfinished execution and answers once its end is recorded.
    pub async fn cancel(&self, id: &str) -> Result<Record, ExecutionsError> {
        let watching = self.live().get(id).map(|live| (live.cancel.clone(), live.state.subscribe()));
        match watching {
            Some((cancel, mut state)) => {
                cancel.cancel();
                let _ = state.wait_for(|state| state.is_finished()).await;
                self.get(id).await?.ok_or_else(|| ExecutionsError::NotFound { id: id.to_string() })
            }
            None => match self.get(id).await? {
                Some(record) => Err(ExecutionsError::AlreadyFinished { id: record.id, state: record.state }),
                None => Err(ExecutionsError::NotFound { id: id.to_string() }),
            },
        }
    }

    /// Up to `limit` executions, newest first, from before the position `before`.
    pub async fn list(&self, before: Option<i64>, limit: usize) -> Result<Vec<Listed>, ExecutionsError> {
        Ok(self.store.list(before, limit).await?)
    }

    /// Stops taking executions, lets the unfinished ones run for up to `grace`, then cuts off the
    /// rest, which are recorded as failed with the reason [`CUT_OFF`].
    pub async fn shutdown(&self, grace: Duration) {
        self.closed.cancel();
        let unfinished = self.live().len();
        if unfinished > 0 {
            tracing::info!(unfinished, grace_seconds = grace.as_secs(), "waiting for unfinished executions");
        }
        let _ = tokio::time::timeout(grace, self.until_none_live()).await;
        self.cut_off.cancel();
        // Recording each end takes a moment; a store that hangs leaves them to the next start.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.until_none_live()).await;
    }

    async fn until_none_live(&self) {
        while !self.live().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

enum Ended {
    Ran(Result<Envelope, ExecuteError>),
    Cancelled,
    CutOff,
}

/// Runs the request, waiting while the executor is busy: a submitted execution waits its turn
/// rather than being refused once accepted.
async fn run_when_accepted(executor: Arc<dyn Executor>, request: ExecutionRequest) -> Result<Envelope, ExecuteError> {
    loop {
        match executor.execute(request.clone()).await {
            Err(ExecuteError::Busy { retry_after_seconds }) => {
                tokio::time::sleep(Duration::from_secs(retry_after_seconds.max(1))).await;
            }
            answer => return answer,
        }
    }
}

/// Removes finished executions past their keep time, every `every`, while the service runs.
async fn sweep(executions: Weak<Executions>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(executions) = executions.upgrade() else { return };
        let cutoff = record::now_ms().saturating_sub(executions.settings.keep().as_millis() as i64);
        match executions.store.remove_finished_before(cutoff).await {
            Ok(0) => {}
            Ok(removed) => {
                executions.metrics.executions_removed.inc_by(removed as u64);
                tracing::debug!(removed, "removed finished executions past --executions-keep-seconds");
            }
            Err(err) => tracing::warn!(error = %crate::telemetry::chain(&err), "could not remove old executions"),
        }
    }
}
