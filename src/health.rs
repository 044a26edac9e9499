//! /healthz and /metrics: one router, below both `pyexec serve` and `pyexec controller`, which
//! serve it alike.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The content type of the metrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers /healthz while the process answers at all, and /metrics with what `render` returns.
pub fn router<S, R>(render: R) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    R: Fn() -> String + Clone + Send + Sync + 'static,
{
    Router::new().route("/healthz", get(|| async { Json(json!({"status": "ok"})) })).route(
        "/metrics",
        get(move || {
            let body = render();
            async move { ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response() }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_answers_ok_and_metrics_serves_the_rendered_text() {
        let app: Router = router(|| "# EOF\n".to_string());
        let health = app.clone().oneshot(Request::get("/healthz").body(Body::empty()).expect("request")).await;
        let health = health.expect("response");
        assert_eq!(health.status(), StatusCode::OK);
        let body = to_bytes(health.into_body(), 1024).await.expect("body");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).expect("json"), json!({"status": "ok"}));
        let metrics = app.oneshot(Request::get("/metrics").body(Body::empty()).expect("request")).await;
        let metrics = metrics.expect("response");
        assert_eq!(metrics.headers()[header::CONTENT_TYPE], OPENMETRICS);
        assert_eq!(to_bytes(metrics.into_body(), 1024).await.expect("body"), "# EOF\n");
    }
}
