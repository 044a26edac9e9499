//! Deciding what a finished run amounts to, from the facts the supervisor gathered: a pure
//! function, so every branch has a unit test.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sandbox::envelope::{Outcome, ResultJson};
use crate::sandbox::files::output::{self, OutputFiles, ReportedFile};
use crate::sandbox::jail::nsjail::ChildStatus;
use crate::sandbox::limits::Limits;

/// Everything the supervisor observed about one run.
#[derive(Debug)]
pub struct RunFacts<'a> {
    pub limits: &'a Limits,
    /// The supervisor's deadline passed and it killed the run.
    pub timed_out: bool,
    /// The kernel's OOM killer killed a process of the run (cgroups only).
    pub oom_killed: bool,
    /// How the jailed process ended, from nsjail's log.
    pub child: Option<ChildStatus>,
    /// The bytes the harness wrote on the result channel (at most `report_limit`).
    pub report: &'a [u8],
    /// More than `report_limit` arrived on the result channel.
    pub report_overflow: bool,
    pub elapsed_ms: u64,
    /// RLIMIT_AS is the run's only memory bound (no cgroup: inside gVisor, or cgroups off), so a
    /// MemoryError that ended the script means the memory limit was reached.
    pub memory_error_is_limit: bool,
    /// The process that kept the sandbox (a forked sandbox's keeper) was killed before it said
    /// how the script ended: nothing the sandbox reported can be trusted to be whole.
    pub keeper_lost: bool,
}

/// The decided part of an envelope.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub result: Option<ResultJson>,
    pub returncode: i32,
    pub error: Option<String>,
    /// The output files a successful run returns.
    pub files: OutputFiles,
}

/// The most bytes a harness's report may take under `limits`: main()'s result, its end of line,
/// and the output files (`files::output::report_bytes`). The result alone is held to
/// `result_bytes` once the report is read.
pub fn report_limit(limits: &Limits) -> u64 {
    limits.result_bytes + 1 + output::report_bytes(limits.output_files_bytes)
}

/// The harness's report, exactly as the harness writes it (`harness/common.py`, `_report`): a field it does not write, or one
/// written twice, makes it a forged report. The result stays text, checked by `ResultJson`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report<'a> {
    ok: bool,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    files: Vec<ReportedFile>,
    #[serde(default)]
    files_omitted: Vec<String>,
}

const SIGKILL: i32 = 9;

pub fn decide(facts: &RunFacts) -> Verdict {
    let returncode = match facts.child {
        Some(ChildStatus::Exited(code)) => code,
        Some(ChildStatus::Signaled(signal)) => -signal,
        None => -SIGKILL,
    };
    let failed = |outcome, message: String| Verdict {
        outcome,
        result: None,
        returncode,
        error: Some(message),
        files: OutputFiles::default(),
    };

    if facts.timed_out {
        return Verdict {
            returncode: -SIGKILL,
            ..failed(
                Outcome::Timeout,
                format!("Execution timed out after {} (wall-clock limit)", seconds(facts.limits.timeout_ms)),
            )
        };
    }
    if facts.keeper_lost {
        return failed(
            Outcome::SandboxFailure,
            "The sandbox's keeper was killed before the script ended; the run was stopped".to_string(),
        );
    }
    if facts.report_overflow {
        return failed(Outcome::ResultTooLarge, too_large(facts.limits));
    }
    if !facts.report.is_empty() {
        return match serde_json::from_slice::<Report>(facts.report) {
            Ok(report) if facts.memory_error_is_limit && is_memory_error(&report) => failed(
                Outcome::MemoryLimit,
                format!("Memory limit of {} MiB exceeded (MemoryError)", facts.limits.memory_mb),
            ),
            Ok(report) => from_report(report, returncode, facts.limits).unwrap_or_else(|err| {
                failed(Outcome::NoResult, format!("The result channel held an invalid report ({err})"))
            }),
            Err(err) => failed(Outcome::NoResult, format!("The result channel held an invalid report ({err})")),
        };
    }
    if facts.oom_killed {
        return Verdict {
            returncode: -SIGKILL,
            ..failed(Outcome::MemoryLimit, format!("Memory limit of {} MiB exceeded", facts.limits.memory_mb))
        };
    }
    match facts.child {
        Some(ChildStatus::Signaled(SIGKILL)) if facts.elapsed_ms >= facts.limits.cpu_seconds * 1000 => {
            failed(Outcome::Timeout, format!("CPU time limit of {} s exceeded", facts.limits.cpu_seconds))
        }
        Some(ChildStatus::Signaled(24)) => {
            failed(Outcome::Timeout, format!("CPU time limit of {} s exceeded", facts.limits.cpu_seconds))
        }
        Some(ChildStatus::Signaled(signal)) => {
            failed(Outcome::Signaled, format!("The script was killed by signal {} ({signal})", signal_name(signal)))
        }
        Some(ChildStatus::Exited(code)) => {
            failed(Outcome::Exited, format!("The script exited with code {code} before main() returned"))
        }
        None => failed(Outcome::SandboxFailure, "The sandbox failed to start".to_string()),
    }
}

/// The script ended with a MemoryError of its own (the harness's one-line message).
fn is_memory_error(report: &Report) -> bool {
    !report.ok
        && report.kind.as_deref() == Some("exception")
        && report.message.as_deref().is_some_and(|m| m == "MemoryError" || m.starts_with("MemoryError:"))
}

/// Why a well-formed report cannot be taken as it is.
#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("{0}")]
    Result(#[from] serde_json::Error),
    #[error("{0}")]
    Files(#[from] output::ReportedFilesError),
}

/// The verdict a well-formed report gives; an error when its result is not one JSON object or
/// its files are not what the harness writes.
fn from_report(report: Report, returncode: i32, limits: &Limits) -> Result<Verdict, ReportError> {
    if report.ok {
        return Ok(match report.result {
            Some(raw) if raw.get().len() as u64 > limits.result_bytes => Verdict {
                outcome: Outcome::ResultTooLarge,
                result: None,
                returncode,
                error: Some(too_large(limits)),
                files: OutputFiles::default(),
            },
            Some(raw) => {
                let result = ResultJson::from_raw(raw)?;
                let files = OutputFiles::accept(report.files, report.files_omitted, limits.output_files_bytes)?;
                Verdict { outcome: Outcome::Success, result: Some(result), returncode, error: None, files }
            }
            None => Verdict {
                outcome: Outcome::NoResult,
                result: None,
                returncode,
                error: Some("The harness reported success without a result".into()),
                files: OutputFiles::default(),
            },
        });
    }
    let outcome = match report.kind.as_deref() {
        Some("syntax_error") => Outcome::SyntaxError,
        Some("no_main") => Outcome::NoMain,
        Some("invalid_main") => Outcome::InvalidMain,
        Some("not_a_dict") => Outcome::NotADict,
        Some("unserializable") => Outcome::Unserializable,
        Some("exception") => Outcome::Exception,
        // A ready sandbox's harness could not lower its rlimits to the job's: nothing ran.
        Some("sandbox_failure") => Outcome::SandboxFailure,
        _ => Outcome::NoResult,
    };
    let message = report.message.unwrap_or_else(|| "The script failed".into());
    Ok(Verdict { outcome, result: None, returncode, error: Some(message), files: OutputFiles::default() })
}

fn too_large(limits: &Limits) -> String {
    format!("main()'s result is larger than the result limit of {} bytes", limits.result_bytes)
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.3} s", ms as f64 / 1000.0)
    }
}

/// The conventional name of a Linux signal number ("signal" for a number nix does not know).
pub fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("signal")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            timeout_ms: 2000,
            cpu_seconds: 5,
            memory_mb: 128,
            max_pids: 16,
            tmp_mb: 8,
            file_size_mb: 1,
            open_files: 64,
            stdout_bytes: 100,
            stderr_bytes: 100,
            result_bytes: 100,
            output_files_bytes: 100,
        }
    }

    fn facts<'a>(limits: &'a Limits, child: Option<ChildStatus>, report: &'a [u8]) -> RunFacts<'a> {
        RunFacts {
            limits,
            timed_out: false,
            oom_killed: false,
            child,
            report,
            report_overflow: false,
            elapsed_ms: 50,
            memory_error_is_limit: false,
            keeper_lost: false,
        }
    }

    #[test]
    fn a_report_is_never_a_success_when_the_keeper_was_killed() {
        let l = limits();
        let report = br#"{"ok":true,"result":{"a":1}}"#;
        let v = decide(&RunFacts { keeper_lost: true, ..facts(&l, None, report) });
        assert_eq!(v.outcome, Outcome::SandboxFailure);
        assert_eq!(v.result, None);
        let timed_out = decide(&RunFacts { keeper_lost: true, timed_out: true, ..facts(&l, None, report) });
        assert_eq!(timed_out.outcome, Outcome::Timeout);
    }

    #[test]
    fn a_reported_dict_is_a_success() {
        let l = limits();
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), br#"{"ok":true,"result":{"a":1}}"#));
        assert_eq!(v.outcome, Outcome::Success);
        assert_eq!(v.returncode, 0);
        assert_eq!(v.result.expect("result").json().get(), r#"{"a":1}"#);
    }

    #[test]
    fn the_deadline_wins_over_everything_else() {
        let l = limits();
        let mut f = facts(&l, Some(ChildStatus::Signaled(9)), b"");
        f.timed_out = true;
        f.oom_killed = true;
        let v = decide(&f);
        assert_eq!(v.outcome, Outcome::Timeout);
        assert_eq!(v.returncode, -9);
        assert_eq!(v.error.as_deref(), Some("Execution timed out after 2 s (wall-clock limit)"));
    }

    #[test]
    fn an_oom_kill_without_report_is_the_memory_limit() {
        let l = limits();
        let mut f = facts(&l, Some(ChildStatus::Signaled(9)), b"");
        f.oom_killed = true;
        let v = decide(&f);
        assert_eq!(v.outcome, Outcome::MemoryLimit);
        assert_eq!(v.error.as_deref(), Some("Memory limit of 128 MiB exceeded"));
    }

    #[test]
    fn a_memory_error_is_the_memory_limit_only_where_rlimit_as_is_the_limit() {
        let l = limits();
        let report = br#"{"ok":false,"kind":"exception","message":"MemoryError"}"#;
        let mut f = facts(&l, Some(ChildStatus::Exited(1)), report);
        assert_eq!(decide(&f).outcome, Outcome::Exception);
        f.memory_error_is_limit = true;
        let v = decide(&f);
        assert_eq!(v.outcome, Outcome::MemoryLimit);
        assert_eq!(v.returncode, 1);
        assert_eq!(v.error.as_deref(), Some("Memory limit of 128 MiB exceeded (MemoryError)"));
        let other = br#"{"ok":false,"kind":"exception","message":"ValueError: MemoryError"}"#;
        assert_eq!(decide(&facts_with_limit(&l, other)).outcome, Outcome::Exception);
    }

    #[test]
    fn a_ready_sandbox_that_could_not_apply_the_jobs_limits_is_a_sandbox_failure() {
        let l = limits();
        let report = br#"{"ok":false,"kind":"sandbox_failure","message":"The ready sandbox could not apply the job's limits (x)"}"#;
        let v = decide(&facts(&l, Some(ChildStatus::Exited(1)), report));
        assert_eq!(v.outcome, Outcome::SandboxFailure);
        assert!(v.error.as_deref().is_some_and(|e| e.contains("could not apply")), "{v:?}");
    }

    fn facts_with_limit<'a>(limits: &'a Limits, report: &'a [u8]) -> RunFacts<'a> {
        RunFacts { memory_error_is_limit: true, ..facts(limits, Some(ChildStatus::Exited(1)), report) }
    }

    #[test]
    fn a_segfault_names_its_signal() {
        let l = limits();
        let v = decide(&facts(&l, Some(ChildStatus::Signaled(11)), b""));
        assert_eq!(v.outcome, Outcome::Signaled);
        assert_eq!(v.returncode, -11);
        assert_eq!(v.error.as_deref(), Some("The script was killed by signal SIGSEGV (11)"));
    }

    #[test]
    fn signal_names_are_nix_names_and_unknown_numbers_stay_generic() {
        assert_eq!(signal_name(24), "SIGXCPU");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(0), "signal");
        assert_eq!(signal_name(99), "signal");
    }

    #[test]
    fn sigkill_after_the_cpu_allowance_is_the_cpu_limit() {
        let l = limits();
        let mut f = facts(&l, Some(ChildStatus::Signaled(9)), b"");
        f.elapsed_ms = 5200;
        assert_eq!(decide(&f).outcome, Outcome::Timeout);
    }

    #[test]
    fn exiting_before_main_returns_keeps_the_code() {
        let l = limits();
        let v = decide(&facts(&l, Some(ChildStatus::Exited(3)), b""));
        assert_eq!(v.outcome, Outcome::Exited);
        assert_eq!(v.returncode, 3);
    }

    #[test]
    fn harness_failures_keep_their_kind_and_message() {
        let l = limits();
        let report = br#"{"ok":false,"kind":"not_a_dict","message":"main() must return a dict, but it returned int"}"#;
        let v = decide(&facts(&l, Some(ChildStatus::Exited(1)), report));
        assert_eq!(v.outcome, Outcome::NotADict);
        assert_eq!(v.error.as_deref(), Some("main() must return a dict, but it returned int"));
    }

    #[test]
    fn a_forged_or_broken_report_is_no_result() {
        let l = limits();
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), br#"{"ok":true,"result":{"a":1},"extra":2}"#));
        assert_eq!(v.outcome, Outcome::NoResult);
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), b"not json"));
        assert_eq!(v.outcome, Outcome::NoResult);
    }

    #[test]
    fn a_result_is_kept_as_the_text_the_harness_wrote() {
        let l = limits();
        let report = br#"{"ok":true,"result":{"z":1, "a":[1.0,1e+16,100000000000000000000000000000],"m":"\u00e9"}}"#;
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), report));
        assert_eq!(v.outcome, Outcome::Success);
        let result = v.result.expect("result");
        assert_eq!(result.json().get(), r#"{"z":1, "a":[1.0,1e+16,100000000000000000000000000000],"m":"\u00e9"}"#);
    }

    #[test]
    fn a_report_whose_result_is_not_one_json_object_is_no_result() {
        let l = limits();
        for report in [
            &br#"{"ok":true,"result":[1,2]}"#[..],
            br#"{"ok":true,"result":"{}"}"#,
            br#"{"ok":true,"result":7}"#,
            br#"{"ok":true,"result":{"a":1,}}"#,
            br#"{"ok":true,"result":{"a":01}}"#,
            br#"{"ok":true,"result":{"a":1}"#,
            br#"{"ok":true,"result":{"a":1}} trailing"#,
            br#"{"ok":true,"result":{"a":1}}{"ok":true,"result":{"a":2}}"#,
            br#"{"ok":true,"result":{"a":"\x"}}"#,
            br#"{"ok":true,"result":{"a":"\ud800"}}"#,
            br#"{"ok":true,"result":{"a":1e400}}"#,
            b"{\"ok\":true,\"result\":{\"a\":\"\xff\"}}",
            b"{\"ok\":true,\"result\":{\"a\":\"tab\there\"}}",
        ] {
            let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), report));
            assert_eq!(v.outcome, Outcome::NoResult, "{}", String::from_utf8_lossy(report));
            assert_eq!(v.result, None);
            assert!(v.error.is_some_and(|e| e.starts_with("The result channel held an invalid report")));
        }
    }

    #[test]
    fn a_result_nested_deeper_than_a_value_may_be_is_no_result() {
        let l = Limits { result_bytes: 1000, ..limits() };
        let nested =
            |depth: usize| format!(r#"{{"ok":true,"result":{{"a":{}{}}}}}"#, "[".repeat(depth), "]".repeat(depth));
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), nested(120).as_bytes()));
        assert_eq!(v.outcome, Outcome::Success, "the harness allows 100 levels");
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), nested(200).as_bytes()));
        assert_eq!(v.outcome, Outcome::NoResult);
    }

    #[test]
    fn a_report_repeating_a_key_is_forged() {
        let l = limits();
        for report in [
            &br#"{"ok":true,"ok":true,"result":{"a":1}}"#[..],
            br#"{"ok":true,"result":{"a":1},"result":{"a":2}}"#,
            br#"{"ok":false,"kind":"exception","kind":"no_main","message":"m"}"#,
            br#"{"ok":true,"result":{"a":1,"b":2,"a":3}}"#,
            br#"{"ok":true,"result":{"a":[{"x":1},{"y":{"k":1,"k":1}}]}}"#,
            br#"{"ok":true,"result":{"a":1,"\u0061":2}}"#,
            br#"{"ok":true,"result":{"\"":1,"\u0022":2}}"#,
        ] {
            let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), report));
            assert_eq!(v.outcome, Outcome::NoResult, "{}", String::from_utf8_lossy(report));
        }
        let same_key_in_sibling_objects = br#"{"ok":true,"result":{"a":{"k":1},"b":{"k":1},"\"":[{"k":2}]}}"#;
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), same_key_in_sibling_objects));
        assert_eq!(v.outcome, Outcome::Success);
    }

    #[test]
    fn a_result_over_the_result_limit_is_too_large_whatever_files_come_with_it() {
        let l = limits();
        let report = format!(r#"{{"ok":true,"result":{{"a":"{}"}}}}"#, "x".repeat(100));
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), report.as_bytes()));
        assert_eq!(v.outcome, Outcome::ResultTooLarge);
        assert_eq!(v.error.as_deref(), Some("main()'s result is larger than the result limit of 100 bytes"));
    }

    #[test]
    fn reported_files_come_back_with_their_size_and_media_type() {
        let l = limits();
        let report =
            br#"{"ok":true,"result":{},"files":[{"name":"a.png","content_base64":"iVBORw=="}],"files_omitted":["b/"]}"#;
        let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), report));
        assert_eq!(v.outcome, Outcome::Success);
        assert_eq!((v.files.files[0].size, v.files.files[0].media_type.as_str()), (4, "image/png"));
        assert_eq!(v.files.omitted, ["b/"]);
    }

    #[test]
    fn reported_files_the_harness_never_writes_make_a_forged_report() {
        let l = limits();
        for report in [
            &br#"{"ok":true,"result":{},"files":[{"name":"../x","content_base64":""}]}"#[..],
            br#"{"ok":true,"result":{},"files":[{"name":"x","content_base64":"!!"}]}"#,
            br#"{"ok":true,"result":{},"files":[{"name":"x","content_base64":"","size":9}]}"#,
        ] {
            let v = decide(&facts(&l, Some(ChildStatus::Exited(0)), report));
            assert_eq!(v.outcome, Outcome::NoResult, "{}", String::from_utf8_lossy(report));
        }
        // 102 bytes, over the 100 the limits allow.
        let over =
            format!(r#"{{"ok":true,"result":{{}},"files":[{{"name":"x","content_base64":"{}"}}]}}"#, "A".repeat(136));
        assert_eq!(decide(&facts(&l, Some(ChildStatus::Exited(0)), over.as_bytes())).outcome, Outcome::NoResult);
    }

    #[test]
    fn the_report_may_carry_the_result_and_the_output_files() {
        let l = limits();
        assert_eq!(report_limit(&l), 100 + 1 + crate::sandbox::files::output::report_bytes(100));
    }

    #[test]
    fn an_oversized_report_is_result_too_large() {
        let l = limits();
        let mut f = facts(&l, Some(ChildStatus::Exited(0)), b"{\"ok\":true,");
        f.report_overflow = true;
        assert_eq!(decide(&f).outcome, Outcome::ResultTooLarge);
    }

    #[test]
    fn no_status_at_all_is_a_sandbox_failure() {
        let l = limits();
        assert_eq!(decide(&facts(&l, None, b"")).outcome, Outcome::SandboxFailure);
    }
}
