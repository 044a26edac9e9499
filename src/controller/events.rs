//! Events, for people reading `kubectl describe`: the sandbox pod's creation, and how each
//! execution ended (read back from its final status, so a retried reconcile tells the same story).

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::status::CONDITION_FINISHED;
use crate::crd::{Phase, PythonExecution, PythonExecutionStatus};

/// How an execution ended, as its final status says: for the event, the metric and the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    pub phase: Phase,
    pub reason: String,
    pub message: String,
    pub outcome: String,
}

impl Ending {
    pub fn of(status: &PythonExecutionStatus) -> Ending {
        let (reason, message) = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_FINISHED)
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_default();
        Ending {
            phase: status.phase.unwrap_or(Phase::Failed),
            reason,
            message,
            outcome: status.outcome.clone().unwrap_or_default(),
        }
    }

    /// Normal when main() returned a dict, a Warning otherwise.
    pub fn event_type(&self) -> EventType {
        if self.phase == Phase::Succeeded {
            EventType::Normal
        } else {
            EventType::Warning
        }
    }
}

/// Records an event on the execution; failing to record one changes nothing, so it is only logged.
pub async fn publish(recorder: &Recorder, execution: &PythonExecution, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    if let Err(err) = recorder.publish(&event, &execution.object_ref(&())).await {
        tracing::warn!(execution = %execution.name_any(), error = %err, "could not record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::failure::Failure;
    use crate::controller::status::{failed, Stamp, REASON_POD_VANISHED};
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn the_ending_is_read_from_the_finished_condition() {
        let stamp = Stamp { now: Timestamp::from_second(1_700_000_000).expect("valid"), generation: Some(1) };
        let status = failed(&Default::default(), Failure::PodVanished { pod_name: "p".into() }, stamp);
        let ending = Ending::of(&status);
        assert_eq!(ending.phase, Phase::Failed);
        assert_eq!(ending.reason, REASON_POD_VANISHED);
        assert_eq!(ending.message, "The sandbox pod p disappeared before its output was read");
        assert_eq!(ending.outcome, "sandbox_failure");
        assert_eq!(ending.event_type(), EventType::Warning);
    }
}
