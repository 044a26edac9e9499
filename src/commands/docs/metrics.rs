//! docs/metrics.md, read from the declarations the service's and the controller's metrics are
//! registered with.

use super::generated_by;
use super::table::{code, table};
use crate::controller::metrics::ControllerMetrics;
use crate::metrics::{Declaration, Exposition, MetricKind, Metrics};

/// The page: one table for `pyexec serve`'s /metrics, one for `pyexec controller`'s.
pub fn metrics() -> String {
    let mut page = format!(
        "# Metrics\n\n{} Both commands serve the OpenMetrics text format at `GET /metrics`. A counter's \
         samples end in `_total`; a histogram's in `_bucket` (one per upper bound `le`, listed below, \
         and `+Inf`), `_sum` and `_count`.\n",
        generated_by("metrics", "the metrics' declarations (`src/metrics.rs`, `src/controller/metrics.rs`)")
    );
    page.push_str(&section("`pyexec serve`", Metrics::default().exposition()));
    page.push_str(&section("`pyexec controller`", ControllerMetrics::default().exposition()));
    page
}

fn section(title: &str, exposition: &Exposition) -> String {
    let rows: Vec<Vec<String>> = exposition.declarations().iter().map(|d| row(exposition.prefix(), d)).collect();
    format!("\n## {title}\n\n{}", table(&["Metric", "Type", "Labels", "Help"], &rows))
}

fn row(prefix: &str, declaration: &Declaration) -> Vec<String> {
    let name = match declaration.kind {
        MetricKind::Counter => format!("{prefix}_{}_total", declaration.name),
        MetricKind::Gauge | MetricKind::Histogram(_) => format!("{prefix}_{}", declaration.name),
    };
    let kind = match declaration.kind {
        MetricKind::Histogram(buckets) => {
            let bounds: Vec<String> = buckets.iter().map(f64::to_string).collect();
            format!("histogram ({})", bounds.join(", "))
        }
        MetricKind::Counter | MetricKind::Gauge => declaration.kind.as_str().to_string(),
    };
    let labels: Vec<String> = declaration.labels.iter().map(|label| code(label)).collect();
    vec![code(&name), kind, labels.join(", "), format!("{}.", declaration.help)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_listed_under_its_sample_name_and_a_histogram_with_its_buckets() {
        let page = metrics();
        assert!(page.contains("| `pyexec_executions_total` | counter | `outcome` | Finished executions by outcome. |"));
        assert!(page.contains(
            "| `pyexec_controller_reconcile_duration_seconds` | histogram (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5) |  | Time one reconcile took. |"
        ));
    }
}
