//! What the controller's /metrics exposes, pinned: every metric's name, type, help text, labels
//! and buckets. Dashboards and alerts are written against these names.

use std::time::Duration;

use super::ControllerMetrics;
use crate::metrics::testing::{buckets, descriptors, mismatches};

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
            "# HELP pyexec_controller_pool_ready_pods Warm pods whose sandbox waits for a job, by kind.",
            "# TYPE pyexec_controller_pool_ready_pods gauge",
            "# HELP pyexec_controller_pool_warming_pods Warm pods starting or being attached to, by kind.",
            "# TYPE pyexec_controller_pool_warming_pods gauge",
            "# HELP pyexec_controller_pool_target_pods Warm pods each pool aims to keep, from the recent demand for its kind and how long a pod takes to start, within its floor and ceiling.",
            "# TYPE pyexec_controller_pool_target_pods gauge",
            "# HELP pyexec_controller_pool_pods_created Warm pods created, by kind.",
            "# TYPE pyexec_controller_pool_pods_created counter",
            "# HELP pyexec_controller_pool_claims Executions that claimed a warm pod, by the pod's kind and the kind the script asked for.",
            "# TYPE pyexec_controller_pool_claims counter",
            "# HELP pyexec_controller_pool_misses Executions that found no warm pod of either kind, by reason.",
            "# TYPE pyexec_controller_pool_misses counter",
            "# HELP pyexec_controller_pool_waits Executions that found no ready pod and waited for one already starting, by the pool's kind and how the wait ended (claimed, or in_vain: then a pod of its own).",
            "# TYPE pyexec_controller_pool_waits counter",
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

#[test]
fn every_controller_metric_renders_as_declared() {
    let metrics = ControllerMetrics::default();
    metrics.record_failure("kube");
    metrics.record_finish("Succeeded", "Completed", "ok", None);
    metrics.record_pool_miss("empty");
    metrics.record_pool_claim("plain", "preloaded", Duration::from_millis(3));
    metrics.record_pool_created("plain");
    metrics.set_pool("preloaded", 2, 1);
    metrics.set_pool_target("plain", 4);
    metrics.record_pool_wait("plain", true);
    assert_eq!(mismatches(metrics.exposition()), Vec::<String>::new());
}
