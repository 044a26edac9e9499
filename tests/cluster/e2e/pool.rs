//! The job's way into the pod and the warm pool, on a real cluster: warm and cold paths, the
//! script byte for byte, a script near the size limit, concurrent executions in distinct pods, a
//! ready pod killed in the pool, the pool growing with demand and shrinking when idle, and a
//! controller restart between claim and delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use pyexec::controller::pod::{pod_name, LABEL_POOL_KIND, LABEL_STATE, POOL_POD_PREFIX, SANDBOX_SELECTOR, STATE_READY};
use pyexec::crd::{Delivery, Phase, PythonExecution, MAX_SCRIPT_CHARS};
use pyexec::sandbox::RequestedLimits;
use serde_json::{json, Value};

use super::{run_case, status_of, Case, FINISH_TIMEOUT};

/// How long the pool may take to have a ready pod: a gVisor pod start and the pandas import.
const POOL_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The controller's pause between marking a delivery started and writing the job, in the
/// restart test.
const HAND_OVER_DELAY_MS: u64 = 10_000;

fn ready_selector() -> String {
    format!("{SANDBOX_SELECTOR},{LABEL_STATE}={STATE_READY}")
}

async fn ready_pods(case: &Case) -> Vec<Pod> {
    let pods = case.pods.list(&ListParams::default().labels(&ready_selector())).await.expect("listing pods");
    pods.items.into_iter().filter(|pod| pod.metadata.deletion_timestamp.is_none()).collect()
}

/// Waits until at least `count` pool pods are ready; returns them.
async fn wait_ready(case: &Case, count: usize) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + POOL_READY_TIMEOUT;
    loop {
        let pods = ready_pods(case).await;
        if pods.len() >= count {
            return pods;
        }
        assert!(tokio::time::Instant::now() < deadline, "{count} ready pool pods within {POOL_READY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn controller_env(case: &Case) -> BTreeMap<String, String> {
    let deployments: Api<Deployment> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let deployment = deployments.get(&case.settings.controller_deployment).await.expect("the controller Deployment");
    let spec = deployment.spec.and_then(|s| s.template.spec).expect("a pod template");
    spec.containers[0].env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
}

/// Both pools' sizes: preloaded and plain pods.
async fn pool_size(case: &Case) -> usize {
    let env = controller_env(case).await;
    let size = |name: &str| env.get(name).and_then(|v| v.parse::<usize>().ok()).unwrap_or(2);
    size("PYEXEC_POD_POOL_SIZE") + size("PYEXEC_POD_POOL_PLAIN_SIZE")
}

/// When the newest controller pod was created: pool pods made before it were another process's,
/// whose sessions (and so the pods) end with it.
async fn controller_created(case: &Case) -> Option<Time> {
    let selector = super::controller_selector(case).await;
    let pods: Api<Pod> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let pods = pods.list(&ListParams::default().labels(&selector)).await.expect("listing the controller pods");
    pods.items.into_iter().filter_map(|pod| pod.metadata.creation_timestamp).max_by_key(|time| time.0)
}

/// The names of the ready pool pods of `kind` the running controller made, once there is one.
async fn ready_of_kind(case: &Case, kind: &str) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + POOL_READY_TIMEOUT;
    let since = controller_created(case).await.map(|time| time.0);
    loop {
        let pods: BTreeSet<String> = ready_pods(case)
            .await
            .into_iter()
            .filter(|pod| pod.labels().get(LABEL_POOL_KIND).map(String::as_str) == Some(kind))
            .filter(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0) >= since)
            .map(|pod| pod.name_any())
            .collect();
        if !pods.is_empty() {
            return pods;
        }
        assert!(tokio::time::Instant::now() < deadline, "a ready {kind} pool pod within {POOL_READY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_plain_script_claims_a_plain_pod_and_a_pandas_script_a_preloaded_one() {
    run_case("kinds", |case| async move {
        let plain = ready_of_kind(&case, "plain").await;
        let preloaded = ready_of_kind(&case, "preloaded").await;
        let hello = case.create("hello", super::HELLO, None, None).await;
        let status = status_of(&case.wait_finished(&hello).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        let pod = status.pod_name.unwrap_or_default();
        assert!(plain.contains(&pod), "hello ran in {pod}, not one of the plain pods {plain:?}");

        let pandas = case.create("pandas", super::PANDAS_SUM, None, None).await;
        let status = status_of(&case.wait_finished(&pandas).await);
        assert_eq!(status.result.map(Value::Object), Some(json!({"sum": 6})), "{:?}", status.error);
        let pod = status.pod_name.unwrap_or_default();
        assert!(preloaded.contains(&pod), "pandas ran in {pod}, not one of the preloaded pods {preloaded:?}");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn an_execution_claims_a_warm_pod_and_one_with_larger_limits_gets_its_own() {
    run_case("paths", |case| async move {
        wait_ready(&case, 1).await;
        let warm = case.create("warm", super::HELLO, None, None).await;
        let status = status_of(&case.wait_finished(&warm).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        let pod = status.pod_name.clone().unwrap_or_default();
        assert!(pod.starts_with(POOL_POD_PREFIX), "a warm pod ran it: {pod}");

        let limits = RequestedLimits { memory_mb: Some(1024), ..Default::default() };
        let cold = case.create("cold", super::HELLO, Some(limits), None).await;
        let status = status_of(&case.wait_finished(&cold).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(status.pod_name, Some(pod_name(&cold)), "a pod created for it");
        assert_eq!(status.result.map(Value::Object), Some(json!({"message": "hello"})));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_script_with_dollars_arrives_byte_for_byte() {
    run_case("dollars", |case| async move {
        let text = "$ $$ $(HOME) $$(HOME) ${HOME} $(PYEXEC_ISOLATION) é ✓ \\ \" '";
        let script = format!("TEXT = {text:?}\n\ndef main():\n    return {{'text': TEXT}}\n");
        let name = case.create("dollars", &script, None, None).await;
        let status = status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(status.result.map(Value::Object), Some(json!({ "text": text })));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_script_near_the_size_limit_runs() {
    run_case("large", |case| async move {
        let padding = MAX_SCRIPT_CHARS - 1024;
        let script = format!("PAD = '{}'\n\ndef main():\n    return {{'pad': len(PAD)}}\n", "x".repeat(padding));
        assert!(script.len() > 200 * 1024, "larger than the old annotation path (150 KB failed)");
        let name = case.create("large", &script, None, None).await;
        let status = status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(status.result.map(Value::Object), Some(json!({ "pad": padding })), "the whole script arrived");
    })
    .await;
}

/// Creates `count` executions at once and checks that each succeeded, ran once, in a pod of its
/// own, with a result of its own.
async fn run_each_once_in_its_own_pod(case: &Case, prefix: &str, count: usize) {
    let script = "import uuid\n\ndef main():\n    print('ran')\n    return {'token': uuid.uuid4().hex}\n";
    let mut names = Vec::new();
    for i in 0..count {
        names.push(case.create(&format!("{prefix}{i}"), script, None, None).await);
    }
    let (mut pods, mut tokens) = (BTreeSet::new(), BTreeSet::new());
    for name in &names {
        let status = status_of(&case.wait_finished(name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(status.stdout.as_deref(), Some("ran\n"), "ran once: {status:?}");
        assert!(pods.insert(status.pod_name.clone().expect("a pod")), "{name} shared a pod: {status:?}");
        let token = status.result.and_then(|r| r.get("token").cloned()).expect("a token");
        assert!(tokens.insert(token.to_string()), "two executions returned the same token");
    }
    assert_eq!(pods.len(), count);
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn concurrent_executions_never_share_a_pod() {
    run_case("concurrent", |case| async move {
        run_each_once_in_its_own_pod(&case, "c", 6).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn ready_pods_killed_in_the_pool_are_replaced() {
    run_case("killed", |case| async move {
        let size = pool_size(&case).await;
        let killed: BTreeSet<String> = wait_ready(&case, 1).await.iter().map(|p| p.name_any()).collect();
        for name in &killed {
            case.pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.ok();
        }
        // An execution arriving now still runs (cold, or in a replacement).
        let name = case.create("after", super::HELLO, None, None).await;
        let status = status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert!(!killed.contains(&status.pod_name.clone().unwrap_or_default()), "not a killed pod");
        // The pool refills to its size with new pods.
        let refilled = wait_ready(&case, size).await;
        assert!(refilled.iter().all(|pod| !killed.contains(&pod.name_any())), "new pods");
    })
    .await;
}

/// Sets the controller's hand-over delay and waits until the Deployment rolled out.
async fn set_hand_over_delay(case: &Case, delay_ms: u64) {
    let deployments: Api<Deployment> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "controller",
        "env": [{"name": "PYEXEC_TEST_HAND_OVER_DELAY_MS", "value": delay_ms.to_string()}],
    }]}}}});
    let name = &case.settings.controller_deployment;
    deployments.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patching the controller");
    wait_rolled_out(&deployments, name).await;
}

/// Waits until the Deployment runs its current spec on exactly its replicas.
async fn wait_rolled_out(deployments: &Api<Deployment>, name: &str) {
    let deadline = tokio::time::Instant::now() + FINISH_TIMEOUT;
    loop {
        let deployment = deployments.get(name).await.expect("the controller Deployment");
        let generation = deployment.metadata.generation;
        let status = deployment.status.unwrap_or_default();
        let replicas = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
        let rolled = status.observed_generation == generation
            && status.updated_replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.replicas == Some(replicas);
        if rolled {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the controller rolled out within {FINISH_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_controller_restart_between_claim_and_delivery_runs_the_job_once_elsewhere() {
    run_case("claim-restart", |case| async move {
        set_hand_over_delay(&case, HAND_OVER_DELAY_MS).await;
        let outcome = AssertUnwindSafe(async {
            wait_ready(&case, 1).await;
            let script = "def main():\n    print('ran')\n    return {'ok': True}\n";
            let name = case.create("claimed", script, None, None).await;
            let started =
                |e: Option<&PythonExecution>| e.is_some_and(|e| status_of(e).delivery == Some(Delivery::Started));
            let claimed = case.wait_until(&name, "claimed", FINISH_TIMEOUT, started).await.expect("the execution");
            let first_pod = status_of(&claimed).pod_name.expect("a pod");
            super::delete_controller_pods(&case).await;

            let status = status_of(&case.wait_finished(&name).await);
            assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
            assert_eq!(status.stdout.as_deref(), Some("ran\n"), "the script ran once");
            assert_eq!(status.pods_replaced, Some(1), "the first pod proved it never got the job");
            assert_ne!(status.pod_name, Some(first_pod), "another pod ran it");
        })
        .catch_unwind()
        .await;
        set_hand_over_delay(&case, 0).await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

/// Scales the controller to `replicas` and waits until exactly that many run the current spec.
async fn scale_controller(case: &Case, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let name = &case.settings.controller_deployment;
    let patch = json!({"spec": {"replicas": replicas}});
    deployments.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scaling the controller");
    wait_rolled_out(&deployments, name).await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn two_controller_replicas_run_each_execution_once_in_its_own_pod() {
    run_case("replicas", |case| async move {
        scale_controller(&case, 2).await;
        let outcome = AssertUnwindSafe(async {
            run_each_once_in_its_own_pod(&case, "r", 8).await;
        })
        .catch_unwind()
        .await;
        scale_controller(&case, 1).await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

/// The plain pool pods waiting or starting now: the running controller's, unclaimed, not being
/// deleted.
async fn unclaimed_plain_pods(case: &Case) -> usize {
    let since = controller_created(case).await.map(|time| time.0);
    let pods = case.pods.list(&ListParams::default().labels(SANDBOX_SELECTOR)).await.expect("listing pods");
    pods.items
        .iter()
        .filter(|pod| pod.name_any().starts_with(POOL_POD_PREFIX))
        .filter(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0) >= since)
        .filter(|pod| pod.labels().get(LABEL_POOL_KIND).map(String::as_str) == Some("plain"))
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && pod.owner_references().is_empty())
        .count()
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_burst_grows_the_pool_above_its_size_and_it_shrinks_back_when_idle() {
    run_case("demand", |case| async move {
        let env = controller_env(&case).await;
        let floor = env.get("PYEXEC_POD_POOL_PLAIN_SIZE").and_then(|v| v.parse::<usize>().ok()).unwrap_or(2);
        let ceiling = env.get("PYEXEC_POD_POOL_MAX_SIZE").and_then(|v| v.parse::<usize>().ok()).unwrap_or(6);
        assert!(ceiling > floor, "the chart's pool may grow: size {floor}, max {ceiling}");
        // Ten plain executions at once: far more than a pod start's worth at the floor.
        let mut names = Vec::new();
        for i in 0..10 {
            names.push(case.create(&format!("burst{i}"), super::HELLO, None, None).await);
        }
        for name in &names {
            let status = status_of(&case.wait_finished(name).await);
            assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        }
        let grew = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut most = 0;
        while most <= floor {
            most = most.max(unclaimed_plain_pods(&case).await);
            assert!(tokio::time::Instant::now() < grew, "the plain pool never grew past its size {floor}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(most <= ceiling, "{most} plain pool pods, above the ceiling {ceiling}");
        // Quiet: the demand decays and the pods above the size go after waiting idle.
        let shrank = tokio::time::Instant::now() + Duration::from_secs(150);
        while unclaimed_plain_pods(&case).await > floor {
            assert!(tokio::time::Instant::now() < shrank, "the plain pool did not shrink back to {floor} when idle");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
}
