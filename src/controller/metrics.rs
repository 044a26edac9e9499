//! Prometheus metrics of the controller, rendered at GET /metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::Exposition;

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

/// Every metric the controller exports. A new one: a field, and its line in `default` (name, help).
#[derive(Debug)]
pub struct ControllerMetrics {
    exposition: Exposition,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub executions: Family<FinishLabels, Counter>,
    pub pod_start_latency: Histogram,
    pub pool_ready: Gauge,
    pub pool_warming: Gauge,
    pub pool_created: Counter,
    pub pool_claims: Counter,
    pub pool_misses: Family<MissLabels, Counter>,
    pub pool_claim_latency: Histogram,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let mut e = Exposition::with_prefix("pyexec_controller");
        ControllerMetrics {
            reconciles: e.add("reconciles", "Reconciles run", Counter::default()),
            failures: e.add("reconcile_failures", "Reconciles that failed, by error", Family::default()),
            // Most reconciles are one or two API calls; reading a large log takes longer.
            reconcile_duration: e.add(
                "reconcile_duration_seconds",
                "Time one reconcile took",
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            ),
            executions: e.add("executions", "Executions finished, by phase, reason and outcome", Family::default()),
            // From a pod on a warm node (~1 s) to a cold image pull (minutes).
            pod_start_latency: e.add(
                "pod_start_latency_seconds",
                "Time from a sandbox pod's creation to its container's start",
                Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            ),
            pool_ready: e.add("pool_ready_pods", "Warm pods whose sandbox waits for a job", Gauge::default()),
            pool_warming: e.add("pool_warming_pods", "Warm pods starting or being attached to", Gauge::default()),
            pool_created: e.add("pool_pods_created", "Warm pods created", Counter::default()),
            pool_claims: e.add("pool_claims", "Executions that claimed a warm pod", Counter::default()),
            pool_misses: e.add("pool_misses", "Executions that found no warm pod, by reason", Family::default()),
            // A label patch on the API server: milliseconds.
            pool_claim_latency: e.add(
                "pool_claim_latency_seconds",
                "Time to claim a warm pod",
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            ),
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

    pub fn record_pool_claim(&self, latency: Duration) {
        self.pool_claims.inc();
        self.pool_claim_latency.observe(latency.as_secs_f64());
    }

    pub fn set_pool(&self, ready: usize, warming: usize) {
        self.pool_ready.set(i64::try_from(ready).unwrap_or(i64::MAX));
        self.pool_warming.set(i64::try_from(warming).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        self.exposition.render()
    }
}
