//! The HTTP layer's one error type: every refusal is `{"error": "..."}` with a fitting status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

use crate::executions::State;
use crate::metrics::Rejection;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// What the client reads (boxed: a result's error stays small).
    pub body: Box<ErrorBody>,
    pub retry_after_seconds: Option<u64>,
    /// Why the request was refused, for `pyexec_rejected_requests_total`; None for errors that
    /// are not refusals (unknown routes, internal failures).
    pub rejection: Option<Rejection>,
    /// Extra headers (`WWW-Authenticate`, for example).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// Why a request has no other answer: what went wrong, and what identifies it where that helps.
#[derive(Debug, Default, PartialEq, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong, in one line, and what to send instead where the request was at fault.
    pub error: String,
    /// The execution's id: the sandbox or the service failed running it, or it had already
    /// finished when asked to cancel.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// The state the execution had already reached when asked to cancel.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "State")]
    pub state: Option<State>,
    /// The PythonExecution that did not finish in time (kubernetes executor).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub name: Option<String>,
    /// How the request body was read, when the caller should know (it was not valid JSON).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>) -> Self {
        ErrorBody { error: message.into(), ..Default::default() }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: Box::new(ErrorBody::new(message)),
            retry_after_seconds: None,
            rejection: None,
            headers: Vec::new(),
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

    /// The error names the execution it is about.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.body.id = Some(id.into());
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
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
