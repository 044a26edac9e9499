//! A running PythonExecution's output as it happens, for its event stream: once its job reached
//! its sandbox pod, the pod's log is followed and the output frames the pod writes there
//! (`sandbox::run::frames`) become chunks of an `OutputLog`; its state comes from the shared
//! watch. At the end, what the log did not bring (it was cut, or the pod was deleted first) is
//! taken from the envelope, so a client always sees the whole kept output before the result.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::io::Lines;
use futures::{AsyncBufRead, AsyncBufReadExt, StreamExt};
use tokio::sync::watch;

use super::kube::record_of;
use super::output::OutputLog;
use super::record::State;
use crate::crd::{Delivery, PythonExecution};
use crate::executor::KubeExecutor;
use crate::sandbox::run::capture::{OutputTap, Stream};
use crate::sandbox::run::frames;

/// How often the execution's state is looked at while no log line comes.
const POLL: Duration = Duration::from_millis(100);
/// How long the log may still bring frames once the execution has finished.
const DRAIN: Duration = Duration::from_millis(500);

type LogLines = Lines<Pin<Box<dyn AsyncBufRead + Send>>>;

/// Where the pod's log is.
enum Log {
    /// The job has not reached a pod yet.
    NotYet,
    Following(LogLines),
    /// Read to its end, or it could not be read: never opened again (that would repeat frames).
    Done,
}

/// Feeds `log` and `state` until the execution `name` finishes, disappears, or nobody follows.
pub async fn follow(executor: Arc<KubeExecutor>, name: String, log: Arc<OutputLog>, state: watch::Sender<State>) {
    let mut pod_log = Log::NotYet;
    loop {
        if state.is_closed() {
            return;
        }
        let Some(execution) = executor.find(&name) else {
            // Deleted: DELETE /executions/{id} cancels by deleting it.
            state.send_replace(State::Cancelled);
            return;
        };
        let record = record_of(&execution);
        if record.state.is_finished() {
            if let Log::Following(lines) = &mut pod_log {
                let _ = tokio::time::timeout(DRAIN, read_all(lines, &log)).await;
            }
            if let Some(envelope) = &record.envelope {
                complete(&log, Stream::Stdout, envelope.stdout.as_bytes());
                complete(&log, Stream::Stderr, envelope.stderr.as_bytes());
            }
            state.send_replace(record.state);
            return;
        }
        state.send_if_modified(|shown| std::mem::replace(shown, record.state) != record.state);
        pod_log = match pod_log {
            Log::NotYet => match delivered_to(&execution) {
                Some(pod) => open(&executor, &name, pod).await,
                None => {
                    tokio::time::sleep(POLL).await;
                    Log::NotYet
                }
            },
            Log::Following(mut lines) => match tokio::time::timeout(POLL, lines.next()).await {
                Err(_) => Log::Following(lines),
                Ok(Some(Ok(line))) => {
                    take_frame(&line, &log);
                    Log::Following(lines)
                }
                Ok(Some(Err(_)) | None) => Log::Done,
            },
            Log::Done => {
                tokio::time::sleep(POLL).await;
                Log::Done
            }
        };
    }
}

/// The pod the execution's job was written to, once it was.
fn delivered_to(execution: &PythonExecution) -> Option<&str> {
    let status = execution.status.as_ref()?;
    (status.delivery == Some(Delivery::Started)).then_some(status.pod_name.as_deref()).flatten()
}

async fn open(executor: &KubeExecutor, name: &str, pod: &str) -> Log {
    match executor.follow_pod_log(pod).await {
        Ok(reader) => Log::Following(reader.lines()),
        Err(err) => {
            tracing::warn!(execution = name, pod, error = %err, "could not follow the sandbox pod's log; its output comes with the result");
            Log::Done
        }
    }
}

async fn read_all(lines: &mut LogLines, log: &OutputLog) {
    while let Some(Ok(line)) = lines.next().await {
        take_frame(&line, log);
    }
}

fn take_frame(line: &str, log: &OutputLog) {
    if let Some((stream, bytes)) = frames::parse(line) {
        log.chunk(stream, &bytes);
    }
}

/// Adds what the envelope holds of `stream` beyond what the log already brought.
fn complete(log: &OutputLog, stream: Stream, kept: &[u8]) {
    let streamed: Vec<u8> = log.since(0).into_iter().filter(|(s, _)| *s == stream).flat_map(|(_, b)| b).collect();
    if let Some(rest) = rest_of(kept, &streamed) {
        log.chunk(stream, rest);
    }
}

/// The bytes of `kept` after `streamed`, when `streamed` is how it starts and something is left.
fn rest_of<'a>(kept: &'a [u8], streamed: &[u8]) -> Option<&'a [u8]> {
    kept.strip_prefix(streamed).filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_log_did_not_bring_is_added_from_the_envelope() {
        assert_eq!(rest_of(b"one\ntwo\n", b"one\n"), Some(&b"two\n"[..]));
        assert_eq!(rest_of(b"one\ntwo\n", b""), Some(&b"one\ntwo\n"[..]));
        assert_eq!(rest_of(b"one\n", b"one\n"), None, "all of it was streamed");
        assert_eq!(rest_of(b"one\n", b"other"), None, "a log that disagrees is not patched");
    }

    #[test]
    fn completing_adds_the_missing_end_after_the_streamed_chunks() {
        let log = OutputLog::new();
        log.chunk(Stream::Stdout, b"first\n");
        log.chunk(Stream::Stderr, b"warn\n");
        complete(&log, Stream::Stdout, b"first\nsecond\n");
        complete(&log, Stream::Stderr, b"warn\n");
        let chunks = log.since(0);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2], (Stream::Stdout, b"second\n".to_vec()));
    }

    #[test]
    fn only_frame_lines_become_output() {
        let log = OutputLog::new();
        take_frame(frames::frame(Stream::Stdout, b"x").trim_end(), &log);
        take_frame("2026-12-06T00:00:00Z INFO ready sandbox prepared", &log);
        take_frame(r#"{"outcome":"success","stdout":"x"}"#, &log);
        assert_eq!(log.since(0), vec![(Stream::Stdout, b"x".to_vec())]);
    }
}
