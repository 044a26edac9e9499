//! The HTTP API: routes, handlers and graceful shutdown.

pub mod body;
mod distinct_keys;
pub mod error;
mod executions;
pub mod extract;
pub mod guard;
mod loopback;
pub mod openapi;
pub mod response;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Mutex;

use crate::executions::Executions;
use crate::executor::{ExecuteError, ExecutionRequest, Executor};
use crate::metrics::{Metrics, Rejection};
use crate::sandbox::envelope::NO_MAIN_MESSAGE;
use crate::sandbox::files::InputFileSettings;
use crate::sandbox::{Envelope, Job, LimitSettings, Outcome};
use body::ScriptRequest;
use error::ApiError;
use extract::ExecuteBody;
use guard::Guard;

/// How long a successful readiness check is reused: probes then cost one sandbox run per
/// interval, not one per probe.
const READINESS_CACHE: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct AppState {
    pub executor: Arc<dyn Executor>,
    /// Executions submitted with POST /executions, kept by the placement.
    pub executions: Arc<dyn Executions>,
    pub limits: LimitSettings,
    pub metrics: Arc<Metrics>,
    pub max_request_bytes: usize,
    pub max_script_bytes: usize,
    /// The caps on a request's input files.
    pub input_files: InputFileSettings,
    pub tolerant_json: bool,
    /// Who may call: origins, hosts, the bearer token.
    pub guard: Guard,
    pub last_ready: Mutex<Option<Instant>>,
}

/// The router, without a listener: tests drive it directly.
pub fn app(state: Arc<AppState>) -> Router {
    app_with(state, Router::new())
}

/// The router with `extra` routes (the MCP endpoint) beside the API's, behind the same guard.
pub fn app_with(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    let api = Router::new()
        .route("/execute", post(execute))
        .route("/executions", post(executions::submit).get(executions::list))
        .route("/executions/{id}", get(executions::get).delete(executions::cancel))
        .route("/executions/{id}/events", get(executions::events))
        .merge(extra)
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let metrics = state.metrics.clone();
    Router::new()
        .merge(api)
        .merge(crate::health::router(move || metrics.render()))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "Not found: POST /execute runs a script; GET /openapi.json describes the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed: see GET /openapi.json")
        })
        // Outermost last: refusals by the guard are counted too.
        .layer(middleware::from_fn_with_state(state.clone(), guard::enforce))
        .layer(middleware::from_fn_with_state(state.clone(), count_rejections))
        .with_state(state)
}

async fn execute(State(state): State<Arc<AppState>>, ExecuteBody(request): ExecuteBody) -> Result<Response, ApiError> {
    let execution = run(&state, request).await?;
    let (status, body) = execution.response();
    Ok((status, Json(body)).into_response())
}

/// One script that ran (or was decided without a sandbox), with what the response needs.
pub struct Execution {
    pub id: String,
    pub envelope: Envelope,
    pub warnings: Vec<String>,
}

impl Execution {
    /// The status and body of the contract's response.
    pub fn response(&self) -> (StatusCode, response::ResponseBody<'_>) {
        response::to_http(&self.id, &self.envelope, &self.warnings)
    }
}

/// The work of POST /execute once its body is read: decide what needs no sandbox, run the
/// script, log the run. The MCP tool (src/mcp/) calls it too, with its arguments read as the
/// same body.
pub async fn run(state: &AppState, request: ScriptRequest) -> Result<Execution, ApiError> {
    let Prepared { execution, answered, input_bytes, warnings } = prepare(state, request)?;
    let id = execution.id.clone();
    let script_bytes = execution.job.script.len();
    let envelope = match answered {
        Some(envelope) => envelope,
        None => {
            state.executor.admit(&execution.job.limits).map_err(|err| execute_error(&id, err))?;
            state.executor.execute(execution).await.map_err(|err| execute_error(&id, err))?
        }
    };
    tracing::info!(
        id = %id,
        outcome = envelope.outcome.as_str(),
        duration_ms = envelope.duration_ms,
        returncode = envelope.returncode,
        script_bytes,
        input_bytes,
        output_files = envelope.files.len(),
        "execution finished"
    );
    Ok(Execution { id, envelope, warnings })
}

/// What POST /execute and POST /executions both decide before any sandbox.
struct Prepared {
    execution: ExecutionRequest,
    /// The answer when the script cannot define main().
    answered: Option<Envelope>,
    /// The input files' size, decoded.
    input_bytes: u64,
    /// How the body was read, for the answer.
    warnings: Vec<String>,
}

/// The limits and the input files (400 when the request asks past a maximum or its placement
/// cannot store the job), a new id, and the answer when the script cannot define main().
/// The request's script and files move into the job.
fn prepare(state: &AppState, request: ScriptRequest) -> Result<Prepared, ApiError> {
    let limits = state.limits.resolve(&request.limits).map_err(|e| ApiError::invalid(e.to_string()))?;
    let input_bytes = request.files.check(&state.input_files, &limits).map_err(|e| ApiError::invalid(e.to_string()))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let answered = (!mentions_main(&request.script)).then(|| Envelope::rejected(Outcome::NoMain, NO_MAIN_MESSAGE));
    let ScriptRequest { script, files, warnings, .. } = request;
    let job = Job { script, limits, files };
    if let Some(refusal) = state.executor.refusal(&job) {
        return Err(ApiError::invalid(refusal));
    }
    let execution = ExecutionRequest { id, job, started: None, output: None };
    Ok(Prepared { execution, answered, input_bytes, warnings })
}

/// Counts the refusals the routes and the guard answered with, by the reason they carry.
async fn count_rejections(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(reason) = response.extensions().get::<Rejection>() {
        state.metrics.record_rejection(*reason);
    }
    response
}

fn mentions_main(script: &str) -> bool {
    script.contains("main")
}

pub(crate) fn execute_error(id: &str, err: ExecuteError) -> ApiError {
    match err {
        ExecuteError::Busy { retry_after_seconds } => ApiError {
            retry_after_seconds: Some(retry_after_seconds),
            ..ApiError::refused(StatusCode::TOO_MANY_REQUESTS, Rejection::Busy, err.to_string())
        },
        ExecuteError::Overloaded { retry_after_seconds, .. } => ApiError {
            retry_after_seconds: Some(retry_after_seconds),
            ..ApiError::refused(StatusCode::TOO_MANY_REQUESTS, Rejection::Overloaded, err.to_string())
        },
        ExecuteError::ShuttingDown => {
            ApiError::refused(StatusCode::SERVICE_UNAVAILABLE, Rejection::ShuttingDown, err.to_string())
        }
        ExecuteError::NotFinished { ref name } => {
            let mut refusal = ApiError::new(StatusCode::GATEWAY_TIMEOUT, err.to_string());
            refusal.body.name = Some(name.clone());
            refusal
        }
        ExecuteError::TaskFailed(_)
        | ExecuteError::CreateFailed(_)
        | ExecuteError::Deleted { .. }
        | ExecuteError::NoStatus { .. } => {
            tracing::error!(id, error = %crate::telemetry::chain(&err), "execution failed inside the service");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error; the service log has the details")
                .with_id(id)
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut last = state.last_ready.lock().await;
    if last.is_some_and(|at| at.elapsed() < READINESS_CACHE) {
        return Json(json!({"status": "ready"})).into_response();
    }
    match state.executor.ready().await {
        Ok(()) => {
            *last = Some(Instant::now());
            Json(json!({"status": "ready"})).into_response()
        }
        Err(reason) => {
            *last = None;
            tracing::warn!(reason = %crate::telemetry::chain(&reason), "not ready");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Not ready: {reason}")).into_response()
        }
    }
}
