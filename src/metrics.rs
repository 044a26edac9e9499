//! Prometheus metrics of the service, rendered at GET /metrics.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::sandbox::pool::PoolObserver;
use crate::sandbox::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Why a request was refused before any execution: the label of `pyexec_rejected_requests_total`,
/// carried by the refusal itself (see `server::error::ApiError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A body or script over its size limit (413).
    TooLarge,
    /// A missing or unsupported Content-Type (415).
    ContentType,
    /// A body that is not a valid request (400).
    Invalid,
    /// The queue is full (429).
    Busy,
    /// The service is stopping (503).
    ShuttingDown,
    /// A cross-origin request from an origin not in --allowed-origins (403).
    Origin,
    /// A Host that is not a loopback name while listening on loopback: DNS rebinding (421).
    Host,
    /// No bearer token where one is required (401).
    TokenMissing,
    /// A bearer token that is not the service's (401).
    TokenWrong,
}

impl Rejection {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::ContentType => "content_type",
            Rejection::Invalid => "invalid",
            Rejection::Busy => "busy",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::Origin => "origin",
            Rejection::Host => "host",
            Rejection::TokenMissing => "token_missing",
            Rejection::TokenWrong => "token_wrong",
        }
    }
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub executions: Family<OutcomeLabels, Counter>,
    pub duration: Family<OutcomeLabels, Histogram>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    /// Executions killed because their client went away before the answer.
    pub cancelled: Counter,
    /// Ready sandboxes waiting for a script, and the memory they hold.
    pub pool_ready: Gauge,
    pub pool_ready_memory: Gauge,
    /// Ready sandboxes being started (importing) now.
    pub pool_starting: Gauge,
    /// Executions that got a ready sandbox.
    pub pool_hits: Counter,
    /// Executions that found the pool empty.
    pub pool_misses: Counter,
    /// Executions that started their own sandbox (pool empty, off, or limits it cannot apply).
    pub cold_starts: Counter,
}

fn duration_histogram() -> Histogram {
    // From a 10 ms hello world to the 60 s maximum timeout.
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let executions = Family::<OutcomeLabels, Counter>::default();
        let duration =
            Family::<OutcomeLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        let rejected = Family::<ReasonLabels, Counter>::default();
        let queue_depth = Gauge::default();
        let in_flight = Gauge::default();
        let cancelled = Counter::default();
        let (pool_ready, pool_ready_memory, pool_starting) = (Gauge::default(), Gauge::default(), Gauge::default());
        let (pool_hits, pool_misses, cold_starts) = (Counter::default(), Counter::default(), Counter::default());
        let mut registry = Registry::with_prefix("pyexec");
        registry.register("executions", "Finished executions by outcome", executions.clone());
        registry.register(
            "execution_duration_seconds",
            "Wall-clock time of executions, sandbox set-up included",
            duration.clone(),
        );
        registry.register("rejected_requests", "Requests refused before execution, by reason", rejected.clone());
        registry.register("queue_depth", "Executions waiting for a free sandbox slot", queue_depth.clone());
        registry.register("in_flight", "Executions running now", in_flight.clone());
        registry.register(
            "cancelled_executions",
            "Executions cancelled because their client disconnected before the answer",
            cancelled.clone(),
        );
        registry.register("pool_ready", "Ready sandboxes waiting for a script", pool_ready.clone());
        registry.register(
            "pool_ready_memory_bytes",
            "Memory held by the ready sandboxes (their preloaded interpreters)",
            pool_ready_memory.clone(),
        );
        registry.register("pool_starting", "Ready sandboxes being started (importing) now", pool_starting.clone());
        registry.register("pool_hits", "Executions that ran in a ready sandbox (warm)", pool_hits.clone());
        registry.register("pool_misses", "Executions that found no ready sandbox", pool_misses.clone());
        registry.register("cold_starts", "Executions that started their own sandbox (cold)", cold_starts.clone());
        for outcome in Outcome::ALL {
            let labels = OutcomeLabels { outcome: outcome.as_str().to_string() };
            let _ = executions.get_or_create(&labels);
        }
        Metrics {
            registry: Mutex::new(registry),
            executions,
            duration,
            rejected,
            queue_depth,
            in_flight,
            cancelled,
            pool_ready,
            pool_ready_memory,
            pool_starting,
            pool_hits,
            pool_misses,
            cold_starts,
        }
    }
}

impl PoolObserver for Metrics {
    fn ready(&self, count: usize, memory_bytes: u64, starting: usize) {
        self.pool_ready.set(count as i64);
        self.pool_ready_memory.set(memory_bytes as i64);
        self.pool_starting.set(starting as i64);
    }
}

impl Metrics {
    pub fn record_execution(&self, outcome: Outcome, seconds: f64) {
        let labels = OutcomeLabels { outcome: outcome.as_str().to_string() };
        self.executions.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    pub fn record_rejection(&self, reason: Rejection) {
        self.rejected.get_or_create(&ReasonLabels { reason: reason.as_str().to_string() }).inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
