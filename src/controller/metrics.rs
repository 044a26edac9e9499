//! Prometheus metrics of the controller, rendered at GET /metrics.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Mutex<Registry>,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MissLabels {
    pub reason: String,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        // Most reconciles are one or two API calls; reading a large log takes longer.
        let reconcile_duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let executions = Family::<FinishLabels, Counter>::default();
        // From a pod on a warm node (~1 s) to a cold image pull (minutes).
        let pod_start_latency = Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]);
        let pool_ready = Gauge::default();
        let pool_warming = Gauge::default();
        let pool_created = Counter::default();
        let pool_claims = Counter::default();
        let pool_misses = Family::<MissLabels, Counter>::default();
        // A label patch on the API server: milliseconds.
        let pool_claim_latency = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]);
        let mut registry = Registry::with_prefix("pyexec_controller");
        registry.register("pool_ready_pods", "Warm pods whose sandbox waits for a job", pool_ready.clone());
        registry.register("pool_warming_pods", "Warm pods starting or being attached to", pool_warming.clone());
        registry.register("pool_pods_created", "Warm pods created", pool_created.clone());
        registry.register("pool_claims", "Executions that claimed a warm pod", pool_claims.clone());
        registry.register("pool_misses", "Executions that found no warm pod, by reason", pool_misses.clone());
        registry.register("pool_claim_latency_seconds", "Time to claim a warm pod", pool_claim_latency.clone());
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_failures", "Reconciles that failed, by error", failures.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", reconcile_duration.clone());
        registry.register("executions", "Executions finished, by phase, reason and outcome", executions.clone());
        registry.register(
            "pod_start_latency_seconds",
            "Time from a sandbox pod's creation to its container's start",
            pod_start_latency.clone(),
        );
        ControllerMetrics {
            registry: Mutex::new(registry),
            reconciles,
            failures,
            reconcile_duration,
            executions,
            pod_start_latency,
            pool_ready,
            pool_warming,
            pool_created,
            pool_claims,
            pool_misses,
            pool_claim_latency,
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
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
