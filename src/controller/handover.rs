//! Handing the job to a sandbox pod: marking the delivery started, writing the job through the
//! attach session, and finishing from the envelope read back; or, when the stream does not bring
//! it, leaving the pod's end and log to `reconcile::follow`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::Value;

use super::attach::{DeliveryError, Session};
use super::envelope_fit::fit_envelope;
use super::failure::Failure;
use super::pod::job_document;
use super::pod_limits::{log_limit_of, resolve, status_budget};
use super::pod_state;
use super::reconcile::{delete_pod, finish, namespace_of, pods, stamp_of, write_status, Context, Write, STALE_RETRY};
use super::status;
use super::{Error, Result};
use crate::crd::PythonExecution;
use crate::sandbox::files::{InputError, InputFileSettings, InputFiles};
use crate::sandbox::{Job, LimitSettings, Limits};

/// How long the envelope may take beyond the script's timeout: the supervisor's own kill and
/// report, and the stream.
const ENVELOPE_MARGIN: Duration = Duration::from_secs(30);

/// The execution's resolved limits and its job document, or why it can have neither. Its input
/// files are read with the HTTP API's rules: an object made with kubectl is held to them too.
pub(super) fn job_of(execution: &PythonExecution, settings: &LimitSettings) -> Result<(Limits, Vec<u8>), Failure> {
    let limits = resolve(settings, execution).map_err(Failure::LimitsRefused)?;
    let files = input_files(execution, &limits).map_err(Failure::FilesRefused)?;
    let job = Job { script: execution.spec.script.clone(), limits: limits.clone(), files };
    let document = job_document(&job).map_err(Failure::ScriptTooLarge)?;
    Ok((limits, document))
}

/// The spec's input files, checked against the run's limits; the object's size bounds their
/// number and bytes.
fn input_files(execution: &PythonExecution, limits: &Limits) -> Result<InputFiles, InputError> {
    let Some(files) = &execution.spec.files else { return Ok(InputFiles::default()) };
    let files = InputFiles::from_json(Value::Object(files.clone()))?;
    let caps = InputFileSettings { max_input_files: usize::MAX, max_input_files_bytes: u64::MAX };
    files.check(&caps, limits)?;
    Ok(files)
}

/// The cold path: the execution's own pod runs and waits for its job; attach and hand it over.
pub(super) async fn attach_and_hand_over(
    execution: &PythonExecution,
    pod: &Pod,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action> {
    let (limits, job) = match job_of(execution, &ctx.limits) {
        Ok(prepared) => prepared,
        Err(failure) => {
            let current = execution.status.clone().unwrap_or_default();
            return finish(execution, status::failed(&current, failure, stamp_of(execution, now)), Some(pod), ctx)
                .await;
        }
    };
    let created = pod.creation_timestamp().map(|t| t.0);
    let left = pod_state::start_time_left(created, ctx.pod_start_timeout, now).max(Duration::from_secs(5));
    let namespace = namespace_of(execution)?;
    match ctx.attacher.open(&namespace, &pod.name_any(), left).await {
        Ok(session) => hand_over(execution, session, job, &limits, false, ctx, now).await,
        Err(err) => {
            // The pod may have ended meanwhile: its next event, or this retry, looks again.
            tracing::warn!(error = %err, "could not attach to the sandbox pod");
            ctx.metrics.record_failure("attach_failed");
            Ok(Action::requeue(STALE_RETRY))
        }
    }
}

/// Hands the job to the pod behind `session`: marks the delivery started, writes the job, reads
/// the envelope and finishes. When the envelope does not come back on the stream, the pod's log
/// has it once the pod ends (`follow`).
pub(super) async fn hand_over(
    execution: &PythonExecution,
    session: Box<dyn Session>,
    job: Vec<u8>,
    limits: &Limits,
    warm: bool,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action> {
    let pod_name = session.pod().to_string();
    let current = execution.status.clone().unwrap_or_default();
    let status = status::delivering(&current, &pod_name, warm, stamp_of(execution, now));
    let marking = std::time::Instant::now();
    let execution = match write_status(execution, status, ctx).await? {
        Write::Done(updated) => updated,
        Write::Stale => {
            // Nothing was written to the pod; closing the session ends it without a job.
            drop(session);
            if warm {
                delete_pod(ctx, execution, &pod_name, None).await?;
            }
            return Ok(Action::requeue(STALE_RETRY));
        }
    };
    if !ctx.hand_over_delay.is_zero() {
        tracing::warn!(pod = %pod_name, delay_ms = ctx.hand_over_delay.as_millis() as u64, "test fault injection: delaying the job");
        tokio::time::sleep(ctx.hand_over_delay).await;
    }
    let limit = log_limit_of(&ctx.limits, &execution);
    let marked = marking.elapsed();
    let delivering = std::time::Instant::now();
    let delivered = session.deliver(job, limit, limits.timeout() + ENVELOPE_MARGIN).await;
    tracing::info!(
        execution = %execution.name_any(),
        pod = %pod_name,
        warm,
        mark_started_ms = marked.as_millis() as u64,
        job_round_trip_ms = delivering.elapsed().as_millis() as u64,
        "job handed over"
    );
    match delivered {
        Ok(output) => match pod_state::envelope_from_log(&output) {
            Some(envelope) => {
                let current = execution.status.clone().unwrap_or_default();
                let envelope = fit_envelope(envelope, status_budget(&execution));
                let status = status::finished(&current, &envelope, stamp_of(&execution, Timestamp::now()));
                let pod = ctx.pod_cache.get(&ObjectRef::new(&pod_name).within(&namespace_of(&execution)?));
                let pod = match pod {
                    Some(pod) => Some((*pod).clone()),
                    None => pods(ctx, &execution)?.get_opt(&pod_name).await.map_err(Error::PodGetFailed)?,
                };
                finish(&execution, status, pod.as_ref(), ctx).await
            }
            None => {
                tracing::warn!(pod = %pod_name, "the attach stream ended without an envelope; reading the pod's log");
                Ok(Action::requeue(STALE_RETRY))
            }
        },
        Err(err @ DeliveryError::Write { .. }) => {
            // The job may have reached the pod: the pod's end says what happened, never a retry.
            tracing::warn!(error = %err, "writing the job failed");
            ctx.metrics.record_failure("job_write_failed");
            Ok(Action::requeue(STALE_RETRY))
        }
        Err(err) => {
            tracing::warn!(error = %err, "reading the envelope failed; reading the pod's log");
            Ok(Action::requeue(STALE_RETRY))
        }
    }
}
