//! Prometheus metrics of the controller, rendered at GET /metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Declaration, Exposition, WaitLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishLabels {
    pub phase: String,
    pub reason: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MissLabels {
    pub reason: String,
}

/// A warm pod's kind: `plain` (nothing imported) or `preloaded`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The kind of warm pod claimed, and the kind the script asked for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    pub kind: String,
    pub wanted: String,
}

/// Every metric the controller exports, in the order of the exposition.
pub const RECONCILES: Declaration = Declaration::counter("reconciles", &[], "Reconciles run");
pub const RECONCILE_FAILURES: Declaration =
    Declaration::counter("reconcile_failures", &["error"], "Reconciles that failed, by error");
/// Most reconciles are one or two API calls; reading a large log takes longer.
pub const RECONCILE_DURATION: Declaration = Declaration::histogram(
    "reconcile_duration_seconds",
    &[],
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
    "Time one reconcile took",
);
pub const EXECUTIONS: Declaration = Declaration::counter(
    "executions",
    &["phase", "reason", "outcome"],
    "Executions finished, by phase, reason and outcome",
);
/// From a pod on a warm node (about a second) to a cold image pull (minutes).
pub const POD_START_LATENCY: Declaration = Declaration::histogram(
    "pod_start_latency_seconds",
    &[],
    &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
    "Time from a sandbox pod's creation to its container's start",
);
pub const POOL_READY: Declaration =
    Declaration::gauge("pool_ready_pods", &["kind"], "Warm pods whose sandbox waits for a job, by kind");
pub const POOL_TARGET: Declaration = Declaration::gauge(
    "pool_target_pods",
    &["kind"],
    "Warm pods each pool aims to keep, from the recent demand for its kind and how long a pod takes to start, within its floor and ceiling",
);
pub const POOL_WARMING: Declaration =
    Declaration::gauge("pool_warming_pods", &["kind"], "Warm pods starting or being attached to, by kind");
pub const POOL_CREATED: Declaration =
    Declaration::counter("pool_pods_created", &["kind"], "Warm pods created, by kind");
pub const POOL_CLAIMS: Declaration = Declaration::counter(
    "pool_claims",
    &["kind", "wanted"],
    "Executions that claimed a warm pod, by the pod's kind and the kind the script asked for",
);
pub const POOL_MISSES: Declaration =
    Declaration::counter("pool_misses", &["reason"], "Executions that found no warm pod of either kind, by reason");
/// A label patch on the API server: milliseconds.
pub const POOL_WAITS: Declaration = Declaration::counter(
    "pool_waits",
    &["kind", "ended"],
    "Executions that found no ready pod and waited for one already starting, by the pool's kind and how the wait ended (claimed, or in_vain: then a pod of its own)",
);
pub const POOL_CLAIM_LATENCY: Declaration = Declaration::histogram(
    "pool_claim_latency_seconds",
    &[],
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
    "Time to claim a warm pod",
);

/// Every metric the controller exports. A new one: its declaration above, a field, and its line
/// in `default`.
#[derive(Debug)]
pub struct ControllerMetrics {
    exposition: Exposition,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub executions: Family<FinishLabels, Counter>,
    pub pod_start_latency: Histogram,
    pub pool_ready: Family<KindLabels, Gauge>,
    pub pool_warming: Family<KindLabels, Gauge>,
    pub pool_target: Family<KindLabels, Gauge>,
    pub pool_created: Family<KindLabels, Counter>,
    pub pool_claims: Family<ClaimLabels, Counter>,
    pub pool_misses: Family<MissLabels, Counter>,
    pub pool_waits: Family<WaitLabels, Counter>,
    pub pool_claim_latency: Histogram,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let mut e = Exposition::with_prefix("pyexec_controller");
        ControllerMetrics {
            reconciles: e.add(&RECONCILES, Counter::default()),
            failures: e.add(&RECONCILE_FAILURES, Family::default()),
            reconcile_duration: e.add(&RECONCILE_DURATION, RECONCILE_DURATION.new_histogram()),
            executions: e.add(&EXECUTIONS, Family::default()),
            pod_start_latency: e.add(&POD_START_LATENCY, POD_START_LATENCY.new_histogram()),
            pool_ready: e.add(&POOL_READY, Family::default()),
            pool_warming: e.add(&POOL_WARMING, Family::default()),
            pool_target: e.add(&POOL_TARGET, Family::default()),
            pool_created: e.add(&POOL_CREATED, Family::default()),
            pool_claims: e.add(&POOL_CLAIMS, Family::default()),
            pool_misses: e.add(&POOL_MISSES, Family::default()),
            pool_waits: e.add(&POOL_WAITS, Family::default()),
            pool_claim_latency: e.add(&POOL_CLAIM_LATENCY, POOL_CLAIM_LATENCY.new_histogram()),
            exposition: e,
        }
    }
}

impl ControllerMetrics {
    pub fn record_failure(&self, error: &str) {
        self.failures.get_or_create(&ErrorLabels { error: error.to_string() }).inc();
    }

    pub fn record_finish(&self, phase: &str, reason: &str, outcome: &str, start_latency: Option<Duration>) {
        let labels = FinishLabels { phase: phase.into(), reason: reason.into(), outcome: outcome.into() };
        self.executions.get_or_create(&labels).inc();
        if let Some(latency) = start_latency {
            self.pod_start_latency.observe(latency.as_secs_f64());
        }
    }

    pub fn record_pool_miss(&self, reason: &str) {
        self.pool_misses.get_or_create(&MissLabels { reason: reason.to_string() }).inc();
    }

    pub fn record_pool_claim(&self, kind: &str, wanted: &str, latency: Duration) {
        self.pool_claims.get_or_create(&ClaimLabels { kind: kind.into(), wanted: wanted.into() }).inc();
        self.pool_claim_latency.observe(latency.as_secs_f64());
    }

    pub fn record_pool_wait(&self, kind: &'static str, claimed: bool) {
        let ended = if claimed { "claimed" } else { "in_vain" };
        self.pool_waits.get_or_create(&WaitLabels { kind, ended }).inc();
    }

    pub fn record_pool_created(&self, kind: &str) {
        self.pool_created.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    pub fn set_pool_target(&self, kind: &str, target: usize) {
        let labels = KindLabels { kind: kind.into() };
        self.pool_target.get_or_create(&labels).set(i64::try_from(target).unwrap_or(i64::MAX));
    }

    pub fn set_pool(&self, kind: &str, ready: usize, warming: usize) {
        let labels = KindLabels { kind: kind.into() };
        self.pool_ready.get_or_create(&labels).set(i64::try_from(ready).unwrap_or(i64::MAX));
        self.pool_warming.get_or_create(&labels).set(i64::try_from(warming).unwrap_or(i64::MAX));
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
