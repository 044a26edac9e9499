//! Reconcile scenarios against a mocked API server: each test lists the exact calls the
//! reconciler must make, in order, and what the server answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::SignedDuration;
use kube::runtime::controller::Action;
use serde_json::json;

use super::reconcile::{error_policy, reconcile_execution, Context};
use super::status::{REASON_POD_CREATED, REASON_POD_FAILED, REASON_POD_START_TIMEOUT, REASON_POD_VANISHED};
use super::testing::*;
use super::{Error, Result};
use crate::crd::{Phase, PythonExecution, PythonExecutionStatus};
use crate::sandbox::{Envelope, Outcome};

/// Reconciles `execution` while `scenario` answers the calls; fails if the scenario's calls are
/// not all made within a second.
async fn reconcile_with<F, Fut>(execution: PythonExecution, scenario: F) -> (Result<Action>, Arc<Context>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    reconcile_with_cached(execution, &[], scenario).await
}

/// `reconcile_with`, the controller's pod cache holding `pods`.
async fn reconcile_with_cached<F, Fut>(
    execution: PythonExecution,
    pods: &[Pod],
    scenario: F,
) -> (Result<Action>, Arc<Context>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (ctx, server) = context_with_pods(pods);
    (reconcile_against(ctx.clone(), server, execution, scenario).await, ctx)
}

fn envelope_line() -> Vec<u8> {
    let envelope = Envelope {
        outcome: Outcome::Success,
        result: Some(serde_json::from_value(json!({"ok": true})).expect("map")),
        stdout: "hi\n".into(),
        stderr: String::new(),
        returncode: 0,
        error: None,
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: 31,
        files: Vec::new(),
        files_truncated: false,
        files_omitted: Vec::new(),
    };
    let line = serde_json::to_string(&envelope).expect("json");
    format!("INFO supervisor starting\n{line}\n").into_bytes()
}

/// The end of a successful execution: its own pod deleted (by uid), and no event (a success is
/// told by its status alone).
async fn pod_deleted_and_success_recorded(server: &mut ApiServer, pod: &Pod) {
    let delete = server.answer(200, pod).await.expect(Method::DELETE, POD);
    assert_eq!(delete.body["preconditions"]["uid"], "pod-uid-hello");
    server.expect_no_call().await;
}

fn assert_status_apply(call: &super::testing::Call, phase: &str) {
    assert!(call.query.contains("fieldManager=pyexec-controller"), "{}", call.query);
    assert!(call.query.contains("force=true"), "{}", call.query);
    assert_eq!(call.body["apiVersion"], "pyexec.dev/v1alpha1");
    assert_eq!(call.body["kind"], "PythonExecution");
    assert_eq!(call.body["metadata"]["resourceVersion"], "1", "the write is conditional on what was read");
    assert_eq!(call.body["status"]["phase"], phase);
}

#[tokio::test]
async fn a_new_execution_gets_one_pod_and_a_pending_status() {
    let new = execution("hello");
    let fresh = new.clone();
    let (action, _) = reconcile_with(new, |mut server| async move {
        server.answer(200, &fresh).await.expect(Method::GET, EXECUTION);
        let create = server.echo(201).await.expect(Method::POST, PODS);
        assert_eq!(create.body["metadata"]["name"], "hello-sandbox");
        assert_eq!(create.body["metadata"]["ownerReferences"][0]["uid"], "uid-hello");
        assert_eq!(create.body["spec"]["runtimeClassName"], "gvisor");
        let patch = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Pending");
        assert_eq!(patch.body["status"]["podName"], "hello-sandbox");
        let event = server.echo(201).await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], REASON_POD_CREATED);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(POD_START_TIMEOUT));
}

#[tokio::test]
async fn a_stale_cache_never_creates_a_second_pod() {
    let cached = execution("hello");
    let fresh = pending("hello");
    let (action, _) = reconcile_with(cached, |mut server| async move {
        server.answer(200, &fresh).await.expect(Method::GET, EXECUTION);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(Duration::from_secs(1)));
}

#[tokio::test]
async fn a_pod_left_by_a_restarted_controller_is_adopted_not_recreated() {
    let new = execution("hello");
    let fresh = new.clone();
    let (action, _) = reconcile_with(new, |mut server| async move {
        server.answer(200, &fresh).await.expect(Method::GET, EXECUTION);
        server.answer(409, conflict()).await.expect(Method::POST, PODS);
        let patch = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        assert_eq!(patch.body["status"]["podName"], "hello-sandbox");
        server.echo(201).await.expect(Method::POST, EVENTS);
    })
    .await;
    assert!(action.is_ok());
}

#[tokio::test]
async fn a_running_pod_whose_job_was_handed_over_is_followed_not_given_it_again() {
    let execution = delivered("hello");
    let pod = sandbox_pod(&execution, running_status());
    let echo = execution.clone();
    let (action, _) = reconcile_with(execution, |mut server| async move {
        server.answer(200, &pod).await.expect(Method::GET, POD);
        let patch = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Running");
    })
    .await;
    assert!(action.is_ok());
}

#[tokio::test]
async fn a_succeeded_pod_puts_its_envelope_in_the_status_and_is_deleted() {
    let execution = pending("hello");
    let pod = sandbox_pod(&execution, ended_status("Succeeded", 0));
    let echo = execution.clone();
    let (action, ctx) = reconcile_with(execution, |mut server| async move {
        server.answer(200, &pod).await.expect(Method::GET, POD);
        let log = server.answer_bytes(200, envelope_line()).await.expect(Method::GET, POD_LOG);
        assert!(log.query.contains("container=sandbox"), "{}", log.query);
        assert!(log.query.contains("limitBytes="), "the log read is bounded: {}", log.query);
        let patch = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Succeeded");
        assert_eq!(patch.body["status"]["result"], json!({"ok": true}));
        assert_eq!(patch.body["status"]["stdout"], "hi\n");
        assert_eq!(patch.body["status"]["outcome"], "success");
        assert_eq!(patch.body["status"]["returncode"], 0);
        pod_deleted_and_success_recorded(&mut server, &pod).await;
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
    assert!(ctx.metrics.render().contains("phase=\"Succeeded\""), "the outcome is counted");
}

#[tokio::test]
async fn a_pod_that_failed_without_an_envelope_fails_the_execution_with_its_log() {
    let execution = pending("hello");
    let pod = sandbox_pod(&execution, ended_status("Failed", 1));
    let echo = execution.clone();
    let (action, _) = reconcile_with(execution, |mut server| async move {
        server.answer(200, &pod).await.expect(Method::GET, POD);
        server.answer_bytes(200, b"pyexec: nsjail not found\n".to_vec()).await.expect(Method::GET, POD_LOG);
        let patch = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Failed");
        assert_eq!(patch.body["status"]["outcome"], "sandbox_failure");
        let error = patch.body["status"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("nsjail not found"), "{error}");
        server.answer(200, &pod).await.expect(Method::DELETE, POD);
        let event = server.echo(201).await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], REASON_POD_FAILED);
    })
    .await;
    assert!(action.is_ok());
}

#[tokio::test]
async fn a_vanished_pod_fails_the_execution_and_is_never_recreated() {
    let execution = pending("hello");
    let echo = execution.clone();
    let (action, _) = reconcile_with(execution, |mut server| async move {
        server.answer(404, not_found()).await.expect(Method::GET, POD);
        let patch = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Failed");
        assert_eq!(patch.body["status"]["conditions"][0]["reason"], REASON_POD_VANISHED);
        server.echo(201).await.expect(Method::POST, EVENTS);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
}

#[tokio::test]
async fn a_pod_that_cannot_start_within_the_timeout_fails_the_execution() {
    let execution = pending("hello");
    let mut pod = sandbox_pod(&execution, waiting_status("ImagePullBackOff"));
    pod.metadata.creation_timestamp = pod
        .metadata
        .creation_timestamp
        .map(|t| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0 - SignedDuration::from_mins(10)));
    let echo = execution.clone();
    let (action, _) = reconcile_with(execution, |mut server| async move {
        server.answer(200, &pod).await.expect(Method::GET, POD);
        let patch = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Failed");
        assert_eq!(patch.body["status"]["conditions"][0]["reason"], REASON_POD_START_TIMEOUT);
        let error = patch.body["status"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("ImagePullBackOff"), "{error}");
        server.answer(200, &pod).await.expect(Method::DELETE, POD);
        server.echo(201).await.expect(Method::POST, EVENTS);
    })
    .await;
    assert!(action.is_ok());
}

#[tokio::test]
async fn a_status_conflict_means_a_stale_copy_and_a_quick_retry() {
    let execution = pending("hello");
    let pod = sandbox_pod(&execution, running_status());
    let (action, _) = reconcile_with(execution, |mut server| async move {
        server.answer(200, &pod).await.expect(Method::GET, POD);
        server.answer(409, conflict()).await.expect(Method::PATCH, STATUS);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(Duration::from_secs(1)));
}

#[tokio::test]
async fn a_finished_execution_past_its_ttl_is_deleted() {
    let mut execution = finished("hello", Phase::Succeeded, SignedDuration::from_mins(2));
    execution.spec.ttl_seconds_after_finished = Some(60);
    let echo = execution.clone();
    let (action, _) = reconcile_with(execution, |mut server| async move {
        let delete = server.answer(200, &echo).await.expect(Method::DELETE, EXECUTION);
        assert_eq!(delete.body["preconditions"]["uid"], "uid-hello");
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
}

#[tokio::test]
async fn a_finished_execution_within_its_ttl_waits_without_calls() {
    let mut execution = finished("hello", Phase::Failed, SignedDuration::from_secs(10));
    execution.spec.ttl_seconds_after_finished = Some(60);
    let completed = execution.status.as_ref().and_then(|s| s.completion_time.clone()).expect("completed").0;
    let (ctx, _server) = context();
    let ten_seconds_later = completed + SignedDuration::from_secs(10);
    let action = reconcile_execution(&execution, &ctx, ten_seconds_later).await;
    let action = action.expect("reconciled without calls");
    assert_eq!(action, Action::requeue(Duration::from_secs(50)), "the wait counts from completion");
}

#[tokio::test]
async fn an_already_finished_execution_makes_no_calls() {
    let execution = finished("hello", Phase::Succeeded, SignedDuration::from_secs(10));
    let (action, _) = reconcile_with(execution, |_server| async {}).await;
    assert_eq!(action.expect("reconciled without calls"), Action::await_change());
}

#[tokio::test]
async fn a_failed_reconcile_is_counted_and_retried_soon() {
    let (ctx, _server) = context();
    let error = Error::MissingObjectKey("namespace");
    let action = error_policy(Arc::new(execution("hello")), &error, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(ctx.metrics.render().contains("error=\"missing_object_key\""));
}

#[tokio::test]
async fn limits_above_the_maxima_fail_the_execution_as_the_http_api_refuses_them() {
    let mut over = execution("hello");
    over.spec.limits = Some(crate::sandbox::RequestedLimits { memory_mb: Some(1 << 20), ..Default::default() });
    let fresh = over.clone();
    let (action, _) = reconcile_with(over, |mut server| async move {
        server.answer(200, &fresh).await.expect(Method::GET, EXECUTION);
        // No pod: the status is written straight away.
        let patch = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Failed");
        let status = &patch.body["status"];
        assert_eq!(status["error"], "limits.memory_mb may be at most 4096 on this server, got 1048576");
        let finished = status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Finished"));
        assert_eq!(finished.map(|c| &c["reason"]), Some(&json!(super::status::REASON_LIMITS_REFUSED)));
        let event = server.echo(201).await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], super::status::REASON_LIMITS_REFUSED);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
}

#[tokio::test]
async fn a_pod_whose_deletion_failed_after_the_final_status_is_deleted_by_the_next_reconcile() {
    let execution = pending("hello");
    let pod = sandbox_pod(&execution, ended_status("Succeeded", 0));
    let (pod_answer, echo) = (pod.clone(), execution.clone());
    let written = Arc::new(std::sync::Mutex::new(None));
    let status_seen = written.clone();
    let (action, ctx) = reconcile_with(execution.clone(), |mut server| async move {
        server.answer(200, &pod_answer).await.expect(Method::GET, POD);
        server.answer_bytes(200, envelope_line()).await.expect(Method::GET, POD_LOG);
        let patch = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_status_apply(&patch, "Succeeded");
        *status_seen.lock().expect("not poisoned") = Some(patch.body["status"].clone());
        server.answer(500, internal_error()).await.expect(Method::DELETE, POD);
    })
    .await;
    assert!(matches!(action, Err(Error::PodDeletionFailed(_))), "{action:?}");
    assert!(!ctx.metrics.render().contains("phase=\"Succeeded\""), "not counted before the pod is gone");

    // The retry sees the final status, and the pod still in the cache.
    let status = written.lock().expect("not poisoned").take().expect("the final status was written");
    let status: PythonExecutionStatus = serde_json::from_value(status).expect("a status");
    let finished = PythonExecution { status: Some(status), ..execution };
    let cached = pod.clone();
    let (action, ctx) = reconcile_with_cached(finished, &[cached], |mut server| async move {
        server.answer(200, &pod).await.expect(Method::GET, POD);
        pod_deleted_and_success_recorded(&mut server, &pod).await;
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
    assert!(ctx.metrics.render().contains("phase=\"Succeeded\""), "the outcome is counted once the pod is gone");
}

#[tokio::test]
async fn a_finished_execution_whose_cached_pod_is_already_gone_is_left_alone() {
    let execution = finished("hello", Phase::Succeeded, SignedDuration::from_secs(10));
    let pod = sandbox_pod(&execution, ended_status("Succeeded", 0));
    let (action, _) = reconcile_with_cached(execution, &[pod], |mut server| async move {
        // The cache had not yet seen the deletion `finish` made.
        server.answer(404, not_found()).await.expect(Method::GET, POD);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
}
