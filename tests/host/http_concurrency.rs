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
