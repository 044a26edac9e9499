//! The limits one sandbox pod runs with: a PythonExecution's requested limits capped to the
//! controller's maxima, and its output limits lowered so the status fits in the object.

use crate::crd::{ExecutionLimits, PythonExecution};
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

/// The limits for one run: each requested value or the default, lowered to the maximum, and
/// stdout, stderr and result lowered to their share of `status_budget`.
pub fn resolve(settings: &LimitSettings, requested: Option<&ExecutionLimits>, status_budget: u64) -> Limits {
    let none = ExecutionLimits::default();
    let r = requested.unwrap_or(&none);
    let timeout_seconds = r
        .timeout_seconds
        .filter(|t| t.is_finite())
        .unwrap_or(settings.timeout_seconds)
        .min(settings.max_timeout_seconds)
        .max(0.001);
    Limits {
        timeout_ms: (timeout_seconds * 1000.0).round() as u64,
        cpu_seconds: cap(r.cpu_seconds, settings.cpu_seconds, settings.max_cpu_seconds),
        memory_mb: cap(r.memory_mb, settings.memory_mb, settings.max_memory_mb),
        max_pids: cap(r.max_pids, settings.max_pids, settings.max_max_pids),
        tmp_mb: cap(r.tmp_mb, settings.tmp_mb, settings.max_tmp_mb),
        file_size_mb: cap(r.file_size_mb, settings.file_size_mb, settings.max_file_size_mb),
        open_files: cap(r.open_files, settings.open_files, settings.max_open_files),
        stdout_bytes: cap(r.stdout_bytes, settings.stdout_bytes, settings.max_stdout_bytes).min(status_budget / 4),
        stderr_bytes: cap(r.stderr_bytes, settings.stderr_bytes, settings.max_stderr_bytes).min(status_budget / 4),
        result_bytes: cap(r.result_bytes, settings.result_bytes, settings.max_result_bytes).min(status_budget / 2),
    }
}

/// The requested value, or the default, at most the maximum and at least 1.
fn cap(requested: Option<i64>, default: u64, max: u64) -> u64 {
    let value = requested.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
    value.min(max).max(1)
}

/// Room for stdout, stderr and result in the status of `execution`: what the object may take
/// less what it takes already (the script, mostly).
pub fn status_budget(execution: &PythonExecution) -> u64 {
    let without_status = PythonExecution { status: None, ..execution.clone() };
    let used = serde_json::to_vec(&without_status).map(|v| v.len() as u64).unwrap_or(OBJECT_BUDGET_BYTES);
    OBJECT_BUDGET_BYTES.saturating_sub(used).max(MIN_STATUS_BUDGET_BYTES)
}

/// The most of a sandbox pod's log worth reading: the envelope with its output fully escaped,
/// and the supervisor's log lines.
pub fn log_limit_bytes(limits: &Limits) -> u64 {
    WORST_JSON_ESCAPE * (limits.stdout_bytes + limits.stderr_bytes) + limits.result_bytes + LOG_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::limits::testing::settings;

    const ROOMY: u64 = 1 << 40;

    #[test]
    fn no_requested_limits_give_the_defaults() {
        let limits = resolve(&settings(), None, ROOMY);
        assert_eq!(limits, settings().defaults().expect("valid defaults"));
    }

    #[test]
    fn requested_limits_below_the_maxima_are_kept() {
        let requested = ExecutionLimits {
            timeout_seconds: Some(2.5),
            memory_mb: Some(128),
            cpu_seconds: Some(3),
            ..Default::default()
        };
        let limits = resolve(&settings(), Some(&requested), ROOMY);
        assert_eq!(limits.timeout_ms, 2500);
        assert_eq!(limits.memory_mb, 128);
        assert_eq!(limits.cpu_seconds, 3);
    }

    #[test]
    fn requested_limits_above_the_maxima_are_lowered_to_them() {
        let requested = ExecutionLimits {
            timeout_seconds: Some(3600.0),
            memory_mb: Some(1 << 20),
            max_pids: Some(100_000),
            ..Default::default()
        };
        let limits = resolve(&settings(), Some(&requested), ROOMY);
        assert_eq!(limits.timeout_ms, 60_000);
        assert_eq!(limits.memory_mb, 4096);
        assert_eq!(limits.max_pids, 512);
    }

    #[test]
    fn nonsense_values_are_raised_to_the_least_that_works() {
        let requested = ExecutionLimits {
            timeout_seconds: Some(0.0),
            memory_mb: Some(-5),
            open_files: Some(0),
            ..Default::default()
        };
        let limits = resolve(&settings(), Some(&requested), ROOMY);
        assert_eq!(limits.timeout_ms, 1);
        assert_eq!(limits.memory_mb, settings().memory_mb, "a negative value reads as absent");
        assert_eq!(limits.open_files, 1);
    }

    #[test]
    fn output_limits_share_the_status_budget() {
        let limits = resolve(&settings(), None, 400_000);
        assert_eq!(limits.stdout_bytes, 100_000);
        assert_eq!(limits.stderr_bytes, 100_000);
        assert_eq!(limits.result_bytes, 200_000);
    }

    #[test]
    fn a_large_script_leaves_less_room_for_output() {
        let small = PythonExecution::new(
            "a",
            crate::crd::PythonExecutionSpec {
                script: "def main(): return {}".into(),
                limits: None,
                ttl_seconds_after_finished: None,
            },
        );
        let mut large = small.clone();
        large.spec.script = "#".repeat(200_000);
        assert!(status_budget(&small) - status_budget(&large) > 190_000, "the script's bytes come off the budget");
        assert!(status_budget(&large) >= MIN_STATUS_BUDGET_BYTES);
    }

    #[test]
    fn the_log_limit_covers_a_fully_escaped_envelope() {
        let limits = resolve(&settings(), None, 400_000);
        assert_eq!(log_limit_bytes(&limits), 6 * 200_000 + 200_000 + LOG_OVERHEAD_BYTES);
    }
}
