//! The guard in front of the router: Origin, Host, the bearer token, preflights.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};

use super::{harness, harness_with, post, script, success};
use crate::server::guard::{ApiToken, Guard};

fn with_headers(mut request: Request<Body>, headers: &[(header::HeaderName, &str)]) -> Request<Body> {
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.parse().expect("header value"));
    }
    request
}

#[tokio::test]
async fn a_cross_origin_request_is_a_403_unless_its_origin_is_allowed() {
    let h = harness_with(success, Guard::new(&["https://app.example".to_string()], true, None));
    let request = with_headers(script("def main(): pass"), &[(header::ORIGIN, "https://evil.example")]);
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("--allowed-origins")), "{body}");
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 0);
    // A browser's "simple" text/plain POST is refused just the same.
    let simple = with_headers(post("text/plain", "def main(): pass"), &[(header::ORIGIN, "http://localhost:9999")]);
    assert_eq!(h.send(simple).await.0, StatusCode::FORBIDDEN);
    let allowed = with_headers(script("def main(): pass"), &[(header::ORIGIN, "https://app.example")]);
    let (status, headers, _) = h.send(allowed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    assert_eq!(h.rejected("origin"), 2);
}

#[tokio::test]
async fn on_loopback_a_foreign_host_is_a_421() {
    let h = harness(success);
    let mut request = script("def main(): pass");
    request.headers_mut().insert(header::HOST, "rebound.example:8080".parse().expect("host"));
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("DNS rebinding")), "{body}");
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.rejected("host"), 1);
    for host in ["127.0.0.1:8080", "[::1]:8080", "localhost"] {
        let mut request = script("def main(): pass");
        request.headers_mut().insert(header::HOST, host.parse().expect("host"));
        assert_eq!(h.send(request).await.0, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn with_a_token_every_route_but_the_probes_needs_it() {
    let token = "t0ken";
    let h = harness_with(success, Guard::new(&[], true, Some(token_of(token))));
    let (status, headers, body) = h.send(script("def main(): pass")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some("Bearer realm=\"pyexec\""));
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Authorization: Bearer")), "{body}");
    let wrong = with_headers(script("def main(): pass"), &[(header::AUTHORIZATION, "Bearer t0keN")]);
    let (status, headers, _) = h.send(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("invalid_token")));
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 0);
    let right = with_headers(script("def main(): pass"), &[(header::AUTHORIZATION, "Bearer t0ken")]);
    assert_eq!(h.send(right).await.0, StatusCode::OK);
    let get = |uri: &str| Request::get(uri).header(header::HOST, "localhost").body(Body::empty()).expect("request");
    for open in ["/healthz", "/readyz"] {
        assert_eq!(h.send(get(open)).await.0, StatusCode::OK, "{open}");
    }
    for closed in ["/metrics", "/openapi.json", "/executions/x"] {
        assert_eq!(h.send(get(closed)).await.0, StatusCode::UNAUTHORIZED, "{closed}");
    }
    assert_eq!((h.rejected("token_missing"), h.rejected("token_wrong")), (4, 1));
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_and_others_are_refused() {
    let h = harness_with(success, Guard::new(&["https://app.example".to_string()], false, Some(token_of("t"))));
    let preflight = |origin: &str| {
        Request::options("/execute")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .expect("request")
    };
    let (status, headers, _) = h.send(preflight("https://app.example")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    assert!(headers
        .get(header::ACCESS_CONTROL_ALLOW_HEADERS)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("authorization")));
    assert_eq!(h.send(preflight("https://evil.example")).await.0, StatusCode::FORBIDDEN);
}

fn token_of(text: &str) -> ApiToken {
    let path = std::env::temp_dir().join(format!("pyexec-router-token-{}-{text}", std::process::id()));
    std::fs::write(&path, format!("{text}\n")).expect("write token");
    let token = ApiToken::read(&path).expect("token");
    let _ = std::fs::remove_file(&path);
    token
}
