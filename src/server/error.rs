//! The HTTP layer's one error type: every refusal is `{"error": "..."}` with a fitting status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::metrics::Rejection;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
    /// Why the request was refused, for `pyexec_rejected_requests_total`; None for errors that
    /// are not refusals (unknown routes, internal failures).
    pub rejection: Option<Rejection>,
    /// Extra headers (`WWW-Authenticate`, for example).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Extra fields for the body (an execution's name, for example).
    pub extra: Box<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_seconds: None,
            rejection: None,
            headers: Vec::new(),
            extra: Default::default(),
        }
    }

    /// A refusal of the request, counted under `reason`.
    pub fn refused(status: StatusCode, reason: Rejection, message: impl Into<String>) -> Self {
        ApiError { rejection: Some(reason), ..Self::new(status, message) }
    }

    /// A 400 for a body that is not a valid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::refused(StatusCode::BAD_REQUEST, Rejection::Invalid, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(map) = body.as_object_mut() {
            map.extend(*self.extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        // The reason travels with the response to the layer that counts refusals.
        if let Some(reason) = self.rejection {
            response.extensions_mut().insert(reason);
        }
        response
    }
}
