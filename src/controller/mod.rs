//! `pyexec controller`: turns each PythonExecution into one sandbox pod, and the pod's output
//! into the execution's status.

pub mod args;
pub mod attach;
pub mod envelope_fit;
pub mod events;
pub mod failure;
mod handover;
#[cfg(test)]
mod handover_tests;
mod http;
pub mod metrics;
pub mod pod;
pub mod pod_limits;
pub mod pod_state;
pub mod reconcile;
pub mod runtime;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod warm_pods;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::Client;

use crate::crd::PythonExecution;
use crate::sandbox::warm::pool::Kind;
pub use args::ControllerArgs;
use attach::{Attacher, KubeAttacher};
use metrics::ControllerMetrics;
use reconcile::{error_policy, reconcile, Context};
use warm_pods::{PoolConfig, WarmPool};

/// The controller's name in events and logs.
pub const CONTROLLER_NAME: &str = "pyexec-controller";

/// Why a reconcile, or the controller itself, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the execution has no {0}")]
    MissingObjectKey(&'static str),
    #[error("reading the execution: {0}")]
    ExecutionGetFailed(#[source] kube::Error),
    #[error("reading the sandbox pod: {0}")]
    PodGetFailed(#[source] kube::Error),
    #[error("creating the sandbox pod: {0}")]
    PodCreationFailed(#[source] kube::Error),
    #[error("requesting the sandbox pod's log: {0}")]
    PodLogFailed(#[source] kube::Error),
    #[error("reading the sandbox pod's log: {0}")]
    PodLogRead(#[source] std::io::Error),
    #[error("claiming a warm pod: {0}")]
    PodClaimFailed(#[source] kube::Error),
    #[error("deleting the sandbox pod: {0}")]
    PodDeletionFailed(#[source] kube::Error),
    #[error("writing the status: {0}")]
    StatusPatchFailed(#[source] kube::Error),
    #[error("deleting the finished execution: {0}")]
    ExecutionDeletionFailed(#[source] kube::Error),
    #[error("reading the sandbox RuntimeClass: {0}")]
    RuntimeClassGetFailed(#[source] kube::Error),
    #[error(transparent)]
    RuntimeRefused(#[from] runtime::RuntimeRefusal),
    #[error("connecting to Kubernetes (KUBECONFIG or the in-cluster service account): {0}")]
    Connect(#[source] kube::Error),
    #[error("PythonExecutions cannot be listed; is the CRD installed (`pyexec crd | kubectl apply -f -`)? {0}")]
    CrdNotQueryable(#[source] kube::Error),
    #[error("the default limits are invalid: {0}")]
    InvalidLimits(#[source] crate::sandbox::limits::LimitError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::ExecutionGetFailed(_) => "execution_get_failed",
            Error::PodGetFailed(_) => "pod_get_failed",
            Error::PodCreationFailed(_) => "pod_creation_failed",
            Error::PodClaimFailed(_) => "pod_claim_failed",
            Error::PodLogFailed(_) | Error::PodLogRead(_) => "pod_log_failed",
            Error::PodDeletionFailed(_) => "pod_deletion_failed",
            Error::StatusPatchFailed(_) => "status_patch_failed",
            Error::ExecutionDeletionFailed(_) => "execution_deletion_failed",
            Error::Connect(_)
            | Error::CrdNotQueryable(_)
            | Error::RuntimeClassGetFailed(_)
            | Error::RuntimeRefused(_)
            | Error::InvalidLimits(_)
            | Error::Listen { .. } => "startup",
        }
    }
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: ControllerArgs) -> Result<()> {
    let client = crate::kube_client::connect().await.map_err(Error::Connect)?;
    let (executions, pods): (Api<PythonExecution>, Api<Pod>) = if args.namespace.is_empty() {
        (Api::all(client.clone()), Api::all(client.clone()))
    } else {
        (Api::namespaced(client.clone(), &args.namespace), Api::namespaced(client.clone(), &args.namespace))
    };
    executions.list(&ListParams::default().limit(1)).await.map_err(Error::CrdNotQueryable)?;
    runtime::verify(&client, &args.pod, &args.gvisor_handlers).await?;

    let metrics = Arc::new(ControllerMetrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Listen { addr: args.listen, source })?;
    let router = http::router(ready.clone(), metrics.clone());
    let server = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "the health and metrics server stopped");
        }
    });

    // The sandbox pods wake their executions, and stay cached so a finished execution can see
    // whether its pod is still there without asking the API server.
    let (pod_cache, pod_writer) = reflector::store();
    let pod_stream = watcher(pods, watcher::Config::default().labels(pod::SANDBOX_SELECTOR))
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let reporter = Reporter { controller: CONTROLLER_NAME.into(), instance: None };
    let attacher: Arc<dyn Attacher> = Arc::new(KubeAttacher { client: client.clone() });
    let pools = warm_pools(&args, &client, &pod_cache, &attacher, &metrics)?;
    for pool in &pools {
        tokio::spawn(pool.clone().run());
    }
    let preload = args.pool.preload();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        pod_cache,
        client,
        pod: args.pod,
        limits: args.limits,
        pod_start_timeout: Duration::from_secs(args.pod_start_timeout_seconds),
        metrics,
        attacher,
        pools,
        preload,
        hand_over_delay: Duration::from_millis(args.test_hand_over_delay_ms),
    });
    // Readiness comes from the executions watcher's own "initial list done" event, not from
    // awaiting the store: kube-runtime's store wakes only the last of several waiters, and the
    // controller itself already waits on it.
    let (reader, writer) = reflector::store();
    let executions_stream = watcher(executions, watcher::Config::default())
        .default_backoff()
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) && !ready.swap(true, Ordering::SeqCst) {
                tracing::info!("caches synced; ready");
            }
        })
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(executions_stream, reader).owns_stream(pod_stream);
    tracing::info!(
        listen = %args.listen,
        namespace = if args.namespace.is_empty() { "(all)" } else { args.namespace.as_str() },
        "pyexec controller running"
    );
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "controller event");
            }
        })
        .await;
    server.abort();
    tracing::info!("pyexec controller stopped");
    Ok(())
}

/// The warm pools of the watched namespace, one per kind of pod with a size above 0: none when
/// both sizes are 0 or every namespace is watched (a pool lives in one namespace).
fn warm_pools(
    args: &ControllerArgs,
    client: &Client,
    cache: &Store<Pod>,
    attacher: &Arc<dyn Attacher>,
    metrics: &Arc<ControllerMetrics>,
) -> Result<Vec<Arc<WarmPool>>> {
    let sizes = [(Kind::Plain, args.pool.pool_plain_size), (Kind::Preloaded, args.pool.pool_size)];
    if sizes.iter().all(|(_, size)| *size == 0) {
        return Ok(Vec::new());
    }
    if args.namespace.is_empty() {
        tracing::warn!("no warm pod pool: it needs --namespace (every namespace is watched)");
        return Ok(Vec::new());
    }
    let limits = args.limits.defaults().map_err(Error::InvalidLimits)?;
    let idle = Duration::from_secs(args.pool.pool_idle_seconds.max(1));
    let lifetime = idle + Duration::from_secs_f64(args.limits.max_timeout_seconds.clamp(0.0, 86_400.0));
    let mut pools = Vec::new();
    for (kind, size) in sizes.into_iter().filter(|(_, size)| *size > 0) {
        let preload = match kind {
            Kind::Plain => Vec::new(),
            Kind::Preloaded => args.pool.preload(),
        };
        let template = pod::build_pool_pod(&args.namespace, &args.pod, &limits, &preload, lifetime);
        let config = PoolConfig {
            namespace: args.namespace.clone(),
            kind,
            min: size,
            max: args.pool.pool_max_size.max(size),
            idle,
            template,
            limits: limits.clone(),
        };
        let api = Api::namespaced(client.clone(), &args.namespace);
        pools.push(WarmPool::new(config, api, cache.clone(), attacher.clone(), metrics.clone()));
    }
    Ok(pools)
}
