//! The router in process, with a stand-in executor that returns canned envelopes: every row of
//! the contract table (README.md, "Responses") and the rejection metric; the guard's
//! cases are in `guard`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tower::ServiceExt;

mod guard;

use super::guard::Guard;
use super::{app, AppState};
use crate::executions::output::OutputLog;
use crate::executions::{Executions, ExecutionsError, Page, Record, State, Submission};
use crate::executor::{ExecuteError, ExecutionRequest, Executor, NotReady};
use crate::metrics::Metrics;
use crate::sandbox::envelope::{ResultJson, NO_MAIN_MESSAGE};
use crate::sandbox::{Envelope, Outcome};

type Reply = fn(&ExecutionRequest) -> Result<Envelope, ExecuteError>;

/// Answers every execution with `reply`, and counts them.
struct StandIn {
    reply: Reply,
    calls: AtomicUsize,
}

impl Executor for StandIn {
    fn execute(&self, request: ExecutionRequest) -> BoxFuture<'_, Result<Envelope, ExecuteError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = (self.reply)(&request);
        async move { reply }.boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        async { Ok(()) }.boxed()
    }

    fn name(&self) -> &'static str {
        "stand-in"
    }
}

/// An envelope as the sandbox would report it.
fn envelope(outcome: Outcome, result: Option<Value>, returncode: i32, error: Option<&str>) -> Envelope {
    let mut envelope = Envelope::rejected(outcome, "");
    envelope.result = result.as_ref().and_then(Value::as_object).and_then(ResultJson::from_map);
    envelope.returncode = returncode;
    envelope.error = error.map(str::to_string);
    envelope.stdout = "printed\n".into();
    envelope.stderr = "traceback\n".into();
    envelope.duration_ms = 7;
    envelope
}

/// Keeps no executions: the routes of /execute are what these tests drive (the executions
/// routes are tested over real HTTP).
struct NoExecutions(crate::executions::ExecutionsSettings);

impl Executions for NoExecutions {
    fn submit(&self, _: Submission) -> BoxFuture<'_, Result<Record, ExecutionsError>> {
        async { Err(ExecutionsError::ShuttingDown) }.boxed()
    }
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>> {
        async { Ok(None) }.boxed()
    }
    fn wait<'a>(&'a self, _: &'a str, _: Duration) -> BoxFuture<'a, Result<Option<Record>, ExecutionsError>> {
        async { Ok(None) }.boxed()
    }
    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Record, ExecutionsError>> {
        async move { Err(ExecutionsError::NotFound { id: id.to_string() }) }.boxed()
    }
    fn list<'a>(&'a self, _: Option<&'a str>, _: usize) -> BoxFuture<'a, Result<Page, ExecutionsError>> {
        async { Ok(Page::default()) }.boxed()
    }
    fn follow(&self, _: &str) -> Option<(Arc<OutputLog>, tokio::sync::watch::Receiver<State>)> {
        None
    }
    fn settings(&self) -> &crate::executions::ExecutionsSettings {
        &self.0
    }
    fn shutdown(&self, _: Duration) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

struct Harness {
    app: Router,
    executor: Arc<StandIn>,
    metrics: Arc<Metrics>,
}

const MAX_REQUEST_BYTES: usize = 4096;
const MAX_SCRIPT_BYTES: usize = 1024;

fn harness_with(reply: Reply, guard: Guard) -> Harness {
    let executor = Arc::new(StandIn { reply, calls: AtomicUsize::new(0) });
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        executions: Arc::new(NoExecutions(crate::config::defaults())),
        executor: executor.clone(),
        limits: crate::config::defaults(),
        metrics: metrics.clone(),
        max_request_bytes: MAX_REQUEST_BYTES,
        max_script_bytes: MAX_SCRIPT_BYTES,
        tolerant_json: true,
        guard,
        last_ready: Mutex::new(None),
    });
    Harness { app: app(state), executor, metrics }
}

fn harness(reply: Reply) -> Harness {
    harness_with(reply, Guard::new(&[], true, None))
}

fn success(_: &ExecutionRequest) -> Result<Envelope, ExecuteError> {
    Ok(envelope(Outcome::Success, Some(json!({"sum": 6})), 0, None))
}

fn post(content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post("/execute")
        .header(header::HOST, "localhost:8080")
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request")
}

fn json_post(body: Value) -> Request<Body> {
    post("application/json", body.to_string())
}

fn script(script: &str) -> Request<Body> {
    json_post(json!({ "script": script }))
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = tokio::time::timeout(Duration::from_secs(5), self.app.clone().oneshot(request))
            .await
            .expect("answered in time")
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
        (status, headers, body)
    }

    fn rejected(&self, reason: &str) -> u64 {
        let line = format!("pyexec_rejected_requests_total{{reason=\"{reason}\"}} ");
        let metrics = self.metrics.render();
        metrics.lines().find_map(|l| l.strip_prefix(&line)).and_then(|n| n.parse().ok()).unwrap_or(0)
    }
}

// ---- the contract table, row by row

#[tokio::test]
async fn a_dict_from_main_is_a_200_with_the_documented_fields() {
    let h = harness(success);
    let (status, _, body) = h.send(script("def main():\n    return {'sum': 6}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], json!({"sum": 6}));
    assert_eq!(
        (body["stdout"].as_str(), body["stderr"].as_str(), &body["returncode"]),
        (Some("printed\n"), Some("traceback\n"), &json!(0))
    );
    assert!(body.get("error").is_none(), "{body}");
    assert_eq!(body["outcome"], "success");
    let keys: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).take(4).collect();
    assert_eq!(keys, ["result", "stdout", "stderr", "returncode"], "the documented field order");
}

#[tokio::test]
async fn prints_stay_in_stdout_beside_the_result() {
    let h = harness(|_| {
        let mut e = envelope(Outcome::Success, Some(json!({"ok": true})), 0, None);
        e.stdout = "hello from main\n".into();
        Ok(e)
    });
    let (status, _, body) = h.send(script("def main():\n    print('hello from main')\n    return {'ok': True}")).await;
    assert_eq!(
        (status, &body["stdout"], &body["result"]),
        (StatusCode::OK, &json!("hello from main\n"), &json!({"ok": true}))
    );
}

#[tokio::test]
async fn an_empty_script_or_one_without_main_is_the_exact_400() {
    let h = harness(|_| Ok(envelope(Outcome::NoMain, None, 1, Some(NO_MAIN_MESSAGE))));
    for text in ["", "x = 1\n"] {
        let (status, _, body) = h.send(script(text)).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"error": NO_MAIN_MESSAGE})), "{text:?}");
    }
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 0, "decided without a sandbox");
    // One that mentions main without defining it goes to the sandbox, which says the same.
    let (status, _, body) = h.send(script("remainder = 1\n")).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"error": NO_MAIN_MESSAGE})));
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_syntax_error_is_a_400_with_only_the_error() {
    let message = "SyntaxError: invalid syntax (line 1, column 10)";
    let h = harness(|_| {
        Ok(envelope(Outcome::SyntaxError, None, 1, Some("SyntaxError: invalid syntax (line 1, column 10)")))
    });
    let (status, _, body) = h.send(script("def main(:\n")).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({ "error": message })));
}

#[tokio::test]
async fn a_non_dict_is_a_400_naming_the_type_with_the_output() {
    let h =
        harness(|_| Ok(envelope(Outcome::NotADict, None, 1, Some("main() must return a dict, but it returned int"))));
    let (status, _, body) = h.send(script("def main():\n    return 42")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "main() must return a dict, but it returned int");
    assert_eq!((&body["stdout"], &body["stderr"]), (&json!("printed\n"), &json!("traceback\n")));
}

#[tokio::test]
async fn failures_at_run_time_are_200_with_a_null_result_and_one_line_error() {
    let h = harness(|request| {
        Ok(match request.script.as_str() {
            s if s.contains("raise") => {
                envelope(Outcome::Exception, None, 1, Some("ZeroDivisionError: division by zero"))
            }
            s if s.contains("exit") => {
                envelope(Outcome::Exited, None, 3, Some("The script exited with code 3 before main() returned"))
            }
            s if s.contains("sleep") => {
                envelope(Outcome::Timeout, None, -9, Some("Execution timed out after 10 s (wall-clock limit)"))
            }
            _ => envelope(Outcome::MemoryLimit, None, -9, Some("Memory limit of 512 MiB exceeded")),
        })
    });
    for (text, returncode, outcome) in [
        ("def main():\n    raise", 1, "exception"),
        ("def main():\n    exit(3)", 3, "exited"),
        ("def main():\n    sleep()", -9, "timeout"),
        ("def main():\n    'x' * 2**40", -9, "memory_limit"),
    ] {
        let (status, _, body) = h.send(script(text)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (&body["result"], &body["returncode"], &body["outcome"]),
            (&Value::Null, &json!(returncode), &json!(outcome))
        );
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty() && !e.contains('\n')), "{body}");
        assert_eq!(body["stderr"], "traceback\n");
    }
}

#[tokio::test]
async fn bodies_that_are_not_a_script_are_a_400_that_says_how_to_send_one() {
    let h = harness(success);
    for (request, says) in [
        (post("application/json", "not json"), "not valid JSON"),
        (json_post(json!({"code": "x"})), "no \"script\" field"),
        (json_post(json!({"script": 42})), "must be a string"),
        (json_post(json!(["x"])), "must be a JSON object"),
        (json_post(json!({"script": "def main(): pass", "limits": {"memory_mb": "lots"}})), "\"limits\" is invalid"),
        (json_post(json!({"script": "def main(): pass", "limits": {"memory_mb": 1 << 30}})), "memory"),
    ] {
        let (status, _, body) = h.send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(says)), "{says}: {body}");
    }
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.rejected("invalid"), 6);
}

#[tokio::test]
async fn a_key_given_twice_is_a_400_even_where_the_tolerant_reading_would_accept_the_body() {
    let h = harness(success);
    for body in [
        r#"{"script": "def main(): return {}", "script": "import os"}"#,
        r#"{"script": "def main(): return {}", "limits": {"timeout_seconds": 1, "timeout_seconds": 60}}"#,
    ] {
        let (status, _, answer) = h.send(post("application/json", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("appears twice")), "{answer}");
    }
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_documented_bodies_with_unescaped_quotes_run_with_a_warning() {
    let h = harness(success);
    let body = r#"{"script": "def main():\n  return {"status": "success"}"}"#;
    let (status, _, answer) = h.send(post("application/json", body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["warnings"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_is_a_415_decided_before_the_body_is_read() {
    let h = harness(success);
    // A body that never ends: reading it would never answer.
    let endless = || Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let (status, _, body) = h.send(post("application/x-www-form-urlencoded", endless())).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("text/x-python")), "{body}");
    let missing = Request::post("/execute").header(header::HOST, "localhost").body(endless()).expect("request");
    let (status, _, body) = h.send(missing).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].as_str().is_some_and(|e| e.starts_with("Content-Type is missing")), "{body}");
    assert_eq!(h.rejected("content_type"), 2);
}

#[tokio::test]
async fn a_body_or_script_over_its_limit_is_a_413() {
    let h = harness(success);
    // Declared too large: refused from the headers, with a body that never comes.
    let declared = Request::post("/execute")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, (MAX_REQUEST_BYTES + 1).to_string())
        .body(Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>()))
        .expect("request");
    let (status, _, body) = h.send(declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Streamed too large, with no length declared.
    let chunks = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![b'#'; 1024])));
    let (status, _, _) = h.send(post("text/x-python", Body::from_stream(chunks))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, body) =
        h.send(post("text/x-python", format!("def main(): pass\n#{}", "x".repeat(MAX_SCRIPT_BYTES)))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().is_some_and(|e| e.starts_with("The script is")), "{body}");
    assert_eq!(h.rejected("too_large"), 3);
}

#[tokio::test]
async fn a_full_queue_is_a_429_with_retry_after() {
    let h = harness(|_| Err(ExecuteError::Busy { retry_after_seconds: 1 }));
    let (status, headers, body) = h.send(script("def main(): pass")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(body, json!({"error": "too many executions are queued; retry in 1 s"}));
    assert_eq!(h.rejected("busy"), 1);
}

#[tokio::test]
async fn a_broken_sandbox_is_a_500_with_the_id_and_no_details() {
    let h = harness(|_| Ok(envelope(Outcome::SandboxFailure, None, 1, Some("nsjail: execve failed"))));
    let (status, _, body) = h.send(script("def main(): pass")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
    assert!(!body.to_string().contains("nsjail"), "{body}");
    let h = harness(|_| Err(ExecuteError::Deleted { name: "pyx-gone".into() }));
    let (status, _, body) = h.send(script("def main(): pass")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains("pyx-gone"), "{body}");
    assert_eq!(h.rejected("invalid"), 0, "an internal failure is not a refusal");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let h = harness(success);
    let get = |uri: &str| Request::get(uri).header(header::HOST, "localhost").body(Body::empty()).expect("request");
    let (status, _, body) = h.send(get("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let (status, _, body) = h.send(get("/execute")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string());
}
