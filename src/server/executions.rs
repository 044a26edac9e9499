//! The executions routes: POST /executions submits, GET /executions/{id} looks (or, with
//! `?wait=`, waits), GET /executions/{id}/events streams, DELETE /executions/{id} cancels, GET
//! /executions lists. A finished
//! execution shows exactly the answer POST /execute would have given, under `response`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::error::ApiError;
use super::extract::ExecuteBody;
use super::response::{self, ResponseBody};
use super::AppState;
use crate::executions::output::{OutputLog, Utf8Chunks};
use crate::executions::record::is_id;
use crate::executions::{Executions, ExecutionsError, Record, State as ExecutionState, Submission};
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
    let super::Prepared { execution, answered, warnings, .. } = super::prepare(&state, request)?;
    if answered.is_none() {
        state.executor.admit(&execution.job.limits).map_err(|err| super::execute_error(&execution.id, err))?;
    }
    let submission = Submission { request: execution, warnings, answered };
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
    if !is_id(&id) {
        return Err(not_found(&id));
    }
    let record = match query.wait {
        Some(seconds) => executions.wait(&id, executions.settings().wait(seconds)).await,
        None => executions.get(&id).await,
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
    if !is_id(&id) {
        return Err(not_found(&id));
    }
    let known = match executions.follow(&id) {
        Some((log, state)) => Known::Live(log, state),
        None => Known::Stored(Box::new(executions.get(&id).await.map_err(error)?.ok_or_else(|| not_found(&id))?)),
    };
    let (mut sender, events) = futures::channel::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        // An error means the client left.
        let _ = send_events(&*executions, &id, known, &mut sender).await;
    });
    let events = events.map(Ok::<_, Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// What the events route knows of an execution when a client connects.
enum Known {
    /// Unfinished here: its output so far and its state, to follow.
    Live(Arc<OutputLog>, watch::Receiver<ExecutionState>),
    /// Finished, or kept where output comes only with the answer (Kubernetes).
    Stored(Box<Record>),
}

type Sender = futures::channel::mpsc::Sender<Event>;
type SendError = futures::channel::mpsc::SendError;

/// Feeds one client's event stream until the execution's end.
async fn send_events(
    executions: &dyn Executions,
    id: &str,
    known: Known,
    sender: &mut Sender,
) -> Result<(), SendError> {
    let (finished, output_sent) = match known {
        Known::Live(log, state) => {
            follow_output(&log, state, sender).await?;
            (read(executions, id, None).await, true)
        }
        Known::Stored(record) => (until_finished(executions, id, *record, sender).await?, false),
    };
    let Some(record) = finished else { return Ok(()) };
    // A client that saw none of the output as it happened gets the stored output first.
    if let (false, Some(envelope)) = (output_sent, &record.envelope) {
        for (stream, text) in [(Stream::Stdout, &envelope.stdout), (Stream::Stderr, &envelope.stderr)] {
            if !text.is_empty() {
                send(sender, output_event(stream, text)).await?;
            }
        }
    }
    send(sender, Event::default().event("result").json_data(view(&record))).await
}

/// Sends the state when it changes and each chunk of output as it is read, until the end.
async fn follow_output(
    log: &OutputLog,
    mut state: watch::Receiver<ExecutionState>,
    sender: &mut Sender,
) -> Result<(), SendError> {
    let mut text = [Utf8Chunks::default(), Utf8Chunks::default()];
    let mut chunks = log.subscribe();
    let (mut sent, mut shown) = (0, None);
    loop {
        let now = *state.borrow_and_update();
        if shown != Some(now) && !now.is_finished() {
            shown = Some(now);
            send(sender, state_event(now)).await?;
        }
        for (stream, bytes) in log.since(sent) {
            sent += 1;
            let chunk = text[stream as usize].push(&bytes);
            if !chunk.is_empty() {
                send(sender, output_event(stream, &chunk)).await?;
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
        if !rest.is_empty() {
            send(sender, output_event(stream, &rest)).await?;
        }
    }
    Ok(())
}

/// Sends the state when it changes until the execution has finished, and returns it then
/// (none once it is gone).
async fn until_finished(
    executions: &dyn Executions,
    id: &str,
    mut record: Record,
    sender: &mut Sender,
) -> Result<Option<Record>, SendError> {
    let mut shown = None;
    while !record.state.is_finished() {
        if shown != Some(record.state) {
            shown = Some(record.state);
            send(sender, state_event(record.state)).await?;
        }
        let longest = executions.settings().wait(f64::INFINITY);
        let Some(next) = read(executions, id, Some(longest)).await else { return Ok(None) };
        record = next;
    }
    Ok(Some(record))
}

/// The execution, after waiting up to `wait` for its end if asked; none when it is gone or
/// cannot be read (logged).
async fn read(executions: &dyn Executions, id: &str, wait: Option<Duration>) -> Option<Record> {
    let read = match wait {
        Some(wait) => executions.wait(id, wait).await,
        None => executions.get(id).await,
    };
    read.unwrap_or_else(|err| {
        tracing::error!(id, error = %crate::telemetry::chain(&err), "could not read an execution for its events");
        None
    })
}

fn state_event(state: ExecutionState) -> Result<Event, axum::Error> {
    Event::default().event("state").json_data(json!({"state": state.as_str()}))
}

fn output_event(stream: Stream, text: &str) -> Result<Event, axum::Error> {
    Event::default().event(stream.as_str()).json_data(json!({ "text": text }))
}

async fn send(sender: &mut Sender, event: Result<Event, axum::Error>) -> Result<(), SendError> {
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
