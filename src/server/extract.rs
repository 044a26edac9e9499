//! POST /execute's request as an axum extractor. What the headers can decide (the declared
//! size, the content type) is decided before a byte of the body is read; then the body is read
//! with a cap and parsed. Every refusal is an `ApiError` carrying its reason.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};

use super::body::{self, BodyError, ScriptRequest};
use super::error::ApiError;
use super::AppState;
use crate::metrics::Rejection;

/// A script to run, read from the request.
#[derive(Debug)]
pub struct ExecuteBody(pub ScriptRequest);

impl FromRequest<Arc<AppState>> for ExecuteBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let max = state.max_request_bytes;
        if declared_length(request.headers()).is_some_and(|n| n > max as u64) {
            return Err(body_too_large(max));
        }
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let kind = body::kind_of(content_type).map_err(body_error)?;
        let bytes = axum::body::to_bytes(request.into_body(), max).await.map_err(|_| body_too_large(max))?;
        let script = body::read(kind, &bytes, state.tolerant_json).map_err(body_error)?;
        if script.script.len() > state.max_script_bytes {
            return Err(ApiError::refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                Rejection::TooLarge,
                format!("The script is {} bytes; the limit is {} bytes", script.script.len(), state.max_script_bytes),
            ));
        }
        Ok(ExecuteBody(script))
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn body_too_large(max: usize) -> ApiError {
    ApiError::refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::TooLarge,
        format!("The request body is larger than {max} bytes"),
    )
}

fn body_error(err: BodyError) -> ApiError {
    match err {
        BodyError::UnsupportedType(message) => {
            ApiError::refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, Rejection::ContentType, message)
        }
        BodyError::Invalid(message) => ApiError::invalid(message),
        err @ (BodyError::InvalidLimits(_) | BodyError::InvalidFiles(_)) => ApiError::invalid(err.to_string()),
    }
}
