//! Where the tool's arguments go, as /execute's JSON body: over HTTP to a pyexec service
//! (`Remote`, for `pyexec mcp`), or into the serving process's own execution path
//! (`InProcess`, for /mcp).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::BoxFuture;
use futures::FutureExt;
use rmcp::model::JsonObject;
use serde_json::json;

use super::{Error, HttpAnswer, Result};
use crate::metrics::Rejection;
use crate::server::error::ApiError;
use crate::server::extract::ExecuteBody;
use crate::server::guard::ApiToken;
use crate::server::AppState;

/// At most this much of an answer that is not JSON (a proxy's error page) is kept as its error.
const NON_JSON_CHARS: usize = 1000;

/// Runs one /execute body somewhere and reports the answer.
pub trait Backend: Send + Sync {
    fn execute(&self, body: JsonObject) -> BoxFuture<'_, Result<HttpAnswer>>;
}

/// A pyexec service's POST /execute, over HTTP.
pub struct Remote {
    client: reqwest::Client,
    execute_url: String,
    authorization: Option<HeaderValue>,
}

impl Remote {
    pub fn new(base_url: &str, token: Option<&ApiToken>, timeout: Duration) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/');
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::Url(base_url.to_string()));
        }
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(Error::Client)?;
        Ok(Remote {
            client,
            execute_url: format!("{base_url}/execute"),
            authorization: token.map(ApiToken::authorization),
        })
    }
}

impl Backend for Remote {
    fn execute(&self, body: JsonObject) -> BoxFuture<'_, Result<HttpAnswer>> {
        async move {
            let mut request = self.client.post(&self.execute_url).json(&body);
            if let Some(authorization) = &self.authorization {
                request = request.header(header::AUTHORIZATION, authorization.clone());
            }
            let response =
                request.send().await.map_err(|source| Error::Unreachable { url: self.execute_url.clone(), source })?;
            let status = response.status().as_u16();
            let retry_after_seconds = retry_after(response.headers());
            let text = response.text().await.map_err(Error::Answer)?;
            let body = serde_json::from_str(&text)
                .unwrap_or_else(|_| json!({ "error": text.chars().take(NON_JSON_CHARS).collect::<String>() }));
            Ok(HttpAnswer { status, body, retry_after_seconds })
        }
        .boxed()
    }
}

/// The serving process's own execution path: what POST /execute answers to a body, without HTTP.
pub struct InProcess {
    state: Arc<AppState>,
}

impl InProcess {
    pub fn new(state: Arc<AppState>) -> Self {
        InProcess { state }
    }

    /// POST /execute's response to `body`, from the extractor and the function its handler uses.
    async fn respond(&self, body: Vec<u8>) -> Response {
        let request = Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body));
        let request = match request {
            Ok(request) => request,
            Err(err) => return internal_error(&err),
        };
        let ExecuteBody(request) = match ExecuteBody::from_request(request, &self.state).await {
            Ok(body) => body,
            Err(refusal) => return refusal.into_response(),
        };
        match crate::server::run(&self.state, request).await {
            Ok(execution) => {
                let (status, body) = execution.response();
                (status, Json(body)).into_response()
            }
            Err(refusal) => refusal.into_response(),
        }
    }
}

impl Backend for InProcess {
    fn execute(&self, body: JsonObject) -> BoxFuture<'_, Result<HttpAnswer>> {
        async move {
            let response = self.respond(serde_json::to_vec(&body).map_err(Error::Encode)?).await;
            // Refusals are counted as the API's middleware counts them.
            if let Some(reason) = response.extensions().get::<Rejection>() {
                self.state.metrics.record_rejection(*reason);
            }
            let status = response.status().as_u16();
            let retry_after_seconds = retry_after(response.headers());
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(Error::Respond)?;
            let body = serde_json::from_slice(&bytes).map_err(Error::Encode)?;
            Ok(HttpAnswer { status, body, retry_after_seconds })
        }
        .boxed()
    }
}

/// A request that could not be built, answered the way the API answers an internal error.
fn internal_error(err: &dyn std::error::Error) -> Response {
    tracing::error!(error = %err, "building the in-process request");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error; the service log has the details").into_response()
}

/// A `Retry-After` given in seconds.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}
