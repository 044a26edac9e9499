//! The limits one sandbox pod runs with: a PythonExecution's requested limits resolved by the
//! one policy (`LimitSettings::resolve`: defaults filled in, a value above a maximum refused),
//! then its output limits lowered so the status fits in the object.

use crate::crd::PythonExecution;
use crate::sandbox::files::output::report_bytes;
use crate::sandbox::limits::LimitError;
use crate::sandbox::run::frames;
use crate::sandbox::{LimitSettings, Limits};

/// Bytes an object may take in etcd (its default --max-request-bytes is 1.5 MiB), less room for
/// metadata, managed fields and conditions.
pub const OBJECT_BUDGET_BYTES: u64 = 1_400_000;
/// The least room output gets in the status, however large the script.
pub const MIN_STATUS_BUDGET_BYTES: u64 = 64 * 1024;
/// Room in the pod log for the supervisor's own log lines besides the envelope.
pub const LOG_OVERHEAD_BYTES: u64 = 256 * 1024;
/// JSON escapes a control character as \u00XX: six bytes for one.
const WORST_JSON_ESCAPE: u64 = 6;
/// How long a run whose limits can no longer be resolved is taken to have written frames for.
const FALLBACK_RUN_SECONDS: u64 = 3600;

/// The limits `execution` runs with, or why its requested limits are refused.
pub fn resolve(settings: &LimitSettings, execution: &PythonExecution) -> Result<Limits, LimitError> {
    let limits = settings.resolve(&execution.spec.limits.clone().unwrap_or_default())?;
    Ok(fit_to_status(limits, status_budget(execution)))
}

/// Stdout, stderr and result lowered to their share of `status_budget`: what the status can
/// hold is a fact of the object, not a request to refuse. Output files take what the others
/// leave of it (`envelope_fit`), so their cap is lowered to half the budget: in base64, two
/// thirds of it, more than the status can hold beside anything else.
pub fn fit_to_status(limits: Limits, status_budget: u64) -> Limits {
    Limits {
        stdout_bytes: limits.stdout_bytes.min(status_budget / 4),
        stderr_bytes: limits.stderr_bytes.min(status_budget / 4),
        result_bytes: limits.result_bytes.min(status_budget / 2),
        output_files_bytes: limits.output_files_bytes.min(status_budget / 2),
        ..limits
    }
}

/// Room for stdout, stderr and result in the status of `execution`: what the object may take
/// less what it takes already (the script, mostly).
pub fn status_budget(execution: &PythonExecution) -> u64 {
    let without_status = PythonExecution { status: None, ..execution.clone() };
    let used = serde_json::to_vec(&without_status).map(|v| v.len() as u64).unwrap_or(OBJECT_BUDGET_BYTES);
    OBJECT_BUDGET_BYTES.saturating_sub(used).max(MIN_STATUS_BUDGET_BYTES)
}

/// The most of `execution`'s pod log worth reading; with limits the settings now refuse (they
/// changed since the pod was made), what the status could hold bounds it.
pub fn log_limit_of(settings: &LimitSettings, execution: &PythonExecution) -> u64 {
    match resolve(settings, execution) {
        Ok(limits) => log_limit_bytes(&limits),
        Err(_) => {
            let budget = status_budget(execution);
            log_limit(budget / 4 + budget / 4, budget / 2, budget / 2, FALLBACK_RUN_SECONDS)
        }
    }
}

/// The most of a sandbox pod's log worth reading: the output's frames as it was written, the
/// envelope with its output fully escaped, its output files, and the supervisor's log lines.
pub fn log_limit_bytes(limits: &Limits) -> u64 {
    let seconds = limits.timeout_ms.div_ceil(1000) + 1;
    log_limit(limits.stdout_bytes + limits.stderr_bytes, limits.result_bytes, limits.output_files_bytes, seconds)
}

fn log_limit(output_bytes: u64, result_bytes: u64, files_bytes: u64, seconds: u64) -> u64 {
    frames::log_bytes(output_bytes, seconds)
        + WORST_JSON_ESCAPE * output_bytes
        + result_bytes
        + report_bytes(files_bytes)
        + LOG_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::limit_settings as settings;
    use crate::crd::PythonExecutionSpec;
    use crate::sandbox::RequestedLimits;

    const ROOMY: u64 = 1 << 40;

    fn execution(limits: Option<RequestedLimits>) -> PythonExecution {
        let spec = PythonExecutionSpec {
            script: "def main(): return {}".into(),
            limits,
            files: None,
            ttl_seconds_after_finished: None,
        };
        PythonExecution::new("a", spec)
    }

    #[test]
    fn no_requested_limits_give_the_defaults() {
        let limits = resolve(&settings(), &execution(None)).expect("valid");
        assert_eq!(
            limits,
            fit_to_status(settings().defaults().expect("valid defaults"), status_budget(&execution(None)))
        );
        assert_eq!(limits.memory_mb, 512);
    }

    #[test]
    fn requested_limits_below_the_maxima_are_kept() {
        let requested = RequestedLimits {
            timeout_seconds: Some(2.5),
            memory_mb: Some(128),
            cpu_seconds: Some(3),
            ..Default::default()
        };
        let limits = resolve(&settings(), &execution(Some(requested))).expect("valid");
        assert_eq!(limits.timeout_ms, 2500);
        assert_eq!(limits.memory_mb, 128);
        assert_eq!(limits.cpu_seconds, 3);
    }

    #[test]
    fn requested_limits_above_the_maxima_are_refused_as_the_http_api_refuses_them() {
        let requested = RequestedLimits { memory_mb: Some(1 << 20), ..Default::default() };
        let err = resolve(&settings(), &execution(Some(requested.clone()))).expect_err("above the maximum");
        assert_eq!(err, settings().resolve(&requested).expect_err("the same rule"));
        assert_eq!(err.to_string(), "limits.memory_mb may be at most 4096 on this server, got 1048576");
    }

    #[test]
    fn output_limits_share_the_status_budget() {
        let limits = fit_to_status(settings().defaults().expect("valid"), 400_000);
        assert_eq!(limits.stdout_bytes, 100_000);
        assert_eq!(limits.stderr_bytes, 100_000);
        assert_eq!(limits.result_bytes, 200_000);
        assert_eq!(limits.output_files_bytes, 200_000);
        let roomy = fit_to_status(settings().defaults().expect("valid"), ROOMY);
        assert_eq!(roomy, settings().defaults().expect("valid"), "a roomy status lowers nothing");
    }

    #[test]
    fn a_large_script_leaves_less_room_for_output() {
        let small = execution(None);
        let mut large = small.clone();
        large.spec.script = "#".repeat(200_000);
        assert!(status_budget(&small) - status_budget(&large) > 190_000, "the script's bytes come off the budget");
        assert!(status_budget(&large) >= MIN_STATUS_BUDGET_BYTES);
    }

    #[test]
    fn the_log_limit_covers_the_output_frames_and_a_fully_escaped_envelope() {
        let limits = fit_to_status(settings().defaults().expect("valid"), 400_000);
        let frames = frames::log_bytes(200_000, limits.timeout_ms.div_ceil(1000) + 1);
        assert!(frames > 200_000 * 4 / 3, "the frames hold the output in base64");
        let expected = frames + 6 * 200_000 + 200_000 + report_bytes(200_000) + LOG_OVERHEAD_BYTES;
        assert_eq!(log_limit_bytes(&limits), expected);
    }

    #[test]
    fn refused_limits_still_bound_the_log_read_by_the_status_budget() {
        let refused = execution(Some(RequestedLimits { memory_mb: Some(1 << 20), ..Default::default() }));
        let budget = status_budget(&refused);
        let output = 2 * (budget / 4);
        let expected = frames::log_bytes(output, FALLBACK_RUN_SECONDS)
            + WORST_JSON_ESCAPE * output
            + budget / 2
            + report_bytes(budget / 2)
            + LOG_OVERHEAD_BYTES;
        assert_eq!(log_limit_of(&settings(), &refused), expected);
    }
}
