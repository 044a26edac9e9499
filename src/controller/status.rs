//! Status transitions, as pure functions: the status an execution moves to (pending, running,
//! finished, failed), its conditions, and when a finished one is due for deletion. Condition types
//! and reasons are named here, once.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::failure::Failure;
use crate::crd::{Delivery, Phase, PythonExecution, PythonExecutionStatus};
use crate::sandbox::{Envelope, Outcome};

/// The one field manager of every status the controller writes.
pub const FIELD_MANAGER: &str = "pyexec-controller";

/// True while the sandbox pod runs the script.
pub const CONDITION_RUNNING: &str = "Running";
/// True once the execution has its final status.
pub const CONDITION_FINISHED: &str = "Finished";

pub const REASON_POD_CREATED: &str = "PodCreated";
pub const REASON_POD_RUNNING: &str = "PodRunning";
/// A ready pod of the warm pool was claimed and is being given the job.
pub const REASON_WARM_POD_CLAIMED: &str = "WarmPodClaimed";
/// The pod ended before the job reached it; another one takes the execution.
pub const REASON_POD_REPLACED: &str = "PodReplaced";
/// main() returned a dict.
pub const REASON_SUCCEEDED: &str = "Succeeded";
/// The script ran and failed (exception, timeout, no main, ...): `outcome` says which.
pub const REASON_SCRIPT_FAILED: &str = "ScriptFailed";
/// The pod disappeared before its output was read.
pub const REASON_POD_VANISHED: &str = "PodVanished";
/// The pod did not start within the pod start timeout (unschedulable, image pull failing).
pub const REASON_POD_START_TIMEOUT: &str = "PodStartTimeout";
/// The pod can never start (an invalid image name, an image the pull policy forbids pulling).
pub const REASON_POD_CANNOT_START: &str = "PodCannotStart";
/// The pod ended without an envelope (killed, evicted, out of memory, the supervisor failed).
pub const REASON_POD_FAILED: &str = "PodFailed";
/// No pod can carry the script.
pub const REASON_SCRIPT_TOO_LARGE: &str = "ScriptTooLarge";
/// A requested limit is above the controller's maximum (refused, as the HTTP API refuses it).
pub const REASON_LIMITS_REFUSED: &str = "LimitsRefused";
/// The spec's input files are ones the HTTP API would refuse (a bad name or content, or more
/// than the run's limits let its /tmp hold).
pub const REASON_FILES_REFUSED: &str = "FilesRefused";

/// When and for which generation a status is written.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub now: Timestamp,
    pub generation: Option<i64>,
}

/// Time left before a finished execution is deleted: None when it has no TTL (or is not
/// finished), zero when it is due.
pub fn ttl_left(execution: &PythonExecution, now: Timestamp) -> Option<Duration> {
    let ttl = execution.spec.ttl_seconds_after_finished?;
    let status = execution.status.as_ref()?;
    if !status.phase?.is_finished() {
        return None;
    }
    let completed = status.completion_time.as_ref().map(|t| t.0).unwrap_or(now);
    let due = completed.checked_add(SignedDuration::from_secs(ttl)).unwrap_or(completed);
    Some(Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// The status once the pod exists and has not started running.
pub fn pending(current: &PythonExecutionStatus, pod_name: &str, message: &str, stamp: Stamp) -> PythonExecutionStatus {
    let mut status = current.clone();
    status.phase = Some(Phase::Pending);
    status.pod_name = Some(pod_name.to_string());
    status.delivery = status.delivery.or(Some(Delivery::Awaiting));
    status.start_time = status.start_time.or(Some(Time(stamp.now)));
    status.observed_generation = stamp.generation;
    set_condition(&mut status.conditions, CONDITION_RUNNING, false, REASON_POD_CREATED, message, stamp);
    status
}

/// The status while the pod runs the script.
pub fn running(current: &PythonExecutionStatus, stamp: Stamp) -> PythonExecutionStatus {
    let mut status = current.clone();
    status.phase = Some(Phase::Running);
    status.start_time = status.start_time.or(Some(Time(stamp.now)));
    status.observed_generation = stamp.generation;
    set_condition(
        &mut status.conditions,
        CONDITION_RUNNING,
        true,
        REASON_POD_RUNNING,
        "The sandbox pod runs the script",
        stamp,
    );
    status
}

/// The status just before the job is written to `pod_name`: from here on it is never written
/// to another pod (unless that pod proves it never received it).
pub fn delivering(current: &PythonExecutionStatus, pod_name: &str, warm: bool, stamp: Stamp) -> PythonExecutionStatus {
    let mut status = running(current, stamp);
    status.pod_name = Some(pod_name.to_string());
    status.delivery = Some(Delivery::Started);
    if warm {
        let message = format!("The warm pod {pod_name} runs the script");
        set_condition(&mut status.conditions, CONDITION_RUNNING, true, REASON_WARM_POD_CLAIMED, &message, stamp);
    }
    status
}

/// The status after the pod ended before the job reached it: no pod, the execution goes to
/// another one (`start` again).
pub fn pod_replaced(current: &PythonExecutionStatus, stamp: Stamp) -> PythonExecutionStatus {
    let mut status = current.clone();
    let old = status.pod_name.take().unwrap_or_default();
    status.phase = Some(Phase::Pending);
    status.delivery = None;
    status.pods_replaced = Some(status.pods_replaced.unwrap_or(0) + 1);
    status.observed_generation = stamp.generation;
    let message = format!("The pod {old} ended before the job reached it; another pod takes the execution");
    set_condition(&mut status.conditions, CONDITION_RUNNING, false, REASON_POD_REPLACED, &message, stamp);
    status
}

/// The final status from the sandbox's envelope: Succeeded when main() returned a dict.
pub fn finished(current: &PythonExecutionStatus, envelope: &Envelope, stamp: Stamp) -> PythonExecutionStatus {
    let succeeded = envelope.outcome == Outcome::Success;
    let mut status = terminal(current, if succeeded { Phase::Succeeded } else { Phase::Failed }, stamp);
    status.result = envelope.result.as_ref().and_then(|result| result.to_map());
    status.stdout = Some(envelope.stdout.clone());
    status.stderr = Some(envelope.stderr.clone());
    status.returncode = Some(envelope.returncode);
    status.error = envelope.error.clone();
    status.outcome = Some(envelope.outcome.as_str().to_string());
    status.stdout_truncated = Some(envelope.stdout_truncated);
    status.stderr_truncated = Some(envelope.stderr_truncated);
    status.duration_ms = i64::try_from(envelope.duration_ms).ok();
    // Written only when there are some: a status without files reads as before.
    status.files = (!envelope.files.is_empty()).then(|| envelope.files.clone());
    status.files_truncated = envelope.files_truncated.then_some(true);
    status.files_omitted = (!envelope.files_omitted.is_empty()).then(|| envelope.files_omitted.clone());
    let (reason, message) = if succeeded {
        (REASON_SUCCEEDED, "main() returned a dict".to_string())
    } else {
        (REASON_SCRIPT_FAILED, envelope.error.clone().unwrap_or_else(|| envelope.outcome.as_str().to_string()))
    };
    finish_conditions(&mut status, reason, &message, stamp);
    status
}

/// The final status of an execution whose sandbox did not report (see the REASON_ constants).
pub fn failed(current: &PythonExecutionStatus, failure: Failure, stamp: Stamp) -> PythonExecutionStatus {
    let reason = failure.reason();
    let failure = failure.report();
    let mut status = terminal(current, Phase::Failed, stamp);
    status.result = None;
    status.stdout = Some(String::new());
    status.stderr = Some(String::new());
    status.returncode = Some(failure.returncode);
    status.error = Some(failure.message.clone());
    status.outcome = Some(failure.outcome.as_str().to_string());
    status.stdout_truncated = Some(false);
    status.stderr_truncated = Some(false);
    finish_conditions(&mut status, reason, &failure.message, stamp);
    status
}

fn terminal(current: &PythonExecutionStatus, phase: Phase, stamp: Stamp) -> PythonExecutionStatus {
    let mut status = current.clone();
    status.phase = Some(phase);
    status.completion_time = Some(Time(stamp.now));
    status.observed_generation = stamp.generation;
    status
}

fn finish_conditions(status: &mut PythonExecutionStatus, reason: &str, message: &str, stamp: Stamp) {
    set_condition(&mut status.conditions, CONDITION_RUNNING, false, reason, message, stamp);
    set_condition(&mut status.conditions, CONDITION_FINISHED, true, reason, message, stamp);
}

/// Sets a condition; its lastTransitionTime moves only when its status changes.
fn set_condition(conditions: &mut Vec<Condition>, type_: &str, value: bool, reason: &str, message: &str, stamp: Stamp) {
    let value = if value { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(stamp.now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: transition,
        observed_generation: stamp.generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::envelope;
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp { now: Timestamp::from_second(1_700_000_000).expect("valid"), generation: Some(1) }
    }

    #[test]
    fn a_successful_envelope_gives_succeeded_with_the_result() {
        let mut e = envelope(Outcome::Success);
        e.result = Some(serde_json::from_value(json!({"sum": 6})).expect("map"));
        let status = finished(&PythonExecutionStatus::default(), &e, stamp());
        assert_eq!(status.phase, Some(Phase::Succeeded));
        assert_eq!(status.result.clone().map(serde_json::Value::Object), Some(json!({"sum": 6})));
        assert_eq!(status.stdout.as_deref(), Some("out\n"));
        assert_eq!(status.outcome.as_deref(), Some("success"));
        assert_eq!(status.completion_time, Some(Time(stamp().now)));
        assert_eq!(status.envelope(), Some(e), "the status maps back to the same envelope");
    }

    #[test]
    fn a_failed_script_gives_failed_with_its_error() {
        let mut e = envelope(Outcome::Exception);
        e.returncode = 1;
        e.error = Some("ZeroDivisionError: division by zero".into());
        let status = finished(&PythonExecutionStatus::default(), &e, stamp());
        assert_eq!(status.phase, Some(Phase::Failed));
        let finished = status.conditions.iter().find(|c| c.type_ == CONDITION_FINISHED).expect("condition");
        assert_eq!(finished.reason, REASON_SCRIPT_FAILED);
        assert_eq!(finished.message, "ZeroDivisionError: division by zero");
    }

    #[test]
    fn a_vanished_pod_gives_failed_with_the_reason() {
        let failure = Failure::PodVanished { pod_name: "x-sandbox".into() };
        let current = PythonExecutionStatus { pod_name: Some("x-sandbox".into()), ..Default::default() };
        let status = failed(&current, failure, stamp());
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.pod_name.as_deref(), Some("x-sandbox"), "the pod name stays");
        assert_eq!(status.error.as_deref(), Some("The sandbox pod x-sandbox disappeared before its output was read"));
        assert_eq!(status.outcome.as_deref(), Some("sandbox_failure"));
        assert_eq!(status.returncode, Some(1));
        assert_eq!(status.conditions.len(), 2);
        assert!(status.conditions.iter().all(|c| c.reason == REASON_POD_VANISHED));
    }

    #[test]
    fn rewriting_the_same_state_keeps_the_transition_time() {
        let first = running(&pending(&PythonExecutionStatus::default(), "p", "created", stamp()), stamp());
        let later = Stamp { now: stamp().now + SignedDuration::from_secs(30), ..stamp() };
        assert_eq!(running(&first, later), first, "an unchanged status is not rewritten");
    }

    #[test]
    fn the_job_is_marked_started_before_it_is_written() {
        let current = pending(&PythonExecutionStatus::default(), "p", "created", stamp());
        assert_eq!(current.delivery, Some(Delivery::Awaiting));
        let status = delivering(&current, "p", false, stamp());
        assert_eq!((status.phase, status.delivery), (Some(Phase::Running), Some(Delivery::Started)));
        let warm = delivering(&PythonExecutionStatus::default(), "pyexec-warm-x", true, stamp());
        assert_eq!(warm.pod_name.as_deref(), Some("pyexec-warm-x"));
        assert!(warm.conditions.iter().any(|c| c.reason == REASON_WARM_POD_CLAIMED && c.status == "True"));
    }

    #[test]
    fn a_pod_that_never_got_the_job_is_replaced_and_counted() {
        let current = delivering(&PythonExecutionStatus::default(), "p", true, stamp());
        let status = pod_replaced(&current, stamp());
        assert_eq!((status.pod_name.as_deref(), status.delivery), (None, None));
        assert_eq!((status.phase, status.pods_replaced), (Some(Phase::Pending), Some(1)));
        assert_eq!(pod_replaced(&status, stamp()).pods_replaced, Some(2));
    }

    #[test]
    fn the_ttl_counts_from_completion() {
        let mut execution = crate::controller::testing::execution("t");
        execution.spec.ttl_seconds_after_finished = Some(60);
        assert_eq!(ttl_left(&execution, stamp().now), None, "not finished");
        execution.status = Some(PythonExecutionStatus {
            phase: Some(Phase::Succeeded),
            completion_time: Some(Time(stamp().now)),
            ..Default::default()
        });
        let later = stamp().now + SignedDuration::from_secs(45);
        assert_eq!(ttl_left(&execution, later), Some(Duration::from_secs(15)));
        let much_later = stamp().now + SignedDuration::from_secs(600);
        assert_eq!(ttl_left(&execution, much_later), Some(Duration::ZERO));
    }
}
