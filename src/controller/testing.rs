//! Test fixtures: sample objects, and a mocked API server that answers the reconciler's calls one
//! by one so tests can assert exactly which calls it makes.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use kube::Client;
use serde::Serialize;
use serde_json::{json, Value};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::args::{PodSettings, SandboxSecurity};
use super::attach::{Attacher, DeliveryError, DeliveryResult, Session};
use super::metrics::ControllerMetrics;
use super::pod::{build_pod, build_pool_pod, pod_name};
use super::reconcile::Context;
use super::warm_pods::{PoolConfig, WarmPool};
use crate::crd::{Delivery, Phase, PythonExecution, PythonExecutionSpec, PythonExecutionStatus};
use crate::sandbox::warm::pool::Kind;
use crate::sandbox::{Envelope, LimitSettings, Limits, Outcome};

pub const POD_START_TIMEOUT: Duration = Duration::from_secs(120);

/// The API paths of the execution `hello` in `default`, and of its pods.
pub const EXECUTION: &str = "/apis/pyexec.dev/v1alpha1/namespaces/default/pythonexecutions/hello";
pub const STATUS: &str = "/apis/pyexec.dev/v1alpha1/namespaces/default/pythonexecutions/hello/status";
pub const PODS: &str = "/api/v1/namespaces/default/pods";
pub const POD: &str = "/api/v1/namespaces/default/pods/hello-sandbox";
pub const POD_LOG: &str = "/api/v1/namespaces/default/pods/hello-sandbox/log";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

pub fn limit_settings() -> LimitSettings {
    crate::sandbox::limits::testing::settings()
}

pub fn limits() -> Limits {
    crate::sandbox::limits::testing::default_limits()
}

pub fn pod_settings() -> PodSettings {
    PodSettings {
        sandbox_image: "pyexec-sandbox:dev".into(),
        sandbox_image_pull_policy: "IfNotPresent".into(),
        runtime_class: "gvisor".into(),
        without_gvisor: false,
        pod_cpu_millicores: 1000,
        pod_cpu_request_millicores: 200,
        sandbox_security: SandboxSecurity::Nsjail,
    }
}

/// A new execution, as the API server stores it before the controller has seen it.
pub fn execution(name: &str) -> PythonExecution {
    let spec = PythonExecutionSpec {
        script: "def main():\n    return {'ok': True}\n".into(),
        limits: None,
        files: None,
        ttl_seconds_after_finished: None,
    };
    let mut execution = PythonExecution::new(name, spec);
    execution.metadata.namespace = Some("default".into());
    execution.metadata.uid = Some(format!("uid-{name}"));
    execution.metadata.resource_version = Some("1".into());
    execution.metadata.generation = Some(1);
    execution.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    execution
}

/// The execution once its pod was created, the job not yet handed over.
pub fn pending(name: &str) -> PythonExecution {
    let mut execution = execution(name);
    execution.status = Some(PythonExecutionStatus {
        phase: Some(Phase::Pending),
        pod_name: Some(pod_name(name)),
        delivery: Some(Delivery::Awaiting),
        start_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
    execution
}

/// The execution whose job was handed to its pod (or whose handing over began).
pub fn delivered(name: &str) -> PythonExecution {
    let mut execution = pending(name);
    if let Some(status) = execution.status.as_mut() {
        status.phase = Some(Phase::Running);
        status.delivery = Some(Delivery::Started);
    }
    execution
}

/// The execution finished `ago` before now.
pub fn finished(name: &str, phase: Phase, ago: SignedDuration) -> PythonExecution {
    let mut execution = pending(name);
    execution.status = Some(PythonExecutionStatus {
        phase: Some(phase),
        completion_time: Some(Time(Timestamp::now() - ago)),
        ..execution.status.unwrap_or_default()
    });
    execution
}

/// The execution's pod as the controller builds it, with the given pod status.
pub fn sandbox_pod(execution: &PythonExecution, status: PodStatus) -> Pod {
    let mut pod = build_pod(execution, &pod_settings(), &limits()).expect("buildable");
    pod.metadata.uid = Some(format!("pod-uid-{}", execution.metadata.name.clone().unwrap_or_default()));
    pod.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    pod.status = Some(status);
    pod
}

fn container(state: ContainerState) -> Option<Vec<ContainerStatus>> {
    Some(vec![ContainerStatus { name: "sandbox".into(), state: Some(state), ..Default::default() }])
}

pub fn running_status() -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        container_statuses: container(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(Timestamp::now())) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ended_status(phase: &str, exit_code: i32) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        container_statuses: container(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn waiting_status(reason: &str) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        container_statuses: container(ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A ready pod of the warm pool in `default`, named `name`, at resourceVersion 7.
pub fn pool_pod(name: &str) -> Pod {
    let mut pod = build_pool_pod("default", &pod_settings(), &limits(), &[], Duration::from_secs(660));
    pod.metadata.name = Some(name.into());
    pod.metadata.uid = Some(format!("pod-uid-{name}"));
    pod.metadata.resource_version = Some("7".into());
    pod.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    pod.status = Some(running_status());
    pod
}

/// An envelope as `pyexec sandbox` prints it, with the given outcome.
pub fn envelope(outcome: Outcome) -> Envelope {
    Envelope {
        outcome,
        result: None,
        stdout: "out\n".into(),
        stderr: String::new(),
        returncode: 0,
        error: None,
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: 15,
        files: Vec::new(),
        files_truncated: false,
        files_omitted: Vec::new(),
    }
}

/// The body of a 404 from the API server.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "not found", "reason": "NotFound", "code": 404})
}

/// The body of a 500 from the API server.
pub fn internal_error() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})
}

/// The body of a 409 from the API server.
pub fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "the object has been modified", "reason": "Conflict", "code": 409})
}

/// A reconcile context whose client talks to the returned mocked API server, with no pod cached.
pub fn context() -> (Arc<Context>, ApiServer) {
    context_with_pods(&[])
}

/// A reconcile context whose client talks to the returned mocked API server, and whose pod
/// cache holds `pods`.
pub fn context_with_pods(pods: &[Pod]) -> (Arc<Context>, ApiServer) {
    let (ctx, server, _) = context_with(pods, &[]);
    (ctx, server)
}

/// A reconcile context whose client talks to the returned mocked API server, whose pod cache
/// holds `pods`, whose attach is the returned stand-in, and which has a warm pool in `default`
/// with open sessions to `ready` (when not empty).
pub fn context_with(pods: &[Pod], ready: &[&str]) -> (Arc<Context>, ApiServer, Arc<FakeAttacher>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reporter = Reporter { controller: "pyexec-controller-test".into(), instance: None };
    let (pod_cache, mut writer) = reflector::store();
    for pod in pods {
        writer.apply_watcher_event(&watcher::Event::Apply(pod.clone()));
    }
    let attacher = Arc::new(FakeAttacher::default());
    let metrics = Arc::new(ControllerMetrics::default());
    let pool = (!ready.is_empty()).then(|| {
        let config = PoolConfig {
            namespace: "default".into(),
            kind: Kind::Plain,
            min: ready.len(),
            max: ready.len(),
            idle: Duration::from_secs(600),
            template: build_pool_pod("default", &pod_settings(), &limits(), &[], Duration::from_secs(660)),
            limits: limits(),
        };
        let api = kube::Api::namespaced(client.clone(), "default");
        let as_attacher: Arc<dyn Attacher> = attacher.clone();
        let pool = WarmPool::new(config, api, pod_cache.clone(), as_attacher, metrics.clone());
        for pod in ready {
            pool.add_ready(attacher.session(pod));
        }
        pool
    });
    let ctx = Context {
        recorder: Recorder::new(client.clone(), reporter),
        pod_cache,
        client,
        pod: pod_settings(),
        limits: limit_settings(),
        pod_start_timeout: POD_START_TIMEOUT,
        metrics,
        attacher: attacher.clone(),
        pools: pool.into_iter().collect(),
        preload: vec!["pandas".into()],
        hand_over_delay: Duration::ZERO,
    };
    (Arc::new(ctx), ApiServer(handle), attacher)
}

/// Reconciles `execution` in `ctx` while `scenario` answers the calls `server` receives; fails
/// if the scenario's calls are not all made within a second.
pub async fn reconcile_against<F, Fut>(
    ctx: Arc<Context>,
    server: ApiServer,
    execution: PythonExecution,
    scenario: F,
) -> super::Result<kube::runtime::controller::Action>
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let verifier = tokio::spawn(scenario(server));
    let action = super::reconcile::reconcile(Arc::new(execution), ctx).await;
    tokio::time::timeout(Duration::from_secs(1), verifier)
        .await
        .expect("the reconciler made every expected call")
        .expect("the scenario's assertions held");
    action
}

/// One call the reconciler made.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Call {
    /// Asserts the method and path, and returns the call for more assertions.
    pub fn expect(self, method: Method, path: &str) -> Self {
        assert_eq!((&self.method, self.path.as_str()), (&method, path), "unexpected call {self:?}");
        self
    }
}

/// The mocked API server: each `answer` takes the next call and answers it.
pub struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    pub async fn answer(&mut self, status: u16, body: impl Serialize) -> Call {
        let bytes = serde_json::to_vec(&body).expect("the answer serialises");
        self.answer_bytes(status, bytes).await
    }

    pub async fn answer_bytes(&mut self, status: u16, answer: Vec<u8>) -> Call {
        self.respond(status, Some(answer)).await
    }

    /// Answers with the request's own body, as the API server does for a create.
    pub async fn echo(&mut self, status: u16) -> Call {
        self.respond(status, None).await
    }

    /// Asserts that the reconciler makes no further call (within a tenth of a second).
    pub async fn expect_no_call(&mut self) {
        if let Ok(Some((request, _))) = tokio::time::timeout(Duration::from_millis(100), self.0.next_request()).await {
            panic!("unexpected call {} {}", request.method(), request.uri().path());
        }
    }

    async fn respond(&mut self, status: u16, answer: Option<Vec<u8>>) -> Call {
        let (request, send) = self.0.next_request().await.expect("the reconciler made another call");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.expect("the request body is readable").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let answer = answer.unwrap_or(bytes);
        let response = Response::builder().status(status).body(Body::from(answer)).expect("a valid response");
        send.send_response(response);
        Call { method, path, query, body }
    }
}

/// What the stand-in pods answer to a job.
#[derive(Clone, Debug)]
pub enum PodAnswer {
    /// Stdout to its end: an envelope line, usually.
    Output(Vec<u8>),
    /// Writing the job fails: it may or may not have reached the pod.
    WriteFails,
}

/// Jobs written, with the pod each went to.
pub type WrittenJobs = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in for the pods' attach: sessions it opens record the jobs written to them and
/// answer `answer`.
pub struct FakeAttacher {
    pub answer: std::sync::Mutex<PodAnswer>,
    /// Pods attached to, in order.
    pub opened: Arc<std::sync::Mutex<Vec<String>>>,
    /// Jobs written, with their pod.
    pub jobs: WrittenJobs,
}

impl Default for FakeAttacher {
    fn default() -> Self {
        let line = serde_json::to_string(&envelope(Outcome::Success)).expect("json");
        FakeAttacher {
            answer: std::sync::Mutex::new(PodAnswer::Output(format!("{line}\n").into_bytes())),
            opened: Arc::default(),
            jobs: Arc::default(),
        }
    }
}

impl FakeAttacher {
    /// A session to `pod` as if it had been opened (for a pool's ready list).
    pub fn session(&self, pod: &str) -> Box<dyn Session> {
        let answer = self.answer.lock().expect("lock").clone();
        Box::new(FakeSession { pod: pod.to_string(), answer, jobs: self.jobs.clone() })
    }
}

impl Attacher for FakeAttacher {
    fn open<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Session>, DeliveryError>> {
        self.opened.lock().expect("lock").push(name.to_string());
        let session = self.session(name);
        async move { Ok(session) }.boxed()
    }
}

struct FakeSession {
    pod: String,
    answer: PodAnswer,
    jobs: WrittenJobs,
}

impl Session for FakeSession {
    fn pod(&self) -> &str {
        &self.pod
    }

    fn is_open(&self) -> bool {
        true
    }

    fn deliver(self: Box<Self>, job: Vec<u8>, _limit: u64, _timeout: Duration) -> BoxFuture<'static, DeliveryResult> {
        self.jobs.lock().expect("lock").push((self.pod.clone(), job));
        let result = match self.answer {
            PodAnswer::Output(output) => Ok(output),
            PodAnswer::WriteFails => {
                Err(DeliveryError::Write { pod: self.pod.clone(), source: std::io::ErrorKind::BrokenPipe.into() })
            }
        };
        async move { result }.boxed()
    }
}
