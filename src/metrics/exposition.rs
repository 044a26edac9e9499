//! The one way metrics are declared and rendered, by the service (`metrics::Metrics`) and the
//! controller (`controller::metrics::ControllerMetrics`) alike.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

use super::Declaration;

/// A registry of metrics under one name prefix, the declarations they were registered with, and
/// its OpenMetrics text (GET /metrics).
#[derive(Debug)]
pub struct Exposition {
    prefix: &'static str,
    registry: Registry,
    declarations: Vec<Declaration>,
}

impl Exposition {
    /// An empty registry whose metric names start with `prefix_`.
    pub fn with_prefix(prefix: &'static str) -> Self {
        Exposition { prefix, registry: Registry::with_prefix(prefix), declarations: Vec::new() }
    }

    /// Registers `metric` under its declaration's name and help and gives it back, to be kept by
    /// its owner: one metric, one expression (`executions: e.add(&EXECUTIONS, Family::default())`).
    pub fn add<M: Metric + Clone>(&mut self, declaration: &Declaration, metric: M) -> M {
        self.registry.register(declaration.name, declaration.help, metric.clone());
        self.declarations.push(*declaration);
        metric
    }

    /// The prefix every metric name starts with (without its `_`).
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// The declarations of every metric, in the order they were added.
    pub fn declarations(&self) -> &[Declaration] {
        &self.declarations
    }

    /// The OpenMetrics text exposition of every metric, in the order they were added.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Helpers for tests that read an exposition.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::metrics::MetricKind;

    /// The `# HELP` and `# TYPE` lines of an exposition, in order.
    pub(crate) fn descriptors(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("# HELP ") || l.starts_with("# TYPE ")).collect()
    }

    /// The `le` bounds of one histogram's buckets, as rendered.
    pub(crate) fn buckets<'a>(text: &'a str, histogram: &str) -> Vec<&'a str> {
        let prefix = format!("{histogram}_bucket{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect()
    }

    /// Where the rendered text of `exposition` differs from its declarations: a type, the label
    /// names of a series, a histogram's buckets, or a labelled metric with no series to check.
    pub(crate) fn mismatches(exposition: &Exposition) -> Vec<String> {
        let text = exposition.render();
        let mut found = Vec::new();
        for declaration in exposition.declarations() {
            let name = format!("{}_{}", exposition.prefix(), declaration.name);
            let type_line = format!("# TYPE {name} {}", declaration.kind.as_str());
            if !text.lines().any(|l| l == type_line) {
                found.push(format!("{name}: no line {type_line:?}"));
            }
            let series: Vec<&str> = text.lines().filter(|l| series_of(l) == Some(name.as_str())).collect();
            if !declaration.labels.is_empty() && series.is_empty() {
                found.push(format!("{name}: no series to check its labels against"));
            }
            for line in series {
                if label_names(line) != declaration.labels {
                    found.push(format!("{name}: {line:?} does not carry exactly {:?}", declaration.labels));
                }
            }
            if let MetricKind::Histogram(declared) = declaration.kind {
                let expected: Vec<String> =
                    declared.iter().map(|b| format!("{b:?}")).chain(["+Inf".to_string()]).collect();
                // One run of buckets per series, each ending at +Inf.
                for rendered in buckets(&text, &name).split_inclusive(|b| *b == "+Inf") {
                    if rendered != expected {
                        found.push(format!("{name}: buckets {rendered:?}, declared {expected:?}"));
                    }
                }
            }
        }
        found
    }

    /// The metric a sample line belongs to: its name without `_total`, `_bucket`, `_sum`, `_count`.
    fn series_of(line: &str) -> Option<&str> {
        if line.starts_with('#') {
            return None;
        }
        let sample = line.split(['{', ' ']).next()?;
        let metric = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| sample.strip_suffix(suffix))
            .unwrap_or(sample);
        Some(metric)
    }

    /// The label names of a sample line, `le` aside.
    fn label_names(line: &str) -> Vec<&str> {
        let Some(labels) = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(labels, _)| labels)
        else {
            return Vec::new();
        };
        labels.split(',').filter_map(|pair| pair.split_once('=')).map(|(name, _)| name).filter(|n| *n != "le").collect()
    }
}
