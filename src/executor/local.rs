//! The local placement: scripts run in nsjail on this machine, a bounded number at a time
//! (by default as many as memory and processes allow, see `capacity`), behind a bounded queue;
//! a request that the runs already waiting would keep from starting within its timeout is
//! refused at once (`overload`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

mod capacity;

use super::overload::{self, Load};
use super::places::Places;
use super::{ExecuteError, ExecutionRequest, Executor, NotReady};
use crate::metrics::Metrics;
use crate::sandbox::warm::pool::{Claim, Kind, Pool};
use crate::sandbox::{Envelope, Finished, Job, Limits, Outcome, Supervisor};
pub use capacity::Capacity;

/// The script /readyz runs: proves nsjail and the Python environment work end to end.
const READINESS_SCRIPT: &str = "def main():\n    return {'ready': True}\n";

pub struct LocalExecutor {
    supervisor: Supervisor,
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// Places in the queue for requests waiting for a slot.
    queue: Places,
    /// A request is refused when its expected wait for a slot passes this many times its
    /// timeout (0: never).
    overload_wait_factor: f64,
    /// The moving average of how long a run holds its slot, in seconds.
    run_seconds: Arc<Mutex<Option<f64>>>,
    /// A hint for Retry-After: roughly how long a queued request waits.
    retry_after_seconds: u64,
    metrics: Arc<Metrics>,
    readiness_limits: Limits,
    /// Ready sandboxes, when the pool is on.
    pool: Option<Pool>,
}

/// The default number of run slots on this machine for runs with the default `limits`.
pub fn default_concurrency(limits: &Limits) -> usize {
    capacity::slots(Capacity::of_this_machine(), limits)
}

impl LocalExecutor {
    pub fn new(
        supervisor: Supervisor,
        max_concurrency: usize,
        max_queue: usize,
        readiness_limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        LocalExecutor {
            supervisor,
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            slot_count: max_concurrency.max(1),
            queue: Places::new(max_queue),
            overload_wait_factor: 0.0,
            run_seconds: Arc::new(Mutex::new(None)),
            retry_after_seconds: 1,
            metrics,
            readiness_limits,
            pool: None,
        }
    }

    /// Runs scripts in the pool's ready sandboxes when one fits (see `sandbox::warm::pool`).
    pub fn with_pool(self, pool: Pool) -> Self {
        LocalExecutor { pool: Some(pool), ..self }
    }

    /// Refuses requests whose expected wait for a slot passes `factor` times their timeout
    /// (`--overload-wait-factor`; 0: never).
    pub fn with_overload_wait_factor(self, factor: f64) -> Self {
        LocalExecutor { overload_wait_factor: factor, ..self }
    }

    /// What a request arriving now meets.
    fn load(&self) -> Load {
        let run = *self.run_seconds.lock().unwrap_or_else(|p| p.into_inner());
        Load {
            free_slots: self.slots.available_permits(),
            slots: self.slot_count,
            queued: self.queue.taken(),
            run: run.map(std::time::Duration::from_secs_f64),
        }
    }

    /// The run slots, for the pool, which refills only while one is free.
    pub fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    async fn run(&self, request: ExecutionRequest) -> Result<Envelope, ExecuteError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Take a place in the queue, or refuse when it is full.
                let Some(_in_queue) = self.queue.take(&self.metrics.queue_depth) else {
                    return Err(ExecuteError::Busy { retry_after_seconds: self.retry_after_seconds });
                };
                self.slots.clone().acquire_owned().await.map_err(|_| ExecuteError::ShuttingDown)?
            }
        };
        if let Some(started) = &request.started {
            started.notify_one();
        }
        // The run is its own task so that its slot is freed only once the sandbox is gone (which
        // may be after its answer: `Finished::removal`); a request dropped before its answer
        // (the client went away) cancels it, which kills the sandbox the way a timeout does.
        let cancel = CancellationToken::new();
        let _cancel_when_dropped = cancel.clone().drop_guard();
        let supervisor = self.supervisor.clone();
        let metrics = self.metrics.clone();
        let pool = self.pool.clone();
        let run_seconds = self.run_seconds.clone();
        let (answer, answered) = oneshot::channel();
        let run = tokio::spawn(async move {
            metrics.in_flight.inc();
            let started = Instant::now();
            let kind = pool.as_ref().map(|pool| pool.kind_for(&request.job.script));
            let claim = match (&pool, kind) {
                (Some(pool), Some(kind)) => Some(pool.claim(kind, &request.job.limits).await),
                _ => None,
            };
            let start = claim.as_ref().map_or("cold", Claim::start);
            let claim_ms = started.elapsed().as_millis() as u64;
            if let (Some(kind), Some(claim)) = (kind, &claim) {
                metrics.record_claim(kind, claim);
            }
            let finished = match claim {
                Some(Claim::Hit { sandbox, .. }) => {
                    supervisor.run_ready(&request.id, *sandbox, request.job, &cancel, request.output.as_ref()).await
                }
                _ => {
                    metrics.cold_starts.inc();
                    let _cold = pool.as_ref().map(Pool::cold_start);
                    supervisor.run_cancellable(&request.id, &request.job, &cancel, request.output.as_ref()).await
                }
            };
            let Finished { envelope, removal } = finished;
            tracing::info!(
                id = %request.id,
                start,
                pool_kind = kind.map(Kind::as_str),
                outcome = envelope.outcome.as_str(),
                duration_ms = envelope.duration_ms,
                claim_ms,
                answer_ms = started.elapsed().as_millis() as u64,
                "sandbox run finished"
            );
            if cancel.is_cancelled() {
                metrics.cancelled.inc();
                tracing::info!(
                    id = %request.id,
                    after_ms = started.elapsed().as_millis() as u64,
                    "the client went away: execution cancelled, its sandbox killed and its slot freed"
                );
            } else {
                metrics.record_execution(envelope.outcome, started.elapsed().as_secs_f64());
                if let (Some(pool), Some(kind), "cold", Outcome::Success) = (&pool, kind, start, envelope.outcome) {
                    pool.cold_run(kind, started.elapsed());
                }
            }
            let _ = answer.send(envelope);
            removal.wait().await;
            {
                let mut average = run_seconds.lock().unwrap_or_else(|p| p.into_inner());
                *average = Some(overload::averaged(*average, started.elapsed().as_secs_f64()));
            }
            // Only now out of flight: a run counted as ended has its time in the average.
            metrics.in_flight.dec();
            drop(permit);
            if let Some(pool) = &pool {
                pool.wake();
            }
        });
        match answered.await {
            Ok(envelope) => Ok(envelope),
            // The task ended without an answer: it panicked (or the runtime is going away).
            Err(_) => match run.await {
                Err(err) => Err(ExecuteError::TaskFailed(err)),
                Ok(()) => Err(ExecuteError::ShuttingDown),
            },
        }
    }
}

impl Executor for LocalExecutor {
    fn execute(&self, request: ExecutionRequest) -> BoxFuture<'_, Result<Envelope, ExecuteError>> {
        self.run(request).boxed()
    }

    fn admit(&self, limits: &Limits) -> Result<(), ExecuteError> {
        let Some(wait) = overload::expected_wait(self.load()) else { return Ok(()) };
        overload::admission(wait, limits.timeout(), self.overload_wait_factor)
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        async move {
            let id = format!("readyz-{}", uuid::Uuid::new_v4().simple());
            let job = Job::new(READINESS_SCRIPT, self.readiness_limits.clone());
            let envelope = self.supervisor.run(&id, &job).await;
            match envelope.outcome {
                Outcome::Success => Ok(()),
                other => {
                    Err(NotReady::SandboxFailed { outcome: other.as_str(), error: envelope.error.unwrap_or_default() })
                }
            }
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
