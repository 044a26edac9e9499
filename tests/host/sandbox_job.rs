//! `pyexec sandbox --job-on-stdin` reads its work as one job document on stdin, the way a sandbox
//! pod gets it: the script arrives byte for byte and runs under the job's limits, not the
//! settings' defaults. (tests/host/sandbox_stdin.rs covers the waiting itself.)

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use pyexec::sandbox::{Job, Limits};
use serde_json::Value;

fn limits() -> Limits {
    Limits {
        timeout_ms: 5000,
        cpu_seconds: 5,
        memory_mb: 256,
        max_pids: 16,
        tmp_mb: 8,
        file_size_mb: 1,
        open_files: 64,
        // The settings' default is 1 MiB: a cut at 10 bytes can only come from the job.
        stdout_bytes: 10,
        stderr_bytes: 1000,
        result_bytes: 1000,
        output_files_bytes: 1000,
    }
}

const SCRIPT: &str = "def main():\n    print('x' * 100)\n    return {'text': '$(HOME) $$ $$(X) $'}\n";

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Runs `pyexec sandbox` with a cgroup parent of its own (tests run at once, and only the run
/// that created a parent removes it), and checks that the parent is gone afterwards.
fn sandbox(stdin: &[u8]) -> Output {
    let parent = format!("pyexec-test-job-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::SeqCst));
    let mut command = common::pyexec("sandbox");
    command
        .args(["--cgroup-parent", &parent])
        .env("PYEXEC_LOG", "warn")
        .env("PYEXEC_JOB_ON_STDIN", "true")
        .env("PYEXEC_PRELOAD_MODULES", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run pyexec sandbox");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write the job");
    drop(input);
    let output = child.wait_with_output().expect("wait for pyexec sandbox");
    for hierarchy in ["", "memory", "pids"] {
        let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(&parent);
        assert!(!dir.exists(), "pyexec sandbox left its cgroup {} behind", dir.display());
    }
    output
}

fn envelope(output: &Output) -> Value {
    assert!(output.status.success(), "pyexec sandbox failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one envelope as JSON")
}

fn assert_ran_under_the_job(envelope: &Value) {
    assert_eq!(envelope["outcome"], "success", "{envelope}");
    assert_eq!(envelope["result"]["text"], "$(HOME) $$ $$(X) $", "the script arrived byte for byte");
    assert_eq!(envelope["stdout"], "x".repeat(10), "the job's stdout limit applied");
    assert_eq!(envelope["stdout_truncated"], true);
}

#[test]
fn a_job_on_stdin_runs_under_its_own_limits() {
    let job = serde_json::to_vec(&Job::new(SCRIPT, limits())).expect("json");
    assert_ran_under_the_job(&envelope(&sandbox(&job)));
}

#[test]
fn a_document_that_is_not_a_job_is_refused_with_its_cause() {
    let output = sandbox(br#"{"script": "def main(): return {}"}"#);
    assert_eq!(output.status.code(), Some(i32::from(pyexec::sandbox::INVALID_JOB_EXIT_CODE)));
    let envelope: Value = serde_json::from_slice(&output.stdout).expect("one envelope as JSON");
    assert_eq!(envelope["outcome"], "sandbox_failure");
    let error = envelope["error"].as_str().unwrap_or_default();
    assert!(error.contains("not a job"), "{error}");
    assert!(error.contains("missing field `limits`"), "the serde cause is kept: {error}");
}
