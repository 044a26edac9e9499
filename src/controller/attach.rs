//! Handing one job to a sandbox pod and reading its envelope back. Every sandbox pod runs
//! `pyexec sandbox --job-on-stdin` with `stdin: true, stdinOnce: true`: it prepares its sandbox,
//! says so on stderr, and waits for exactly one job document on stdin. The controller attaches to
//! the container through the API server (pods/attach), waits for that line, writes the job,
//! closes stdin and reads stdout to its end: the envelope, without waiting for the kubelet to
//! notice that the container ended. The pod log carries the same envelope, for a controller that
//! restarts mid-run.
//!
//! The attach is behind `Attacher` so reconcile tests can stand in for the pod.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, AttachedProcess, LogParams};
use kube::Client;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use super::pod::CONTAINER_NAME;
use crate::sandbox::run::frames;
use crate::sandbox::READY_MARKER;

/// The stdin buffer between the controller and the attach stream: a whole job in one write.
const STDIN_BUFFER_BYTES: usize = 1024 * 1024;
/// The stdout buffer: an envelope in few reads.
const STDOUT_BUFFER_BYTES: usize = 256 * 1024;
/// How much of a waiting pod's log is read for its ready line (it is written after a few lines
/// of start-up logs).
const LOG_PEEK_BYTES: i64 = 64 * 1024;
/// How often the log is looked at for the ready line while waiting for it.
const LOG_POLL: Duration = Duration::from_millis(250);
/// Lines of the sandbox's stderr kept to explain a session that never became ready.
const STDERR_TAIL_LINES: usize = 8;

/// Why a job could not be handed over, or its envelope not read back.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("attaching to pod {pod}: {source}")]
    Attach {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod} did not get ready for its job: {why}")]
    NotReady { pod: String, why: String },
    /// The job may or may not have reached the pod: it must not go to another one.
    #[error("writing the job to pod {pod}: {source}")]
    Write {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    /// The job reached the pod; its envelope is in the pod's log once it ends.
    #[error("reading the envelope of pod {pod}: {why}")]
    Read { pod: String, why: String },
}

/// Opens sessions to sandbox pods.
pub trait Attacher: Send + Sync {
    /// Attaches to the waiting sandbox of pod `name` in `namespace` and returns once it said it
    /// is ready for its job, or after `timeout`.
    fn open<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Session>, DeliveryError>>;
}

/// An open attach session to one ready sandbox. Dropping it unused closes the pod's stdin: the
/// sandbox then exits without a job (`sandbox::NO_JOB_EXIT_CODE`).
pub trait Session: Send + Sync {
    /// The pod it is attached to.
    fn pod(&self) -> &str;
    /// Whether the stream is still open (the pod still waits).
    fn is_open(&self) -> bool;
    /// Writes `job`, closes stdin, and reads stdout to its end (at most `limit` bytes, within
    /// `timeout`).
    fn deliver(self: Box<Self>, job: Vec<u8>, limit: u64, timeout: Duration) -> BoxFuture<'static, DeliveryResult>;
}

pub type DeliveryResult = Result<Vec<u8>, DeliveryError>;

/// Sessions through the API server's pods/attach.
pub struct KubeAttacher {
    pub client: Client,
}

impl Attacher for KubeAttacher {
    fn open<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Session>, DeliveryError>> {
        async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let params = AttachParams {
                container: Some(CONTAINER_NAME.into()),
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
                max_stdin_buf_size: Some(STDIN_BUFFER_BYTES),
                max_stdout_buf_size: Some(STDOUT_BUFFER_BYTES),
                ..Default::default()
            };
            let pod = name.to_string();
            let mut process =
                api.attach(name, &params).await.map_err(|source| DeliveryError::Attach { pod: pod.clone(), source })?;
            let stderr = process.stderr().ok_or_else(|| not_ready(&pod, "the attach has no stderr"))?;
            let (ready_tx, ready_rx) = oneshot::channel();
            let closed = Arc::new(AtomicBool::new(false));
            tokio::spawn(watch_stderr(stderr, pod.clone(), ready_tx, closed.clone()));
            wait_until_ready(&api, name, ready_rx, timeout).await?;
            Ok(Box::new(KubeSession { pod, process, closed }) as Box<dyn Session>)
        }
        .boxed()
    }
}

/// Waits until the sandbox said it is ready: on the stream (`ready`, from `watch_stderr`) or in
/// the log. The stream carries only what the sandbox writes once the attach reached the
/// container, which is some time after the attach call returns, so a ready line written in
/// between is in the log alone.
async fn wait_until_ready(
    api: &Api<Pod>,
    name: &str,
    mut ready: oneshot::Receiver<Result<(), String>>,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if said_ready_before(api, name).await {
            return Ok(());
        }
        let poll = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LOG_POLL));
        tokio::select! {
            answer = &mut ready => return match answer {
                Ok(Ok(())) => Ok(()),
                Ok(Err(tail)) => Err(not_ready(name, &format!("its stderr ended: {tail}"))),
                Err(_) => Err(not_ready(name, "its stderr ended")),
            },
            () = poll => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(not_ready(name, &format!("no ready line within {}s", timeout.as_secs())));
        }
    }
}

/// Whether the pod's log already holds the ready line.
async fn said_ready_before(api: &Api<Pod>, name: &str) -> bool {
    let params =
        LogParams { container: Some(CONTAINER_NAME.into()), limit_bytes: Some(LOG_PEEK_BYTES), ..Default::default() };
    match api.logs(name, &params).await {
        Ok(log) => log.lines().any(|line| line.trim_end() == READY_MARKER),
        Err(err) => {
            tracing::debug!(pod = name, error = %err, "could not read the pod's log; waiting for the ready line");
            false
        }
    }
}

fn not_ready(pod: &str, why: &str) -> DeliveryError {
    DeliveryError::NotReady { pod: pod.to_string(), why: why.to_string() }
}

/// Reads the sandbox's stderr to its end (the attach stream stalls if a channel is left
/// unread), reporting the ready line, or the last lines when it ended without one; `closed` is
/// set when the stream ends (the pod's container ended, or the attach broke).
async fn watch_stderr(
    stderr: impl AsyncRead + Unpin,
    pod: String,
    ready: oneshot::Sender<Result<(), String>>,
    closed: Arc<AtomicBool>,
) {
    let mut lines = BufReader::new(stderr).lines();
    let mut ready = Some(ready);
    let mut tail: Vec<String> = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim_end() == READY_MARKER {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Ok(()));
            }
            continue;
        }
        if line.starts_with(frames::PREFIX) {
            // The script's output as it happens, for the API that follows the pod's log.
            continue;
        }
        tracing::debug!(pod = %pod, line = %line, "sandbox stderr");
        if ready.is_some() {
            tail.push(line);
            if tail.len() > STDERR_TAIL_LINES {
                tail.remove(0);
            }
        }
    }
    closed.store(true, Ordering::SeqCst);
    if let Some(ready) = ready {
        let _ = ready.send(Err(tail.join(" | ")));
    }
}

/// Reads up to the end of the first line (the sandbox writes its envelope as one line and
/// nothing else to stdout), or to the end of the stream, at most `limit` bytes: the answer does
/// not wait for the container to exit.
async fn read_first_line(stdout: impl AsyncRead + Unpin, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut reader = BufReader::new(stdout.take(limit));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    Ok(line)
}

struct KubeSession {
    pod: String,
    process: AttachedProcess,
    closed: Arc<AtomicBool>,
}

impl Session for KubeSession {
    fn pod(&self) -> &str {
        &self.pod
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    fn deliver(self: Box<Self>, job: Vec<u8>, limit: u64, timeout: Duration) -> BoxFuture<'static, DeliveryResult> {
        let KubeSession { pod, mut process, .. } = *self;
        async move {
            let (Some(mut stdin), Some(stdout)) = (process.stdin(), process.stdout()) else {
                return Err(DeliveryError::Write { pod, source: std::io::ErrorKind::NotConnected.into() });
            };
            let written = async {
                stdin.write_all(&job).await?;
                stdin.shutdown().await
            };
            if let Err(source) = written.await {
                return Err(DeliveryError::Write { pod, source });
            }
            drop(stdin);
            let read = tokio::time::timeout(timeout, read_first_line(stdout, limit)).await;
            match read {
                Ok(Ok(envelope)) => Ok(envelope),
                Ok(Err(err)) => Err(DeliveryError::Read { pod, why: err.to_string() }),
                Err(_) => Err(DeliveryError::Read { pod, why: format!("no envelope within {}s", timeout.as_secs()) }),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_envelope_is_the_first_line_and_the_rest_is_not_waited_for() {
        let line = read_first_line(&b"{\"outcome\":\"success\"}\nlater\n"[..], 1024).await.expect("read");
        assert_eq!(line, b"{\"outcome\":\"success\"}\n");
        let cut = read_first_line(&b"0123456789"[..], 4).await.expect("read");
        assert_eq!(cut, b"0123", "bounded by the limit");
    }

    #[tokio::test]
    async fn the_ready_line_is_found_among_the_sandboxs_logs() {
        let (tx, rx) = oneshot::channel();
        let closed = Arc::new(AtomicBool::new(false));
        let stderr = format!("INFO preparing\n{READY_MARKER}\nINFO running\n");
        watch_stderr(stderr.as_bytes(), "p".into(), tx, closed.clone()).await;
        assert_eq!(rx.await.expect("an answer"), Ok(()));
        assert!(closed.load(Ordering::SeqCst), "the stream ended");
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_the_ready_line_says_why() {
        let (tx, rx) = oneshot::channel();
        let stderr = "ERROR nsjail failed\nexiting\n";
        watch_stderr(stderr.as_bytes(), "p".into(), tx, Arc::new(AtomicBool::new(false))).await;
        assert_eq!(rx.await.expect("an answer"), Err("ERROR nsjail failed | exiting".to_string()));
    }
}
