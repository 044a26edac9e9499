//! The one way metrics are declared and rendered, by the service (`metrics::Metrics`) and the
//! controller (`controller::metrics::ControllerMetrics`) alike.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

/// A registry of metrics under one name prefix, and its OpenMetrics text (GET /metrics).
#[derive(Debug)]
pub struct Exposition(Registry);

impl Exposition {
    /// An empty registry whose metric names start with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Exposition(Registry::with_prefix(prefix))
    }

    /// Registers `metric` as `prefix_name` with its help text and gives it back, to be kept by its
    /// owner: one metric, one expression (`executions: e.add("executions", "…", Family::default())`).
    pub fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    /// The OpenMetrics text exposition of every metric, in the order they were added.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.0);
        out
    }
}
