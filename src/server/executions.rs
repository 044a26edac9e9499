//! The executions routes: POST /executions submits, GET /executions/{id} looks (or, with
//! `?wait=`, waits), DELETE /executions/{id} cancels, GET /executions lists. A finished
//! execution shows exactly the answer POST /execute would have given, under `response`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ExecuteBody;
use super::response::{self, ResponseBody};
use super::AppState;
use crate::executions::record::is_id;
use crate::executions::{Executions, ExecutionsError, Record, Submission};
use crate::metrics::Rejection;

/// Executions a listing gives when it is not told; and the most it gives.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// One execution as the API shows it: its summary, and once it finished with an envelope, the
/// status and body POST /execute would have answered.
#[derive(Serialize)]
struct View<'a> {
    #[serde(flatten)]
    summary: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseBody<'a>>,
}

fn view(record: &Record) -> View<'_> {
    let answer = record.envelope.as_ref().map(|envelope| response::to_http(&record.id, envelope, &record.warnings));
    View {
        summary: record.summary(),
        http_status: answer.as_ref().map(|(status, _)| status.as_u16()),
        response: answer.map(|(_, body)| body),
    }
}

fn executions(state: &AppState) -> Result<&Arc<Executions>, ApiError> {
    state.executions.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("The {} placement does not keep executions yet: use POST /execute", state.executor.name()),
        )
    })
}

pub async fn submit(
    State(state): State<Arc<AppState>>,
    ExecuteBody(request): ExecuteBody,
) -> Result<Response, ApiError> {
    let executions = executions(&state)?;
    let (execution, answered) = super::prepare(&state, &request)?;
    let submission = Submission { request: execution, warnings: request.warnings.clone(), answered };
    let record = executions.submit(submission).await.map_err(error)?;
    let location = format!("/executions/{}", record.id);
    let mut body = record.summary();
    if let Some(map) = body.as_object_mut() {
        map.insert("location".into(), json!(location));
    }
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct WaitQuery {
    /// Seconds to hold the request until the execution finishes.
    wait: Option<f64>,
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let executions = executions(&state)?;
    let Query(query) = query.map_err(invalid_query)?;
    let record = match query.wait {
        Some(seconds) if is_id(&id) => executions.wait(&id, executions.settings().wait(seconds)).await,
        _ if is_id(&id) => executions.get(&id).await,
        _ => Ok(None),
    };
    let record = record.map_err(error)?.ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&record)).into_response())
}

pub async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let executions = executions(&state)?;
    if !is_id(&id) {
        return Err(not_found(&id));
    }
    let record = executions.cancel(&id).await.map_err(error)?;
    Ok(Json(view(&record)).into_response())
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<usize>,
    /// The `next` of the previous page.
    before: Option<i64>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let executions = executions(&state)?;
    let Query(query) = query.map_err(invalid_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let listed = executions.list(query.before, limit).await.map_err(error)?;
    let next = (listed.len() == limit).then(|| listed.last().map(|(position, _)| *position)).flatten();
    let page: Vec<Value> = listed.iter().map(|(_, record)| record.summary()).collect();
    Ok(Json(json!({ "executions": page, "next": next })).into_response())
}

fn invalid_query(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(format!("Invalid query: {}", rejection.body_text()))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Execution {id} not found; finished executions are removed after --executions-keep-seconds"),
    )
}

fn error(err: ExecutionsError) -> ApiError {
    match err {
        ExecutionsError::Busy { .. } => ApiError {
            retry_after_seconds: Some(1),
            ..ApiError::refused(StatusCode::TOO_MANY_REQUESTS, Rejection::Busy, err.to_string())
        },
        ExecutionsError::ShuttingDown => {
            ApiError::refused(StatusCode::SERVICE_UNAVAILABLE, Rejection::ShuttingDown, err.to_string())
        }
        ExecutionsError::AlreadyFinished { ref id, state } => {
            let id = id.clone();
            ApiError::new(StatusCode::CONFLICT, err.to_string()).with("id", id).with("state", state.as_str())
        }
        ExecutionsError::NotFound { ref id } => not_found(id),
        ExecutionsError::Store(ref inner) => {
            tracing::error!(error = %crate::telemetry::chain(inner), "the executions store failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error; the service log has the details")
        }
    }
}
