//! Reconcile scenarios of the job's hand-over, against a mocked API server and stand-in attach
//! sessions: the warm claim, the cold attach, and each way the hand-over fails. Each test lists
//! the exact API calls, in order, and checks which pods were given which job.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;

use super::pod::{LABEL_STATE, STATE_CLAIMED};
use super::reconcile::Context;
use super::status::{REASON_POD_REPLACED, REASON_WARM_POD_CLAIMED};
use super::testing::*;
use super::Result;
use crate::crd::PythonExecution;
use crate::sandbox::{Job, NO_JOB_EXIT_CODE, NO_JOB_MESSAGE};

const WARM: &str = "/api/v1/namespaces/default/pods/pyexec-warm-a";
const WARM_B: &str = "/api/v1/namespaces/default/pods/pyexec-warm-b";

async fn run<F, Fut>(
    execution: PythonExecution,
    pods: &[Pod],
    ready: &[&str],
    answer: Option<PodAnswer>,
    scenario: F,
) -> (Result<Action>, Arc<Context>, Arc<FakeAttacher>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (ctx, server, attacher) = context_with(pods, ready);
    if let Some(answer) = answer {
        *attacher.answer.lock().expect("lock") = answer;
    }
    (reconcile_against(ctx.clone(), server, execution, scenario).await, ctx, attacher)
}

fn jobs(attacher: &FakeAttacher) -> Vec<(String, Job)> {
    let jobs = attacher.jobs.lock().expect("lock").clone();
    jobs.into_iter().map(|(pod, bytes)| (pod, serde_json::from_slice(&bytes).expect("a job document"))).collect()
}

/// Runs a new execution of `script` against a pool with one ready pod (plain), and checks its
/// claim, delivery and finish; returns the metrics.
async fn claim_the_one_warm_pod(script: &str) -> String {
    let mut new = execution("hello");
    new.spec.script = script.into();
    let resolved = super::pod_limits::resolve(&limit_settings(), &new).expect("resolves");
    let fresh = new.clone();
    let warm = pool_pod("pyexec-warm-a");
    let claimed = warm.clone();
    // From the cached copy: no read of the execution before the claim.
    let (action, ctx, attacher) = run(new, &[warm], &["pyexec-warm-a"], None, |mut server| async move {
        let claim = server.answer(200, &claimed).await.expect(Method::PATCH, WARM);
        assert_eq!(claim.body["metadata"]["resourceVersion"], "7", "conditional on the pod as it was read");
        assert_eq!(claim.body["metadata"]["labels"][LABEL_STATE], STATE_CLAIMED);
        assert_eq!(claim.body["metadata"]["ownerReferences"][0]["uid"], "uid-hello");
        let started = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        assert_eq!(started.body["status"]["podName"], "pyexec-warm-a");
        assert_eq!(started.body["status"]["delivery"], "Started", "marked before the job is written");
        let running = started.body["status"]["conditions"].as_array().cloned().unwrap_or_default();
        assert!(running.iter().any(|c| c["reason"] == REASON_WARM_POD_CLAIMED));
        let done = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        assert_eq!(done.body["status"]["phase"], "Succeeded");
        assert_eq!(done.body["status"]["stdout"], "out\n");
        let delete = server.answer(200, &claimed).await.expect(Method::DELETE, WARM);
        assert_eq!(delete.body["preconditions"]["uid"], "pod-uid-pyexec-warm-a");
        server.expect_no_call().await;
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
    let jobs = jobs(&attacher);
    assert_eq!(jobs.len(), 1, "one job, written once");
    assert_eq!(jobs[0].0, "pyexec-warm-a");
    assert_eq!(jobs[0].1, Job::new(script, resolved));
    assert!(attacher.opened.lock().expect("lock").is_empty(), "the warm session was opened ahead");
    ctx.metrics.render()
}

#[tokio::test]
async fn a_new_execution_claims_a_warm_pod_conditionally_and_gets_its_envelope_from_the_stream() {
    let metrics = claim_the_one_warm_pod(&execution("hello").spec.script).await;
    assert!(metrics.contains(r#"pyexec_controller_pool_claims_total{kind="plain",wanted="plain"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_script_naming_a_preloaded_module_takes_a_plain_pod_when_no_preloaded_one_is_ready() {
    let metrics = claim_the_one_warm_pod("import pandas\ndef main():\n    return {}\n").await;
    assert!(metrics.contains(r#"pyexec_controller_pool_claims_total{kind="plain",wanted="preloaded"} 1"#), "{metrics}");
    assert!(!metrics.contains("pyexec_controller_pool_misses_total"), "{metrics}");
}

/// The execution "hello" finds no ready pod while the pool's one pod starts, and waits; 200 ms
/// later the pod becomes ready and `then` runs at once with the pool. The execution must claim
/// that pod and run its job there. Returns the metrics and what `then` came to.
async fn waiting_for_the_starting_pod<T, F, Fut>(then: F) -> (String, T)
where
    F: FnOnce(Arc<super::warm_pods::WarmPool>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let new = execution("hello");
    let fresh = new.clone();
    let warm = pool_pod("pyexec-warm-a");
    let claimed = warm.clone();
    let (ctx, server, attacher) = context_with(&[warm], &["pyexec-warm-a"]);
    let pool = ctx.pools[0].clone();
    let starting = pool.hold_back_ready();
    let then = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for session in starting {
            pool.add_ready(session);
        }
        then(pool).await
    });
    let action = reconcile_against(ctx.clone(), server, new, |mut server| async move {
        server.answer(200, &claimed).await.expect(Method::PATCH, WARM);
        server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        server.answer(200, &claimed).await.expect(Method::DELETE, WARM);
        server.expect_no_call().await;
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
    let pods: Vec<String> = jobs(&attacher).into_iter().map(|(pod, _)| pod).collect();
    assert_eq!(pods, ["pyexec-warm-a"], "the pod that became ready, not one of its own");
    (ctx.metrics.render(), then.await.expect("what followed the pod's start"))
}

#[tokio::test]
async fn an_execution_finding_no_ready_pod_waits_for_one_already_starting() {
    let (metrics, ()) = waiting_for_the_starting_pod(|_| async {}).await;
    assert!(metrics.contains(r#"pyexec_controller_pool_waits_total{kind="plain",ended="claimed"} 1"#), "{metrics}");
    assert!(!metrics.contains("pyexec_controller_pool_misses_total"), "{metrics}");
}

#[tokio::test]
async fn a_pod_that_becomes_ready_goes_to_the_execution_waiting_for_it_not_to_a_later_one() {
    // An execution that arrives just as the pod becomes ready, before the waiter has run again.
    let (_, later) = waiting_for_the_starting_pod(|pool| async move {
        let got = pool.claim(&execution("later"), &limits(), crate::sandbox::warm::pool::Kind::Plain).await;
        got.map(|claim| claim.map(|session| session.pod().to_string()))
    })
    .await;
    assert_eq!(
        later.expect("no API error"),
        Err(super::warm_pods::Miss::Empty),
        "the later execution found none ready"
    );
}

#[tokio::test]
async fn a_wait_for_a_starting_pod_that_is_cancelled_no_longer_counts_as_waiting() {
    let (ctx, _server, _attacher) = context_with(&[pool_pod("pyexec-warm-a")], &["pyexec-warm-a"]);
    let pool = ctx.pools[0].clone();
    let _starting = pool.hold_back_ready();
    let (new, limits) = (execution("hello"), limits());
    let wait = pool.claim_when_ready(&new, &limits, crate::sandbox::warm::pool::Kind::Plain, None);
    assert!(tokio::time::timeout(Duration::from_millis(50), wait).await.is_err(), "still waiting");
    assert_eq!(pool.waiting(), 0, "the cancelled wait was uncounted");
}

#[tokio::test]
async fn a_pod_claimed_by_another_replica_is_skipped_and_the_next_one_claimed() {
    let new = execution("hello");
    let fresh = new.clone();
    let (a, b) = (pool_pod("pyexec-warm-a"), pool_pod("pyexec-warm-b"));
    let mut taken = a.clone();
    taken.metadata.labels.get_or_insert_default().insert(LABEL_STATE.into(), STATE_CLAIMED.into());
    taken.metadata.owner_references = Some(vec![Default::default()]);
    let claimed_b = b.clone();
    let ready = ["pyexec-warm-a", "pyexec-warm-b"];
    let (action, _, attacher) = run(new, &[a, b], &ready, None, |mut server| async move {
        server.answer(409, conflict()).await.expect(Method::PATCH, WARM);
        // One fresh read: claimed meanwhile, so it is not the pool's any more.
        server.answer(200, &taken).await.expect(Method::GET, WARM);
        server.answer(200, &claimed_b).await.expect(Method::PATCH, WARM_B);
        let started = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        assert_eq!(started.body["status"]["podName"], "pyexec-warm-b");
        server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
        server.answer(200, &claimed_b).await.expect(Method::DELETE, WARM_B);
        server.expect_no_call().await;
    })
    .await;
    assert!(action.is_ok());
    let pods: Vec<String> = jobs(&attacher).into_iter().map(|(pod, _)| pod).collect();
    assert_eq!(pods, ["pyexec-warm-b"], "never written to the pod another replica claimed");
}

#[tokio::test]
async fn limits_larger_than_a_warm_pod_take_the_cold_path() {
    let mut new = execution("hello");
    new.spec.limits = Some(crate::sandbox::RequestedLimits { memory_mb: Some(2048), ..Default::default() });
    let fresh = new.clone();
    let (action, ctx, attacher) =
        run(new, &[pool_pod("pyexec-warm-a")], &["pyexec-warm-a"], None, |mut server| async move {
            server.answer(200, &fresh).await.expect(Method::GET, EXECUTION);
            let create = server.echo(201).await.expect(Method::POST, PODS);
            assert_eq!(create.body["metadata"]["name"], "hello-sandbox");
            assert_eq!(create.body["spec"]["containers"][0]["stdinOnce"], true);
            let pending = server.answer(200, &fresh).await.expect(Method::PATCH, STATUS);
            assert_eq!(pending.body["status"]["delivery"], "Awaiting");
            server.echo(201).await.expect(Method::POST, EVENTS);
        })
        .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(POD_START_TIMEOUT));
    assert!(jobs(&attacher).is_empty(), "nothing is written before the pod runs");
    assert!(ctx.metrics.render().contains("reason=\"unfit\""));
}

#[tokio::test]
async fn a_cold_pod_is_attached_to_as_soon_as_it_runs() {
    let execution = pending("hello");
    let pod = sandbox_pod(&execution, running_status());
    let (echo, got) = (execution.clone(), pod.clone());
    let (action, _, attacher) = run(execution, std::slice::from_ref(&pod), &[], None, |mut server| async move {
        server.answer(200, &got).await.expect(Method::GET, POD);
        let started = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_eq!(started.body["status"]["delivery"], "Started");
        let done = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_eq!(done.body["status"]["phase"], "Succeeded");
        server.answer(200, &got).await.expect(Method::DELETE, POD);
        server.expect_no_call().await;
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::await_change());
    assert_eq!(*attacher.opened.lock().expect("lock"), ["hello-sandbox"]);
    assert_eq!(jobs(&attacher).len(), 1);
}

#[tokio::test]
async fn a_failed_write_is_never_retried_on_another_pod() {
    let execution = pending("hello");
    let pod = sandbox_pod(&execution, running_status());
    let (echo, got) = (execution.clone(), pod.clone());
    let (action, _, attacher) =
        run(execution, std::slice::from_ref(&pod), &[], Some(PodAnswer::WriteFails), |mut server| async move {
            server.answer(200, &got).await.expect(Method::GET, POD);
            let started = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
            assert_eq!(started.body["status"]["delivery"], "Started");
        })
        .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(Duration::from_secs(1)));
    assert_eq!(jobs(&attacher).len(), 1);
    // The next look finds the delivery started: it follows the pod and writes nothing.
    let again = delivered("hello");
    let (echo, got) = (again.clone(), pod.clone());
    let (_, _, attacher) = run(again, &[pod], &[], None, |mut server| async move {
        server.answer(200, &got).await.expect(Method::GET, POD);
        let running = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_eq!(running.body["status"]["phase"], "Running");
    })
    .await;
    assert!(attacher.opened.lock().expect("lock").is_empty() && jobs(&attacher).is_empty());
}

#[tokio::test]
async fn a_pod_that_ended_before_its_job_arrived_is_replaced() {
    let execution = delivered("hello");
    let mut status = ended_status("Failed", i32::from(NO_JOB_EXIT_CODE));
    if let Some(terminated) = status
        .container_statuses
        .as_mut()
        .and_then(|s| s.first_mut())
        .and_then(|c| c.state.as_mut())
        .and_then(|s| s.terminated.as_mut())
    {
        terminated.message = Some(NO_JOB_MESSAGE.into());
    }
    let pod = sandbox_pod(&execution, status);
    let (echo, got) = (execution.clone(), pod.clone());
    let (action, _, attacher) = run(execution, &[pod], &[], None, |mut server| async move {
        server.answer(200, &got).await.expect(Method::GET, POD);
        let replaced = server.answer(200, &echo).await.expect(Method::PATCH, STATUS);
        assert_eq!(replaced.body["status"]["podsReplaced"], 1);
        assert!(replaced.body["status"].get("podName").is_none(), "{}", replaced.body);
        assert!(replaced.body["status"].get("delivery").is_none());
        let conditions = replaced.body["status"]["conditions"].as_array().cloned().unwrap_or_default();
        assert!(conditions.iter().any(|c| c["reason"] == REASON_POD_REPLACED));
        let delete = server.answer(200, &got).await.expect(Method::DELETE, POD);
        assert_eq!(delete.body["preconditions"]["uid"], "pod-uid-hello");
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(Duration::ZERO));
    assert!(jobs(&attacher).is_empty());
}

#[tokio::test]
async fn a_stale_status_after_a_claim_writes_no_job_and_frees_the_pod() {
    let new = execution("hello");
    let warm = pool_pod("pyexec-warm-a");
    let claimed = warm.clone();
    let (action, _, attacher) = run(new, &[warm], &["pyexec-warm-a"], None, |mut server| async move {
        server.answer(200, &claimed).await.expect(Method::PATCH, WARM);
        server.answer(409, conflict()).await.expect(Method::PATCH, STATUS);
        server.answer(200, &claimed).await.expect(Method::DELETE, WARM);
    })
    .await;
    assert_eq!(action.expect("reconciled"), Action::requeue(Duration::from_secs(1)));
    assert!(jobs(&attacher).is_empty(), "no job without the status saying so first");
}

fn with_files(files: serde_json::Value) -> PythonExecution {
    let mut execution = execution("files");
    let serde_json::Value::Object(files) = files else { panic!("an object") };
    execution.spec.files = Some(files);
    execution
}

#[test]
fn the_spec_input_files_reach_the_job_document() {
    let execution = with_files(serde_json::json!({"in.csv": "a\n1\n", "b.bin": {"base64": "AAE="}}));
    let (_, document) = super::handover::job_of(&execution, &limit_settings()).expect("a job");
    let job: Job = serde_json::from_slice(&document).expect("a job document");
    assert_eq!(job.files.len(), 2);
    let sent = serde_json::to_value(&job.files).expect("json");
    assert_eq!(sent, serde_json::json!({"in.csv": "a\n1\n", "b.bin": {"base64": "AAE="}}));
}

#[test]
fn input_files_the_http_api_would_refuse_fail_the_execution_before_any_pod() {
    for files in [
        serde_json::json!({"../etc/passwd": "x"}),
        serde_json::json!({"a": 1}),
        serde_json::json!({"a": {"base64": "not base64!"}}),
        serde_json::json!({"output": "x"}),
    ] {
        let failure = super::handover::job_of(&with_files(files.clone()), &limit_settings()).expect_err("refused");
        assert_eq!(failure.reason(), super::status::REASON_FILES_REFUSED, "{files}");
    }
}
