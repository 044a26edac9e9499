//! What /metrics exposes, pinned: every metric's name, type, help text, labels and buckets, for the
//! service and the controller alike. Dashboards and alerts are written against these names.

use std::time::Duration;

use crate::controller::metrics::ControllerMetrics;
use crate::metrics::{Metrics, Rejection};
use crate::sandbox::Outcome;

/// The `# HELP` and `# TYPE` lines of an exposition, in order.
fn descriptors(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("# HELP ") || l.starts_with("# TYPE ")).collect()
}

/// The `le` bounds of one histogram's buckets, as rendered.
fn buckets<'a>(text: &'a str, histogram: &str) -> Vec<&'a str> {
    let prefix = format!("{histogram}_bucket{{");
    text.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()).collect()
}

#[test]
fn the_service_exposes_these_metrics() {
    let metrics = Metrics::default();
    metrics.record_execution(Outcome::Success, 0.02);
    metrics.record_rejection(Rejection::Busy);
    let text = metrics.render();
    assert_eq!(
        descriptors(&text),
        [
            "# HELP pyexec_executions Finished executions by outcome.",
            "# TYPE pyexec_executions counter",
            "# HELP pyexec_execution_duration_seconds Wall-clock time of executions, sandbox set-up included.",
            "# TYPE pyexec_execution_duration_seconds histogram",
            "# HELP pyexec_rejected_requests Requests refused before execution, by reason.",
            "# TYPE pyexec_rejected_requests counter",
            "# HELP pyexec_queue_depth Executions waiting for a free sandbox slot.",
            "# TYPE pyexec_queue_depth gauge",
            "# HELP pyexec_in_flight Executions running now.",
            "# TYPE pyexec_in_flight gauge",
            "# HELP pyexec_cancelled_executions Executions cancelled because their client disconnected before the answer.",
            "# TYPE pyexec_cancelled_executions counter",
            "# HELP pyexec_pool_ready Ready sandboxes waiting for a script, by kind.",
            "# TYPE pyexec_pool_ready gauge",
            "# HELP pyexec_pool_ready_memory_bytes Memory held by the ready sandboxes (their waiting interpreters), by kind.",
            "# TYPE pyexec_pool_ready_memory_bytes gauge",
            "# HELP pyexec_pool_starting Ready sandboxes being started (importing) now.",
            "# TYPE pyexec_pool_starting gauge",
            "# HELP pyexec_pool_template_memory_bytes Memory of the templates the ready sandboxes are forked from (shared by them, not counted in pyexec_pool_ready_memory_bytes); 0 when there are none.",
            "# TYPE pyexec_pool_template_memory_bytes gauge",
            "# HELP pyexec_pool_start_seconds Time from a ready sandbox's start to its interpreter waiting for a script, by kind.",
            "# TYPE pyexec_pool_start_seconds histogram",
            "# HELP pyexec_pool_hits Executions that ran in a ready sandbox (warm), by kind.",
            "# TYPE pyexec_pool_hits counter",
            "# HELP pyexec_pool_misses Executions that found no ready sandbox of their kind.",
            "# TYPE pyexec_pool_misses counter",
            "# HELP pyexec_cold_starts Executions that started their own sandbox (cold).",
            "# TYPE pyexec_cold_starts counter",
        ]
    );
    // Every outcome is exposed from the start, at zero until it happens.
    for outcome in Outcome::ALL {
        let line = format!("pyexec_executions_total{{outcome=\"{}\"}} ", outcome.as_str());
        assert!(text.lines().any(|l| l.starts_with(&line)), "no {line} in {text}");
    }
    assert!(text.contains("pyexec_rejected_requests_total{reason=\"busy\"} 1"), "{text}");
    assert_eq!(
        buckets(&text, "pyexec_execution_duration_seconds"),
        ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf"]
    );
}

#[test]
fn the_controller_exposes_these_metrics() {
    let metrics = ControllerMetrics::default();
    metrics.record_failure("kube");
    metrics.record_finish("Succeeded", "Completed", "ok", Some(Duration::from_secs(1)));
    let text = metrics.render();
    assert_eq!(
        descriptors(&text),
        [
            "# HELP pyexec_controller_reconciles Reconciles run.",
            "# TYPE pyexec_controller_reconciles counter",
            "# HELP pyexec_controller_reconcile_failures Reconciles that failed, by error.",
            "# TYPE pyexec_controller_reconcile_failures counter",
            "# HELP pyexec_controller_reconcile_duration_seconds Time one reconcile took.",
            "# TYPE pyexec_controller_reconcile_duration_seconds histogram",
            "# HELP pyexec_controller_executions Executions finished, by phase, reason and outcome.",
            "# TYPE pyexec_controller_executions counter",
            "# HELP pyexec_controller_pod_start_latency_seconds Time from a sandbox pod's creation to its container's start.",
            "# TYPE pyexec_controller_pod_start_latency_seconds histogram",
            "# HELP pyexec_controller_pool_ready_pods Warm pods whose sandbox waits for a job.",
            "# TYPE pyexec_controller_pool_ready_pods gauge",
            "# HELP pyexec_controller_pool_warming_pods Warm pods starting or being attached to.",
            "# TYPE pyexec_controller_pool_warming_pods gauge",
            "# HELP pyexec_controller_pool_pods_created Warm pods created.",
            "# TYPE pyexec_controller_pool_pods_created counter",
            "# HELP pyexec_controller_pool_claims Executions that claimed a warm pod.",
            "# TYPE pyexec_controller_pool_claims counter",
            "# HELP pyexec_controller_pool_misses Executions that found no warm pod, by reason.",
            "# TYPE pyexec_controller_pool_misses counter",
            "# HELP pyexec_controller_pool_claim_latency_seconds Time to claim a warm pod.",
            "# TYPE pyexec_controller_pool_claim_latency_seconds histogram",
        ]
    );
    assert!(text.contains("pyexec_controller_reconcile_failures_total{error=\"kube\"} 1"), "{text}");
    assert!(
        text.contains("pyexec_controller_executions_total{phase=\"Succeeded\",reason=\"Completed\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert_eq!(
        buckets(&text, "pyexec_controller_reconcile_duration_seconds"),
        ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "5.0", "+Inf"]
    );
    assert_eq!(
        buckets(&text, "pyexec_controller_pod_start_latency_seconds"),
        ["0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "+Inf"]
    );
}
