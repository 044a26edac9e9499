//! The one record a sandbox run produces. The supervisor writes it, the local executor returns
//! it, a sandbox pod prints it as its log, and the HTTP layer maps it to a response.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a finished run amounts to, in one word. The HTTP status and the one-line `error`
/// follow from it (see `server::response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// main() returned a dict that converted to JSON.
    Success,
    /// The script does not compile.
    SyntaxError,
    /// The script defines no `main`.
    NoMain,
    /// `main` exists but cannot be called as `main()` (not callable, needs arguments, async).
    InvalidMain,
    /// main() returned something other than a dict.
    NotADict,
    /// main()'s value holds something JSON cannot represent.
    Unserializable,
    /// main()'s value is larger than the result limit.
    ResultTooLarge,
    /// The script or main() raised an exception.
    Exception,
    /// The script ended (sys.exit, os._exit) before main() returned.
    Exited,
    /// The wall-clock or CPU time limit ran out.
    Timeout,
    /// The memory limit was hit.
    MemoryLimit,
    /// A signal killed the script (segfault, abort, ...).
    Signaled,
    /// The script ended without reporting a result, for no reason the supervisor could see.
    NoResult,
    /// The sandbox itself could not run (nsjail or Python missing or broken).
    SandboxFailure,
}

impl Outcome {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::SyntaxError => "syntax_error",
            Outcome::NoMain => "no_main",
            Outcome::InvalidMain => "invalid_main",
            Outcome::NotADict => "not_a_dict",
            Outcome::Unserializable => "unserializable",
            Outcome::ResultTooLarge => "result_too_large",
            Outcome::Exception => "exception",
            Outcome::Exited => "exited",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Signaled => "signaled",
            Outcome::NoResult => "no_result",
            Outcome::SandboxFailure => "sandbox_failure",
        }
    }

    /// Every outcome, for pre-registering metric labels.
    pub const ALL: [Outcome; 14] = [
        Outcome::Success,
        Outcome::SyntaxError,
        Outcome::NoMain,
        Outcome::InvalidMain,
        Outcome::NotADict,
        Outcome::Unserializable,
        Outcome::ResultTooLarge,
        Outcome::Exception,
        Outcome::Exited,
        Outcome::Timeout,
        Outcome::MemoryLimit,
        Outcome::Signaled,
        Outcome::NoResult,
        Outcome::SandboxFailure,
    ];
}

/// The record of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub outcome: Outcome,
    /// main()'s dict, on success only.
    pub result: Option<Map<String, Value>>,
    pub stdout: String,
    pub stderr: String,
    /// Python's subprocess convention: the exit code, or minus the signal that killed it.
    pub returncode: i32,
    /// One line saying what went wrong; absent on success.
    pub error: Option<String>,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    /// Wall-clock time of the run, sandbox set-up included.
    pub duration_ms: u64,
}

impl Envelope {
    /// An envelope for a run that was decided before any sandbox started.
    pub fn rejected(outcome: Outcome, error: impl Into<String>) -> Self {
        Envelope {
            outcome,
            result: None,
            stdout: String::new(),
            stderr: String::new(),
            returncode: 1,
            error: Some(error.into()),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
        }
    }
}

/// The exact message the seed contract gives for a script without `main()`.
pub const NO_MAIN_MESSAGE: &str = "Script must contain a 'main()' function.";
