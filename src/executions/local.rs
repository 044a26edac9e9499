//! The local placement's executions: run by this service's executor in the background, kept in
//! SQLite (`store`) under `--state-dir`, removed once finished for `--executions-keep-seconds`.
//!
//! An execution waits for a sandbox like a request to POST /execute does (the executor's queue);
//! cancelling it drops its run, which kills its sandbox and frees its slot the way a client that
//! disconnects from POST /execute does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::output::OutputLog;
use super::record::{self, Record, State};
use super::store::{self, Store, StoreError};
use super::{Executions, ExecutionsError, ExecutionsSettings, Page, Submission, CANCELLED, CUT_OFF};
use crate::executor::{ExecuteError, ExecutionRequest, Executor};
use crate::metrics::Metrics;
use crate::sandbox::Envelope;

/// An unfinished execution: who waits for its state, and how to stop it.
struct Live {
    state: Arc<watch::Sender<State>>,
    cancel: CancellationToken,
    output: Arc<OutputLog>,
}

pub struct LocalExecutions {
    /// Itself, for the tasks that run its executions.
    this: Weak<LocalExecutions>,
    executor: Arc<dyn Executor>,
    store: Store,
    settings: ExecutionsSettings,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<String, Live>>,
    /// Set when the service stops: no new executions; the unfinished are cut off after the grace.
    closed: CancellationToken,
    cut_off: CancellationToken,
}

impl LocalExecutions {
    /// Opens the store (marking what the last stop cut off) and starts removing finished
    /// executions past their time.
    pub fn open(
        settings: ExecutionsSettings,
        executor: Arc<dyn Executor>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<LocalExecutions>, StoreError> {
        let (store, cut_off) = Store::open(&settings.state_dir, CUT_OFF, record::now_ms())?;
        tracing::info!(
            database = %settings.state_dir.join(store::FILE_NAME).display(),
            cut_off_by_the_last_stop = cut_off,
            keep_seconds = settings.executions_keep_seconds,
            "executions store open (POST /executions)"
        );
        let executions = Arc::new_cyclic(|this| LocalExecutions {
            this: this.clone(),
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

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // The map holds no invariant a panic could break halfway: keep using it.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn submit_one(&self, submission: Submission) -> Result<Record, ExecutionsError> {
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
        if let Some(this) = self.this.upgrade() {
            tokio::spawn(this.run(request, state, cancel));
        }
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

    async fn get_one(&self, id: &str) -> Result<Option<Record>, ExecutionsError> {
        Ok(self.store.get(id).await?)
    }

    async fn wait_one(&self, id: &str, wait: Duration) -> Result<Option<Record>, ExecutionsError> {
        let watching = self.live().get(id).map(|live| live.state.subscribe());
        if let Some(mut state) = watching {
            // An error means it finished and was forgotten meanwhile: the store has its end.
            let _ = tokio::time::timeout(wait, state.wait_for(|state| state.is_finished())).await;
        }
        self.get_one(id).await
    }

    /// Cancels an unfinished execution and answers once its end is recorded.
    async fn cancel_one(&self, id: &str) -> Result<Record, ExecutionsError> {
        let watching = self.live().get(id).map(|live| (live.cancel.clone(), live.state.subscribe()));
        match watching {
            Some((cancel, mut state)) => {
                cancel.cancel();
                let _ = state.wait_for(|state| state.is_finished()).await;
                self.get_one(id).await?.ok_or_else(|| ExecutionsError::NotFound { id: id.to_string() })
            }
            None => match self.get_one(id).await? {
                Some(record) => Err(ExecutionsError::AlreadyFinished { id: record.id, state: record.state }),
                None => Err(ExecutionsError::NotFound { id: id.to_string() }),
            },
        }
    }

    async fn list_page(&self, after: Option<&str>, limit: usize) -> Result<Page, ExecutionsError> {
        let before = match after {
            None => None,
            Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| ExecutionsError::BadCursor(cursor.to_string()))?),
        };
        let listed = self.store.list(before, limit).await?;
        let next = (listed.len() == limit).then(|| listed.last().map(|(position, _)| position.to_string())).flatten();
        Ok(Page { executions: listed.into_iter().map(|(_, record)| record).collect(), next })
    }

    /// Stops taking executions, lets the unfinished ones run for up to `grace`, then cuts off the
    /// rest, which are recorded as failed with the reason [`CUT_OFF`].
    async fn shut_down(&self, grace: Duration) {
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

impl Executions for LocalExecutions {
    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Record, ExecutionsError>> {
        self.submit_one(submission).boxed()
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>> {
        self.get_one(id).boxed()
    }

    fn wait<'a>(&'a self, id: &'a str, wait: Duration) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>> {
        self.wait_one(id, wait).boxed()
    }

    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Record, ExecutionsError>> {
        self.cancel_one(id).boxed()
    }

    fn list<'a>(&'a self, after: Option<&'a str>, limit: usize) -> BoxFuture<'a, Result<Page, ExecutionsError>> {
        self.list_page(after, limit).boxed()
    }

    fn follow(&self, id: &str) -> Option<(Arc<OutputLog>, watch::Receiver<State>)> {
        self.live().get(id).map(|live| (live.output.clone(), live.state.subscribe()))
    }

    fn settings(&self) -> &ExecutionsSettings {
        &self.settings
    }

    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, ()> {
        self.shut_down(grace).boxed()
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
async fn sweep(executions: Weak<LocalExecutions>, every: Duration) {
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
