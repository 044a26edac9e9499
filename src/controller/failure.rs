//! Every way an execution fails without its sandbox reporting an envelope: the status reason,
//! outcome, return code and message of each, written here once.

use std::time::Duration;

use super::pod::JobTooLarge;
use super::status;
use crate::sandbox::files::InputError;
use crate::sandbox::limits::LimitError;
use crate::sandbox::Outcome;

/// What to report for an execution whose sandbox did not report.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFailure {
    pub outcome: Outcome,
    pub returncode: i32,
    pub message: String,
}

impl PodFailure {
    /// The sandbox never reported anything: a sandbox_failure with return code 1.
    pub fn sandbox(message: String) -> Self {
        PodFailure { outcome: Outcome::SandboxFailure, returncode: 1, message }
    }
}

/// Why an execution failed before, or without, an envelope.
#[derive(Debug)]
pub enum Failure {
    /// A requested limit is above the controller's maximum: no pod is made.
    LimitsRefused(LimitError),
    /// The input files are ones the HTTP API would refuse: no pod is made.
    FilesRefused(InputError),
    /// The job document fits no pod.
    ScriptTooLarge(JobTooLarge),
    /// The pod disappeared before its output was read.
    PodVanished { pod_name: String },
    /// The pod did not start within the pod start timeout; `why` is what it was waiting for.
    PodStartTimeout { timeout: Duration, why: String },
    /// The pod can never start (`pod_state::PodView::CannotStart`).
    PodCannotStart { message: String },
    /// The pod ended without an envelope: what its state says, and the end of its log.
    PodFailed { failure: PodFailure, log_excerpt: String },
}

impl Failure {
    /// The reason of the Finished condition and of the event.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::LimitsRefused(_) => status::REASON_LIMITS_REFUSED,
            Failure::FilesRefused(_) => status::REASON_FILES_REFUSED,
            Failure::ScriptTooLarge(_) => status::REASON_SCRIPT_TOO_LARGE,
            Failure::PodVanished { .. } => status::REASON_POD_VANISHED,
            Failure::PodStartTimeout { .. } => status::REASON_POD_START_TIMEOUT,
            Failure::PodCannotStart { .. } => status::REASON_POD_CANNOT_START,
            Failure::PodFailed { .. } => status::REASON_POD_FAILED,
        }
    }

    /// What the status reports: outcome, return code and message.
    pub fn report(self) -> PodFailure {
        match self {
            Failure::LimitsRefused(err) => PodFailure::sandbox(err.to_string()),
            Failure::FilesRefused(err) => PodFailure::sandbox(err.to_string()),
            Failure::ScriptTooLarge(err) => PodFailure::sandbox(err.to_string()),
            Failure::PodVanished { pod_name } => {
                PodFailure::sandbox(format!("The sandbox pod {pod_name} disappeared before its output was read"))
            }
            Failure::PodStartTimeout { timeout, why } => {
                PodFailure::sandbox(format!("The sandbox pod did not start within {} s: {why}", timeout.as_secs()))
            }
            Failure::PodCannotStart { message } => PodFailure::sandbox(message),
            Failure::PodFailed { failure, log_excerpt } => {
                PodFailure { message: format!("{}; its log ends: {log_excerpt}", failure.message), ..failure }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_before_the_sandbox_ran_is_a_sandbox_failure_with_return_code_one() {
        let vanished = Failure::PodVanished { pod_name: "x-sandbox".into() };
        assert_eq!(vanished.reason(), status::REASON_POD_VANISHED);
        assert_eq!(
            vanished.report(),
            PodFailure::sandbox("The sandbox pod x-sandbox disappeared before its output was read".into())
        );
        let timeout = Failure::PodStartTimeout { timeout: Duration::from_secs(120), why: "ImagePullBackOff".into() };
        assert_eq!(timeout.report().message, "The sandbox pod did not start within 120 s: ImagePullBackOff");
    }

    #[test]
    fn a_pod_that_failed_keeps_its_outcome_and_adds_the_end_of_its_log() {
        let failure = PodFailure { outcome: Outcome::MemoryLimit, returncode: -9, message: "out of memory".into() };
        let failed = Failure::PodFailed { failure, log_excerpt: "MemoryError".into() };
        assert_eq!(failed.reason(), status::REASON_POD_FAILED);
        assert_eq!(
            failed.report(),
            PodFailure {
                outcome: Outcome::MemoryLimit,
                returncode: -9,
                message: "out of memory; its log ends: MemoryError".into()
            }
        );
    }
}
