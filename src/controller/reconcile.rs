//! One reconcile of one PythonExecution: create its pod once, follow the pod, write the outcome
//! into the status, delete the pod, and delete the execution after its TTL.
//!
//! Idempotence: the pod's name is derived from the execution's, a pod is created only when a
//! fresh read of the execution shows neither a pod name nor a final status, and every status write
//! carries the resourceVersion it was computed from, so a reconcile working from a stale cache
//! gets a conflict instead of overwriting a newer status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::limits::{log_limit_of, resolve, status_budget};
use super::metrics::ControllerMetrics;
use super::pod::{build_pod, BuildError, CONTAINER_NAME};
use super::settings::PodSettings;
use super::status::{self, PodFailure, PodView, Stamp};
use super::{Error, Result};
use crate::crd::{Phase, PythonExecution, PythonExecutionStatus};
use crate::sandbox::{LimitSettings, Outcome};

/// A reconcile that saw a stale copy of the execution looks again after this long.
const STALE_RETRY: Duration = Duration::from_secs(1);
/// A failed reconcile is retried after this long: executions are short, so retry soon.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// A running pod is looked at again after this long even without an event, in case one was lost.
const RUNNING_RECHECK: Duration = Duration::from_secs(60);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub pod: PodSettings,
    pub limits: LimitSettings,
    pub pod_start_timeout: Duration,
    pub metrics: Arc<ControllerMetrics>,
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

async fn reconcile_execution(execution: &PythonExecution, ctx: &Context, now: Timestamp) -> Result<Action> {
    if execution.is_finished() {
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

/// Creates the sandbox pod, after checking against a fresh read that it never had one.
async fn start(cached: &PythonExecution, ctx: &Context, now: Timestamp) -> Result<Action> {
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
    let limits = match resolve(&ctx.limits, &execution) {
        Ok(limits) => limits,
        Err(err) => {
            let failure = PodFailure { outcome: Outcome::SandboxFailure, returncode: 1, message: err.to_string() };
            let status = status::failed(&current, status::REASON_LIMITS_REFUSED, &failure, stamp);
            return finish(&execution, status, None, ctx).await;
        }
    };
    let pod = match build_pod(&execution, &ctx.pod, &limits) {
        Ok(pod) => pod,
        Err(BuildError::MissingField(field)) => return Err(Error::MissingObjectKey(field)),
        Err(err @ BuildError::ScriptTooLarge { .. }) => {
            let failure = PodFailure { outcome: Outcome::SandboxFailure, returncode: 1, message: err.to_string() };
            let status = status::failed(&current, status::REASON_SCRIPT_TOO_LARGE, &failure, stamp);
            return finish(&execution, status, None, ctx).await;
        }
    };
    let pod_name = pod.name_any();
    match pods(ctx, &execution)?.create(&PostParams::default(), &pod).await {
        Ok(_) => {}
        // Created before a restart; `follow` checks that it is this execution's.
        Err(e) if api_code(&e) == Some(409) => {}
        Err(e) => return Err(Error::PodCreationFailed(e)),
    }
    let status = status::pending(&current, &pod_name, "The sandbox pod was created", stamp);
    if write_status(&execution, status, ctx).await? == Write::Stale {
        return Ok(Action::requeue(STALE_RETRY));
    }
    publish(ctx, &execution, EventType::Normal, status::REASON_POD_CREATED, format!("Created pod {pod_name}")).await;
    Ok(Action::requeue(ctx.pod_start_timeout))
}

/// Follows the pod named in the status until it ends, then records the outcome.
async fn follow(execution: &PythonExecution, pod_name: &str, ctx: &Context, now: Timestamp) -> Result<Action> {
    let current = execution.status.clone().unwrap_or_default();
    let stamp = stamp_of(execution, now);
    let Some(pod) = pods(ctx, execution)?.get_opt(pod_name).await.map_err(Error::PodGetFailed)? else {
        let failure = PodFailure {
            outcome: Outcome::SandboxFailure,
            returncode: 1,
            message: format!("The sandbox pod {pod_name} disappeared before its output was read"),
        };
        let status = status::failed(&current, status::REASON_POD_VANISHED, &failure, stamp);
        return finish(execution, status, None, ctx).await;
    };
    let owned = pod.owner_references().iter().any(|o| Some(&o.uid) == execution.meta().uid.as_ref());
    let (view, created) = if owned {
        (status::view_pod(&pod), pod.creation_timestamp().map(|t| t.0))
    } else {
        let waiting = Some(format!("an older pod named {pod_name} is still being removed"));
        (PodView::Starting { waiting }, execution.creation_timestamp().map(|t| t.0))
    };
    match view {
        PodView::Starting { waiting } => {
            let left = status::start_time_left(created, ctx.pod_start_timeout, now);
            let why = waiting.unwrap_or_else(|| "waiting to be scheduled".into());
            if left.is_zero() {
                let failure = PodFailure {
                    outcome: Outcome::SandboxFailure,
                    returncode: 1,
                    message: format!(
                        "The sandbox pod did not start within {} s: {why}",
                        ctx.pod_start_timeout.as_secs()
                    ),
                };
                let status = status::failed(&current, status::REASON_POD_START_TIMEOUT, &failure, stamp);
                return finish(execution, status, owned.then_some(&pod), ctx).await;
            }
            let status = status::pending(&current, pod_name, &format!("The sandbox pod is starting: {why}"), stamp);
            if write_status(execution, status, ctx).await? == Write::Stale {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Ok(Action::requeue(left))
        }
        PodView::CannotStart { message } => {
            let failure = PodFailure { outcome: Outcome::SandboxFailure, returncode: 1, message };
            let status = status::failed(&current, status::REASON_POD_CANNOT_START, &failure, stamp);
            finish(execution, status, Some(&pod), ctx).await
        }
        PodView::Running => {
            if write_status(execution, status::running(&current, stamp), ctx).await? == Write::Stale {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Ok(Action::requeue(RUNNING_RECHECK))
        }
        // The deletion's event brings us back, and the pod is then gone.
        PodView::Terminating => Ok(Action::await_change()),
        PodView::Ended { failure } => {
            let log = read_log(ctx, execution, pod_name, log_limit_of(&ctx.limits, execution)).await?;
            let status = match status::envelope_from_log(&log) {
                Some(envelope) => {
                    let envelope = status::fit_envelope(envelope, status_budget(execution));
                    status::finished(&current, &envelope, stamp)
                }
                None => {
                    let failure = PodFailure {
                        message: format!("{}; its log ends: {}", failure.message, status::log_excerpt(&log)),
                        ..failure
                    };
                    status::failed(&current, status::REASON_POD_FAILED, &failure, stamp)
                }
            };
            finish(execution, status, Some(&pod), ctx).await
        }
    }
}

/// Writes the final status, then deletes the pod (its output is safe), records an event and
/// counts the execution.
async fn finish(
    execution: &PythonExecution,
    status: PythonExecutionStatus,
    pod: Option<&Pod>,
    ctx: &Context,
) -> Result<Action> {
    let phase = status.phase.unwrap_or(Phase::Failed);
    let reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == status::CONDITION_FINISHED)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default();
    let outcome = status.outcome.clone().unwrap_or_default();
    if write_status(execution, status, ctx).await? == Write::Stale {
        return Ok(Action::requeue(STALE_RETRY));
    }
    if let Some(pod) = pod {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..DeleteParams::background()
        };
        match pods(ctx, execution)?.delete(&pod.name_any(), &params).await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(Error::PodDeletionFailed(e)),
        }
    }
    let type_ = if phase == Phase::Succeeded { EventType::Normal } else { EventType::Warning };
    publish(ctx, execution, type_, &reason.0, reason.1.clone()).await;
    ctx.metrics.record_finish(phase.as_str(), &reason.0, &outcome, pod.and_then(status::pod_start_latency));
    tracing::info!(execution = %execution.name_any(), phase = phase.as_str(), reason = %reason.0, outcome, "execution finished");
    Ok(Action::await_change())
}

#[derive(Debug, PartialEq, Eq)]
enum Write {
    Done,
    /// The execution changed since it was read: the status was computed from a stale copy.
    Stale,
}

/// Applies the status under the controller's field manager, unless it is unchanged; the
/// resourceVersion makes the write fail when the execution changed since it was read.
async fn write_status(execution: &PythonExecution, status: PythonExecutionStatus, ctx: &Context) -> Result<Write> {
    if execution.status.as_ref() == Some(&status) {
        return Ok(Write::Done);
    }
    let patch = json!({
        "apiVersion": PythonExecution::api_version(&()),
        "kind": PythonExecution::kind(&()),
        "metadata": { "name": execution.name_any(), "resourceVersion": execution.resource_version() },
        "status": status,
    });
    let params = PatchParams::apply(status::FIELD_MANAGER).force();
    match executions(ctx, execution)?.patch_status(&execution.name_any(), &params, &Patch::Apply(&patch)).await {
        Ok(_) => Ok(Write::Done),
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

/// Events are for people reading `kubectl describe`; failing to record one changes nothing.
async fn publish(ctx: &Context, execution: &PythonExecution, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    if let Err(err) = ctx.recorder.publish(&event, &execution.object_ref(&())).await {
        tracing::warn!(execution = %execution.name_any(), error = %err, "could not record an event");
    }
}

fn stamp_of(execution: &PythonExecution, now: Timestamp) -> Stamp {
    Stamp { now, generation: execution.meta().generation }
}

fn namespace_of(execution: &PythonExecution) -> Result<String> {
    execution.namespace().ok_or(Error::MissingObjectKey("namespace"))
}

fn executions(ctx: &Context, execution: &PythonExecution) -> Result<Api<PythonExecution>> {
    Ok(Api::namespaced(ctx.client.clone(), &namespace_of(execution)?))
}

fn pods(ctx: &Context, execution: &PythonExecution) -> Result<Api<Pod>> {
    Ok(Api::namespaced(ctx.client.clone(), &namespace_of(execution)?))
}

/// The HTTP status of an error the API server answered with.
pub(crate) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
