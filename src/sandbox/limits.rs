//! Per-run resource limits: what a request may ask for, the server's defaults and maxima, and
//! the one policy that turns them into the limits one run gets.
//!
//! The rule, the same in both placements: a limit left out takes the default; a limit above the
//! server's maximum (or below the least that works) is refused, never lowered. The HTTP API
//! answers 400 naming the limit; the controller fails the PythonExecution with that message
//! (reason `LimitsRefused`). This module is the one place each limit is named.

use std::time::Duration;

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The limits one sandbox run is started with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time from start to kill.
    pub timeout_ms: u64,
    /// CPU seconds (RLIMIT_CPU); the kernel kills the script past it.
    pub cpu_seconds: u64,
    /// Memory of the whole process tree, in MiB (cgroup), or address space per process (rlimit).
    pub memory_mb: u64,
    /// Processes and threads at once (fork bombs).
    pub max_pids: u64,
    /// Size of the private writable /tmp, in MiB.
    pub tmp_mb: u64,
    /// Largest file the script may write, in MiB (RLIMIT_FSIZE).
    pub file_size_mb: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Bytes of stdout kept; the rest is dropped and `stdout_truncated` set.
    pub stdout_bytes: u64,
    /// Bytes of stderr kept; the rest is dropped and `stderr_truncated` set.
    pub stderr_bytes: u64,
    /// Largest serialised result accepted, in bytes.
    pub result_bytes: u64,
    /// Bytes of output files returned, in all; the files past it are left out and named. (A job
    /// document without it, from an older controller, returns none.)
    #[serde(default)]
    pub output_files_bytes: u64,
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The request that resolves to exactly these limits (how the API hands limits it resolved
    /// to a PythonExecution).
    pub fn requested(&self) -> RequestedLimits {
        RequestedLimits {
            timeout_seconds: Some(self.timeout_ms as f64 / 1000.0),
            cpu_seconds: Some(self.cpu_seconds),
            memory_mb: Some(self.memory_mb),
            max_pids: Some(self.max_pids),
            tmp_mb: Some(self.tmp_mb),
            file_size_mb: Some(self.file_size_mb),
            open_files: Some(self.open_files),
            stdout_bytes: Some(self.stdout_bytes),
            stderr_bytes: Some(self.stderr_bytes),
            result_bytes: Some(self.result_bytes),
            output_files_bytes: Some(self.output_files_bytes),
        }
    }
}

/// Limits a caller asks for, in the HTTP body's `limits` and in a PythonExecution's
/// `spec.limits` alike; each one left out takes the server's default. The CRD schema is derived
/// from this type (camelCase, as Kubernetes spells fields); the HTTP API reads the snake_case
/// names it has always documented, or the camelCase ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(transform = int64_format)]
pub struct RequestedLimits {
    /// Wall-clock timeout, in seconds.
    #[serde(default, alias = "timeout_seconds", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 86400.0))]
    pub timeout_seconds: Option<f64>,
    /// CPU time, in seconds (the script's RLIMIT_CPU, not a rate).
    #[serde(default, alias = "cpu_seconds", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub cpu_seconds: Option<u64>,
    /// Memory of the script's process tree, in MiB.
    #[serde(default, alias = "memory_mb", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub memory_mb: Option<u64>,
    /// Processes and threads alive at once.
    #[serde(default, alias = "max_pids", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_pids: Option<u64>,
    /// Size of the private writable /tmp, in MiB.
    #[serde(default, alias = "tmp_mb", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub tmp_mb: Option<u64>,
    /// Largest file the script may write, in MiB.
    #[serde(default, alias = "file_size_mb", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub file_size_mb: Option<u64>,
    /// Open file descriptors.
    #[serde(default, alias = "open_files", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub open_files: Option<u64>,
    /// Bytes of stdout kept.
    #[serde(default, alias = "stdout_bytes", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_073_741_824))]
    pub stdout_bytes: Option<u64>,
    /// Bytes of stderr kept.
    #[serde(default, alias = "stderr_bytes", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_073_741_824))]
    pub stderr_bytes: Option<u64>,
    /// Largest result (main()'s dict as JSON), in bytes.
    #[serde(default, alias = "result_bytes", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_073_741_824))]
    pub result_bytes: Option<u64>,
    /// Bytes of the files the script leaves in its output folder returned, in all.
    #[serde(default, alias = "output_files_bytes", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_073_741_824))]
    pub output_files_bytes: Option<u64>,
}

/// Kubernetes' schemas know int64, not uint64: the limits are described the way the API server
/// validates them (the minimum of 1 keeps them positive).
fn int64_format(schema: &mut schemars::Schema) {
    use schemars::transform::{RecursiveTransform, Transform};
    RecursiveTransform(|schema: &mut schemars::Schema| {
        if schema.get("format").and_then(|f| f.as_str()) == Some("uint64") {
            schema.insert("format".into(), "int64".into());
        }
    })
    .transform(schema);
}

/// Server settings: the default of every limit and the most a request may ask for.
#[derive(Args, Clone, Debug)]
pub struct LimitSettings {
    /// Default wall-clock timeout of one execution, in seconds.
    #[arg(long, env = "PYEXEC_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub timeout_seconds: f64,
    /// Largest timeout a request may ask for, in seconds.
    #[arg(long, env = "PYEXEC_MAX_TIMEOUT_SECONDS", default_value_t = 60.0)]
    pub max_timeout_seconds: f64,
    /// Default CPU time limit, in seconds (RLIMIT_CPU).
    #[arg(long, env = "PYEXEC_CPU_SECONDS", default_value_t = 10)]
    pub cpu_seconds: u64,
    /// Largest CPU time limit a request may ask for, in seconds.
    #[arg(long, env = "PYEXEC_MAX_CPU_SECONDS", default_value_t = 60)]
    pub max_cpu_seconds: u64,
    /// Default memory limit, in MiB (whole process tree with cgroups; per process otherwise).
    #[arg(long, env = "PYEXEC_MEMORY_MB", default_value_t = 512)]
    pub memory_mb: u64,
    /// Largest memory limit a request may ask for, in MiB.
    #[arg(long, env = "PYEXEC_MAX_MEMORY_MB", default_value_t = 4096)]
    pub max_memory_mb: u64,
    /// Default limit on processes and threads alive at once.
    #[arg(long, env = "PYEXEC_MAX_PIDS", default_value_t = 64)]
    pub max_pids: u64,
    /// Largest process/thread limit a request may ask for.
    #[arg(long, env = "PYEXEC_MAX_MAX_PIDS", default_value_t = 512)]
    pub max_max_pids: u64,
    /// Default size of the sandbox's private /tmp, in MiB.
    #[arg(long, env = "PYEXEC_TMP_MB", default_value_t = 64)]
    pub tmp_mb: u64,
    /// Largest /tmp a request may ask for, in MiB.
    #[arg(long, env = "PYEXEC_MAX_TMP_MB", default_value_t = 1024)]
    pub max_tmp_mb: u64,
    /// Default largest file a script may write, in MiB (RLIMIT_FSIZE).
    #[arg(long, env = "PYEXEC_FILE_SIZE_MB", default_value_t = 16)]
    pub file_size_mb: u64,
    /// Largest file-size limit a request may ask for, in MiB.
    #[arg(long, env = "PYEXEC_MAX_FILE_SIZE_MB", default_value_t = 1024)]
    pub max_file_size_mb: u64,
    /// Default limit on open file descriptors (RLIMIT_NOFILE).
    #[arg(long, env = "PYEXEC_OPEN_FILES", default_value_t = 256)]
    pub open_files: u64,
    /// Largest open-file limit a request may ask for.
    #[arg(long, env = "PYEXEC_MAX_OPEN_FILES", default_value_t = 4096)]
    pub max_open_files: u64,
    /// Default bytes of stdout kept (the rest is dropped, `stdout_truncated` is set).
    #[arg(long, env = "PYEXEC_STDOUT_BYTES", default_value_t = 1 << 20)]
    pub stdout_bytes: u64,
    /// Largest stdout cap a request may ask for, in bytes.
    #[arg(long, env = "PYEXEC_MAX_STDOUT_BYTES", default_value_t = 16 << 20)]
    pub max_stdout_bytes: u64,
    /// Default bytes of stderr kept (the rest is dropped, `stderr_truncated` is set).
    #[arg(long, env = "PYEXEC_STDERR_BYTES", default_value_t = 1 << 20)]
    pub stderr_bytes: u64,
    /// Largest stderr cap a request may ask for, in bytes.
    #[arg(long, env = "PYEXEC_MAX_STDERR_BYTES", default_value_t = 16 << 20)]
    pub max_stderr_bytes: u64,
    /// Default largest result (main()'s dict as JSON), in bytes.
    #[arg(long, env = "PYEXEC_RESULT_BYTES", default_value_t = 4 << 20)]
    pub result_bytes: u64,
    /// Largest result cap a request may ask for, in bytes.
    #[arg(long, env = "PYEXEC_MAX_RESULT_BYTES", default_value_t = 64 << 20)]
    pub max_result_bytes: u64,
    /// Default bytes of output files returned in all (the files of the output folder past it
    /// are left out, named in `files_omitted`, and `files_truncated` is set).
    #[arg(long, env = "PYEXEC_OUTPUT_FILES_BYTES", default_value_t = 8 << 20)]
    pub output_files_bytes: u64,
    /// Largest output-files cap a request may ask for, in bytes.
    #[arg(long, env = "PYEXEC_MAX_OUTPUT_FILES_BYTES", default_value_t = 64 << 20)]
    pub max_output_files_bytes: u64,
}

/// Why a request's limits were refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitError {
    #[error("limits.{name} must be at least {min}, got {got}")]
    TooSmall { name: &'static str, min: String, got: String },
    #[error("limits.{name} may be at most {max} on this server, got {got}")]
    TooLarge { name: &'static str, max: String, got: String },
}

impl LimitSettings {
    /// The limits for one run: each requested value, or the default; a value above the maximum
    /// is refused, not lowered.
    pub fn resolve(&self, requested: &RequestedLimits) -> Result<Limits, LimitError> {
        let timeout =
            pick_f64("timeout_seconds", requested.timeout_seconds, self.timeout_seconds, self.max_timeout_seconds)?;
        Ok(Limits {
            timeout_ms: (timeout * 1000.0).round() as u64,
            cpu_seconds: pick("cpu_seconds", requested.cpu_seconds, self.cpu_seconds, self.max_cpu_seconds)?,
            memory_mb: pick("memory_mb", requested.memory_mb, self.memory_mb, self.max_memory_mb)?,
            max_pids: pick("max_pids", requested.max_pids, self.max_pids, self.max_max_pids)?,
            tmp_mb: pick("tmp_mb", requested.tmp_mb, self.tmp_mb, self.max_tmp_mb)?,
            file_size_mb: pick("file_size_mb", requested.file_size_mb, self.file_size_mb, self.max_file_size_mb)?,
            open_files: pick("open_files", requested.open_files, self.open_files, self.max_open_files)?,
            stdout_bytes: pick("stdout_bytes", requested.stdout_bytes, self.stdout_bytes, self.max_stdout_bytes)?,
            stderr_bytes: pick("stderr_bytes", requested.stderr_bytes, self.stderr_bytes, self.max_stderr_bytes)?,
            result_bytes: pick("result_bytes", requested.result_bytes, self.result_bytes, self.max_result_bytes)?,
            output_files_bytes: pick(
                "output_files_bytes",
                requested.output_files_bytes,
                self.output_files_bytes,
                self.max_output_files_bytes,
            )?,
        })
    }

    /// The server's defaults, as a run with no requested limits gets them.
    pub fn defaults(&self) -> Result<Limits, LimitError> {
        self.resolve(&RequestedLimits::default())
    }
}

fn pick(name: &'static str, requested: Option<u64>, default: u64, max: u64) -> Result<u64, LimitError> {
    let value = requested.unwrap_or(default);
    if value == 0 {
        return Err(LimitError::TooSmall { name, min: "1".into(), got: value.to_string() });
    }
    if value > max {
        return Err(LimitError::TooLarge { name, max: max.to_string(), got: value.to_string() });
    }
    Ok(value)
}

fn pick_f64(name: &'static str, requested: Option<f64>, default: f64, max: f64) -> Result<f64, LimitError> {
    let value = requested.unwrap_or(default);
    // A millisecond is the finest timeout the supervisor keeps.
    if !value.is_finite() || value < 0.001 {
        return Err(LimitError::TooSmall { name, min: "0.001".into(), got: value.to_string() });
    }
    if value > max {
        return Err(LimitError::TooLarge { name, max: max.to_string(), got: value.to_string() });
    }
    Ok(value)
}

/// Fixtures for unit tests across the crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        limits: LimitSettings,
    }

    /// The settings with every default, as `pyexec serve` with no flags has them.
    pub(crate) fn settings() -> LimitSettings {
        Wrapper::parse_from(["test"]).limits
    }

    /// The limits a job gets when it asks for none, under the default settings.
    pub(crate) fn default_limits() -> Limits {
        settings().defaults().expect("the default limits are valid")
    }

    /// Small, distinct limits, easy to recognise in command lines.
    pub(crate) fn small_limits() -> Limits {
        Limits {
            timeout_ms: 2500,
            cpu_seconds: 5,
            memory_mb: 256,
            max_pids: 32,
            tmp_mb: 8,
            file_size_mb: 4,
            open_files: 64,
            stdout_bytes: 1024,
            stderr_bytes: 1024,
            result_bytes: 1024,
            output_files_bytes: 2048,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::settings;
    use super::*;

    #[test]
    fn no_request_gives_the_defaults() {
        let limits = settings().defaults().expect("defaults are valid");
        assert_eq!(limits.timeout_ms, 10_000);
        assert_eq!(limits.memory_mb, 512);
        assert_eq!(limits.max_pids, 64);
    }

    #[test]
    fn a_request_may_ask_for_less() {
        let requested = RequestedLimits { timeout_seconds: Some(0.5), memory_mb: Some(128), ..Default::default() };
        let limits = settings().resolve(&requested).expect("valid");
        assert_eq!(limits.timeout_ms, 500);
        assert_eq!(limits.memory_mb, 128);
    }

    #[test]
    fn a_request_may_not_ask_for_more_than_the_maximum() {
        let requested = RequestedLimits { memory_mb: Some(1 << 20), ..Default::default() };
        let err = settings().resolve(&requested).expect_err("too large");
        assert_eq!(err.to_string(), "limits.memory_mb may be at most 4096 on this server, got 1048576");
    }

    #[test]
    fn limits_resolve_back_to_themselves_through_their_request() {
        let settings = settings();
        let limits = super::testing::small_limits();
        assert_eq!(settings.resolve(&limits.requested()), Ok(limits));
        let defaults = settings.defaults().expect("valid");
        assert_eq!(settings.resolve(&defaults.requested()), Ok(defaults));
    }

    #[test]
    fn the_http_spelling_and_the_kubernetes_spelling_read_alike() {
        let snake: RequestedLimits =
            serde_json::from_str(r#"{"timeout_seconds": 2.5, "memory_mb": 64}"#).expect("snake_case");
        let camel: RequestedLimits =
            serde_json::from_str(r#"{"timeoutSeconds": 2.5, "memoryMb": 64}"#).expect("camelCase");
        assert_eq!(snake, camel);
        assert_eq!(snake.memory_mb, Some(64));
        assert!(serde_json::from_str::<RequestedLimits>(r#"{"memory": 64}"#).is_err(), "unknown names are refused");
    }

    #[test]
    fn zero_and_non_finite_values_are_refused() {
        let zero = RequestedLimits { max_pids: Some(0), ..Default::default() };
        assert!(matches!(settings().resolve(&zero), Err(LimitError::TooSmall { .. })));
        let nan = RequestedLimits { timeout_seconds: Some(f64::NAN), ..Default::default() };
        assert!(matches!(settings().resolve(&nan), Err(LimitError::TooSmall { .. })));
    }
}
