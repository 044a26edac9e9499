//! The end of one run: feeds a started jail its input, reads its capped output, enforces the
//! deadline, decides the verdict and the envelope, and leaves the jail to its removal.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::capture::{read_tail, Captured, Reading, Stream, Tap};
use super::removal::{Finished, Removal};
use super::supervisor::Supervisor;
use super::verdict::{decide, report_limit, RunFacts, Verdict};
use crate::sandbox::envelope::{Envelope, Outcome};
use crate::sandbox::jail::cgroup::RunCgroup;
use crate::sandbox::jail::nsjail::{self, ChildStatus};
use crate::sandbox::jail::Jail;
use crate::sandbox::limits::Limits;

/// How long output readers may take to reach end of file once the jail has ended.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long the harness's own output may take to be read once its report is whole, before the
/// answer waits for the jail's end instead (something is still printing).
const OUTPUT_SETTLE: Duration = Duration::from_millis(20);
const OUTPUT_POLL: Duration = Duration::from_micros(200);
/// nsjail's log is only read for its last lines and problems.
const LOG_TAIL_BYTES: usize = 32 * 1024;

/// Who watches a run from outside: `cancel` ends it early the way a timeout does, and `tap`
/// gets its output as it is read.
pub(super) struct Watched<'a> {
    pub cancel: &'a CancellationToken,
    pub tap: Option<&'a Tap>,
}

impl Supervisor {
    /// Feeds a started jail `input` on stdin, reads its output with the caps of `limits`,
    /// enforces the deadline (from `started`) and decides the envelope. The answer comes as soon
    /// as the harness has reported success and its output is all read (`early_answer`); the
    /// jail's end and its cgroup's release may then still be under way (`Finished::removal`).
    pub(super) async fn finish(
        &self,
        run_id: &str,
        jail: Jail,
        input: Vec<u8>,
        limits: &Limits,
        started: Instant,
        Watched { cancel, tap }: Watched<'_>,
    ) -> Finished {
        let inner = &self.inner;
        let Jail { keeper: mut child, mut stdin, stdout, stderr, result, log, cgroup, mut terminate_on_drop, lease } =
            jail;
        // Without a cgroup (inside gVisor, or cgroups off) RLIMIT_AS is the run's memory bound.
        let memory_error_is_limit = cgroup.is_none();
        let feeder = tokio::spawn(async move {
            // A script that ends before reading all of stdin closes the pipe: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
        let mut output = Output {
            stdout: Reading::start(stdout, limits.stdout_bytes, tap.map(|tap| (tap.clone(), Stream::Stdout))),
            stderr: Reading::start(stderr, limits.stderr_bytes, tap.map(|tap| (tap.clone(), Stream::Stderr))),
            // main()'s result, the newline that ends the report, and the output files.
            report: Reading::start(result, report_limit(limits), None),
        };
        let log_task = tokio::spawn(read_tail(log, LOG_TAIL_BYTES));

        let deadline = started + limits.timeout();
        let mut answer_tried = false;
        let (timed_out, cancelled) = loop {
            let event = tokio::select! {
                waited = tokio::time::timeout_at(deadline.into(), child.wait()) => Event::Ended { timed_out: waited.is_err() },
                () = cancel.cancelled() => Event::Cancelled,
                () = output.report.next_chunk(), if !answer_tried => Event::Reported,
            };
            match event {
                Event::Ended { timed_out } => break (timed_out, false),
                Event::Cancelled => break (false, true),
                Event::Reported if !output.report.ends_a_line() => {}
                Event::Reported => {
                    answer_tried = true;
                    let oom_killed = cgroup.as_ref().is_some_and(RunCgroup::oom_killed);
                    let memory = (oom_killed, memory_error_is_limit);
                    if let Some(envelope) = self.early_answer(&mut output, limits, started, memory).await {
                        feeder.abort();
                        let gvisor = inner.paths.gvisor.clone();
                        let removal = Removal::ended(child, terminate_on_drop, cgroup, lease, deadline, gvisor);
                        return Finished { envelope, removal: Removal(Some(inner.removals.spawn(removal))) };
                    }
                }
            }
        };
        // A keeper that was killed leaves the script running without it: stop it too.
        let keeper_lost = child.lost();
        if timed_out || cancelled || keeper_lost {
            child.end(cgroup.as_ref(), inner.paths.gvisor.as_ref()).await;
        }
        child.wait().await;
        // Reaped: the pid may now belong to someone else.
        terminate_on_drop.pid = None;
        feeder.abort();

        let stdout = output.stdout.finish(DRAIN_GRACE).await;
        let stderr = output.stderr.finish(DRAIN_GRACE).await;
        let report = output.report.finish(DRAIN_GRACE).await;
        let log = drain(log_task).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;

        let oom_killed = cgroup.as_ref().is_some_and(RunCgroup::oom_killed);
        let peak_memory = cgroup.as_ref().and_then(RunCgroup::peak_memory);
        if let Some(group) = cgroup {
            group.release().await;
        }
        // Its processes are gone: the id may go to the next sandbox.
        drop(lease);

        let log_text = log.text();
        let child_status = child.status(&log_text);
        if child_status.is_none() && !timed_out && !cancelled {
            for line in nsjail::problems(&log_text) {
                tracing::error!(run_id, nsjail = line, "nsjail failed");
            }
        }
        let verdict = decide(&RunFacts {
            limits,
            timed_out,
            oom_killed,
            child: child_status,
            report: &report.bytes,
            report_overflow: report.truncated(),
            elapsed_ms,
            memory_error_is_limit,
            keeper_lost,
        });
        if keeper_lost {
            tracing::error!(run_id, oom_killed, "a forked sandbox's keeper was killed before its script ended");
        }
        tracing::debug!(run_id, ?peak_memory, ?child_status, oom_killed, timed_out, cancelled, "sandbox finished");
        Finished { envelope: envelope(verdict, &stdout, &stderr, elapsed_ms), removal: Removal(None) }
    }

    /// The envelope of a run whose harness has written a whole report, before its jail ends:
    /// only a success (the harness then closes nothing and calls `_exit(0)` at once; freeing a
    /// pandas interpreter's memory alone takes ~7 ms), and only once the stdout and stderr the
    /// harness flushed before its report have been read. Anything else, or output that keeps
    /// coming (a thread still printing), waits for the jail's end as before.
    async fn early_answer(
        &self,
        output: &mut Output,
        limits: &Limits,
        started: Instant,
        (oom_killed, memory_error_is_limit): (bool, bool),
    ) -> Option<Envelope> {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let verdict = output.report.inspect(|report| {
            decide(&RunFacts {
                limits,
                timed_out: false,
                oom_killed,
                child: Some(ChildStatus::Exited(0)),
                report: &report.bytes,
                report_overflow: report.truncated(),
                elapsed_ms,
                memory_error_is_limit,
                keeper_lost: false,
            })
        });
        if verdict.outcome != Outcome::Success {
            return None;
        }
        let mut waited = Duration::ZERO;
        while !(output.stdout.drained() && output.stderr.drained()) {
            if waited >= OUTPUT_SETTLE {
                return None;
            }
            tokio::time::sleep(OUTPUT_POLL).await;
            waited += OUTPUT_POLL;
        }
        let stdout = output.stdout.finish(Duration::ZERO).await;
        let stderr = output.stderr.finish(Duration::ZERO).await;
        Some(envelope(verdict, &stdout, &stderr, elapsed_ms))
    }
}

/// What ended the wait for a jail.
enum Event {
    Ended {
        timed_out: bool,
    },
    Cancelled,
    /// Another chunk of the report arrived.
    Reported,
}

/// The jail's three output pipes, being read.
struct Output {
    stdout: Reading,
    stderr: Reading,
    report: Reading,
}

fn envelope(verdict: Verdict, stdout: &Captured, stderr: &Captured, elapsed_ms: u64) -> Envelope {
    let files_truncated = verdict.files.truncated();
    Envelope {
        outcome: verdict.outcome,
        result: verdict.result,
        stdout: stdout.text(),
        stderr: stderr.text(),
        returncode: verdict.returncode,
        error: verdict.error,
        stdout_truncated: stdout.truncated(),
        stderr_truncated: stderr.truncated(),
        duration_ms: elapsed_ms,
        files: verdict.files.files,
        files_truncated,
        files_omitted: verdict.files.omitted,
    }
}

/// Waits for a reader to reach end of file, but not for ever: a pipe still held open by
/// something outside the jail must not hold the request.
async fn drain(task: tokio::task::JoinHandle<Captured>) -> Captured {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_GRACE, task).await {
        Ok(Ok(captured)) => captured,
        _ => {
            abort.abort();
            Captured::default()
        }
    }
}
