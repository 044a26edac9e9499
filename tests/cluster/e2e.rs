//! The cluster e2e suite: the Kubernetes placement end to end, against whatever cluster
//! KUBECONFIG points to, with the chart deployed (`make cluster-up cluster-images cluster-deploy cluster-e2e` (`CLUSTER=kind` for a kind cluster)).
//!
//! Every test is ignored by default; run them with
//!   cargo test --test e2e -- --ignored --test-threads=1
//! Settings (environment):
//!   PYEXEC_E2E_URL                     the API's base URL (default http://127.0.0.1:18080, where
//!                                      `make cluster-e2e` port-forwards the API service)
//!   PYEXEC_E2E_NAMESPACE               namespace of PythonExecutions and sandbox pods (pyexec-sandbox)
//!   PYEXEC_E2E_CONTROLLER_NAMESPACE    namespace of the controller Deployment (pyexec)
//!   PYEXEC_E2E_CONTROLLER_DEPLOYMENT   the controller Deployment's name (pyexec-controller)
//!   PYEXEC_E2E_RUNTIME_CLASS           runtimeClassName sandbox pods must have (gvisor; empty: none)
//!   PYEXEC_E2E_API_TOKEN               the API's bearer token (default: read from the Secret below)
//!   PYEXEC_E2E_API_TOKEN_SECRET        the chart's token Secret in the controller's namespace
//!                                      (pyexec-api-token; absent: the API needs no token)
//! The admission and NetworkPolicy tests read the controller's settings from its Deployment, and
//! the NetworkPolicy test needs the chart deployed with sandbox.admission.networkProbeUser set to
//! the user KUBECONFIG authenticates as (ci/cluster/deploy.sh does).
//! Each test uses fresh names and deletes what it created; a failing test prints the executions,
//! sandbox pods and their logs first.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use pyexec::controller::pod::{LABEL_EXECUTION, SANDBOX_SELECTOR};
use pyexec::controller::status::REASON_POD_CREATED;
use pyexec::crd::{Phase, PythonExecution, PythonExecutionSpec};
use pyexec::sandbox::RequestedLimits;
use serde_json::{json, Value};

#[path = "e2e/executions.rs"]
mod executions;
#[path = "e2e/guards.rs"]
mod guards;
#[path = "e2e/pool.rs"]
mod pool;
#[path = "../shared/sse.rs"]
mod sse;

/// A sandbox pod starts, imports pandas under gVisor and reports; slow CI nodes take a while.
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);
/// The TTL test's TTL, and how long past it the controller may take to delete.
const TTL_SECONDS: i64 = 5;
const TTL_GRACE: Duration = Duration::from_secs(60);
/// The exact body of the documented contract for a script without main().
const NO_MAIN_BODY: &str = r#"{"error": "Script must contain a 'main()' function."}"#;

const HELLO: &str = "def main():\n    return {\"message\": \"hello\"}\n";
const PANDAS_SUM: &str =
    "import pandas as pd\n\ndef main():\n    df = pd.DataFrame({'a': [1, 2, 3]})\n    return {'sum': df['a'].sum()}\n";
const PRINTS: &str = "def main():\n    print('hello from main')\n    return {'ok': True}\n";
/// Mentions "main" (so the API sends it to the cluster) without defining it.
const NO_MAIN: &str = "remainder = 10 % 3\n";

struct Settings {
    url: String,
    namespace: String,
    controller_namespace: String,
    controller_deployment: String,
    runtime_class: String,
}

fn settings() -> Settings {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    Settings {
        url: var("PYEXEC_E2E_URL", "http://127.0.0.1:18080").trim_end_matches('/').to_string(),
        namespace: var("PYEXEC_E2E_NAMESPACE", "pyexec-sandbox"),
        controller_namespace: var("PYEXEC_E2E_CONTROLLER_NAMESPACE", "pyexec"),
        controller_deployment: var("PYEXEC_E2E_CONTROLLER_DEPLOYMENT", "pyexec-controller"),
        runtime_class: var("PYEXEC_E2E_RUNTIME_CLASS", "gvisor"),
    }
}

/// One test's cluster objects: unique names, printed on failure, deleted at the end.
struct Case {
    client: Client,
    settings: Settings,
    prefix: String,
    executions: Api<PythonExecution>,
    pods: Api<Pod>,
}

impl Case {
    async fn new(label: &str) -> Case {
        let client = Client::try_default().await.expect("a cluster: KUBECONFIG or in-cluster credentials");
        let settings = settings();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let executions = Api::namespaced(client.clone(), &settings.namespace);
        let pods = Api::namespaced(client.clone(), &settings.namespace);
        Case { client, prefix: format!("e2e-{label}-{}", &id[..8]), settings, executions, pods }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    async fn create(&self, suffix: &str, script: &str, limits: Option<RequestedLimits>, ttl: Option<i64>) -> String {
        let name = self.name(suffix);
        let spec = PythonExecutionSpec { script: script.into(), limits, files: None, ttl_seconds_after_finished: ttl };
        self.executions
            .create(&PostParams::default(), &PythonExecution::new(&name, spec))
            .await
            .unwrap_or_else(|e| panic!("creating PythonExecution {name}: {e}"));
        name
    }

    /// Waits (on a watch, with a timeout) until `condition` holds for the execution.
    async fn wait_until(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        condition: impl Fn(Option<&PythonExecution>) -> bool,
    ) -> Option<PythonExecution> {
        tokio::time::timeout(timeout, await_condition(self.executions.clone(), name, condition))
            .await
            .unwrap_or_else(|_| panic!("{name} was not {what} within {} s", timeout.as_secs()))
            .unwrap_or_else(|e| panic!("watching {name}: {e}"))
    }

    async fn wait_finished(&self, name: &str) -> PythonExecution {
        let finished = |e: Option<&PythonExecution>| e.is_some_and(|e| e.is_finished());
        self.wait_until(name, "finished", FINISH_TIMEOUT, finished).await.expect("the execution exists")
    }

    /// Prints what a failure needs: the test's executions, their pods, and the pods' logs.
    async fn dump(&self) {
        eprintln!("=== cluster state for {}", self.prefix);
        for execution in self.executions.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            if execution.name_any().starts_with(&self.prefix) || execution.name_any().starts_with("pyx-") {
                let status = serde_json::to_string_pretty(&execution.status).unwrap_or_default();
                eprintln!("--- PythonExecution {}\n{status}", execution.name_any());
            }
        }
        let sandboxes = ListParams::default().labels(SANDBOX_SELECTOR);
        for pod in self.pods.list(&sandboxes).await.map(|l| l.items).unwrap_or_default() {
            let status = serde_json::to_string_pretty(&pod.status).unwrap_or_default();
            eprintln!("--- Pod {}\n{status}", pod.name_any());
            let tail = LogParams { tail_lines: Some(50), ..Default::default() };
            let log = self.pods.logs(&pod.name_any(), &tail).await.unwrap_or_else(|e| format!("(no log: {e})"));
            eprintln!("--- log of {}\n{log}", pod.name_any());
        }
    }

    async fn cleanup(&self) {
        for execution in self.executions.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            if execution.name_any().starts_with(&self.prefix) {
                let _ = self.executions.delete(&execution.name_any(), &DeleteParams::background()).await;
            }
        }
    }
}

/// Runs a test body with a fresh Case; on failure, dumps the cluster state before failing.
async fn run_case<F, Fut>(label: &str, body: F)
where
    F: FnOnce(Arc<Case>) -> Fut,
    Fut: Future<Output = ()>,
{
    let case = Arc::new(Case::new(label).await);
    let outcome = AssertUnwindSafe(body(case.clone())).catch_unwind().await;
    if outcome.is_err() {
        case.dump().await;
    }
    case.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn post_script(url: &str, script: &str) -> (u16, Value) {
    let client = reqwest::Client::builder().timeout(FINISH_TIMEOUT).build().expect("an HTTP client");
    let mut request = client.post(format!("{url}/execute")).json(&json!({ "script": script }));
    if let Some(token) = api_token().await {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}/execute: {e} (is the API port-forwarded? see `make cluster-e2e`)"));
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.expect("a JSON body");
    (status, body)
}

/// The API's bearer token: PYEXEC_E2E_API_TOKEN, else the chart's Secret
/// (PYEXEC_E2E_API_TOKEN_SECRET, default pyexec-api-token, key `token`, in the release namespace
/// PYEXEC_E2E_CONTROLLER_NAMESPACE); None when neither exists (a chart installed without a token).
async fn api_token() -> Option<String> {
    if let Ok(token) = std::env::var("PYEXEC_E2E_API_TOKEN") {
        return Some(token);
    }
    let name = std::env::var("PYEXEC_E2E_API_TOKEN_SECRET").unwrap_or_else(|_| "pyexec-api-token".into());
    let client = Client::try_default().await.expect("a cluster: KUBECONFIG or in-cluster credentials");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, &settings().controller_namespace);
    let secret = secrets.get_opt(&name).await.unwrap_or_else(|e| panic!("reading Secret {name}: {e}"))?;
    let token = secret.data?.remove("token")?;
    Some(String::from_utf8(token.0).expect("a UTF-8 token"))
}

/// Deletes the controller's pods at once (no grace); the Deployment starts a new one.
/// The label selector of the controller Deployment's pods.
async fn controller_selector(case: &Case) -> String {
    let deployments: Api<Deployment> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let deployment = deployments.get(&case.settings.controller_deployment).await.expect("the controller Deployment");
    deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .expect("the Deployment selects by labels")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn delete_controller_pods(case: &Case) {
    let selector = controller_selector(case).await;
    let controller_pods: Api<Pod> = Api::namespaced(case.client.clone(), &case.settings.controller_namespace);
    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    let deleted = controller_pods
        .delete_collection(&now, &ListParams::default().labels(&selector))
        .await
        .expect("deleting the controller pods");
    assert!(deleted.left().is_some_and(|pods| !pods.items.is_empty()), "a controller pod was deleted");
}

fn status_of(execution: &PythonExecution) -> pyexec::crd::PythonExecutionStatus {
    execution.status.clone().unwrap_or_default()
}

// ---- the documented contract through the API in kubernetes mode

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn api_returns_what_main_returned() {
    run_case("api-hello", |case| async move {
        let (status, body) = post_script(&case.settings.url, HELLO).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], json!({"message": "hello"}));
        assert_eq!(body["returncode"], 0);
        assert_eq!(body["stdout"], "");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn api_runs_pandas() {
    run_case("api-pandas", |case| async move {
        let (status, body) = post_script(&case.settings.url, PANDAS_SUM).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], json!({"sum": 6}));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn api_returns_prints_in_stdout() {
    run_case("api-print", |case| async move {
        let (status, body) = post_script(&case.settings.url, PRINTS).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["stdout"], "hello from main\n");
        assert_eq!(body["result"], json!({"ok": true}));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn api_answers_a_script_without_main_with_the_exact_400_body() {
    run_case("api-nomain", |case| async move {
        let expected: Value = serde_json::from_str(NO_MAIN_BODY).expect("json");
        for script in ["x = 1\n", NO_MAIN] {
            let (status, body) = post_script(&case.settings.url, script).await;
            assert_eq!((status, &body), (400, &expected), "script {script:?}");
        }
    })
    .await;
}

// ---- the same through PythonExecution resources (what `kubectl apply` does)

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn resources_run_the_documented_contract() {
    run_case("res-contract", |case| async move {
        let hello = case.create("hello", HELLO, None, None).await;
        let pandas = case.create("pandas", PANDAS_SUM, None, None).await;
        let prints = case.create("print", PRINTS, None, None).await;
        let no_main = case.create("nomain", NO_MAIN, None, None).await;

        let status = status_of(&case.wait_finished(&hello).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(status.result.map(Value::Object), Some(json!({"message": "hello"})));
        assert_eq!(status.returncode, Some(0));

        let status = status_of(&case.wait_finished(&pandas).await);
        assert_eq!(status.result.map(Value::Object), Some(json!({"sum": 6})), "{:?}", status.error);

        let status = status_of(&case.wait_finished(&prints).await);
        assert_eq!(status.stdout.as_deref(), Some("hello from main\n"));

        let status = status_of(&case.wait_finished(&no_main).await);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.outcome.as_deref(), Some("no_main"));
        assert_eq!(status.error.as_deref(), Some("Script must contain a 'main()' function."));

        // Once the output is in the status, the pods are gone.
        for name in [&hello, &pandas, &prints, &no_main] {
            let execution = case.executions.get(name).await.expect("the execution");
            let pod_name = status_of(&execution).pod_name.expect("the pod the execution ran in");
            let gone = tokio::time::timeout(
                FINISH_TIMEOUT,
                await_condition(case.pods.clone(), &pod_name, |p: Option<&Pod>| p.is_none()),
            );
            gone.await.expect("the sandbox pod is deleted").expect("watching the pod");
        }
    })
    .await;
}

// ---- the sandbox pod

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn sandbox_pods_are_hardened() {
    run_case("hardening", |case| async move {
        let slow = "import time\n\ndef main():\n    time.sleep(8)\n    return {'slept': True}\n";
        let limits = RequestedLimits { timeout_seconds: Some(30.0), ..Default::default() };
        let name = case.create("slow", slow, Some(limits), None).await;
        let started = |e: Option<&PythonExecution>| e.is_some_and(|e| status_of(e).pod_name.is_some());
        let execution = case.wait_until(&name, "given a pod", FINISH_TIMEOUT, started).await.expect("the execution");
        let pod_name = status_of(&execution).pod_name.expect("a pod name");
        let pod = tokio::time::timeout(
            FINISH_TIMEOUT,
            await_condition(case.pods.clone(), &pod_name, |p: Option<&Pod>| p.is_some()),
        )
        .await
        .expect("the sandbox pod appears")
        .expect("watching the pod")
        .expect("the pod");
        let execution = case.executions.get(&name).await.expect("the execution");

        let spec = pod.spec.clone().expect("a pod spec");
        let expected_class = (!case.settings.runtime_class.is_empty()).then(|| case.settings.runtime_class.clone());
        assert_eq!(spec.runtime_class_name, expected_class);
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert!(spec.active_deadline_seconds.is_some_and(|s| s >= 30));
        assert_ne!(spec.host_network, Some(true));
        assert_ne!(spec.host_pid, Some(true));
        assert_ne!(spec.host_ipc, Some(true));
        let container = &spec.containers[0];
        let resources = container.resources.clone().expect("resources");
        let (requests, limits) = (resources.requests.expect("requests"), resources.limits.expect("limits"));
        for resource in ["cpu", "memory", "ephemeral-storage"] {
            assert!(limits.contains_key(resource) && requests.contains_key(resource), "a {resource} limit and request");
        }
        assert_eq!(requests["memory"], limits["memory"], "memory requests equal limits");
        assert_eq!((container.stdin, container.stdin_once), (Some(true), Some(true)), "the job comes on stdin");
        let env = container.env.clone().unwrap_or_default();
        assert!(
            !env.iter().any(|e| e.value.as_deref().is_some_and(|v| v.contains("time.sleep"))),
            "no script in the env"
        );
        let token_mounted = container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.starts_with("/var/run/secrets/kubernetes.io"));
        assert!(!token_mounted, "no service-account token is mounted");
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("PythonExecution", Some(true)));
        assert_eq!(Some(&owner.uid), execution.metadata.uid.as_ref());
        assert_eq!(pod.labels().get(LABEL_EXECUTION), Some(&name));

        let status = status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn sandbox_pods_have_no_network() {
    run_case("network", |case| async move {
        // The API server's service IP on this cluster (10.96.0.1 on kind, other CIDRs elsewhere).
        let services: Api<Service> = Api::namespaced(case.client.clone(), "default");
        let api_ip = services
            .get("kubernetes")
            .await
            .expect("the kubernetes service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("the kubernetes service's cluster IP");
        let script = r#"import socket

def main():
    outcomes = {}
    for host, port in [("API_SERVICE_IP", 443), ("kubernetes.default.svc", 443)]:
        try:
            socket.create_connection((host, port), timeout=3).close()
            outcomes[host] = "connected"
        except Exception as error:
            outcomes[host] = type(error).__name__
    return outcomes
"#
        .replace("API_SERVICE_IP", &api_ip);
        let name = case.create("net", &script, None, None).await;
        let status = status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        let outcomes = status.result.expect("a result");
        assert_eq!(outcomes.len(), 2);
        for (host, outcome) in outcomes {
            assert_ne!(outcome, "connected", "the sandbox reached {host}");
        }
    })
    .await;
}

// ---- life cycle

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn finished_executions_are_deleted_after_their_ttl() {
    run_case("ttl", |case| async move {
        let name = case.create("ttl", HELLO, None, Some(TTL_SECONDS)).await;
        case.wait_finished(&name).await;
        let ttl = Duration::from_secs(TTL_SECONDS as u64) + TTL_GRACE;
        case.wait_until(&name, "deleted after its TTL", ttl, |e| e.is_none()).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_controller_restart_mid_run_completes_the_execution_once() {
    run_case("restart", |case| async move {
        let slow = "import time\n\ndef main():\n    print('ran')\n    time.sleep(15)\n    return {'done': True}\n";
        let limits = RequestedLimits { timeout_seconds: Some(45.0), ..Default::default() };
        let name = case.create("restart", slow, Some(limits), None).await;
        let running = |e: Option<&PythonExecution>| e.is_some_and(|e| e.phase() == Phase::Running);
        let before = case.wait_until(&name, "running", FINISH_TIMEOUT, running).await.expect("the execution");
        let pod_before = status_of(&before).pod_name;

        // Delete the controller's pods mid-run; the Deployment starts a new one.
        delete_controller_pods(&case).await;

        let status = status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        assert_eq!(status.stdout.as_deref(), Some("ran\n"), "the script ran once");
        assert_eq!(status.pod_name, pod_before, "no second pod");
        assert_eq!(status.pods_replaced, None, "the job was never given to another pod");

        let events: Api<Event> = Api::namespaced(case.client.clone(), &case.settings.namespace);
        let fields = format!("involvedObject.name={name},reason={REASON_POD_CREATED}");
        let created = events.list(&ListParams::default().fields(&fields)).await.expect("listing events");
        let count: i32 = created.items.iter().map(|e| e.count.unwrap_or(1).max(1)).sum();
        assert!(
            count <= 1,
            "at most one pod was created for it (none when it claimed a warm one): {:?}",
            created.items
        );
    })
    .await;
}
