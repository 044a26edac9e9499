//! The kubernetes placement: each execution becomes a PythonExecution that the controller runs in
//! a sandbox pod. Every request waits on one shared watch of the namespace's PythonExecutions
//! (a reflector store plus a wake-up per name), never on a watch of its own.

mod backlog;
mod watch;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::kube::api::{Api, DeleteParams, LogParams, PostParams};
use ::kube::runtime::reflector::{self, ObjectRef, Store};
use ::kube::runtime::{watcher, WatchStreamExt};
use ::kube::{Client, ResourceExt};
use clap::Args;
use futures::future::BoxFuture;
use futures::{AsyncBufRead, FutureExt};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::abandoned::DeleteIfAbandoned;
use super::overload;
use super::places::Places;
use super::{ExecuteError, ExecutionRequest, Executor, NotReady};
use crate::crd::{PythonExecution, PythonExecutionSpec, MAX_SPEC_BYTES};
use crate::metrics::Metrics;
use crate::sandbox::{Envelope, Job, Limits, Outcome};
use watch::{follow_watch, SharedWatch, WaitError};

/// Names of the PythonExecutions the API creates start with this.
pub const GENERATE_NAME: &str = "pyx-";
/// Label holding the HTTP request's id, so GET /executions/{id} finds the execution too.
pub const LABEL_REQUEST_ID: &str = "pyexec.dev/request-id";
/// Label of the PythonExecutions submitted with POST /executions (listed by GET /executions).
pub const LABEL_SUBMITTED: &str = "pyexec.dev/submitted";
const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "pyexec-api";
/// How long /readyz waits for the API server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of a sandbox pod's log an event stream reads: its output frames are bounded by the
/// output limits, far below this.
const FOLLOWED_LOG_BYTES: i64 = 64 << 20;
/// Executions in flight when --max-concurrency is not set: the cluster, not this process, runs them.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Settings of the kubernetes placement (`pyexec serve --executor kubernetes`).
#[derive(Args, Debug, Clone)]
pub struct KubeSettings {
    /// Namespace the API creates PythonExecutions in; the controller must watch it.
    #[arg(long, env = "PYEXEC_KUBE_NAMESPACE", default_value = "default")]
    pub kube_namespace: String,
    /// Keep each PythonExecution after answering (GET /executions/{name} then finds it) instead of
    /// deleting it; kept ones are still deleted after --kube-ttl-seconds.
    #[arg(long, env = "PYEXEC_KEEP_EXECUTIONS", default_value_t = false)]
    pub keep_executions: bool,
    /// Seconds to wait past an execution's timeout (pod scheduling and start) before answering 504
    /// with the execution's name.
    #[arg(long, env = "PYEXEC_KUBE_EXTRA_WAIT_SECONDS", default_value_t = 60)]
    pub kube_extra_wait_seconds: u64,
    /// ttlSecondsAfterFinished of the PythonExecutions the API creates: the clean-up of kept
    /// executions and of those not answered in time.
    #[arg(long, env = "PYEXEC_KUBE_TTL_SECONDS", default_value_t = 3600)]
    pub kube_ttl_seconds: i64,
}

/// Why the kubernetes placement could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeExecutorError {
    #[error("connecting to Kubernetes (KUBECONFIG or the in-cluster service account): {0}")]
    Connect(#[source] ::kube::Error),
}

pub struct KubeExecutor {
    client: Client,
    api: Api<PythonExecution>,
    namespace: String,
    settings: KubeSettings,
    watch: Arc<SharedWatch>,
    watch_task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    /// Places for requests being answered: each holds a watch waiter and a resource.
    in_flight: Places,
    /// Refuse an execution expected to wait for a pod longer than this many times its timeout
    /// (0: never).
    overload_wait_factor: f64,
}

impl KubeExecutor {
    /// Connects with the usual kubeconfig inference and starts the shared watch.
    pub async fn connect(
        settings: KubeSettings,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KubeExecutorError> {
        let client = crate::kube_client::connect().await.map_err(KubeExecutorError::Connect)?;
        Ok(Self::start(client, settings, max_in_flight, metrics))
    }

    /// Starts the one watch every request shares.
    pub fn start(client: Client, settings: KubeSettings, max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        let api: Api<PythonExecution> = Api::namespaced(client.clone(), &settings.kube_namespace);
        let (store, writer) = reflector::store();
        let watch = Arc::new(SharedWatch::new(store));
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()).default_backoff());
        let watch_task = tokio::spawn(follow_watch(stream, watch.clone(), metrics.clone()));
        KubeExecutor {
            client,
            namespace: settings.kube_namespace.clone(),
            api,
            settings,
            watch,
            watch_task,
            metrics,
            in_flight: Places::new(max_in_flight.max(1)),
            overload_wait_factor: 0.0,
        }
    }

    /// Refuses executions that would wait for a pod longer than `factor` times their timeout
    /// (`--overload-wait-factor`; 0: never), judged from the shared watch (`backlog`).
    pub fn with_overload_wait_factor(mut self, factor: f64) -> Self {
        self.overload_wait_factor = factor;
        self
    }

    async fn run(&self, request: ExecutionRequest) -> Result<Envelope, ExecuteError> {
        let Some(_in_flight) = self.in_flight.take(&self.metrics.in_flight) else {
            return Err(ExecuteError::Busy { retry_after_seconds: 1 });
        };
        let started = Instant::now();
        let execution = new_execution(&request, self.settings.kube_ttl_seconds);
        let created = self.api.create(&PostParams::default(), &execution).await.map_err(ExecuteError::CreateFailed)?;
        let name = created.name_any();
        if let Some(started) = &request.started {
            started.notify_one();
        }
        // A request dropped before its answer (the client went away) deletes its execution,
        // which stops its pod.
        let abandoned = DeleteIfAbandoned::new(self.api.clone(), &name, &request.id, self.metrics.clone());
        let answer = self.answer(&name, &request, started).await;
        abandoned.disarm();
        answer
    }

    /// Waits for the execution `name` to finish and reads its envelope.
    async fn answer(&self, name: &str, request: &ExecutionRequest, started: Instant) -> Result<Envelope, ExecuteError> {
        let name = name.to_string();
        let wait = request.job.limits.timeout() + Duration::from_secs(self.settings.kube_extra_wait_seconds);
        let key = ObjectRef::new(&name).within(&self.namespace);
        let finished = match self.watch.wait_finished(&key, tokio::time::Instant::now() + wait).await {
            Ok(finished) => finished,
            Err(WaitError::Timeout) => return Err(ExecuteError::NotFinished { name }),
            Err(WaitError::Deleted) => return Err(ExecuteError::Deleted { name }),
        };
        let envelope = finished
            .status
            .as_ref()
            .and_then(|s| s.envelope())
            .ok_or_else(|| ExecuteError::NoStatus { name: name.clone() })?;
        if envelope.outcome == Outcome::SandboxFailure {
            tracing::warn!(execution = %name, error = ?envelope.error, "the sandbox pod did not run the script");
        }
        if !self.settings.keep_executions {
            self.delete_later(name);
        }
        self.metrics.record_execution(envelope.outcome, started.elapsed().as_secs_f64());
        Ok(envelope)
    }

    /// Creates the PythonExecution for a request and returns at once: a submitted execution,
    /// which the cluster keeps for `ttl_seconds` after it finishes.
    pub async fn submit(
        &self,
        request: &ExecutionRequest,
        ttl_seconds: i64,
    ) -> Result<Arc<PythonExecution>, ::kube::Error> {
        let mut execution = new_execution(request, ttl_seconds);
        if let Some(labels) = execution.metadata.labels.as_mut() {
            labels.insert(LABEL_SUBMITTED.to_string(), "true".to_string());
        }
        self.api.create(&PostParams::default(), &execution).await.map(Arc::new)
    }

    /// A PythonExecution by its name or its request's id, as the shared watch last saw it.
    pub fn find(&self, name_or_id: &str) -> Option<Arc<PythonExecution>> {
        find(&self.watch.store, &self.namespace, name_or_id)
    }

    /// Waits up to `wait` for the PythonExecution `name` to finish (or disappear).
    pub async fn wait_finished(&self, name: &str, wait: Duration) {
        let key = ObjectRef::new(name).within(&self.namespace);
        let _ = self.watch.wait_finished(&key, tokio::time::Instant::now() + wait).await;
    }

    /// Every PythonExecution the API submitted (POST /executions), as the shared watch sees them.
    pub fn submitted(&self) -> Vec<Arc<PythonExecution>> {
        let submitted = |e: &Arc<PythonExecution>| e.labels().get(LABEL_SUBMITTED).is_some_and(|v| v == "true");
        self.watch.store.state().into_iter().filter(submitted).collect()
    }

    /// The log of sandbox pod `pod`, followed as it is written (at most `FOLLOWED_LOG_BYTES`).
    pub async fn follow_pod_log(&self, pod: &str) -> Result<Pin<Box<dyn AsyncBufRead + Send>>, ::kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = LogParams { follow: true, limit_bytes: Some(FOLLOWED_LOG_BYTES), ..LogParams::default() };
        let reader = pods.log_stream(pod, &params).await?;
        Ok(Box::pin(reader))
    }

    /// Deletes a PythonExecution, which stops its pod.
    pub async fn delete(&self, name: &str) -> Result<(), ::kube::Error> {
        self.api.delete(name, &DeleteParams::background()).await.map(|_| ())
    }

    /// Deletes an answered execution without delaying the answer.
    fn delete_later(&self, name: String) {
        let api = self.api.clone();
        tokio::spawn(async move {
            if let Err(err) = api.delete(&name, &DeleteParams::background()).await {
                tracing::warn!(execution = %name, error = %err, "could not delete an answered PythonExecution");
            }
        });
    }
}

impl Drop for KubeExecutor {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl Executor for KubeExecutor {
    fn execute(&self, request: ExecutionRequest) -> BoxFuture<'_, Result<Envelope, ExecuteError>> {
        self.run(request).boxed()
    }

    /// Every replica of the API sees the namespace's whole backlog through its watch, so the
    /// judgement covers the executions any of them (or kubectl) created.
    fn admit(&self, limits: &Limits) -> Result<(), ExecuteError> {
        let Some(wait) = self.watch.backlog().expected_wait(Instant::now()) else { return Ok(()) };
        overload::admission(wait, limits.timeout(), self.overload_wait_factor)
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        async move {
            if !self.watch.synced.load(Ordering::SeqCst) {
                return Err(NotReady::WatchNotSynced);
            }
            match tokio::time::timeout(READY_TIMEOUT, self.client.apiserver_version()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(NotReady::ApiServerRefused(err)),
                Err(_) => Err(NotReady::ApiServerSilent { seconds: READY_TIMEOUT.as_secs() }),
            }
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }

    /// A PythonExecution's spec holds the script and the files, within `MAX_SPEC_BYTES`.
    fn refusal(&self, job: &Job) -> Option<String> {
        refusal(job)
    }
}

/// A stored execution by its name or its request's id, from the shared watch's store.
fn find(store: &Store<PythonExecution>, namespace: &str, name_or_id: &str) -> Option<Arc<PythonExecution>> {
    store.get(&ObjectRef::new(name_or_id).within(namespace)).or_else(|| {
        store.state().into_iter().find(|e| e.labels().get(LABEL_REQUEST_ID).map(String::as_str) == Some(name_or_id))
    })
}

/// The spec that carries `job`: its script, its resolved limits, its input files.
pub fn spec_of(job: &Job, ttl_seconds: Option<i64>) -> PythonExecutionSpec {
    let files = match serde_json::to_value(&job.files) {
        Ok(Value::Object(files)) if !files.is_empty() => Some(files),
        _ => None,
    };
    PythonExecutionSpec {
        script: job.script.clone(),
        limits: Some(job.limits.requested()),
        files,
        ttl_seconds_after_finished: ttl_seconds.map(|ttl| ttl.max(0)),
    }
}

/// Why `job` cannot be stored in a PythonExecution: its spec would take more than
/// `MAX_SPEC_BYTES`.
pub fn refusal(job: &Job) -> Option<String> {
    let bytes = spec_of(job, Some(0)).json_bytes();
    (bytes > MAX_SPEC_BYTES).then(|| {
        format!(
            "the script and its files take {bytes} bytes in a PythonExecution (base64 counts 4/3 of the bytes it holds); \
             the kubernetes executor stores at most {MAX_SPEC_BYTES}: send smaller files"
        )
    })
}

/// The PythonExecution for one request: a generated name, the resolved limits, a TTL.
pub fn new_execution(request: &ExecutionRequest, ttl_seconds: i64) -> PythonExecution {
    let spec = spec_of(&request.job, Some(ttl_seconds));
    let mut execution = PythonExecution::new("", spec);
    execution.metadata.name = None;
    execution.metadata.generate_name = Some(GENERATE_NAME.into());
    execution.metadata.labels = Some(BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_REQUEST_ID.to_string(), request.id.clone()),
    ]));
    execution
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Phase, PythonExecutionStatus};

    pub(super) fn request() -> ExecutionRequest {
        let limits = crate::sandbox::limits::testing::default_limits();
        ExecutionRequest {
            id: "abc123".into(),
            job: crate::sandbox::Job::new("def main(): return {}", limits),
            started: None,
            output: None,
        }
    }

    /// A stored execution, its request id `id-<name>`.
    pub(super) fn execution(name: &str, phase: Phase) -> PythonExecution {
        let mut execution = new_execution(&request(), 60);
        execution.metadata.name = Some(name.into());
        execution.labels_mut().insert(LABEL_REQUEST_ID.into(), format!("id-{name}"));
        execution.metadata.namespace = Some("default".into());
        execution.status = Some(PythonExecutionStatus {
            phase: Some(phase),
            outcome: phase.is_finished().then(|| "success".to_string()),
            returncode: Some(0),
            ..Default::default()
        });
        execution
    }

    #[test]
    fn a_request_becomes_a_generated_name_with_its_limits_and_ttl() {
        let execution = new_execution(&request(), 600);
        assert_eq!(execution.metadata.name, None);
        assert_eq!(execution.metadata.generate_name.as_deref(), Some("pyx-"));
        assert_eq!(execution.labels()[LABEL_REQUEST_ID], "abc123");
        assert_eq!(execution.spec.ttl_seconds_after_finished, Some(600));
        let limits = execution.spec.limits.expect("limits");
        assert_eq!(limits, request().job.limits.requested());
        assert_eq!(limits.memory_mb, Some(512));
    }

    fn with_files(files: serde_json::Value) -> Job {
        let files = crate::sandbox::files::InputFiles::from_json(files).expect("files");
        Job { files, ..request().job }
    }

    #[test]
    fn input_files_travel_in_the_spec_as_the_request_sent_them() {
        let job = with_files(serde_json::json!({"in.csv": "a,b\n1,2\n", "x.bin": {"base64": "AAE="}}));
        let spec = spec_of(&job, None);
        let files = serde_json::Value::Object(spec.files.expect("files"));
        assert_eq!(files, serde_json::json!({"in.csv": "a,b\n1,2\n", "x.bin": {"base64": "AAE="}}));
        assert_eq!(spec_of(&request().job, None).files, None, "no files, no field");
    }

    #[test]
    fn a_spec_larger_than_a_python_execution_stores_is_refused_with_its_size() {
        assert_eq!(refusal(&request().job), None);
        let large = with_files(serde_json::json!({"big.txt": "x".repeat(MAX_SPEC_BYTES)}));
        let why = refusal(&large).expect("refused");
        assert!(why.contains(&format!("at most {MAX_SPEC_BYTES}")), "{why}");
        let fits = with_files(serde_json::json!({"ok.txt": "x".repeat(MAX_SPEC_BYTES / 2)}));
        assert_eq!(refusal(&fits), None);
    }

    #[test]
    fn a_stored_execution_is_found_by_name_or_by_request_id() {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(execution("pyx-a", Phase::Succeeded)));
        writer.apply_watcher_event(&watcher::Event::Apply(execution("pyx-b", Phase::Running)));
        let name = |found: Option<Arc<PythonExecution>>| found.map(|e| e.name_any());
        assert_eq!(name(find(&store, "default", "pyx-a")).as_deref(), Some("pyx-a"));
        assert_eq!(name(find(&store, "default", "id-pyx-b")).as_deref(), Some("pyx-b"), "by its own request id");
        assert_eq!(name(find(&store, "default", "id-pyx-a")).as_deref(), Some("pyx-a"));
        assert_eq!(find(&store, "default", "pyx-zzz"), None);
    }
}
