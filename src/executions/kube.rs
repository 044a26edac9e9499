//! The kubernetes placement's executions: each one is a PythonExecution, named by the API server
//! (its name is the execution's id) and labelled as submitted; the controller runs it in a
//! sandbox pod and writes its answer into its status, and its TTL (`--executions-keep-seconds`)
//! removes it. The cluster keeps them, so a restart of the API loses none. Output is streamed
//! from the sandbox pod's log (`pod_log`). Cancelling deletes the PythonExecution, which stops
//! its pod; it is then gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::kube::ResourceExt;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::output::OutputLog;
use super::pod_log;
use super::record::{self, Record, State};
use super::{Executions, ExecutionsError, ExecutionsSettings, Page, Submission, CANCELLED};
use crate::crd::{Phase, PythonExecution};
use crate::executor::KubeExecutor;
use crate::metrics::Metrics;

pub struct KubeExecutions {
    executor: Arc<KubeExecutor>,
    settings: ExecutionsSettings,
    closed: AtomicBool,
    gauge_task: JoinHandle<()>,
}

/// How often `pyexec_executions_unfinished` is counted from the shared watch's store.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

impl KubeExecutions {
    /// Call within a tokio runtime: a task keeps the unfinished gauge, counting the submitted
    /// PythonExecutions of the whole namespace (every replica shows the same number).
    pub fn new(executor: Arc<KubeExecutor>, settings: ExecutionsSettings, metrics: Arc<Metrics>) -> KubeExecutions {
        let counted = executor.clone();
        let gauge_task = tokio::spawn(async move {
            let mut every = tokio::time::interval(GAUGE_EVERY);
            loop {
                every.tick().await;
                let unfinished = unfinished(&counted);
                metrics.executions_unfinished.set(i64::try_from(unfinished).unwrap_or(i64::MAX));
            }
        });
        KubeExecutions { executor, settings, closed: AtomicBool::new(false), gauge_task }
    }

    async fn submit_one(&self, submission: Submission) -> Result<Record, ExecutionsError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ExecutionsError::ShuttingDown);
        }
        let unfinished = unfinished(&self.executor);
        if unfinished >= self.settings.executions_max_unfinished {
            return Err(ExecutionsError::Busy { unfinished });
        }
        // The sandbox answers a script without main() itself, as the local placement does early.
        let ttl = i64::try_from(self.settings.executions_keep_seconds).unwrap_or(i64::MAX);
        let created = self.executor.submit(&submission.request, ttl).await.map_err(ExecutionsError::Kube)?;
        let mut record = record_of(&created);
        record.warnings = submission.warnings;
        Ok(record)
    }

    async fn wait_one(&self, id: &str, wait: Duration) -> Result<Option<Record>, ExecutionsError> {
        if let Some(execution) = self.executor.find(id).filter(|e| !e.is_finished()) {
            self.executor.wait_finished(&execution.name_any(), wait).await;
        }
        Ok(self.executor.find(id).map(|e| record_of(&e)))
    }

    async fn cancel_one(&self, id: &str) -> Result<Record, ExecutionsError> {
        let Some(execution) = self.executor.find(id) else {
            return Err(ExecutionsError::NotFound { id: id.to_string() });
        };
        let mut record = record_of(&execution);
        if record.state.is_finished() {
            return Err(ExecutionsError::AlreadyFinished { id: record.id, state: record.state });
        }
        self.executor.delete(&record.id).await.map_err(ExecutionsError::Kube)?;
        record.state = State::Cancelled;
        record.finished_ms = Some(record::now_ms());
        record.reason = Some(format!("{CANCELLED}: its PythonExecution was deleted, which stopped its pod"));
        Ok(record)
    }

    fn list_page(&self, after: Option<&str>, limit: usize) -> Result<Page, ExecutionsError> {
        let after = after.map(|cursor| Cursor::parse(cursor).ok_or_else(|| ExecutionsError::BadCursor(cursor.into())));
        let after = after.transpose()?;
        let mut records: Vec<Record> = self.executor.submitted().iter().map(|e| record_of(e)).collect();
        records.sort_by(|a, b| Cursor::of(b).cmp(&Cursor::of(a)));
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| after.as_ref().is_none_or(|after| Cursor::of(r) < *after))
            .take(limit)
            .collect();
        let next = (records.len() == limit).then(|| records.last().map(|r| Cursor::of(r).to_string())).flatten();
        Ok(Page { executions: records, next })
    }
}

impl Drop for KubeExecutions {
    fn drop(&mut self) {
        self.gauge_task.abort();
    }
}

impl Executions for KubeExecutions {
    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Record, ExecutionsError>> {
        self.submit_one(submission).boxed()
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>> {
        let record = self.executor.find(id).map(|e| record_of(&e));
        async move { Ok(record) }.boxed()
    }

    fn wait<'a>(&'a self, id: &'a str, wait: Duration) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>> {
        self.wait_one(id, wait).boxed()
    }

    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Record, ExecutionsError>> {
        self.cancel_one(id).boxed()
    }

    fn list<'a>(&'a self, after: Option<&'a str>, limit: usize) -> BoxFuture<'a, Result<Page, ExecutionsError>> {
        let page = self.list_page(after, limit);
        async move { page }.boxed()
    }

    /// Its state from the shared watch, and its output from its pod's log once its job is there.
    fn follow(&self, id: &str) -> Option<(Arc<OutputLog>, watch::Receiver<State>)> {
        let execution = self.executor.find(id).filter(|e| !e.is_finished())?;
        let log = OutputLog::new();
        let (state, receiver) = watch::channel(record_of(&execution).state);
        tokio::spawn(pod_log::follow(self.executor.clone(), execution.name_any(), log.clone(), state));
        Some((log, receiver))
    }

    fn settings(&self) -> &ExecutionsSettings {
        &self.settings
    }

    /// The cluster keeps running them: only new ones are refused.
    fn shutdown(&self, _grace: Duration) -> BoxFuture<'_, ()> {
        self.closed.store(true, Ordering::SeqCst);
        async {}.boxed()
    }
}

/// The submitted PythonExecutions not finished yet, as the shared watch sees them.
fn unfinished(executor: &KubeExecutor) -> usize {
    executor.submitted().iter().filter(|e| !e.is_finished()).count()
}

/// An execution as its PythonExecution shows it.
pub fn record_of(execution: &PythonExecution) -> Record {
    let status = execution.status.as_ref();
    let envelope = status.and_then(|s| s.envelope());
    let state = match (execution.phase(), &envelope) {
        (Phase::Pending, _) => State::Queued,
        (Phase::Running, _) => State::Running,
        (Phase::Succeeded | Phase::Failed, Some(envelope)) => State::after(envelope.outcome),
        (Phase::Succeeded | Phase::Failed, None) => State::Failed,
    };
    let ms = |time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| time.0.as_millisecond();
    Record {
        id: execution.name_any(),
        state,
        created_ms: execution.metadata.creation_timestamp.as_ref().map_or(0, ms),
        started_ms: status.and_then(|s| s.start_time.as_ref()).map(ms),
        finished_ms: status.and_then(|s| s.completion_time.as_ref()).map(ms),
        envelope,
        warnings: Vec::new(),
        reason: None,
    }
}

/// A position in the listing, newest first: the creation time, then the name.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    created_ms: i64,
    name: String,
}

impl Cursor {
    fn of(record: &Record) -> Cursor {
        Cursor { created_ms: record.created_ms, name: record.id.clone() }
    }

    /// `<created_ms>.<name>`, as `to_string` writes it.
    fn parse(text: &str) -> Option<Cursor> {
        let (created, name) = text.split_once('.')?;
        Some(Cursor { created_ms: created.parse().ok()?, name: name.to_string() })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_ms, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PythonExecutionSpec, PythonExecutionStatus};

    fn execution(phase: Option<Phase>, outcome: Option<&str>) -> PythonExecution {
        let mut execution = PythonExecution::new(
            "pyx-a",
            PythonExecutionSpec { script: String::new(), limits: None, files: None, ttl_seconds_after_finished: None },
        );
        execution.status = phase.map(|phase| PythonExecutionStatus {
            phase: Some(phase),
            outcome: outcome.map(str::to_string),
            ..Default::default()
        });
        execution
    }

    #[test]
    fn phases_become_states() {
        assert_eq!(record_of(&execution(None, None)).state, State::Queued);
        assert_eq!(record_of(&execution(Some(Phase::Running), None)).state, State::Running);
        assert_eq!(record_of(&execution(Some(Phase::Succeeded), Some("success"))).state, State::Succeeded);
        assert_eq!(record_of(&execution(Some(Phase::Failed), Some("timeout"))).state, State::Failed);
        let finished = record_of(&execution(Some(Phase::Failed), Some("exception")));
        assert_eq!(finished.envelope.map(|e| e.outcome), Some(crate::sandbox::Outcome::Exception));
    }

    #[test]
    fn cursors_read_back_and_order_newest_first() {
        let cursor = Cursor { created_ms: 1700, name: "pyx-a.b".into() };
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        assert_eq!(Cursor::parse("nonsense"), None);
        let older = Cursor { created_ms: 1, name: "pyx-z".into() };
        let newer = Cursor { created_ms: 2, name: "pyx-a".into() };
        assert!(older < newer);
    }
}
