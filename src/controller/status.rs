//! Pure decisions about status: what a pod's state means, the envelope in a pod's log, and the
//! status an execution gets for each. Condition types and reasons are named here, once.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{Phase, PythonExecution, PythonExecutionStatus};
use crate::sandbox::{Envelope, Outcome};

/// The one field manager of every status the controller writes.
pub const FIELD_MANAGER: &str = "pyexec-controller";

/// True while the sandbox pod runs the script.
pub const CONDITION_RUNNING: &str = "Running";
/// True once the execution has its final status.
pub const CONDITION_FINISHED: &str = "Finished";

pub const REASON_POD_CREATED: &str = "PodCreated";
pub const REASON_POD_RUNNING: &str = "PodRunning";
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

/// Container waiting reasons that no amount of waiting will fix.
const PERMANENT_WAITING_REASONS: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];
/// Longest piece of a pod log quoted in a status message.
const LOG_EXCERPT_CHARS: usize = 300;

/// When and for which generation a status is written.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub now: Timestamp,
    pub generation: Option<i64>,
}

/// What a sandbox pod's state means for its execution.
#[derive(Clone, Debug, PartialEq)]
pub enum PodView {
    /// Not running yet (scheduling, pulling, creating); `waiting` says why when Kubernetes does.
    Starting {
        waiting: Option<String>,
    },
    /// It will never start.
    CannotStart {
        message: String,
    },
    Running,
    /// The container ended. The log holds the envelope if the supervisor wrote one; `failure`
    /// is what to report when it did not.
    Ended {
        failure: PodFailure,
    },
    /// Someone else is deleting it before it ended.
    Terminating,
}

/// What to report for a pod that ended without an envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFailure {
    pub outcome: Outcome,
    pub returncode: i32,
    pub message: String,
}

/// Reads a sandbox pod's state.
pub fn view_pod(pod: &Pod) -> PodView {
    let status = pod.status.clone().unwrap_or_default();
    let state: ContainerState = status
        .container_statuses
        .as_ref()
        .and_then(|statuses| statuses.first())
        .and_then(|s| s.state.clone())
        .unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let pod_reason = status.reason.clone().unwrap_or_default();
    if let Some(terminated) = &state.terminated {
        let returncode = python_returncode(terminated.exit_code);
        let failure = if terminated.reason.as_deref() == Some("OOMKilled") {
            PodFailure {
                outcome: Outcome::MemoryLimit,
                returncode,
                message: "The sandbox pod ran out of memory".into(),
            }
        } else {
            PodFailure {
                outcome: Outcome::SandboxFailure,
                returncode,
                message: format!(
                    "The sandbox exited with code {} without reporting a result{}",
                    terminated.exit_code,
                    terminated.message.as_deref().map(|m| format!(": {}", excerpt(m))).unwrap_or_default()
                ),
            }
        };
        return PodView::Ended { failure };
    }
    if phase == "Failed" || phase == "Succeeded" {
        let failure = if pod_reason == "DeadlineExceeded" {
            PodFailure {
                outcome: Outcome::Timeout,
                returncode: -9,
                message: "The sandbox pod exceeded its deadline (activeDeadlineSeconds)".into(),
            }
        } else {
            let detail = status.message.clone().unwrap_or_else(|| pod_reason.clone());
            PodFailure {
                outcome: Outcome::SandboxFailure,
                returncode: 1,
                message: format!("The sandbox pod failed: {}", excerpt(&detail)),
            }
        };
        return PodView::Ended { failure };
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PodView::Terminating;
    }
    if state.running.is_some() {
        return PodView::Running;
    }
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let detail = match &waiting.message {
            Some(message) => format!("{reason}: {}", excerpt(message)),
            None => reason.clone(),
        };
        if PERMANENT_WAITING_REASONS.contains(&reason.as_str()) {
            return PodView::CannotStart { message: format!("The sandbox pod cannot start: {detail}") };
        }
        return PodView::Starting { waiting: Some(detail) };
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()));
    PodView::Starting { waiting: unschedulable }
}

/// Python's subprocess convention: a container killed by signal N exits with 128 + N.
fn python_returncode(exit_code: i32) -> i32 {
    if exit_code > 128 && exit_code < 160 {
        128 - exit_code
    } else {
        exit_code
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= LOG_EXCERPT_CHARS {
        return text.to_string();
    }
    let tail: String = text.chars().rev().take(LOG_EXCERPT_CHARS).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

/// The envelope `pyexec sandbox` printed: the last log line that reads as one (the supervisor's
/// own log lines share the log).
pub fn envelope_from_log(log: &[u8]) -> Option<Envelope> {
    log.split(|b| *b == b'\n').rev().find_map(|line| serde_json::from_slice::<Envelope>(line).ok())
}

/// The end of a pod log, for a status message when the log holds no envelope.
pub fn log_excerpt(log: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(log))
}

/// How much time a starting pod has left before its execution fails.
pub fn start_time_left(created: Option<Timestamp>, timeout: Duration, now: Timestamp) -> Duration {
    let Some(created) = created else { return timeout };
    let elapsed = Duration::try_from(now.duration_since(created)).unwrap_or(Duration::ZERO);
    timeout.saturating_sub(elapsed)
}

/// How long after the pod's creation its container started, for the latency metric.
pub fn pod_start_latency(pod: &Pod) -> Option<Duration> {
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    let state = pod.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?;
    let started = state
        .running
        .as_ref()
        .and_then(|r| r.started_at.clone())
        .or_else(|| state.terminated.as_ref().and_then(|t| t.started_at.clone()))?;
    Duration::try_from(started.0.duration_since(created)).ok()
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
    let (reason, message) = if succeeded {
        (REASON_SUCCEEDED, "main() returned a dict".to_string())
    } else {
        (REASON_SCRIPT_FAILED, envelope.error.clone().unwrap_or_else(|| envelope.outcome.as_str().to_string()))
    };
    finish_conditions(&mut status, reason, &message, stamp);
    status
}

/// The final status of an execution whose sandbox did not report (see the REASON_ constants).
pub fn failed(
    current: &PythonExecutionStatus,
    reason: &str,
    failure: &PodFailure,
    stamp: Stamp,
) -> PythonExecutionStatus {
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

/// The envelope cut to fit `budget` bytes of status: the result keeps at most half (past it, the
/// run counts as result_too_large), stdout and stderr share the rest, cut with their flags set.
pub fn fit_envelope(mut envelope: Envelope, budget: u64) -> Envelope {
    let budget = usize::try_from(budget).unwrap_or(usize::MAX);
    let result_len = envelope.result.as_ref().map(|r| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(0));
    if result_len.is_some_and(|len| len > budget / 2) {
        envelope.result = None;
        envelope.outcome = Outcome::ResultTooLarge;
        envelope.error =
            Some(format!("main()'s result is larger than the {} bytes a PythonExecution status holds", budget / 2));
    }
    let room = (budget - result_len.filter(|len| *len <= budget / 2).unwrap_or(0)) / 2;
    if let Some(cut) = cut_to_json_len(&envelope.stdout, room) {
        envelope.stdout = cut;
        envelope.stdout_truncated = true;
    }
    if let Some(cut) = cut_to_json_len(&envelope.stderr, room) {
        envelope.stderr = cut;
        envelope.stderr_truncated = true;
    }
    envelope
}

/// The longest prefix of `text` whose JSON form takes at most `max` bytes; None if it all fits.
fn cut_to_json_len(text: &str, max: usize) -> Option<String> {
    let mut len = 0;
    for (index, c) in text.char_indices() {
        len += json_len(c);
        if len > max {
            return Some(text[..index].to_string());
        }
    }
    None
}

fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition,
        PodStatus,
    };
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp { now: Timestamp::from_second(1_700_000_000).expect("valid"), generation: Some(1) }
    }

    fn pod_with(phase: &str, state: ContainerState) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "sandbox".into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated(exit_code: i32, reason: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated { exit_code, reason: Some(reason.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn envelope(outcome: Outcome) -> Envelope {
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
        }
    }

    #[test]
    fn a_pod_without_status_is_starting() {
        assert_eq!(view_pod(&Pod::default()), PodView::Starting { waiting: None });
    }

    #[test]
    fn a_pulling_pod_is_starting_and_says_why() {
        let state = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("back-off pulling".into()),
            }),
            ..Default::default()
        };
        let view = view_pod(&pod_with("Pending", state));
        assert_eq!(view, PodView::Starting { waiting: Some("ImagePullBackOff: back-off pulling".into()) });
    }

    #[test]
    fn an_image_the_policy_never_pulls_cannot_start() {
        let state = ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some("ErrImageNeverPull".into()), message: None }),
            ..Default::default()
        };
        assert!(matches!(view_pod(&pod_with("Pending", state)), PodView::CannotStart { .. }));
    }

    #[test]
    fn an_unschedulable_pod_is_starting_with_the_scheduler_message() {
        let status = PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let pod = Pod { status: Some(status), ..Default::default() };
        assert_eq!(
            view_pod(&pod),
            PodView::Starting { waiting: Some("Unschedulable: 0/1 nodes are available".into()) }
        );
    }

    #[test]
    fn a_running_container_is_running() {
        let state = ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() };
        assert_eq!(view_pod(&pod_with("Running", state)), PodView::Running);
    }

    #[test]
    fn an_oom_killed_container_ended_at_its_memory_limit() {
        let PodView::Ended { failure } = view_pod(&pod_with("Failed", terminated(137, "OOMKilled"))) else {
            panic!("ended")
        };
        assert_eq!(failure.outcome, Outcome::MemoryLimit);
        assert_eq!(failure.returncode, -9);
    }

    #[test]
    fn a_pod_past_its_deadline_ended_in_a_timeout() {
        let status =
            PodStatus { phase: Some("Failed".into()), reason: Some("DeadlineExceeded".into()), ..Default::default() };
        let pod = Pod { status: Some(status), ..Default::default() };
        let PodView::Ended { failure } = view_pod(&pod) else { panic!("ended") };
        assert_eq!(failure.outcome, Outcome::Timeout);
    }

    #[test]
    fn a_pod_being_deleted_by_someone_else_is_terminating() {
        let mut pod = pod_with("Running", ContainerState::default());
        pod.metadata.deletion_timestamp = Some(Time(stamp().now));
        assert_eq!(view_pod(&pod), PodView::Terminating);
    }

    #[test]
    fn the_envelope_is_the_last_log_line_that_reads_as_one() {
        let line = serde_json::to_string(&envelope(Outcome::Success)).expect("json");
        let log = format!("2025 INFO starting\n{line}\nWARN could not write the termination message\n");
        assert_eq!(envelope_from_log(log.as_bytes()), Some(envelope(Outcome::Success)));
        assert_eq!(envelope_from_log(b"pyexec: nsjail not found\n"), None);
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
        let failure = PodFailure { outcome: Outcome::SandboxFailure, returncode: 1, message: "The pod is gone".into() };
        let current = PythonExecutionStatus { pod_name: Some("x-sandbox".into()), ..Default::default() };
        let status = failed(&current, REASON_POD_VANISHED, &failure, stamp());
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.pod_name.as_deref(), Some("x-sandbox"), "the pod name stays");
        assert_eq!(status.error.as_deref(), Some("The pod is gone"));
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
    fn an_oversized_output_is_cut_with_its_flag_set() {
        let mut e = envelope(Outcome::Success);
        e.stdout = "a".repeat(1000);
        e.stderr = "\n".repeat(1000);
        let fitted = fit_envelope(e, 1000);
        assert_eq!(fitted.stdout.len(), 500);
        assert!(fitted.stdout_truncated);
        assert_eq!(fitted.stderr.len(), 250, "escaped newlines take two bytes each");
        assert!(fitted.stderr_truncated);
    }

    #[test]
    fn an_oversized_result_is_dropped_as_result_too_large() {
        let mut e = envelope(Outcome::Success);
        e.result = Some(serde_json::from_value(json!({"big": "x".repeat(800)})).expect("map"));
        let fitted = fit_envelope(e, 1000);
        assert_eq!(fitted.outcome, Outcome::ResultTooLarge);
        assert_eq!(fitted.result, None);
    }

    #[test]
    fn output_within_the_budget_is_untouched() {
        let e = envelope(Outcome::Success);
        assert_eq!(fit_envelope(e.clone(), 1_000_000), e);
    }

    #[test]
    fn a_starting_pod_has_the_rest_of_the_start_timeout() {
        let created = stamp().now;
        let now = created + SignedDuration::from_secs(30);
        assert_eq!(start_time_left(Some(created), Duration::from_secs(120), now), Duration::from_secs(90));
        assert_eq!(start_time_left(Some(created), Duration::from_secs(10), now), Duration::ZERO);
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

    #[test]
    fn signals_follow_the_subprocess_convention() {
        assert_eq!(python_returncode(137), -9);
        assert_eq!(python_returncode(1), 1);
    }
}
