//! What the service's /metrics exposes, pinned: every metric's name, type, help text, labels and
//! buckets. Dashboards and alerts are written against these names.

use crate::metrics::testing::{buckets, descriptors, mismatches};
use crate::metrics::{Metrics, Rejection};
use crate::sandbox::Outcome;

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
            "# HELP pyexec_queue_depth Executions waiting for a free sandbox slot (on Kubernetes, the namespace's executions waiting for a pod).",
            "# TYPE pyexec_queue_depth gauge",
            "# HELP pyexec_in_flight Executions running now.",
            "# TYPE pyexec_in_flight gauge",
            "# HELP pyexec_cancelled_executions Executions cancelled before their answer: their client disconnected, or DELETE /executions/{id}.",
            "# TYPE pyexec_cancelled_executions counter",
            "# HELP pyexec_executions_unfinished Executions submitted to POST /executions that have not finished yet (queued or running; on Kubernetes, the namespace's, counted every 5 s).",
            "# TYPE pyexec_executions_unfinished gauge",
            "# HELP pyexec_executions_removed Finished executions removed from the store after --executions-keep-seconds.",
            "# TYPE pyexec_executions_removed counter",
            "# HELP pyexec_pool_ready Ready sandboxes waiting for a script, by kind.",
            "# TYPE pyexec_pool_ready gauge",
            "# HELP pyexec_pool_ready_memory_bytes Memory held by the ready sandboxes (their waiting interpreters), by kind.",
            "# TYPE pyexec_pool_ready_memory_bytes gauge",
            "# HELP pyexec_pool_starting Ready sandboxes being started (importing) now.",
            "# TYPE pyexec_pool_starting gauge",
            "# HELP pyexec_pool_template_memory_bytes Memory of the templates the ready sandboxes are forked from (shared by them, not counted in pyexec_pool_ready_memory_bytes); 0 when there are none.",
            "# TYPE pyexec_pool_template_memory_bytes gauge",
            "# HELP pyexec_pool_template_starts Templates started, by when: at_need (a fork waited for its imports: the first of its modules, or one replacing a template that ended, or was spent before its successor was ready), ahead (a successor, started near the end of a template's life, that took over with no fork waiting).",
            "# TYPE pyexec_pool_template_starts counter",
            "# HELP pyexec_pool_start_seconds Time from a ready sandbox's start to its interpreter waiting for a script, by kind.",
            "# TYPE pyexec_pool_start_seconds histogram",
            "# HELP pyexec_pool_hits Executions that ran in a ready sandbox (warm), by kind.",
            "# TYPE pyexec_pool_hits counter",
            "# HELP pyexec_pool_misses Executions that got no ready sandbox of their kind and started cold, by kind and reason: empty (none ready, none expected sooner than a cold start), waited_in_vain (none came within a cold start's time), unfit (limits a ready sandbox cannot take).",
            "# TYPE pyexec_pool_misses counter",
            "# HELP pyexec_pool_waits Executions that found no ready sandbox and waited for one being started, by kind and how the wait ended: hit (they got it) or cold.",
            "# TYPE pyexec_pool_waits counter",
            "# HELP pyexec_pool_target Ready sandboxes the pool keeps now, by kind: arrivals during one start (measured), doubled, or --pool-min plus the last burst of requests that found none ready (fading), whichever is more, within --pool-min and --pool-max.",
            "# TYPE pyexec_pool_target gauge",
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
fn every_service_metric_renders_as_declared() {
    let metrics = Metrics::default();
    metrics.record_execution(Outcome::Success, 0.02);
    metrics.record_rejection(Rejection::Busy);
    assert_eq!(mismatches(metrics.exposition()), Vec::<String>::new());
}
