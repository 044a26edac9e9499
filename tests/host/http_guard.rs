//! The API guard over real HTTP: cross-origin requests, DNS rebinding, the bearer token, and the
//! start-up checks, against a real `pyexec serve`.

mod common;

use std::process::{Command, Stdio};

use common::{free_port, Server, TempFile};
use serde_json::{json, Value};

const HELLO: &str = "def main():\n    return {'hello': 'world'}";

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_cross_origin_request_is_refused_with_403_and_runs_nothing() {
    let server = Server::start().await;
    // What a hostile page's fetch() sends: a "simple" text/plain POST, no preflight.
    let response = server
        .client()
        .post(server.url("/execute"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body("def main():\n    return {'pwned': True}")
        .send()
        .await
        .expect("POST");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("--allowed-origins")), "{body}");
    assert_eq!(server.metric("pyexec_rejected_requests_total{reason=\"origin\"}").await, Some(1.0));
    assert_eq!(server.metric("pyexec_executions_total{outcome=\"success\"}").await, Some(0.0));
}

#[tokio::test]
async fn an_allowed_origin_is_answered_with_cors_headers() {
    let server = Server::start_with(&["--allowed-origins", "https://notebook.example,https://app.example"]).await;
    let response = server
        .client()
        .post(server.url("/execute"))
        .header("origin", "https://app.example")
        .json(&json!({ "script": HELLO }))
        .send()
        .await
        .expect("POST");
    assert_eq!(
        response.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let (status, body) = json_of(response).await;
    assert_eq!((status, &body["result"]), (200, &json!({"hello": "world"})), "{body}");
}

#[tokio::test]
async fn on_loopback_a_rebound_host_is_refused_and_loopback_names_are_answered() {
    let server = Server::start().await;
    let port = server.base.rsplit(':').next().expect("port").to_string();
    let body = format!("{{\"script\": \"{}\"}}", HELLO.replace('\n', "\\n"));
    let request = |host: &str| {
        format!(
            "POST /execute HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
    };
    let (status, answer) = server.raw_request(&request(&format!("rebound.example:{port}")), body.as_bytes());
    assert_eq!(status, 421, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("a JSON error");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("DNS rebinding")), "{answer}");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let (status, answer) = server.raw_request(&request(&host), body.as_bytes());
        assert_eq!(status, 200, "{host}: {answer}");
    }
    assert_eq!(server.metric("pyexec_rejected_requests_total{reason=\"host\"}").await, Some(1.0));
}

#[tokio::test]
async fn the_documented_curl_command_works_against_localhost() {
    let server = Server::start().await;
    let url = server.base.replace("127.0.0.1", "localhost");
    let output = Command::new("curl")
        .args(["-s", "-X", "POST", &format!("{url}/execute"), "-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"script": "def main():\n    return {\"message\": \"Hello World\"}"}"#)
        .output()
        .expect("run curl");
    let body: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(body["result"], json!({"message": "Hello World"}), "{body}");
}

#[tokio::test]
async fn with_a_token_file_every_route_but_the_probes_needs_the_token() {
    let token = TempFile::new("token", "s3cret-token-from-a-file\n");
    let server = Server::start_with(&["--api-token-file", token.path()]).await;
    let post = |authorization: Option<&str>| {
        let mut request = server.client().post(server.url("/execute")).json(&json!({ "script": HELLO }));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };

    let missing = post(None).await.expect("POST");
    assert_eq!(
        missing.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"pyexec\"")
    );
    let (status, body) = json_of(missing).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Authorization: Bearer")), "{body}");

    for wrong in ["Bearer s3cret-token-from-a-fil", "Bearer s3cret-token-from-a-filE", "Basic czNjcmV0"] {
        let (status, body) = json_of(post(Some(wrong)).await.expect("POST")).await;
        assert_eq!(status, 401, "{wrong}: {body}");
    }

    let (status, body) = json_of(post(Some("Bearer s3cret-token-from-a-file")).await.expect("POST")).await;
    assert_eq!((status, &body["result"]), (200, &json!({"hello": "world"})), "{body}");

    for open in ["/healthz", "/readyz"] {
        let status = server.client().get(server.url(open)).send().await.expect("GET").status().as_u16();
        assert_eq!(status, 200, "{open}");
    }
    let metrics = server.client().get(server.url("/metrics"));
    assert_eq!(metrics.send().await.expect("GET").status().as_u16(), 401);
    let metrics = server.client().get(server.url("/metrics")).bearer_auth("s3cret-token-from-a-file");
    let text = metrics.send().await.expect("GET").text().await.expect("text");
    // Missing: no header, a Basic one, and /metrics without one; wrong: the two near misses.
    assert!(text.contains("pyexec_rejected_requests_total{reason=\"token_missing\"} 3"), "{text}");
    assert!(text.contains("pyexec_rejected_requests_total{reason=\"token_wrong\"} 2"), "{text}");
    assert!(text.contains("pyexec_executions_total{outcome=\"success\"} 1"), "{text}");
}

/// Runs `pyexec serve` with these flags and a sandbox that cannot start, so it stops right after
/// the guard is set up; returns its exit status and log.
fn serve_until_the_sandbox_check(flags: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .arg("serve")
        .args(flags)
        .args(["--nsjail", "/nonexistent/nsjail"])
        .env("PYEXEC_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run pyexec serve");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), log)
}

#[test]
fn an_empty_token_file_stops_the_service_at_start_up() {
    let empty = TempFile::new("empty-token", "");
    let (ok, log) = serve_until_the_sandbox_check(&["--api-token-file", empty.path()]);
    assert!(!ok);
    assert!(log.contains(&format!("the API token file {} is empty", empty.path())), "{log}");
    let (ok, log) = serve_until_the_sandbox_check(&["--api-token-file", "/nonexistent/token"]);
    assert!(!ok);
    assert!(log.contains("reading the API token file /nonexistent/token"), "{log}");
}

#[test]
fn listening_beyond_loopback_without_a_token_is_warned_about() {
    const WARNING: &str = "listening beyond loopback without --api-token-file";
    let anywhere = format!("0.0.0.0:{}", free_port());
    let (_, log) = serve_until_the_sandbox_check(&["--listen", &anywhere]);
    assert!(log.contains(WARNING), "{log}");
    let token = TempFile::new("token", "t");
    let (_, log) = serve_until_the_sandbox_check(&["--listen", &anywhere, "--api-token-file", token.path()]);
    assert!(!log.contains(WARNING), "{log}");
    let (_, log) = serve_until_the_sandbox_check(&["--listen", &format!("127.0.0.1:{}", free_port())]);
    assert!(!log.contains(WARNING), "{log}");
}
