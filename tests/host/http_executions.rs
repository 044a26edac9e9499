//! Executions as resources over real HTTP with real nsjail: submit, look, long-poll, cancel,
//! list, keep across a restart, remove after their time, and refuse what they must.

mod common;
#[path = "../shared/sse.rs"]
mod sse;

use std::time::{Duration, Instant};

use common::{Pool, Server, TempFile};
use serde_json::{json, Value};
use sse::{parse_events, printed};

const PANDAS: &str = "import pandas as pd\ndef main():\n    df = pd.DataFrame({'A': [1, 2, 3], 'B': [4, 5, 6]})\n    print('summing')\n    return {'sum_A': int(df['A'].sum()), 'mean_B': float(df['B'].mean())}\n";

fn sleeper(seconds: u64) -> String {
    format!("import time\ndef main():\n    time.sleep({seconds})\n    return {{'slept': {seconds}}}\n")
}

/// POST /executions; returns (status, Location header, body).
async fn submit(server: &Server, body: Value) -> (u16, Option<String>, Value) {
    let response = server.client().post(server.url("/executions")).json(&body).send().await.expect("POST /executions");
    let status = response.status().as_u16();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, location, response.json().await.expect("JSON body"))
}

async fn submitted(server: &Server, script: &str) -> String {
    let (status, location, body) = submit(server, json!({ "script": script })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_string();
    assert_eq!(location.as_deref(), Some(format!("/executions/{id}").as_str()));
    assert_eq!(body["location"], format!("/executions/{id}"));
    id
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = server.client().get(server.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn delete(server: &Server, path: &str) -> (u16, Value) {
    let response = server.client().delete(server.url(path)).send().await.expect("DELETE");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Long-polls until the execution has finished (each poll holds up to 30 s).
async fn finished(server: &Server, id: &str) -> Value {
    for _ in 0..10 {
        let (status, body) = get(server, &format!("/executions/{id}?wait=30")).await;
        assert_eq!(status, 200, "{body}");
        if ["succeeded", "failed", "cancelled"].contains(&body["state"].as_str().unwrap_or_default()) {
            return body;
        }
    }
    panic!("execution {id} did not finish");
}

/// Polls until the execution is in `state` (a sandbox has started it, for example).
async fn until_state(server: &Server, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(server, &format!("/executions/{id}")).await;
        if body["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "execution {id} never became {state}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A /execute body without what differs between two runs of one script.
fn comparable(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.remove("id");
        map.remove("duration_ms");
    }
    body
}

pool_case!(a_finished_execution_answers_exactly_what_execute_answers);
async fn a_finished_execution_answers_exactly_what_execute_answers(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let cases = [
        PANDAS.to_string(),
        "def main():\n    raise ValueError('no')\n".to_string(),
        "def main():\n    return [1]\n".to_string(),
        "print('hi')\n".to_string(),
    ];
    for script in &cases {
        let (direct_status, direct) = server.execute(script, None).await;
        let id = submitted(&server, script).await;
        let body = finished(&server, &id).await;
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["http_status"], direct_status, "{body}");
        assert_eq!(comparable(body["response"].clone()), comparable(direct.clone()), "{script}");
        let expected = if direct["outcome"] == "success" { "succeeded" } else { "failed" };
        assert_eq!(body["state"], expected, "{body}");
        assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        assert!(body.get("finished_at").is_some(), "{body}");
    }
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_short_wait_answers_while_it_runs_and_a_long_wait_returns_at_the_finish() {
    let server = Server::start().await;
    let id = submitted(&server, &sleeper(2)).await;
    let (status, body) = get(&server, &format!("/executions/{id}?wait=0.1")).await;
    assert_eq!(status, 200);
    assert!(["queued", "running"].contains(&body["state"].as_str().unwrap_or_default()), "{body}");
    assert!(body.get("response").is_none(), "no answer before the finish: {body}");

    let (status, body) = get(&server, &format!("/executions/{id}?wait=50")).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "succeeded", "the long poll returns at the finish: {body}");
    assert_eq!(body["response"]["result"], json!({"slept": 2}));
    assert!(body["started_at"].as_str().is_some(), "{body}");
    server.assert_healthy_and_clean().await;
}

pool_case!(cancelling_a_running_execution_kills_its_sandbox_and_frees_its_slot);
async fn cancelling_a_running_execution_kills_its_sandbox_and_frees_its_slot(pool: Pool) {
    let server = Server::start_in(pool, &["--max-concurrency", "1", "--timeout-seconds", "60"]).await;
    let id = submitted(&server, &sleeper(30)).await;
    until_state(&server, &id, "running").await;
    server.wait_for_in_flight(1).await;

    let (status, body) = delete(&server, &format!("/executions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("DELETE")), "{body}");
    // The one slot is free again: a script runs now rather than after the sleeper's 30 s.
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
    let response = quick
        .post(server.url("/execute"))
        .json(&json!({"script": "def main():\n    return {'after': 1}\n"}))
        .send()
        .await
        .expect("the slot was freed: the next script ran");
    assert_eq!(response.status(), 200);

    let (status, body) = delete(&server, &format!("/executions/{id}")).await;
    assert_eq!(status, 409, "a finished execution cannot be cancelled: {body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(server.metric("pyexec_executions_unfinished").await, Some(0.0));
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn executions_are_listed_newest_first_a_page_at_a_time() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submitted(&server, &format!("def main():\n    return {{'n': {n}}}\n")).await);
    }
    let (status, first) = get(&server, "/executions?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let listed: Vec<&str> =
        first["executions"].as_array().expect("a page").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = get(&server, &format!("/executions?limit=2&before={next}")).await;
    let listed: Vec<&str> =
        second["executions"].as_array().expect("a page").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(listed, [ids[0].as_str()]);
    assert_eq!(second["next"], Value::Null);
    assert!(second["executions"][0].get("response").is_none(), "a listing carries no answers");

    for query in ["limit=0", "limit=501", "limit=x", "before=nonsense"] {
        let (status, body) = get(&server, &format!("/executions?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn unknown_ids_bad_bodies_and_a_script_without_main_are_answered_clearly() {
    let server = Server::start().await;
    for path in
        ["/executions/nope", &format!("/executions/{}", "A".repeat(32)), &format!("/executions/{}", "0".repeat(32))]
    {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    let (status, body) = delete(&server, &format!("/executions/{}", "a".repeat(32))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&server, &format!("/executions/{}?wait=soon", "a".repeat(32))).await;
    assert_eq!(status, 400, "{body}");

    let (status, _, body) = submit(&server, json!({"scrip": "def main(): return {}"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) =
        submit(&server, json!({"script": "def main(): return {}", "limits": {"timeout_seconds": 100000}})).await;
    assert_eq!(status, 400, "{body}");

    // No main(): accepted, and failed at once with /execute's answer.
    let id = submitted(&server, "print('no main here')\n").await;
    let body = finished(&server, &id).await;
    assert_eq!((body["state"].as_str(), body["http_status"].as_u64()), (Some("failed"), Some(400)), "{body}");
    assert_eq!(body["response"], json!({"error": "Script must contain a 'main()' function."}));
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn past_the_unfinished_cap_a_submission_is_refused_with_retry_after() {
    let server = Server::start_with(&["--executions-max-unfinished", "1"]).await;
    let id = submitted(&server, &sleeper(3)).await;
    let response = server
        .client()
        .post(server.url("/executions"))
        .json(&json!({"script": "def main():\n    return {}\n"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(finished(&server, &id).await["state"], "succeeded");
    submitted(&server, "def main():\n    return {}\n").await;
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn executions_need_the_token_like_execute() {
    let token = TempFile::new("token", "executions-token\n");
    let server = Server::start_with(&["--api-token-file", token.path()]).await;
    let (status, _, _) = submit(&server, json!({"script": "def main():\n    return {}\n"})).await;
    assert_eq!(status, 401);
    for path in ["/executions", &format!("/executions/{}", "a".repeat(32))] {
        assert_eq!(get(&server, path).await.0, 401, "{path}");
    }
    assert_eq!(delete(&server, &format!("/executions/{}", "a".repeat(32))).await.0, 401);
    let response = server
        .client()
        .post(server.url("/executions"))
        .bearer_auth("executions-token")
        .json(&json!({"script": "def main():\n    return {}\n"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_restart_keeps_finished_executions_and_marks_the_cut_off_ones_failed() {
    let dir = std::env::temp_dir().join(format!("pyexec-test-restart-{}", std::process::id()));
    let state_dir = dir.display().to_string();
    let flags = ["--state-dir", state_dir.as_str(), "--pool-max", "0"];
    let mut first = Server::start_with(&flags).await;
    let done = submitted(&first, PANDAS).await;
    let answer = finished(&first, &done).await;
    assert_eq!(answer["state"], "succeeded", "{answer}");
    let cut = submitted(&first, &sleeper(60)).await;
    until_state(&first, &cut, "running").await;
    // SIGTERM: the sleeper outlives the 5 s grace and is cut off.
    let status = first.stop().expect("stopped");
    assert!(status.success(), "{status:?}");

    let second = Server::start_with(&flags).await;
    let (status, kept) = get(&second, &format!("/executions/{done}")).await;
    assert_eq!(status, 200);
    assert_eq!(kept, answer, "the finished one is kept as it was");
    let (status, body) = get(&second, &format!("/executions/{cut}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "failed", "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("stopped")), "{body}");
    assert!(body.get("response").is_none(), "{body}");
    second.assert_healthy_and_clean().await;
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn finished_executions_are_removed_after_their_keep_time() {
    let server = Server::start_with(&["--executions-keep-seconds", "1"]).await;
    let id = submitted(&server, "def main():\n    return {}\n").await;
    assert_eq!(finished(&server, &id).await["state"], "succeeded");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&server, &format!("/executions/{id}")).await.0 != 404 {
        assert!(Instant::now() < deadline, "execution {id} was kept past its time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.metric("pyexec_executions_removed_total").await.is_some_and(|n| n >= 1.0));
}

pool_case!(the_event_stream_carries_prints_as_they_happen_then_the_result);
async fn the_event_stream_carries_prints_as_they_happen_then_the_result(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "import sys, time\ndef main():\n    print('one')\n    time.sleep(2)\n    print('two', file=sys.stderr)\n    time.sleep(0.5)\n    print('three')\n    return {'done': True}\n";
    let id = submitted(&server, script).await;
    let mut response =
        server.client().get(server.url(&format!("/executions/{id}/events"))).send().await.expect("GET events");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));

    let mut text = String::new();
    while !printed(&parse_events(&text), "stdout").contains("one") {
        let chunk = response.chunk().await.expect("the stream").expect("more events before the first print");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The first print arrived while the script still sleeps: it was streamed, not sent at the end.
    let (_, now) = get(&server, &format!("/executions/{id}")).await;
    assert_eq!(now["state"], "running", "{now}");

    while let Some(chunk) = response.chunk().await.expect("the stream") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = parse_events(&text);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).filter(|name| *name != "state").collect();
    assert_eq!(names.last(), Some(&"result"), "{text}");
    assert_eq!(printed(&events, "stdout"), "one\nthree\n", "{text}");
    assert_eq!(printed(&events, "stderr"), "two\n", "{text}");
    let stdout_two = names.iter().rposition(|name| *name == "stdout");
    let stderr_one = names.iter().position(|name| *name == "stderr");
    assert!(stderr_one < stdout_two, "the prints in the order they happened: {names:?}");
    let (_, result) = events.last().expect("a result").clone();
    assert_eq!(result["state"], "succeeded");
    assert_eq!(result["response"]["result"], json!({"done": true}));

    // A client that comes after the end gets what was written, then the result.
    let late = server.client().get(server.url(&format!("/executions/{id}/events"))).send().await.expect("GET events");
    let events = parse_events(&late.text().await.expect("the stream"));
    assert_eq!(printed(&events, "stdout"), "one\nthree\n");
    assert_eq!(printed(&events, "stderr"), "two\n");
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("result"));

    let (status, _) = get(&server, &format!("/executions/{}/events", "0".repeat(32))).await;
    assert_eq!(status, 404);
    server.assert_healthy_and_clean().await;
}
