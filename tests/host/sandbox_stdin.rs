//! `pyexec sandbox --job-on-stdin`, as a sandbox pod started ahead runs it: it prepares a ready
//! sandbox, says so on stderr, and only then reads its one job from stdin. Real binary, real
//! nsjail and Python; the pipes are the test's.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use pyexec::sandbox::{
    Envelope, Job, Limits, Outcome, INVALID_JOB_EXIT_CODE, MAX_JOB_BYTES, NO_JOB_EXIT_CODE, NO_JOB_MESSAGE,
    READY_MARKER,
};

/// Importing numpy and pandas takes a few hundred milliseconds; a loaded CI machine, longer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every job here ends within its 10 s timeout; past this the command hangs.
const END_TIMEOUT: Duration = Duration::from_secs(60);

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// The settings' defaults (`pyexec sandbox --help`), which the ready sandbox starts with.
fn defaults() -> Limits {
    Limits {
        timeout_ms: 10_000,
        cpu_seconds: 10,
        memory_mb: 512,
        max_pids: 64,
        tmp_mb: 64,
        file_size_mb: 16,
        open_files: 256,
        stdout_bytes: 1 << 20,
        stderr_bytes: 1 << 20,
        result_bytes: 4 << 20,
        output_files_bytes: 8 << 20,
    }
}

fn job(script: &str, limits: Limits) -> Vec<u8> {
    serde_json::to_vec(&Job::new(script, limits)).expect("a job as JSON")
}

/// A `pyexec sandbox --job-on-stdin` that has written its readiness marker and waits.
struct Waiting {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Receiver<String>,
    /// stderr up to and including the marker.
    before_marker: Vec<String>,
    cgroup_parent: String,
    termination_log: PathBuf,
    /// nsjail and the interpreter of the ready sandbox, from its cgroup, while it waits.
    ready_pids: Vec<i32>,
}

/// What the command left when it ended.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    termination_message: Option<String>,
}

impl Finished {
    fn envelope(&self) -> Envelope {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one envelope line on stdout: {:?}\nstderr: {}", self.stdout, self.stderr);
        serde_json::from_str(lines[0]).expect("the envelope")
    }
}

/// Starts the command and waits for the marker, writing nothing to its stdin.
fn start(configure: impl FnOnce(&mut Command)) -> Waiting {
    let n = RUNS.fetch_add(1, Ordering::SeqCst);
    let cgroup_parent = format!("pyexec-test-stdin-{}-{n}", std::process::id());
    let termination_log = std::env::temp_dir().join(format!("{cgroup_parent}.termination"));
    let _ = std::fs::remove_file(&termination_log);
    let mut command = common::pyexec("sandbox");
    command
        .args(["--job-on-stdin", "--cgroup-parent", &cgroup_parent])
        .arg("--termination-log")
        .arg(&termination_log)
        .env("PYEXEC_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().expect("start pyexec sandbox --job-on-stdin");
    let stdin = child.stdin.take();
    let stderr = child.stderr.take().expect("stderr");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut before_marker = Vec::new();
    loop {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let marker = line == READY_MARKER;
                before_marker.push(line);
                if marker {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => panic!("no readiness marker within {READY_TIMEOUT:?}: {before_marker:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("stderr ended without the readiness marker ({:?}): {before_marker:?}", child.wait())
            }
        }
    }
    let mut ready_pids: Vec<i32> =
        ready_cgroups(&cgroup_parent).iter().flat_map(|dir| common::cgroup_pids(dir)).collect();
    // cgroup v1 lists them in the memory and the pids hierarchy.
    ready_pids.sort_unstable();
    ready_pids.dedup();
    Waiting { child, stdin, stderr: receiver, before_marker, cgroup_parent, termination_log, ready_pids }
}

/// The `ready-<pid>-<n>` cgroups under `parent`, in every hierarchy.
fn ready_cgroups(parent: &str) -> Vec<String> {
    let mut found = Vec::new();
    for hierarchy in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
        for entry in std::fs::read_dir(Path::new(hierarchy).join(parent)).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("ready-") {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

impl Waiting {
    /// Writes `bytes`, closes stdin, and waits for the end.
    fn deliver(mut self, bytes: &[u8]) -> Finished {
        let mut stdin = self.stdin.take().expect("stdin");
        // The command may stop reading (a job over the limit); what it did read is what counts.
        let _ = stdin.write_all(bytes);
        drop(stdin);
        self.finish()
    }

    /// Closes stdin without a byte.
    fn close(mut self) -> Finished {
        drop(self.stdin.take());
        self.finish()
    }

    fn finish(mut self) -> Finished {
        let mut pipe = self.child.stdout.take().expect("stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = String::new();
            let _ = sender.send(pipe.read_to_string(&mut stdout).map(|_| stdout));
        });
        // stdout ends when the command does.
        let stdout = match receiver.recv_timeout(END_TIMEOUT) {
            Ok(read) => read.expect("read stdout"),
            Err(_) => {
                let _ = self.child.kill();
                panic!("pyexec sandbox did not end within {END_TIMEOUT:?}");
            }
        };
        let status = self.child.wait().expect("wait for pyexec");
        let mut stderr = self.before_marker.join("\n");
        for line in self.stderr.iter() {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        let termination_message = std::fs::read_to_string(&self.termination_log).ok();
        let _ = std::fs::remove_file(&self.termination_log);
        for pid in &self.ready_pids {
            assert!(!common::alive(*pid), "process {pid} of the ready sandbox outlived the command");
        }
        for hierarchy in ["", "memory", "pids"] {
            let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(&self.cgroup_parent);
            assert!(!dir.exists(), "the command left its cgroup {} behind", dir.display());
        }
        Finished { status, stdout, stderr, termination_message }
    }
}

#[test]
fn the_marker_comes_with_the_sandbox_prepared_before_any_job_and_the_job_then_runs_in_it() {
    let waiting = start(|_| {});
    assert_eq!(waiting.before_marker.last().map(String::as_str), Some(READY_MARKER));
    // nsjail and the interpreter that imported the preloaded modules, waiting in their cgroup.
    assert_eq!(waiting.ready_pids.len(), 2, "a ready sandbox before the job: {:?}", waiting.ready_pids);
    let script =
        "import sys\ndef main():\n    print('hi')\n    return {'answer': 42, 'warm': 'pandas' in sys.modules}\n";
    let finished = waiting.deliver(&job(script, defaults()));
    assert!(finished.status.success(), "{:?}: {}", finished.status, finished.stderr);
    let envelope = finished.envelope();
    assert_eq!(envelope.outcome, Outcome::Success, "{}", finished.stderr);
    let result: serde_json::Value =
        serde_json::from_str(envelope.result.expect("a result").json().get()).expect("json");
    assert_eq!(result, serde_json::json!({"answer": 42, "warm": true}));
    assert_eq!(envelope.stdout, "hi\n");
    let message = finished.termination_message.expect("a termination message");
    assert!(message.starts_with("success returncode=0 "), "{message}");
}

#[test]
fn logs_on_a_pipe_carry_no_terminal_colour_codes() {
    let finished = start(|_| {}).deliver(&job("def main():\n    return {}\n", defaults()));
    assert!(finished.stderr.contains("INFO"), "the run logged at info: {}", finished.stderr);
    assert!(!finished.stderr.contains("\x1b["), "colour codes on a pipe: {:?}", finished.stderr);

    let repo = common::repo();
    let plain = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["sandbox", "--isolation", "gvisor", "--script", "def main():\n    return {}\n"])
        .current_dir(&repo)
        .env("PYEXEC_LOG", "info")
        .output()
        .expect("run pyexec sandbox");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("ERROR"), "the refusal is logged: {stderr}");
    assert!(!stderr.contains("\x1b["), "colour codes on a pipe: {stderr:?}");
}

#[test]
fn a_script_with_dollars_and_non_ascii_arrives_byte_for_byte() {
    let text = "$ $$ $(HOME) $$(HOME) ${HOME} é ✓ 日本語 🐍 \\n \"quoted\"";
    let script =
        format!("TEXT = {}\ndef main():\n    return {{'text': TEXT}}\n", serde_json::to_string(text).expect("literal"));
    let finished = start(|_| {}).deliver(&job(&script, defaults()));
    let envelope = finished.envelope();
    assert_eq!(envelope.outcome, Outcome::Success, "{}", finished.stderr);
    let result: serde_json::Value =
        serde_json::from_str(envelope.result.expect("a result").json().get()).expect("json");
    assert_eq!(result["text"], text);
}

#[test]
fn the_preloaded_modules_are_imported_before_the_script_starts_and_only_those() {
    let script =
        "import sys\ndef main():\n    return {'pandas': 'pandas' in sys.modules, 'numpy': 'numpy' in sys.modules}\n";
    let with_default = start(|_| {}).deliver(&job(script, defaults())).envelope();
    let result = with_default.result.expect("a result");
    assert_eq!(result.json().get(), r#"{"pandas":true,"numpy":true}"#);

    let without = start(|c| {
        c.arg("--preload-modules=");
    })
    .deliver(&job(script, defaults()))
    .envelope();
    assert_eq!(without.result.expect("a result").json().get(), r#"{"pandas":false,"numpy":false}"#);

    let numpy_only = start(|c| {
        c.env("PYEXEC_PRELOAD_MODULES", "numpy");
    })
    .deliver(&job(script, defaults()))
    .envelope();
    assert_eq!(numpy_only.result.expect("a result").json().get(), r#"{"pandas":false,"numpy":true}"#);
}

#[test]
fn end_of_stdin_without_a_byte_is_no_job_and_leaves_nothing_behind() {
    let waiting = start(|_| {});
    assert_eq!(waiting.ready_pids.len(), 2, "{:?}", waiting.ready_pids);
    // `finish` checks that these processes and the cgroups are gone.
    let finished = waiting.close();
    assert_eq!(finished.status.code(), Some(i32::from(NO_JOB_EXIT_CODE)), "{}", finished.stderr);
    assert_eq!(finished.stdout, "", "no envelope when no job came");
    assert_eq!(finished.termination_message.as_deref(), Some(NO_JOB_MESSAGE));
}

#[test]
fn sigterm_while_waiting_is_no_job_too() {
    let waiting = start(|_| {});
    let pid = nix::unistd::Pid::from_raw(waiting.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // stdin stays open: only the signal ends the wait.
    let mut waiting = waiting;
    let stdin = waiting.stdin.take();
    let finished = waiting.finish();
    drop(stdin);
    assert_eq!(finished.status.code(), Some(i32::from(NO_JOB_EXIT_CODE)), "{}", finished.stderr);
    assert_eq!(finished.stdout, "");
    assert_eq!(finished.termination_message.as_deref(), Some(NO_JOB_MESSAGE));
}

#[test]
fn a_200_kb_script_runs() {
    let data = "0123456789".repeat(20_000);
    let script = format!("DATA = '{data}'\ndef main():\n    return {{'length': len(DATA)}}\n");
    assert!(script.len() > 200_000);
    let finished = start(|_| {}).deliver(&job(&script, defaults()));
    let envelope = finished.envelope();
    assert_eq!(envelope.outcome, Outcome::Success, "{}", finished.stderr);
    assert_eq!(envelope.result.expect("a result").json().get(), r#"{"length":200000}"#);
}

#[test]
fn the_jobs_memory_limit_holds_in_the_ready_sandbox() {
    let script = "import sys\ndef main():\n    print('warm', 'numpy' in sys.modules)\n    hog = []\n    while True:\n        hog.append(bytearray(8 << 20))\n";
    let limits = Limits { memory_mb: 200, ..defaults() };
    let finished = start(|_| {}).deliver(&job(script, limits));
    let envelope = finished.envelope();
    assert_eq!(envelope.stdout, "warm True\n", "ran in the ready sandbox: {}", finished.stderr);
    assert_eq!(envelope.outcome, Outcome::MemoryLimit, "{envelope:?}");
    assert!(
        envelope.error.as_deref().is_some_and(|e| e.starts_with("Memory limit of 200 MiB exceeded")),
        "{envelope:?}"
    );
}

#[test]
fn without_cgroups_the_ready_sandbox_lowers_its_own_memory_limit_to_the_jobs() {
    // As inside gVisor: the ready jail starts with the default 512 MiB as RLIMIT_AS and the
    // harness lowers it to the job's when the job arrives.
    let script = "import sys\ndef main():\n    print('warm', 'numpy' in sys.modules, flush=True)\n    hog = []\n    while True:\n        hog.append(bytearray(8 << 20))\n        print(len(hog) * 8, flush=True)\n";
    let limits = Limits { memory_mb: 300, ..defaults() };
    let finished = start(|c| {
        c.args(["--cgroups", "off"]);
    })
    .deliver(&job(script, limits));
    let envelope = finished.envelope();
    let mut lines = envelope.stdout.lines();
    assert_eq!(lines.next(), Some("warm True"), "ran in the ready sandbox: {}", finished.stderr);
    let held: u64 = lines.last().and_then(|line| line.parse().ok()).unwrap_or(0);
    assert!(held > 0 && held < 300, "held {held} MiB under a 300 MiB limit: {envelope:?}");
    // RLIMIT_AS is the only memory bound: the MemoryError it raised is the memory limit.
    assert_eq!(envelope.outcome, Outcome::MemoryLimit, "{envelope:?}");
    assert_eq!(envelope.error.as_deref(), Some("Memory limit of 300 MiB exceeded (MemoryError)"), "{envelope:?}");

    // More than the ready sandbox's memory cannot be set by lowering: cold, and it succeeds.
    let above = Limits { memory_mb: 600, ..defaults() };
    let finished = start(|c| {
        c.args(["--cgroups", "off"]);
    })
    .deliver(&job("import sys\ndef main():\n    return {'warm': 'pandas' in sys.modules}\n", above));
    let envelope = finished.envelope();
    assert_eq!(envelope.result.expect("a result").json().get(), r#"{"warm":false}"#, "{}", finished.stderr);
    assert!(finished.stderr.contains("unfit=AboveReady"), "{}", finished.stderr);
}

#[test]
fn a_job_whose_limits_do_not_fit_the_ready_sandbox_runs_cold_and_succeeds() {
    // /tmp's size is fixed when the ready jail starts.
    let limits = Limits { tmp_mb: 32, ..defaults() };
    let script = "import sys, os\ndef main():\n    return {'warm': 'pandas' in sys.modules, 'tmp': os.statvfs('/tmp').f_blocks * os.statvfs('/tmp').f_frsize}\n";
    let finished = start(|_| {}).deliver(&job(script, limits));
    let envelope = finished.envelope();
    assert_eq!(envelope.outcome, Outcome::Success, "{}", finished.stderr);
    let result: serde_json::Value =
        serde_json::from_str(envelope.result.expect("a result").json().get()).expect("json");
    assert_eq!(result, serde_json::json!({"warm": false, "tmp": 32 << 20}), "{}", finished.stderr);
    assert!(finished.stderr.contains("start=\"cold\""), "{}", finished.stderr);
}

#[test]
fn what_is_not_one_job_exits_with_its_own_code_and_says_why() {
    let cut = job("def main():\n    return {}\n", defaults());
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("cut short", cut[..cut.len() - 3].to_vec(), "not a job"),
        ("an unknown field", br#"{"script": "def main(): return {}", "extra": 1}"#.to_vec(), "unknown field `extra`"),
        ("over the limit", vec![b' '; MAX_JOB_BYTES + 1], "larger than"),
    ];
    for (name, bytes, says) in cases {
        let finished = start(|c| {
            c.arg("--preload-modules=");
        })
        .deliver(&bytes);
        assert_eq!(finished.status.code(), Some(i32::from(INVALID_JOB_EXIT_CODE)), "{name}: {}", finished.stderr);
        assert_ne!(INVALID_JOB_EXIT_CODE, NO_JOB_EXIT_CODE);
        let envelope = finished.envelope();
        assert_eq!(envelope.outcome, Outcome::SandboxFailure, "{name}");
        let error = envelope.error.expect("an error");
        assert!(error.contains(says), "{name}: {error}");
        assert!(finished.stderr.contains(says), "{name}: the log says why too: {}", finished.stderr);
        let message = finished.termination_message.expect("a termination message");
        assert!(message.starts_with("sandbox_failure "), "{name}: {message}");
    }
}

#[test]
fn the_gvisor_profile_on_a_host_kernel_refuses_at_once_without_waiting_for_a_job() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["sandbox", "--isolation", "gvisor", "--job-on-stdin"])
        .current_dir(common::repo())
        .env("PYEXEC_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pyexec sandbox");
    // Held open: the refusal must not wait for stdin to end.
    let _stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = sender.send(stdout.read_to_string(&mut text).map(|_| text));
    });
    let Ok(text) = receiver.recv_timeout(END_TIMEOUT) else {
        let _ = child.kill();
        panic!("the refusal waited for stdin");
    };
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    assert!(status.success(), "the envelope is the answer: {status:?} {stderr}");
    assert!(!stderr.contains(READY_MARKER), "no readiness before the refusal: {stderr}");
    let envelope: Envelope = serde_json::from_str(text.expect("stdout").trim()).expect("one envelope");
    assert_eq!(envelope.outcome, Outcome::SandboxFailure);
    assert!(envelope.error.as_deref().is_some_and(|e| e.contains("not gVisor's kernel")), "{envelope:?}");
}
