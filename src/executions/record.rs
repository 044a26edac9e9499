//! What is known of one execution, and the pure decisions about it: its state, and the state an
//! envelope leaves it in.

use schemars::JsonSchema;
use serde::Serialize;

use crate::sandbox::{Envelope, Outcome};

/// Where an execution is in its life. The first two are unfinished; the last three are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Accepted, waiting for a sandbox.
    Queued,
    /// Its sandbox has started.
    Running,
    /// main() returned a result.
    Succeeded,
    /// Anything else: an exception, a limit, no main(), or cut off by the service stopping.
    Failed,
    /// Stopped by DELETE /executions/{id}.
    Cancelled,
}

impl State {
    pub const ALL: [State; 5] = [State::Queued, State::Running, State::Succeeded, State::Failed, State::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }

    /// The final state a finished run's envelope leaves: succeeded only when main() returned
    /// a result that could be sent.
    pub fn after(outcome: Outcome) -> State {
        match outcome {
            Outcome::Success => State::Succeeded,
            _ => State::Failed,
        }
    }
}

/// One execution as stored. Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: String,
    pub state: State,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// What the sandbox reported, once it finished (none when cancelled or cut off).
    pub envelope: Option<Envelope>,
    /// The request's warnings, repeated in the answer as /execute gives them.
    pub warnings: Vec<String>,
    /// Why it ended without an envelope (cancelled, or the service stopped).
    pub reason: Option<String>,
}

impl Record {
    pub fn queued(id: String, created_ms: i64, warnings: Vec<String>) -> Record {
        Record {
            id,
            state: State::Queued,
            created_ms,
            started_ms: None,
            finished_ms: None,
            envelope: None,
            warnings,
            reason: None,
        }
    }
}

/// The time as RFC 3339 in UTC with milliseconds, e.g. `2026-01-31T12:00:00.250Z`.
pub fn timestamp(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(at) => format!("{at:.3}"),
        Err(_) => ms.to_string(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Whether `text` can be an execution id: the local placement's are 32 lowercase hexadecimal
/// digits, the kubernetes one's are PythonExecution names (lowercase letters, digits and `-`,
/// at most 63, starting and ending with a letter or digit). Anything else is answered 404
/// without a lookup.
pub fn is_id(text: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| alphanumeric(b) || b == b'-')
        && bytes.first().copied().is_some_and(alphanumeric)
        && bytes.last().copied().is_some_and(alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_their_names() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).expect("a state"), state.as_str());
        }
        assert_eq!(State::parse("done"), None);
    }

    #[test]
    fn only_a_success_succeeds() {
        assert_eq!(State::after(Outcome::Success), State::Succeeded);
        for outcome in [Outcome::Exception, Outcome::Timeout, Outcome::NoMain, Outcome::SandboxFailure] {
            assert_eq!(State::after(outcome), State::Failed, "{outcome:?}");
        }
    }

    #[test]
    fn finished_states_are_the_last_three() {
        let finished: Vec<_> = State::ALL.into_iter().filter(|s| s.is_finished()).collect();
        assert_eq!(finished, [State::Succeeded, State::Failed, State::Cancelled]);
    }

    #[test]
    fn ids_are_the_services_or_kubernetes_names() {
        assert!(is_id(&uuid::Uuid::new_v4().simple().to_string()));
        assert!(is_id("pyx-7k2qd"));
        for not in ["../etc/passwd", "", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!is_id(not), "{not:?}");
        }
    }
}
