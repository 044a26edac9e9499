//! The controller's own HTTP endpoints: /healthz, /readyz (ready once the caches have synced)
//! and /metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::metrics::ControllerMetrics;
use crate::health;

pub fn router(ready: Arc<AtomicBool>, metrics: Arc<ControllerMetrics>) -> Router {
    health::router(move || metrics.render()).route(
        "/readyz",
        get(move || async move {
            if ready.load(Ordering::SeqCst) {
                (StatusCode::OK, Json(json!({"status": "ready"})))
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "Not ready: caches are syncing"})))
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn status_of(router: Router, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).expect("request");
        router.oneshot(request).await.expect("response").status()
    }

    #[tokio::test]
    async fn readyz_is_unavailable_until_the_caches_have_synced() {
        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(ControllerMetrics::default());
        assert_eq!(status_of(router(ready.clone(), metrics.clone()), "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::SeqCst);
        assert_eq!(status_of(router(ready, metrics), "/readyz").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let router = router(Arc::new(AtomicBool::new(false)), Arc::new(ControllerMetrics::default()));
        assert_eq!(status_of(router.clone(), "/healthz").await, StatusCode::OK);
        assert_eq!(status_of(router, "/metrics").await, StatusCode::OK);
    }
}
