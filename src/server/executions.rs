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
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::ApiError;
use super::extract::ExecuteBody;
use super::response::{self, ResponseBody};
use super::AppState;
use crate::executions::output::{OutputLog, Utf8Chunks};
use crate::executions::record::{is_id, timestamp};
use crate::executions::{Executions, ExecutionsError, Record, State as ExecutionState, Submission};
use crate::metrics::Rejection;
use crate::sandbox::run::capture::Stream;

/// Executions a listing gives when it is not told; and the most it gives.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// One execution as the API shows it: what every view has, then where to find it (POST's
/// answer) or, once it finished with an envelope, the status and body POST /execute would have
/// answered (GET and DELETE). A listing shows the first part only.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Execution")]
pub struct View<'a> {
    /// Its id, the last part of its `location`.
    id: &'a str,
    /// Where it is in its life.
    state: ExecutionState,
    /// When it was accepted (RFC 3339, UTC, milliseconds).
    #[schemars(extend("format" = "date-time"))]
    created_at: String,
    /// When its sandbox started.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    started_at: Option<String>,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    finished_at: Option<String>,
    /// Why it ended without an answer (cancelled, or the service stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    reason: Option<&'a str>,
    /// Where to find it (in POST's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    location: Option<String>,
    /// The status POST /execute would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16")]
    http_status: Option<u16>,
    /// The body POST /execute would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ResponseBody")]
    response: Option<ResponseBody<'a>>,
}

/// A page of executions, newest first.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ExecutionPage")]
pub struct Page<'a> {
    /// The executions of this page, without their answers.
    executions: Vec<View<'a>>,
    /// The `before` of the next page; null on the last one.
    next: Option<String>,
}

/// What every view of an execution shows: its id, state, times and the reason.
fn summary(record: &Record) -> View<'_> {
    View {
        id: &record.id,
        state: record.state,
        created_at: timestamp(record.created_ms),
        started_at: record.started_ms.map(timestamp),
        finished_at: record.finished_ms.map(timestamp),
        reason: record.reason.as_deref(),
        location: None,
        http_status: None,
        response: None,
    }
}

/// The execution, with its answer once it has one.
fn view(record: &Record) -> View<'_> {
    let answer = record.envelope.as_ref().map(|envelope| response::to_http(&record.id, envelope, &record.warnings));
    View {
        http_status: answer.as_ref().map(|(status, _)| status.as_u16()),
        response: answer.map(|(_, body)| body),
        ..summary(record)
    }
}

/// An execution in a route's path.
#[derive(Deserialize, JsonSchema)]
pub struct ExecutionPath {
    /// The execution's id, as POST /executions answered it.
    id: String,
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
    let body = View { location: Some(location.clone()), ..summary(&record) };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Deserialize, JsonSchema)]
pub struct WaitQuery {
    /// Seconds to hold the request until the execution finishes (at most
    /// --executions-max-wait-seconds).
    wait: Option<f64>,
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(ExecutionPath { id }): Path<ExecutionPath>,
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

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(ExecutionPath { id }): Path<ExecutionPath>,
) -> Result<Response, ApiError> {
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
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path(ExecutionPath { id }): Path<ExecutionPath>,
) -> Result<Response, ApiError> {
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

/// The data of a `state` event.
#[derive(Serialize)]
struct StateEvent {
    state: ExecutionState,
}

/// The data of a `stdout` or `stderr` event: text the script wrote since the last one.
#[derive(Serialize)]
struct OutputEvent<'a> {
    text: &'a str,
}

fn state_event(state: ExecutionState) -> Result<Event, axum::Error> {
    Event::default().event("state").json_data(StateEvent { state })
}

fn output_event(stream: Stream, text: &str) -> Result<Event, axum::Error> {
    Event::default().event(stream.as_str()).json_data(OutputEvent { text })
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

#[derive(Deserialize, JsonSchema)]
pub struct PageQuery {
    /// Executions a page holds at most.
    #[schemars(range(min = 1, max = MAX_PAGE), extend("default" = DEFAULT_PAGE))]
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
    let executions = page.executions.iter().map(summary).collect();
    Ok(Json(Page { executions, next: page.next }).into_response())
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
            let mut refusal = ApiError::new(StatusCode::CONFLICT, err.to_string()).with_id(id.clone());
            refusal.body.state = Some(state);
            refusal
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

    /// The exact text of an execution as GET shows it, unfinished, finished with an answer, and
    /// ended without one; and of the refusal of a cancel that came too late.
    #[test]
    fn executions_and_their_refusals_are_written_byte_for_byte() {
        let text = |record: &Record| serde_json::to_string(&view(record)).expect("json");
        let mut record = Record::queued("a".repeat(32), 1_700_000_000_250, vec!["w".into()]);
        let id = "a".repeat(32);
        assert_eq!(
            text(&record),
            format!(r#"{{"id":"{id}","state":"queued","created_at":"2023-11-14T22:13:20.250Z"}}"#)
        );
        (record.state, record.started_ms, record.finished_ms) =
            (State::Failed, Some(1_700_000_000_500), Some(1_700_000_001_000));
        record.envelope = Some(Envelope::rejected(Outcome::NoMain, "no main"));
        assert_eq!(
            text(&record),
            format!(
                r#"{{"id":"{id}","state":"failed","created_at":"2023-11-14T22:13:20.250Z","started_at":"2023-11-14T22:13:20.500Z","finished_at":"2023-11-14T22:13:21.000Z","http_status":400,"response":{{"error":"no main","warnings":["w"]}}}}"#
            )
        );
        (record.state, record.started_ms, record.envelope) = (State::Cancelled, None, None);
        record.reason = Some("cancelled".into());
        assert_eq!(
            text(&record),
            format!(
                r#"{{"id":"{id}","state":"cancelled","created_at":"2023-11-14T22:13:20.250Z","finished_at":"2023-11-14T22:13:21.000Z","reason":"cancelled"}}"#
            )
        );
        let late = error(ExecutionsError::AlreadyFinished { id: id.clone(), state: State::Succeeded });
        assert_eq!(late.status, StatusCode::CONFLICT);
        let body = axum::body::to_bytes(late.into_response().into_body(), 1 << 16);
        let body = futures::executor::block_on(body).expect("a body");
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!(r#"{{"error":"execution {id} already finished (succeeded)","id":"{id}","state":"succeeded"}}"#)
        );
    }

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
