//! Prometheus metrics of the controller, rendered at GET /metrics.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        let mut registry = Registry::with_prefix("pyexec_controller");
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

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
