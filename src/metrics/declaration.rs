//! What a metric is, said once: its registration takes the name and help from its declaration,
//! and docs/metrics.md is printed from the declarations registered (`pyexec docs metrics`).

use prometheus_client::metrics::histogram::Histogram;

/// One metric: name, type, label names and help text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Declaration {
    /// The name after the exposition's prefix: `executions` is exported as `pyexec_executions`.
    pub name: &'static str,
    pub kind: MetricKind,
    /// The names of the labels its series carry; none for a metric of one series.
    pub labels: &'static [&'static str],
    /// One sentence, without its final full stop (the exposition adds it).
    pub help: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// A histogram with these bucket upper bounds, in seconds or the unit its name ends with.
    Histogram(&'static [f64]),
}

impl MetricKind {
    /// The OpenMetrics type name, as in the exposition's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram(_) => "histogram",
        }
    }
}

impl Declaration {
    pub const fn counter(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Self {
        Declaration { name, kind: MetricKind::Counter, labels, help }
    }

    pub const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Self {
        Declaration { name, kind: MetricKind::Gauge, labels, help }
    }

    pub const fn histogram(
        name: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        help: &'static str,
    ) -> Self {
        Declaration { name, kind: MetricKind::Histogram(buckets), labels, help }
    }

    /// An empty histogram with the declared buckets (none when the metric is not a histogram).
    pub fn new_histogram(&self) -> Histogram {
        match self.kind {
            MetricKind::Histogram(buckets) => Histogram::new(buckets.iter().copied()),
            MetricKind::Counter | MetricKind::Gauge => Histogram::new(std::iter::empty()),
        }
    }
}
