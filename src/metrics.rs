//! Prometheus metrics of the service, rendered at GET /metrics.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::sandbox::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
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
        for outcome in Outcome::ALL {
            let labels = OutcomeLabels { outcome: outcome.as_str().to_string() };
            let _ = executions.get_or_create(&labels);
        }
        Metrics { registry: Mutex::new(registry), executions, duration, rejected, queue_depth, in_flight }
    }
}

impl Metrics {
    pub fn record_execution(&self, outcome: Outcome, seconds: f64) {
        let labels = OutcomeLabels { outcome: outcome.as_str().to_string() };
        self.executions.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    pub fn record_rejection(&self, reason: &str) {
        self.rejected.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
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
