//! Prometheus metrics of the service, rendered at GET /metrics.

mod declaration;
mod exposition;

pub use declaration::{Declaration, MetricKind};
#[cfg(test)]
pub(crate) use exposition::testing;
pub use exposition::Exposition;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::sandbox::warm::pool::{Claim, Kind, Miss, PoolObserver};
use crate::sandbox::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The kind of ready sandbox (`sandbox::warm::pool::Kind`): plain or preloaded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

impl KindLabels {
    pub fn of(kind: Kind) -> Self {
        KindLabels { kind: kind.as_str() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A kind of ready sandbox and why a request got none of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MissLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// A kind of ready sandbox (or warm pod) and how a wait for one being started ended: here `hit`
/// or `cold`; the controller's `claimed` or `in_vain`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitLabels {
    pub kind: &'static str,
    pub ended: &'static str,
}

/// The values of `WhenLabels::when`.
const TEMPLATE_STARTS: [&str; 2] = ["at_need", "ahead"];

/// When a template of the pool was started: `at_need` or `ahead`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhenLabels {
    pub when: &'static str,
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
    /// The work already waiting would not start within the request's timeout (429).
    Overloaded,
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
            Rejection::Overloaded => "overloaded",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::Origin => "origin",
            Rejection::Host => "host",
            Rejection::TokenMissing => "token_missing",
            Rejection::TokenWrong => "token_wrong",
        }
    }
}

/// Every metric the service exports, in the order of the exposition.
pub const EXECUTIONS: Declaration = Declaration::counter("executions", &["outcome"], "Finished executions by outcome");
/// From a 10 ms hello world to the 60 s maximum timeout.
pub const EXECUTION_DURATION: Declaration = Declaration::histogram(
    "execution_duration_seconds",
    &["outcome"],
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
    "Wall-clock time of executions, sandbox set-up included",
);
pub const REJECTED: Declaration =
    Declaration::counter("rejected_requests", &["reason"], "Requests refused before execution, by reason");
pub const QUEUE_DEPTH: Declaration = Declaration::gauge(
    "queue_depth",
    &[],
    "Executions waiting for a free sandbox slot (on Kubernetes, the namespace's executions waiting for a pod)",
);
pub const IN_FLIGHT: Declaration = Declaration::gauge("in_flight", &[], "Executions running now");
pub const CANCELLED: Declaration = Declaration::counter(
    "cancelled_executions",
    &[],
    "Executions cancelled before their answer: their client disconnected, or DELETE /executions/{id}",
);
pub const EXECUTIONS_UNFINISHED: Declaration = Declaration::gauge(
    "executions_unfinished",
    &[],
    "Executions submitted to POST /executions that have not finished yet (queued or running; on Kubernetes, the namespace's, counted every 5 s)",
);
pub const EXECUTIONS_REMOVED: Declaration = Declaration::counter(
    "executions_removed",
    &[],
    "Finished executions removed from the store after --executions-keep-seconds",
);
pub const POOL_READY: Declaration =
    Declaration::gauge("pool_ready", &["kind"], "Ready sandboxes waiting for a script, by kind");
pub const POOL_READY_MEMORY: Declaration = Declaration::gauge(
    "pool_ready_memory_bytes",
    &["kind"],
    "Memory held by the ready sandboxes (their waiting interpreters), by kind",
);
pub const POOL_STARTING: Declaration =
    Declaration::gauge("pool_starting", &[], "Ready sandboxes being started (importing) now");
pub const POOL_TEMPLATE_MEMORY: Declaration = Declaration::gauge(
    "pool_template_memory_bytes",
    &[],
    "Memory of the templates the ready sandboxes are forked from (shared by them, not counted in pyexec_pool_ready_memory_bytes); 0 when there are none",
);
pub const POOL_TEMPLATE_STARTS: Declaration = Declaration::counter(
    "pool_template_starts",
    &["when"],
    "Templates started, by when: at_need (a fork waited for its imports: the first of its modules, or one replacing a template that ended, or was spent before its successor was ready), ahead (a successor, started near the end of a template's life, that took over with no fork waiting)",
);
/// From a plain sandbox on an idle machine (~20 ms) to a preloaded one starved by busy CPUs.
pub const POOL_START: Declaration = Declaration::histogram(
    "pool_start_seconds",
    &["kind"],
    &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
    "Time from a ready sandbox's start to its interpreter waiting for a script, by kind",
);
pub const POOL_HITS: Declaration =
    Declaration::counter("pool_hits", &["kind"], "Executions that ran in a ready sandbox (warm), by kind");
pub const POOL_MISSES: Declaration = Declaration::counter(
    "pool_misses",
    &["kind", "reason"],
    "Executions that got no ready sandbox of their kind and started cold, by kind and reason: empty (none ready, none expected sooner than a cold start), waited_in_vain (none came within a cold start's time), unfit (limits a ready sandbox cannot take)",
);
pub const POOL_WAITS: Declaration = Declaration::counter(
    "pool_waits",
    &["kind", "ended"],
    "Executions that found no ready sandbox and waited for one being started, by kind and how the wait ended: hit (they got it) or cold",
);
pub const POOL_TARGET: Declaration = Declaration::gauge(
    "pool_target",
    &["kind"],
    "Ready sandboxes the pool keeps now, by kind: arrivals during one start (measured), doubled, or --pool-min plus the last burst of requests that found none ready (fading), whichever is more, within --pool-min and --pool-max",
);
pub const COLD_STARTS: Declaration =
    Declaration::counter("cold_starts", &[], "Executions that started their own sandbox (cold)");

/// Every metric the service exports. A new one: its declaration above, a field, and its line in
/// `default`.
#[derive(Debug)]
pub struct Metrics {
    exposition: Exposition,
    pub executions: Family<OutcomeLabels, Counter>,
    pub duration: Family<OutcomeLabels, Histogram>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    /// Executions killed before their answer: the client went away, or they were cancelled.
    pub cancelled: Counter,
    /// Submitted executions not finished yet, and finished ones removed after their time.
    pub executions_unfinished: Gauge,
    pub executions_removed: Counter,
    /// Ready sandboxes waiting for a script, and the memory they hold, by kind.
    pub pool_ready: Family<KindLabels, Gauge>,
    pub pool_ready_memory: Family<KindLabels, Gauge>,
    /// Ready sandboxes being started (importing) now.
    pub pool_starting: Gauge,
    pub pool_template_memory: Gauge,
    pub pool_template_starts: Family<WhenLabels, Counter>,
    /// How long ready sandboxes took to start, by kind.
    pub pool_start: Family<KindLabels, Histogram>,
    /// Executions that got a ready sandbox, by kind.
    pub pool_hits: Family<KindLabels, Counter>,
    /// Executions that got no ready sandbox of their kind, by reason.
    pub pool_misses: Family<MissLabels, Counter>,
    /// Executions that waited for a ready sandbox being started, by how the wait ended.
    pub pool_waits: Family<WaitLabels, Counter>,
    /// Ready sandboxes the pool keeps now, by kind.
    pub pool_target: Family<KindLabels, Gauge>,
    /// Executions that started their own sandbox (pool empty, off, or limits it cannot apply).
    pub cold_starts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut e = Exposition::with_prefix("pyexec");
        let metrics = Metrics {
            executions: e.add(&EXECUTIONS, Family::default()),
            duration: e.add(
                &EXECUTION_DURATION,
                Family::new_with_constructor((|| EXECUTION_DURATION.new_histogram()) as fn() -> Histogram),
            ),
            rejected: e.add(&REJECTED, Family::default()),
            queue_depth: e.add(&QUEUE_DEPTH, Gauge::default()),
            in_flight: e.add(&IN_FLIGHT, Gauge::default()),
            cancelled: e.add(&CANCELLED, Counter::default()),
            executions_unfinished: e.add(&EXECUTIONS_UNFINISHED, Gauge::default()),
            executions_removed: e.add(&EXECUTIONS_REMOVED, Counter::default()),
            pool_ready: e.add(&POOL_READY, Family::default()),
            pool_ready_memory: e.add(&POOL_READY_MEMORY, Family::default()),
            pool_starting: e.add(&POOL_STARTING, Gauge::default()),
            pool_template_memory: e.add(&POOL_TEMPLATE_MEMORY, Gauge::default()),
            pool_template_starts: e.add(&POOL_TEMPLATE_STARTS, Family::default()),
            pool_start: e
                .add(&POOL_START, Family::new_with_constructor((|| POOL_START.new_histogram()) as fn() -> Histogram)),
            pool_hits: e.add(&POOL_HITS, Family::default()),
            pool_misses: e.add(&POOL_MISSES, Family::default()),
            pool_waits: e.add(&POOL_WAITS, Family::default()),
            pool_target: e.add(&POOL_TARGET, Family::default()),
            cold_starts: e.add(&COLD_STARTS, Counter::default()),
            exposition: e,
        };
        for outcome in Outcome::ALL {
            let labels = OutcomeLabels { outcome: outcome.as_str().to_string() };
            let _ = metrics.executions.get_or_create(&labels);
        }
        for when in TEMPLATE_STARTS {
            let _ = metrics.pool_template_starts.get_or_create(&WhenLabels { when });
        }
        for kind in Kind::ALL {
            let labels = KindLabels::of(kind);
            let _ = metrics.pool_ready.get_or_create(&labels);
            let _ = metrics.pool_ready_memory.get_or_create(&labels);
            let _ = metrics.pool_hits.get_or_create(&labels);
            let _ = metrics.pool_start.get_or_create(&labels);
            let _ = metrics.pool_target.get_or_create(&labels);
            for reason in [Miss::Empty, Miss::WaitedInVain].map(|miss| miss.as_str()).into_iter().chain(["unfit"]) {
                let _ = metrics.pool_misses.get_or_create(&MissLabels { kind: kind.as_str(), reason });
            }
            for ended in ["hit", "cold"] {
                let _ = metrics.pool_waits.get_or_create(&WaitLabels { kind: kind.as_str(), ended });
            }
        }
        metrics
    }
}

impl PoolObserver for Metrics {
    fn ready(&self, kind: Kind, count: usize, memory_bytes: u64) {
        let labels = KindLabels::of(kind);
        self.pool_ready.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
        self.pool_ready_memory.get_or_create(&labels).set(i64::try_from(memory_bytes).unwrap_or(i64::MAX));
    }

    fn started(&self, kind: Kind, seconds: f64) {
        self.pool_start.get_or_create(&KindLabels::of(kind)).observe(seconds);
    }

    fn starting(&self, count: usize) {
        self.pool_starting.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn target(&self, kind: Kind, count: usize) {
        self.pool_target.get_or_create(&KindLabels::of(kind)).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn template(&self, memory_bytes: u64) {
        self.pool_template_memory.set(i64::try_from(memory_bytes).unwrap_or(i64::MAX));
    }

    fn template_starts(&self, at_need: u64, ahead: u64) {
        for (when, total) in TEMPLATE_STARTS.into_iter().zip([at_need, ahead]) {
            let counter = self.pool_template_starts.get_or_create(&WhenLabels { when });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

impl Metrics {
    pub fn record_execution(&self, outcome: Outcome, seconds: f64) {
        let labels = OutcomeLabels { outcome: outcome.as_str().to_string() };
        self.executions.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    /// A request for a ready sandbox of `kind`: a hit, or a miss and its reason; and how a wait
    /// for a start ended, if it waited.
    pub fn record_claim(&self, kind: Kind, claim: &Claim) {
        let ended = match claim {
            Claim::Hit { waited, .. } => {
                self.pool_hits.get_or_create(&KindLabels::of(kind)).inc();
                waited.then_some("hit")
            }
            Claim::Miss(miss) => {
                self.pool_misses.get_or_create(&MissLabels { kind: kind.as_str(), reason: miss.as_str() }).inc();
                matches!(miss, Miss::WaitedInVain).then_some("cold")
            }
        };
        if let Some(ended) = ended {
            self.pool_waits.get_or_create(&WaitLabels { kind: kind.as_str(), ended }).inc();
        }
    }

    pub fn record_rejection(&self, reason: Rejection) {
        self.rejected.get_or_create(&ReasonLabels { reason: reason.as_str().to_string() }).inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        self.exposition.render()
    }

    /// The registry, with the declaration of every metric in it.
    pub fn exposition(&self) -> &Exposition {
        &self.exposition
    }
}

#[cfg(test)]
mod tests;
