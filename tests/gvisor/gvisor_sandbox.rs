//! The sandbox inside gVisor: what `hack/gvisor/sandbox-in-gvisor.sh` recorded when it ran the
//! real `pyexec sandbox --isolation gvisor` in runsc, read into the real `Envelope` and `Job`
//! types. Each case ran twice: `<case>` with the script in the pod's environment (the cold
//! path), `stdin_<case>` with `--job-on-stdin` (the ready sandbox, the job written to stdin after
//! the readiness line).
//!
//! Only `make gvisor-test` runs this file (it needs root and runsc): the target records the runs
//! into a directory, then runs `cargo test --test gvisor_sandbox` with PYEXEC_GVISOR_RESULTS set
//! to it. Cargo.toml declares it with `test = false`, so `cargo test` and `cargo test --tests`
//! leave it out rather than report it ignored; named explicitly without the variable, every test
//! fails saying so.

use std::path::PathBuf;

use clap::Parser;
use pyexec::sandbox::{Envelope, Job, LimitSettings, Limits, Outcome, NO_JOB_EXIT_CODE, NO_JOB_MESSAGE, READY_MARKER};
use serde_json::{json, Map, Value};

const RESULTS: &str = "PYEXEC_GVISOR_RESULTS";

/// What one `runsc run` left.
struct Run {
    name: String,
    stdout: String,
    stderr: String,
    exit_code: i32,
    termination_message: String,
    dir: PathBuf,
}

fn recorded(name: &str) -> Run {
    let Some(results) = std::env::var_os(RESULTS) else {
        panic!("{RESULTS} is not set: this test checks the runs hack/gvisor/sandbox-in-gvisor.sh records; run `make gvisor-test`")
    };
    let dir = PathBuf::from(results).join(name);
    assert!(
        dir.is_dir(),
        "{name} was not recorded in {} (make gvisor-test GVISOR_CASES=... runs a subset)",
        dir.display()
    );
    let read =
        |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{name}: reading {file}: {e}"));
    let exit_code = read("exit_code").trim().parse().unwrap_or_else(|e| panic!("{name}: exit_code: {e}"));
    Run {
        name: name.to_string(),
        stdout: read("stdout"),
        stderr: read("stderr"),
        exit_code,
        termination_message: read("termination_message"),
        dir,
    }
}

impl Run {
    /// The one envelope on stdout; the run ended with code 0 and wrote its summary as the
    /// termination message.
    fn envelope(&self) -> Envelope {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: one envelope line on stdout, got {:?}\n{}",
            self.name,
            self.stdout,
            self.tail()
        );
        let envelope: Envelope = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("{}: not an envelope ({e}): {}", self.name, lines[0]));
        assert_eq!(self.exit_code, 0, "{}: exit code\n{}", self.name, self.tail());
        let summary = format!(
            "{} returncode={} duration_ms={}",
            envelope.outcome.as_str(),
            envelope.returncode,
            envelope.duration_ms
        );
        assert_eq!(self.termination_message, summary, "{}: termination message", self.name);
        envelope
    }

    /// main()'s dict.
    fn result(&self, envelope: &Envelope) -> Map<String, Value> {
        let result = envelope.result.as_ref().unwrap_or_else(|| panic!("{}: no result: {envelope:?}", self.name));
        result.to_map().unwrap_or_else(|| panic!("{}: the result is not an object", self.name))
    }

    /// The last lines of stderr, for failure messages.
    fn tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        format!("stderr (last lines):\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
    }

    /// The job sent on stdin, as the `Job` type reads it.
    fn job(&self) -> Job {
        let text = std::fs::read_to_string(self.dir.join("job.json")).expect("job.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: job.json is not a Job: {e}", self.name))
    }

    /// The supervisor's readiness line came on stderr (the runner sends the job only after it).
    fn assert_announced_ready(&self) {
        assert!(
            self.stderr.lines().any(|line| line == READY_MARKER),
            "{}: no readiness line\n{}",
            self.name,
            self.tail()
        );
    }

    /// How the job started, from the supervisor's log: "warm" or "cold".
    fn start(&self) -> Option<&str> {
        ["warm", "cold"].into_iter().find(|start| self.stderr.contains(&format!("start=\"{start}\"")))
    }
}

/// The limits the binary gives a run that asks for none, which a pod without limit settings
/// starts its ready sandbox with.
fn defaults() -> Limits {
    #[derive(Parser)]
    struct Settings {
        #[command(flatten)]
        limits: LimitSettings,
    }
    Settings::parse_from(["pyexec"]).limits.defaults().expect("valid defaults")
}

/// The cold run of `name`: its envelope.
fn cold(name: &str) -> (Run, Envelope) {
    let run = recorded(name);
    let envelope = run.envelope();
    (run, envelope)
}

/// `stdin_<name>`: announced ready, ran `expected` limits (the job's), in the ready sandbox.
fn warm(name: &str, expected: Limits) -> (Run, Envelope) {
    let run = recorded(&format!("stdin_{name}"));
    run.assert_announced_ready();
    assert_eq!(run.job().limits, expected, "{}: the job's limits", run.name);
    let envelope = run.envelope();
    assert_eq!(run.start(), Some("warm"), "{}: ran in the ready sandbox\n{}", run.name, run.tail());
    (run, envelope)
}

fn assert_hello(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    assert_eq!(Value::Object(run.result(envelope)), json!({"hello": "world"}), "{}", run.name);
    assert_eq!(envelope.stdout, "hello from main\n", "{}", run.name);
    assert_eq!(envelope.returncode, 0, "{}", run.name);
}

#[test]
fn hello() {
    let (run, envelope) = cold("hello");
    assert_hello(&run, &envelope);
}

#[test]
fn stdin_hello() {
    let (run, envelope) = warm("hello", defaults());
    assert_hello(&run, &envelope);
}

fn assert_pandas(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    assert_eq!(Value::Object(run.result(envelope)), json!({"sum": 6}), "{}", run.name);
}

#[test]
fn pandas() {
    let (run, envelope) = cold("pandas");
    assert_pandas(&run, &envelope);
}

#[test]
fn stdin_pandas() {
    let (run, envelope) = warm("pandas", defaults());
    assert_pandas(&run, &envelope);
}

/// No connection succeeds or hangs, and loopback is the only interface.
fn assert_no_network(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    let result = run.result(envelope);
    let loopback = result["loopback"].as_str().expect("loopback: a string");
    assert_ne!(loopback, "connected", "{}", run.name);
    assert!(!loopback.contains("timed out"), "{}: {loopback}", run.name);
    assert_eq!(result["interfaces"], "lo", "{}", run.name);
}

#[test]
fn network() {
    let (run, envelope) = cold("network");
    assert_no_network(&run, &envelope);
}

#[test]
fn stdin_network() {
    let (run, envelope) = warm("network", Limits { timeout_ms: 10_000, ..defaults() });
    assert_no_network(&run, &envelope);
}

/// /tmp is writable, nothing else is.
fn assert_read_only(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    let mut result = run.result(envelope);
    assert_eq!(result.remove("/tmp/ok"), Some(json!("written")), "{}", run.name);
    assert!(!result.is_empty(), "{}", run.name);
    for (path, outcome) in &result {
        assert_ne!(outcome, "written", "{}: {path} was written", run.name);
    }
}

#[test]
fn readonly() {
    let (run, envelope) = cold("readonly");
    assert_read_only(&run, &envelope);
}

#[test]
fn stdin_readonly() {
    let (run, envelope) = warm("readonly", defaults());
    assert_read_only(&run, &envelope);
}

/// Only nsjail-gvisor.cfg's fixed variables: no secret, no setting of the supervisor's.
fn assert_clean_environment(run: &Run, envelope: &Envelope) {
    const ALLOWED: [&str; 14] = [
        "LANG",
        "LC_ALL",
        "PYTHONIOENCODING",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "HOME",
        "TMPDIR",
        "PATH",
        "MPLCONFIGDIR",
        "MPLBACKEND",
    ];
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    let result = run.result(envelope);
    assert!(!result.contains_key("SECRET_TOKEN"), "{}", run.name);
    for name in result.keys() {
        assert!(!name.starts_with("PYEXEC"), "{}: {name}", run.name);
        assert!(ALLOWED.contains(&name.as_str()), "{}: unexpected variable {name}", run.name);
    }
}

#[test]
fn environment() {
    let (run, envelope) = cold("environment");
    assert_clean_environment(&run, &envelope);
}

#[test]
fn stdin_environment() {
    let (run, envelope) = warm("environment", defaults());
    assert_clean_environment(&run, &envelope);
}

/// A memory bomb ends with a clear memory outcome, stopped by the job's 256 MiB (the script
/// prints the MiB it holds after each 16 MiB; a ready sandbox was started with 512).
fn assert_memory_limit(run: &Run, envelope: &Envelope) {
    let error = envelope.error.as_deref().unwrap_or_default();
    let clear = (envelope.outcome == Outcome::MemoryLimit && error.starts_with("Memory limit of 256 MiB exceeded"))
        || (envelope.outcome == Outcome::Exception && error.starts_with("MemoryError"));
    assert!(clear, "{}: no clear memory outcome: {envelope:?}", run.name);
    let held: u64 = envelope.stdout.lines().last().and_then(|line| line.trim().parse().ok()).unwrap_or(0);
    assert!(held < 256, "{}: held {held} MiB under a 256 MiB limit", run.name);
}

#[test]
fn memory() {
    let (run, envelope) = cold("memory");
    assert_memory_limit(&run, &envelope);
}

#[test]
fn stdin_memory() {
    let (run, envelope) = warm("memory", Limits { memory_mb: 256, ..defaults() });
    assert_memory_limit(&run, &envelope);
}

/// The supervisor's 1 s deadline ends the loop, well before nsjail's own time limit.
fn assert_timeout(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Timeout, "{}: {envelope:?}", run.name);
    assert_eq!(envelope.error.as_deref(), Some("Execution timed out after 1 s (wall-clock limit)"), "{}", run.name);
    assert!(envelope.duration_ms < 1900, "{}: no timeout within 1.9 s: {} ms", run.name, envelope.duration_ms);
}

#[test]
fn timeout() {
    let (run, envelope) = cold("timeout");
    assert_timeout(&run, &envelope);
}

#[test]
fn stdin_timeout() {
    let (run, envelope) = warm("timeout", Limits { timeout_ms: 1000, ..defaults() });
    assert_timeout(&run, &envelope);
}

fn assert_nobody(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    let expected = json!({"uid": 65534, "euid": 65534, "gid": 65534, "groups": []});
    assert_eq!(Value::Object(run.result(envelope)), expected, "{}: not uid/gid 65534 without groups", run.name);
}

#[test]
fn identity() {
    let (run, envelope) = cold("identity");
    assert_nobody(&run, &envelope);
}

#[test]
fn stdin_identity() {
    let (run, envelope) = warm("identity", defaults());
    assert_nobody(&run, &envelope);
}

/// Each call the seccomp policy denies is refused with its errno; unix sockets still work.
fn assert_seccomp(run: &Run, envelope: &Envelope) {
    assert_eq!(envelope.outcome, Outcome::Success, "{}: {envelope:?}", run.name);
    let expected = json!({"unshare": 1, "clone3": 38, "personality": 1, "netlink": 1, "alg": 1, "unix": 0});
    assert_eq!(Value::Object(run.result(envelope)), expected, "{}", run.name);
}

#[test]
fn seccomp() {
    let (run, envelope) = cold("seccomp");
    assert_seccomp(&run, &envelope);
}

#[test]
fn stdin_seccomp() {
    let (run, envelope) = warm("seccomp", defaults());
    assert_seccomp(&run, &envelope);
}

#[test]
fn stdin_bytes() {
    let (run, envelope) = warm("bytes", defaults());
    assert_eq!(envelope.outcome, Outcome::Success, "{envelope:?}");
    let result = run.result(&envelope);
    assert_eq!(result["text"], "$ $$ $(HOME) $$(HOME) ${HOME} é ✓ 日本語 🐍", "byte for byte");
    assert_eq!(result["warm"], true, "pandas was imported before the script started");
}

#[test]
fn stdin_above_ready() {
    let run = recorded("stdin_above_ready");
    run.assert_announced_ready();
    assert_eq!(run.job().limits, Limits { memory_mb: 768, ..defaults() });
    let envelope = run.envelope();
    assert_eq!(run.start(), Some("cold"), "RLIMIT_AS cannot be raised: the job starts its own sandbox\n{}", run.tail());
    assert_eq!(envelope.outcome, Outcome::Success, "{envelope:?}");
    assert_eq!(run.result(&envelope)["warm"], false);
}

#[test]
fn stdin_no_job() {
    let run = recorded("stdin_no_job");
    run.assert_announced_ready();
    assert_eq!(run.exit_code, i32::from(NO_JOB_EXIT_CODE), "{}", run.tail());
    assert_eq!(run.stdout, "", "no envelope when no job came");
    assert_eq!(run.termination_message, NO_JOB_MESSAGE);
}

#[test]
fn the_runner_waits_for_the_supervisors_own_readiness_line() {
    let runner = include_str!("../../hack/gvisor/sandbox-in-gvisor.sh");
    assert!(runner.contains(&format!("READY_MARKER=\"{READY_MARKER}\"")), "hack/gvisor/sandbox-in-gvisor.sh");
}
