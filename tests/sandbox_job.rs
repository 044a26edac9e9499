//! `pyexec sandbox` reads its work as one job document, the way a sandbox pod hands it over:
//! the script arrives byte for byte and runs under the job's limits, not the settings' defaults.

mod common;

use std::path::Path;
use std::process::{Command, Output};
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
    }
}

const SCRIPT: &str = "def main():\n    print('x' * 100)\n    return {'text': '$(HOME) $$ $$(X) $'}\n";

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Runs `pyexec sandbox` with a cgroup parent of its own (tests run at once, and only the run
/// that created a parent removes it), and checks that the parent is gone afterwards.
fn sandbox(configure: impl FnOnce(&mut Command)) -> Output {
    let repo = common::repo();
    let tools = repo.join(".tools");
    let parent = format!("pyexec-test-job-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::SeqCst));
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
    command
        .arg("sandbox")
        .args(["--cgroup-parent", &parent])
        .current_dir(&repo)
        .env("PYEXEC_NSJAIL", tools.join("nsjail/bin/nsjail"))
        .env("PYEXEC_NSJAIL_CONFIG", repo.join("nsjail.cfg"))
        .env("PYEXEC_PYTHON_ENV", tools.join("python"))
        .env("PYEXEC_LOG", "warn");
    configure(&mut command);
    let output = command.output().expect("run pyexec sandbox");
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
fn a_job_in_the_environment_runs_under_its_own_limits() {
    let job = serde_json::to_string(&Job { script: SCRIPT.into(), limits: limits() }).expect("json");
    let output = sandbox(|c| {
        c.env("PYEXEC_JOB", &job);
    });
    assert_ran_under_the_job(&envelope(&output));
}

#[test]
fn a_job_in_a_file_runs_under_its_own_limits() {
    let dir = std::env::temp_dir().join(format!("pyexec-job-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("job.json");
    let job = Job { script: SCRIPT.into(), limits: limits() };
    std::fs::write(&file, serde_json::to_vec(&job).expect("json")).expect("write the job");
    let output = sandbox(|c| {
        c.arg("--job-file").arg(&file);
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_ran_under_the_job(&envelope(&output));
}

#[test]
fn a_document_that_is_not_a_job_is_refused_with_its_cause() {
    let output = sandbox(|c| {
        c.env("PYEXEC_JOB", r#"{"script": "def main(): return {}"}"#);
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the job document is not a job"), "{stderr}");
    assert!(stderr.contains("missing field `limits`"), "the serde cause is kept: {stderr}");
}
