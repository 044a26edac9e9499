//! One reconcile of one PythonExecution: claim a warm pod or create one, hand it the job, write
//! the outcome into the status, delete the pod, and delete the execution after its TTL.
//!
//! Idempotence: a pod is claimed or created only when a fresh read of the execution shows neither
//! a pod name nor a final status; the status says `delivery: Started` before the job is written,
//! and a job is never written to a pod after that unless the pod proved it ended before any job
//! reached it (`PodView::NoJob`); every status write carries the resourceVersion it was computed
//! from, so a reconcile working from a stale cache gets a conflict instead of overwriting a newer
//! status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::args::PodSettings;
use super::attach::{Attacher, Session};
use super::envelope_fit::fit_envelope;
use super::events::{publish, Ending};
use super::failure::Failure;
use super::handover::{attach_and_hand_over, hand_over, job_of};
use super::metrics::ControllerMetrics;
use super::pod::{build_pod, BuildError, CONTAINER_NAME};
use super::pod_limits::{log_limit_of, status_budget};
use super::pod_state::{self, PodView};
use super::status::{self, Stamp};
use super::warm_pods::{Miss, Wait, WarmPool};
use super::{Error, Result};
use crate::crd::{Delivery, PythonExecution, PythonExecutionStatus};
use crate::sandbox::warm::pool::{kind_for, Kind};
use crate::sandbox::{LimitSettings, Limits};

/// A reconcile that saw a stale copy of the execution looks again after this long.
pub(super) const STALE_RETRY: Duration = Duration::from_secs(1);
/// A failed reconcile is retried after this long: executions are short, so retry soon.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// A running pod is looked at again after this long even without an event, in case one was lost.
const RUNNING_RECHECK: Duration = Duration::from_secs(60);
/// Pods an execution may be given that end before its job reaches them, before it fails.
const MAX_PODS_REPLACED: u32 = 3;
/// About what importing numpy and pandas takes in a plain pod under gVisor: a script that wants
/// a preloaded pod waits for one about to be ready rather than do that.
const PRELOAD_IMPORT: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// The sandbox pods, as the controller's watch last saw them.
    pub pod_cache: Store<Pod>,
    pub pod: PodSettings,
    pub limits: LimitSettings,
    pub pod_start_timeout: Duration,
    pub metrics: Arc<ControllerMetrics>,
    /// Opens the attach session a job is written to.
    pub attacher: Arc<dyn Attacher>,
    /// The warm pools of the watched namespace, one per kind of pod (none when the pool is off).
    pub pools: Vec<Arc<WarmPool>>,
    /// The modules preloaded pool pods import: a script that names one wants such a pod.
    pub preload: Vec<String>,
    /// Fault injection for tests: a pause between marking the delivery started and writing it.
    pub hand_over_delay: Duration,
}

impl Context {
    /// The pools of `namespace`, the one of the `wanted` kind first.
    fn pools_for(&self, namespace: &str, wanted: Kind) -> Vec<&WarmPool> {
        let mut pools: Vec<&WarmPool> =
            self.pools.iter().map(Arc::as_ref).filter(|pool| pool.namespace() == namespace).collect();
        pools.sort_by_key(|pool| pool.kind() != wanted);
        pools
    }
}

pub async fn reconcile(execution: Arc<PythonExecution>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    let started = Instant::now();
    let action = reconcile_execution(&execution, &ctx, Timestamp::now()).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    action
}

pub fn error_policy(execution: Arc<PythonExecution>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(execution = %execution.name_any(), error = %error, "reconcile failed");
    ctx.metrics.record_failure(error.metric_label());
    Action::requeue(ERROR_RETRY)
}

/// One reconcile as of `now`.
pub(super) async fn reconcile_execution(execution: &PythonExecution, ctx: &Context, now: Timestamp) -> Result<Action> {
    if execution.is_finished() {
        complete_finish(execution, ctx).await?;
        return expire(execution, ctx, now).await;
    }
    if execution.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    match execution.status.as_ref().and_then(|s| s.pod_name.clone()) {
        None => start(execution, ctx, now).await,
        Some(pod_name) => follow(execution, &pod_name, ctx, now).await,
    }
}

/// Deletes a finished execution once its TTL has passed.
async fn expire(execution: &PythonExecution, ctx: &Context, now: Timestamp) -> Result<Action> {
    match status::ttl_left(execution, now) {
        None => Ok(Action::await_change()),
        Some(left) if !left.is_zero() => Ok(Action::requeue(left)),
        Some(_) => {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: execution.uid(), resource_version: None }),
                ..DeleteParams::background()
            };
            match executions(ctx, execution)?.delete(&execution.name_any(), &params).await {
                Ok(_) => tracing::info!(execution = %execution.name_any(), "deleted after its TTL"),
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(Error::ExecutionDeletionFailed(e)),
            }
            Ok(Action::await_change())
        }
    }
}

/// Hands the job to a warm pod, or creates the sandbox pod after checking against a fresh read
/// that the execution never had one.
///
/// The warm path works from the cached copy, which saves a read on every warm execution: the
/// status write that precedes the job is conditional on that copy's resourceVersion, so a stale
/// copy costs the claimed pod (deleted unused, see `hand_over`), never a second delivery.
async fn start(cached: &PythonExecution, ctx: &Context, now: Timestamp) -> Result<Action> {
    let mut prepared = job_of(cached, &ctx.limits);
    if let Ok((limits, job)) = &mut prepared {
        if let Some(session) = claim_warm(cached, limits, ctx).await? {
            return hand_over(cached, session, std::mem::take(job), limits, true, ctx, now).await;
        }
    }
    let api = executions(ctx, cached)?;
    let Some(execution) = api.get_opt(&cached.name_any()).await.map_err(Error::ExecutionGetFailed)? else {
        return Ok(Action::await_change());
    };
    let has_pod = execution.status.as_ref().is_some_and(|s| s.pod_name.is_some());
    if execution.is_finished() || has_pod || execution.uid() != cached.uid() {
        return Ok(Action::requeue(STALE_RETRY));
    }
    let current = execution.status.clone().unwrap_or_default();
    let stamp = stamp_of(&execution, now);
    // The job comes from the spec: the fresh copy's is the cached one's unless its generation moved.
    if execution.meta().generation != cached.meta().generation {
        prepared = job_of(&execution, &ctx.limits);
    }
    let limits = match prepared {
        Ok((limits, _)) => limits,
        Err(failure) => return finish(&execution, status::failed(&current, failure, stamp), None, ctx).await,
    };
    let pod = build_pod(&execution, &ctx.pod, &limits)
        .map_err(|BuildError::MissingField(field)| Error::MissingObjectKey(field))?;
    let pod_name = pod.name_any();
    match pods(ctx, &execution)?.create(&PostParams::default(), &pod).await {
        Ok(_) => {}
        // Created before a restart; `follow` checks that it is this execution's.
        Err(e) if api_code(&e) == Some(409) => {}
        Err(e) => return Err(Error::PodCreationFailed(e)),
    }
    let status = status::pending(&current, &pod_name, "The sandbox pod was created", stamp);
    if matches!(write_status(&execution, status, ctx).await?, Write::Stale) {
        return Ok(Action::requeue(STALE_RETRY));
    }
    let note = format!("Created pod {pod_name}");
    publish(&ctx.recorder, &execution, EventType::Normal, status::REASON_POD_CREATED, note).await;
    Ok(Action::requeue(ctx.pod_start_timeout))
}

/// A warm pod for `execution`, soonest first: a ready one of the kind its script wants
/// (`kind_for`); for a script that imports the preloaded modules, a preloaded one about to be
/// ready (sooner than importing them in a plain one, `PRELOAD_IMPORT`); a ready one of the other
/// kind, which still answers far sooner than a pod of its own; one of those already starting
/// (`claim_when_ready`). None when no pool has one that fits its limits.
async fn claim_warm(execution: &PythonExecution, limits: &Limits, ctx: &Context) -> Result<Option<Box<dyn Session>>> {
    let wanted = kind_for(&execution.spec.script, &ctx.preload);
    let pools = ctx.pools_for(&namespace_of(execution)?, wanted);
    let mut miss = None;
    for (i, pool) in pools.iter().enumerate() {
        match pool.claim(execution, limits, wanted).await? {
            Ok(session) => return Ok(Some(session)),
            // The pools' pods are sized alike: one that does not fit, none does.
            Err(Miss::Unfit) => {
                miss = Some(Miss::Unfit);
                break;
            }
            Err(Miss::Empty) => miss = Some(Miss::Empty),
        }
        if i == 0 && wanted == Kind::Preloaded && pool.kind() == wanted {
            if let Wait::Claimed(session) =
                pool.claim_when_ready(execution, limits, wanted, Some(PRELOAD_IMPORT)).await?
            {
                return Ok(Some(session));
            }
        }
    }
    if miss == Some(Miss::Empty) {
        // A pod already starting is ready sooner than one started now.
        for pool in &pools {
            match pool.claim_when_ready(execution, limits, wanted, None).await? {
                Wait::Claimed(session) => return Ok(Some(session)),
                Wait::InVain => break,
                Wait::None => {}
            }
        }
    }
    if let Some(miss) = miss {
        ctx.metrics.record_pool_miss(miss.as_str());
    }
    Ok(None)
}

/// Follows the pod named in the status until it ends, then records the outcome.
async fn follow(execution: &PythonExecution, pod_name: &str, ctx: &Context, now: Timestamp) -> Result<Action> {
    let current = execution.status.clone().unwrap_or_default();
    let stamp = stamp_of(execution, now);
    let Some(pod) = pods(ctx, execution)?.get_opt(pod_name).await.map_err(Error::PodGetFailed)? else {
        let status = status::failed(&current, Failure::PodVanished { pod_name: pod_name.to_string() }, stamp);
        return finish(execution, status, None, ctx).await;
    };
    let owned = is_owned_by(&pod, execution);
    let (view, created) = if owned {
        (pod_state::view_pod(&pod), pod.creation_timestamp().map(|t| t.0))
    } else {
        let waiting = Some(format!("an older pod named {pod_name} is still being removed"));
        (PodView::Starting { waiting }, execution.creation_timestamp().map(|t| t.0))
    };
    match view {
        PodView::Starting { waiting } => {
            let left = pod_state::start_time_left(created, ctx.pod_start_timeout, now);
            let why = waiting.unwrap_or_else(|| "waiting to be scheduled".into());
            if left.is_zero() {
                let failure = Failure::PodStartTimeout { timeout: ctx.pod_start_timeout, why };
                let status = status::failed(&current, failure, stamp);
                return finish(execution, status, owned.then_some(&pod), ctx).await;
            }
            let status = status::pending(&current, pod_name, &format!("The sandbox pod is starting: {why}"), stamp);
            if matches!(write_status(execution, status, ctx).await?, Write::Stale) {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Ok(Action::requeue(left))
        }
        PodView::CannotStart { message } => {
            let status = status::failed(&current, Failure::PodCannotStart { message }, stamp);
            finish(execution, status, Some(&pod), ctx).await
        }
        PodView::Running if owned && current.delivery != Some(Delivery::Started) => {
            attach_and_hand_over(execution, &pod, ctx, now).await
        }
        PodView::Running => {
            if matches!(write_status(execution, status::running(&current, stamp), ctx).await?, Write::Stale) {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Ok(Action::requeue(RUNNING_RECHECK))
        }
        PodView::NoJob => {
            let replaced = current.pods_replaced.unwrap_or(0) + 1;
            if replaced > MAX_PODS_REPLACED {
                let failure = Failure::PodFailed {
                    failure: pod_state::PodFailure::sandbox(format!(
                        "{replaced} sandbox pods ended before the job reached them"
                    )),
                    log_excerpt: String::new(),
                };
                return finish(execution, status::failed(&current, failure, stamp), Some(&pod), ctx).await;
            }
            let status = status::pod_replaced(&current, stamp);
            if matches!(write_status(execution, status, ctx).await?, Write::Stale) {
                return Ok(Action::requeue(STALE_RETRY));
            }
            tracing::info!(execution = %execution.name_any(), pod = pod_name, "the pod ended before its job arrived; replacing it");
            delete_pod(ctx, execution, pod_name, pod.uid()).await?;
            Ok(Action::requeue(Duration::ZERO))
        }
        // The deletion's event brings us back, and the pod is then gone.
        PodView::Terminating => Ok(Action::await_change()),
        PodView::Ended { failure } => {
            let log = read_log(ctx, execution, pod_name, log_limit_of(&ctx.limits, execution)).await?;
            let status = match pod_state::envelope_from_log(&log) {
                Some(envelope) => {
                    let envelope = fit_envelope(envelope, status_budget(execution));
                    status::finished(&current, &envelope, stamp)
                }
                None => {
                    let log_excerpt = pod_state::log_excerpt(&log);
                    status::failed(&current, Failure::PodFailed { failure, log_excerpt }, stamp)
                }
            };
            finish(execution, status, Some(&pod), ctx).await
        }
    }
}

/// Writes the final status, then deletes the pod (its output is safe), records an event and
/// counts the execution.
pub(super) async fn finish(
    execution: &PythonExecution,
    status: PythonExecutionStatus,
    pod: Option<&Pod>,
    ctx: &Context,
) -> Result<Action> {
    let ending = Ending::of(&status);
    if matches!(write_status(execution, status, ctx).await?, Write::Stale) {
        return Ok(Action::requeue(STALE_RETRY));
    }
    clean_up(execution, ending, pod, ctx).await?;
    Ok(Action::await_change())
}

/// What `finish` does after the final status is written, done now if it stopped there (the pod's
/// deletion failed): a finished execution whose pod is still alive has its pod deleted and its
/// ending recorded. The cache says when to look; the API server, whether the pod is still there.
async fn complete_finish(execution: &PythonExecution, ctx: &Context) -> Result<()> {
    let Some(status) = execution.status.as_ref() else { return Ok(()) };
    let Some(pod_name) = status.pod_name.as_deref() else { return Ok(()) };
    let key = ObjectRef::new(pod_name).within(&namespace_of(execution)?);
    if !ctx.pod_cache.get(&key).is_some_and(|pod| is_alive_and_owned_by(&pod, execution)) {
        return Ok(());
    }
    // The cache may lag behind the deletion `finish` made itself.
    match pods(ctx, execution)?.get_opt(pod_name).await.map_err(Error::PodGetFailed)? {
        Some(pod) if is_alive_and_owned_by(&pod, execution) => {
            clean_up(execution, Ending::of(status), Some(&pod), ctx).await
        }
        _ => Ok(()),
    }
}

/// Deletes the finished execution's pod, records how it ended (an event when it did not succeed)
/// and counts it.
async fn clean_up(execution: &PythonExecution, ending: Ending, pod: Option<&Pod>, ctx: &Context) -> Result<()> {
    if let Some(pod) = pod {
        delete_pod(ctx, execution, &pod.name_any(), pod.uid()).await?;
    }
    // An execution that did not succeed gets a Warning event for `kubectl describe`; a success is
    // told by its status alone (an event per success would be an API write each, about an object
    // that is usually deleted at once).
    if ending.event_type() == EventType::Warning {
        publish(&ctx.recorder, execution, EventType::Warning, &ending.reason, ending.message.clone()).await;
    }
    let latency = pod.and_then(pod_state::pod_start_latency);
    ctx.metrics.record_finish(ending.phase.as_str(), &ending.reason, &ending.outcome, latency);
    tracing::info!(execution = %execution.name_any(), phase = ending.phase.as_str(), reason = %ending.reason, outcome = %ending.outcome, "execution finished");
    Ok(())
}

/// Deletes the pod `name` (if it still has `uid`, when given); gone already is fine.
pub(super) async fn delete_pod(
    ctx: &Context,
    execution: &PythonExecution,
    name: &str,
    uid: Option<String>,
) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid, resource_version: None }),
        ..DeleteParams::background()
    };
    match pods(ctx, execution)?.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(Error::PodDeletionFailed(e)),
    }
}

fn is_owned_by(pod: &Pod, execution: &PythonExecution) -> bool {
    pod.owner_references().iter().any(|o| Some(&o.uid) == execution.meta().uid.as_ref())
}

fn is_alive_and_owned_by(pod: &Pod, execution: &PythonExecution) -> bool {
    pod.meta().deletion_timestamp.is_none() && is_owned_by(pod, execution)
}

#[derive(Debug)]
pub(super) enum Write {
    /// Written (or already so): the execution as it is now.
    Done(Box<PythonExecution>),
    /// The execution changed since it was read: the status was computed from a stale copy.
    Stale,
}

/// Applies the status under the controller's field manager, unless it is unchanged; the
/// resourceVersion makes the write fail when the execution changed since it was read.
pub(super) async fn write_status(
    execution: &PythonExecution,
    status: PythonExecutionStatus,
    ctx: &Context,
) -> Result<Write> {
    if execution.status.as_ref() == Some(&status) {
        return Ok(Write::Done(Box::new(execution.clone())));
    }
    let patch = json!({
        "apiVersion": PythonExecution::api_version(&()),
        "kind": PythonExecution::kind(&()),
        "metadata": { "name": execution.name_any(), "resourceVersion": execution.resource_version() },
        "status": status,
    });
    let params = PatchParams::apply(status::FIELD_MANAGER).force();
    match executions(ctx, execution)?.patch_status(&execution.name_any(), &params, &Patch::Apply(&patch)).await {
        Ok(updated) => Ok(Write::Done(Box::new(updated))),
        Err(e) if api_code(&e) == Some(409) => Ok(Write::Stale),
        Err(e) => Err(Error::StatusPatchFailed(e)),
    }
}

/// At most `limit` bytes of the sandbox container's log; empty when the container never ran.
async fn read_log(ctx: &Context, execution: &PythonExecution, pod_name: &str, limit: u64) -> Result<Vec<u8>> {
    let params = LogParams {
        container: Some(CONTAINER_NAME.into()),
        limit_bytes: Some(i64::try_from(limit).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let stream = match pods(ctx, execution)?.log_stream(pod_name, &params).await {
        Ok(stream) => stream,
        Err(e) if matches!(api_code(&e), Some(400 | 404)) => return Ok(Vec::new()),
        Err(e) => return Err(Error::PodLogFailed(e)),
    };
    let mut log = Vec::new();
    stream.take(limit).read_to_end(&mut log).await.map_err(Error::PodLogRead)?;
    Ok(log)
}

pub(super) fn stamp_of(execution: &PythonExecution, now: Timestamp) -> Stamp {
    Stamp { now, generation: execution.meta().generation }
}

pub(super) fn namespace_of(execution: &PythonExecution) -> Result<String> {
    execution.namespace().ok_or(Error::MissingObjectKey("namespace"))
}

fn executions(ctx: &Context, execution: &PythonExecution) -> Result<Api<PythonExecution>> {
    Ok(Api::namespaced(ctx.client.clone(), &namespace_of(execution)?))
}

pub(super) fn pods(ctx: &Context, execution: &PythonExecution) -> Result<Api<Pod>> {
    Ok(Api::namespaced(ctx.client.clone(), &namespace_of(execution)?))
}

/// The HTTP status of an error the API server answered with.
pub(crate) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
