//! The executions routes: POST /executions submits, GET /executions/{id} looks (or, with
//! `?wait=`, waits), GET /executions/{id}/events streams, DELETE /executions/{id} cancels, GET
//! /executions lists. A finished
//! execution shows exactly the answer POST /execute would have given, under `response`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ExecuteBody;
use super::response::{self, ResponseBody};
use super::AppState;
use crate::executions::output::Utf8Chunks;
use crate::executions::record::is_id;
use crate::executions::{Executions, ExecutionsError, Record, Submission};
use crate::metrics::Rejection;
use crate::sandbox::run::capture::Stream;

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

pub async fn submit(
    State(state): State<Arc<AppState>>,
    ExecuteBody(request): ExecuteBody,
) -> Result<Response, ApiError> {
    let executions = &state.executions;
    let super::Prepared { execution, answered, .. } = super::prepare(&state, &request)?;
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
    let executions = &state.executions;
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
    let executions = &state.executions;
    if !is_id(&id) {
        return Err(not_found(&id));
    }
    let record = executions.cancel(&id).await.map_err(error)?;
    Ok(Json(view(&record)).into_response())
}

/// GET /executions/{id}/events: Server-Sent Events. `state` when it changes, `stdout` and
/// `stderr` chunks as the sandbox writes them (all of them so far for a late client, up to the
/// output caps), then `result` with the finished execution, and the stream ends.
pub async fn events(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let executions = state.executions.clone();
    if !is_id(&id) || executions.get(&id).await.map_err(error)?.is_none() {
        return Err(not_found(&id));
    }
    let (sender, events) = futures::channel::mpsc::channel::<Event>(16);
    tokio::spawn(send_events(executions, id, sender));
    let events = events.map(Ok::<_, Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Feeds one client's event stream until the execution's end (or the client leaves: a send
/// then fails).
async fn send_events(executions: Arc<dyn Executions>, id: String, mut sender: futures::channel::mpsc::Sender<Event>) {
    let mut text = [Utf8Chunks::default(), Utf8Chunks::default()];
    if let Some((log, mut state)) = executions.follow(&id) {
        let mut chunks = log.subscribe();
        let (mut sent, mut shown) = (0, None);
        loop {
            let now = *state.borrow_and_update();
            if shown != Some(now) && !now.is_finished() {
                shown = Some(now);
                if send(&mut sender, Event::default().event("state").json_data(json!({"state": now.as_str()})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            for (stream, bytes) in log.since(sent) {
                sent += 1;
                let chunk = text[stream as usize].push(&bytes);
                if !chunk.is_empty() && send(&mut sender, output_event(stream, &chunk)).await.is_err() {
                    return;
                }
            }
            if now.is_finished() {
                break;
            }
            // Each chunk and each change of state wakes this; the senders go when it ends.
            tokio::select! {
                changed = chunks.changed() => if changed.is_err() { let _ = state.changed().await; },
                changed = state.changed() => if changed.is_err() { break },
            }
        }
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = text[stream as usize].finish();
            if !rest.is_empty() && send(&mut sender, output_event(stream, &rest)).await.is_err() {
                return;
            }
        }
        let _ = send_result(&*executions, &id, &mut sender, false).await;
    } else {
        // Output comes with the answer here: show the state until then.
        let mut shown = None;
        loop {
            let wait = executions.settings().wait(f64::INFINITY);
            let record = match executions.wait(&id, wait).await {
                Ok(Some(record)) => record,
                Ok(None) => return,
                Err(err) => {
                    return tracing::warn!(id, error = %crate::telemetry::chain(&err), "could not follow an execution")
                }
            };
            if record.state.is_finished() {
                break;
            }
            if shown != Some(record.state) {
                shown = Some(record.state);
                let event = Event::default().event("state").json_data(json!({"state": record.state.as_str()}));
                if send(&mut sender, event).await.is_err() {
                    return;
                }
            }
        }
        let _ = send_result(&*executions, &id, &mut sender, true).await;
    }
}

/// Sends the finished execution as `result`, after its stored output when the client saw none
/// of it as it happened.
async fn send_result(
    executions: &dyn Executions,
    id: &str,
    sender: &mut futures::channel::mpsc::Sender<Event>,
    with_output: bool,
) -> Result<(), futures::channel::mpsc::SendError> {
    let record = match executions.get(id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(()),
        Err(err) => {
            tracing::error!(id, error = %crate::telemetry::chain(&err), "could not read a finished execution");
            return Ok(());
        }
    };
    if let (true, Some(envelope)) = (with_output, &record.envelope) {
        for (stream, text) in [(Stream::Stdout, &envelope.stdout), (Stream::Stderr, &envelope.stderr)] {
            if !text.is_empty() {
                send(sender, output_event(stream, text)).await?;
            }
        }
    }
    send(sender, Event::default().event("result").json_data(view(&record))).await
}

fn output_event(stream: Stream, text: &str) -> Result<Event, axum::Error> {
    Event::default().event(stream.as_str()).json_data(json!({ "text": text }))
}

async fn send(
    sender: &mut futures::channel::mpsc::Sender<Event>,
    event: Result<Event, axum::Error>,
) -> Result<(), futures::channel::mpsc::SendError> {
    match event {
        Ok(event) => sender.send(event).await,
        // Only a value that cannot be JSON fails here; none of these can.
        Err(err) => {
            tracing::error!(error = %err, "an event could not be written");
            Ok(())
        }
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<usize>,
    /// The `next` of the previous page.
    before: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let executions = &state.executions;
    let Query(query) = query.map_err(invalid_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let page = executions.list(query.before.as_deref(), limit).await.map_err(error)?;
    let listed: Vec<Value> = page.executions.iter().map(Record::summary).collect();
    Ok(Json(json!({ "executions": listed, "next": page.next })).into_response())
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
        ExecutionsError::BadCursor(_) => ApiError::invalid(err.to_string()),
        ExecutionsError::Store(_) | ExecutionsError::Kube(_) => {
            tracing::error!(error = %crate::telemetry::chain(&err), "the executions store failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error; the service log has the details")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::executions::State;
    use crate::sandbox::{Envelope, Outcome};

    #[test]
    fn every_field_an_execution_can_show_is_documented_and_nothing_else() {
        let mut record = Record::queued("a".repeat(32), 1, Vec::new());
        (record.state, record.started_ms, record.finished_ms) = (State::Failed, Some(2), Some(3));
        record.envelope = Some(Envelope::rejected(Outcome::Exception, "boom"));
        record.reason = Some("why".into());
        let mut shown: BTreeSet<String> = serde_json::to_value(view(&record))
            .expect("a view")
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        // POST's answer adds where to find it.
        shown.insert("location".into());
        let document = crate::server::openapi::document();
        let documented: BTreeSet<String> = document["components"]["schemas"]["Execution"]["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        assert_eq!(shown, documented);
    }
}
