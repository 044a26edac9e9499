//! Bounded concurrency and queueing over real HTTP.

mod common;

use common::Server;
use serde_json::{json, Value};

#[tokio::test]
async fn a_burst_is_answered_correctly_or_with_429() {
    let server = Server::start_with(&["--max-concurrency", "2", "--max-queue", "4"]).await;
    let mut requests = Vec::new();
    for i in 0..24 {
        let client = server.client().clone();
        let url = server.url("/execute");
        requests.push(tokio::spawn(async move {
            let script = format!("import time\ndef main():\n    time.sleep(0.2)\n    return {{'i': {i}}}");
            let response = client.post(url).json(&json!({"script": script})).send().await.expect("POST");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_string());
            let body: Value = response.json().await.expect("json");
            (i, status, retry_after, body)
        }));
    }
    let (mut ok, mut busy) = (0, 0);
    for request in requests {
        let (i, status, retry_after, body) = request.await.expect("task");
        match status {
            200 => {
                assert_eq!(body["result"], json!({"i": i}));
                ok += 1;
            }
            429 => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(body["error"], "too many executions are queued; retry in 1 s");
                busy += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok + busy, 24);
    // Two running and four queued at once: at least six get through, and a burst of 24 overflows.
    assert!(ok >= 6, "only {ok} succeeded");
    assert!(busy >= 1, "the queue never overflowed");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn with_no_queue_a_second_request_gets_429_while_the_first_runs() {
    let server = Server::start_with(&["--max-concurrency", "1", "--max-queue", "0"]).await;
    let client = server.client().clone();
    let url = server.url("/execute");
    let first = tokio::spawn(async move {
        let body = json!({"script": "import time\ndef main():\n    time.sleep(2)\n    return {'first': True}"});
        client.post(url).json(&body).send().await.expect("POST").json::<Value>().await.expect("json")
    });
    server.wait_for_in_flight(1).await;
    let (status, body) = server.execute("def main():\n    return {}", None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(first.await.expect("first")["result"], json!({"first": true}));
    let metrics =
        server.client().get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("pyexec_rejected_requests_total{reason=\"busy\"} 1"), "{metrics}");
}

/// A script that holds its slot for a second.
const SECOND: &str = "import time\ndef main():\n    time.sleep(1)\n    return {'slept': True}\n";

/// POSTs `SECOND` to `path` with `timeout_seconds`; returns the status, Retry-After and body.
async fn post_second(server: &Server, path: &str, timeout_seconds: f64) -> (u16, Option<String>, Value) {
    let body = json!({"script": SECOND, "limits": {"timeout_seconds": timeout_seconds}});
    let response = server.client().post(server.url(path)).json(&body).send().await.expect("POST");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry_after, response.json().await.expect("json"))
}

/// Waits until `n` requests wait for a slot (from /metrics).
async fn wait_for_queued(server: &Server, n: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("pyexec_queue_depth").await != Some(n) {
        assert!(std::time::Instant::now() < deadline, "never saw {n} requests queued");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// With one slot and scripts that hold it for a second, a request that could not start within
/// its timeout is answered at once with 429 and Retry-After, on /execute and /executions alike;
/// those whose timeout leaves room wait their turn; and a queued request whose client went away
/// never starts.
#[tokio::test]
async fn a_request_that_would_not_start_within_its_timeout_gets_429_at_once() {
    let server = Server::start_with(&["--max-concurrency", "1", "--pool-max", "0"]).await;
    // One run teaches the server how long these scripts hold the slot.
    let (status, _, body) = post_second(&server, "/execute", 10.0).await;
    assert_eq!(status, 200, "{body}");
    // Its answer comes before its sandbox is gone; its time counts once it is out of flight.
    server.wait_for_in_flight(0).await;

    // A flood: one runs, two wait, each of them within its 10 s timeout.
    let mut flood = Vec::new();
    for _ in 0..3 {
        let (client, url) = (server.client().clone(), server.url("/execute"));
        let body = json!({"script": SECOND, "limits": {"timeout_seconds": 10}});
        flood.push(tokio::spawn(async move { client.post(url).json(&body).send().await.expect("POST").status() }));
        server.wait_for_in_flight(1).await;
    }
    wait_for_queued(&server, 2.0).await;

    // Three turns of a second each ahead: a 2 s timeout cannot be met.
    for path in ["/execute", "/executions"] {
        let (status, retry_after, body) = post_second(&server, path, 2.0).await;
        assert_eq!(status, 429, "{path}: {body}");
        let retry_after: u64 = retry_after.expect("a Retry-After").parse().expect("whole seconds");
        assert!(retry_after >= 1, "{path}: Retry-After {retry_after}");
        let error = body["error"].as_str().expect("the error shape");
        assert!(error.starts_with("overloaded: "), "{path}: {body}");
    }
    assert_eq!(server.metric("pyexec_rejected_requests_total{reason=\"overloaded\"}").await, Some(2.0));

    // A caller that gives up while its request waits: the request is dropped, never run.
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(500)).build().expect("client");
    let body = json!({"script": SECOND, "limits": {"timeout_seconds": 30}});
    let gave_up = impatient.post(server.url("/execute")).json(&body).send().await;
    assert!(gave_up.as_ref().is_err_and(reqwest::Error::is_timeout), "the client should time out: {gave_up:?}");

    for request in flood {
        assert_eq!(request.await.expect("task").as_u16(), 200);
    }
    // The abandoned request was queued before this one: had it run, it would have ended first.
    let (status, _, body) = post_second(&server, "/execute", 30.0).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric("pyexec_executions_total{outcome=\"success\"}").await, Some(5.0));
    assert_eq!(server.metric("pyexec_cancelled_executions_total").await, Some(0.0));
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn overload_refusals_can_be_turned_off() {
    let flags = ["--max-concurrency", "1", "--pool-max", "0", "--overload-wait-factor", "0"];
    let server = Server::start_with(&flags).await;
    let (status, _, body) = post_second(&server, "/execute", 10.0).await;
    assert_eq!(status, 200, "{body}");
    server.wait_for_in_flight(0).await;
    let (client, url) = (server.client().clone(), server.url("/execute"));
    let first = tokio::spawn(async move {
        let body = json!({"script": SECOND, "limits": {"timeout_seconds": 10}});
        client.post(url).json(&body).send().await.expect("POST").status()
    });
    server.wait_for_in_flight(1).await;
    // A second ahead and a timeout of a tenth of it: queued all the same, and run.
    let (status, _, body) = post_second(&server, "/execute", 0.1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "timeout", "{body}");
    assert_eq!(first.await.expect("first").as_u16(), 200);
    let refused = server.metric("pyexec_rejected_requests_total{reason=\"overloaded\"}").await;
    assert_eq!(refused.unwrap_or(0.0), 0.0);
}
