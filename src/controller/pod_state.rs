//! Reading a sandbox pod: what its state means for its execution, the envelope in its log, and
//! how long it may still take to start.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::jiff::Timestamp;

pub use super::failure::PodFailure;
use crate::sandbox::{Envelope, Outcome, NO_JOB_EXIT_CODE, NO_JOB_MESSAGE};

/// Container waiting reasons that no amount of waiting will fix.
const PERMANENT_WAITING_REASONS: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];
/// Longest piece of a pod log quoted in a status message.
const LOG_EXCERPT_CHARS: usize = 300;

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
    /// The sandbox exited because its stdin ended before any job arrived: proof that no script
    /// ran there, so the execution may go to another pod.
    NoJob,
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
        if terminated.exit_code == i32::from(NO_JOB_EXIT_CODE)
            && terminated.message.as_deref().map(str::trim) == Some(NO_JOB_MESSAGE)
        {
            return PodView::NoJob;
        }
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
            PodFailure::sandbox(format!("The sandbox pod failed: {}", excerpt(&detail)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::envelope;
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition,
        PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
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
    fn only_the_no_job_exit_code_with_its_message_proves_no_script_ran() {
        let mut state = terminated(i32::from(NO_JOB_EXIT_CODE), "Error");
        if let Some(t) = state.terminated.as_mut() {
            t.message = Some(NO_JOB_MESSAGE.into());
        }
        assert_eq!(view_pod(&pod_with("Failed", state.clone())), PodView::NoJob);
        let mut other_message = state.clone();
        if let Some(t) = other_message.terminated.as_mut() {
            t.message = Some("sandbox_failure returncode=3".into());
        }
        assert!(matches!(view_pod(&pod_with("Failed", other_message)), PodView::Ended { .. }));
        let mut other_code = state;
        if let Some(t) = other_code.terminated.as_mut() {
            t.exit_code = 1;
        }
        assert!(matches!(view_pod(&pod_with("Failed", other_code)), PodView::Ended { .. }));
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
        pod.metadata.deletion_timestamp = Some(Time(now()));
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
    fn a_starting_pod_has_the_rest_of_the_start_timeout() {
        let created = now();
        let now = created + SignedDuration::from_secs(30);
        assert_eq!(start_time_left(Some(created), Duration::from_secs(120), now), Duration::from_secs(90));
        assert_eq!(start_time_left(Some(created), Duration::from_secs(10), now), Duration::ZERO);
    }

    #[test]
    fn signals_follow_the_subprocess_convention() {
        assert_eq!(python_returncode(137), -9);
        assert_eq!(python_returncode(1), 1);
    }
}
