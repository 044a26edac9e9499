//! `pyexec serve`: wires the executor, the router and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::{Error, Result};
use crate::config::{ExecutorKind, ServeArgs};
use crate::executions::{Executions, KubeExecutions, LocalExecutions};
use crate::executor::kube::DEFAULT_MAX_IN_FLIGHT;
use crate::executor::{Executor, KubeExecutor, LocalExecutor};
use crate::metrics::Metrics;
use crate::sandbox::jail::cgroup::{self, DynMods};
use crate::sandbox::warm::pool::{Pool, PoolSettings};
use crate::sandbox::Supervisor;
use crate::server::guard::{ApiToken, Guard};
use crate::server::{app_with, AppState};

pub async fn run(args: ServeArgs) -> Result<()> {
    let guard = guard(&args)?;
    let metrics = Arc::new(Metrics::default());
    let limits = args.sandbox.limits.clone();
    let defaults = limits.defaults()?;
    let supervisor_for_shutdown;
    let mut pool_for_shutdown = None;
    let mut max_script_bytes = args.max_script_bytes;
    let mut kube_executor = None;
    let executor: Arc<dyn Executor> = match args.executor {
        ExecutorKind::Local => {
            let supervisor = Supervisor::new(&args.sandbox)?.with_compiled_harness();
            supervisor_for_shutdown = Some(supervisor.clone());
            if args.sandbox.cgroup_favor_dynmods && supervisor.cgroups().enabled() {
                favor_dynamic_modifications();
            }
            let concurrency =
                args.max_concurrency.unwrap_or_else(|| crate::executor::local::default_concurrency(&defaults));
            tracing::info!(
                nsjail = %supervisor.paths().nsjail.display(),
                config = %supervisor.paths().config.display(),
                python_env = %supervisor.paths().python_env.display(),
                cgroups = %supervisor.cgroups().describe(),
                concurrency,
                max_queue = args.max_queue,
                overload_wait_factor = args.overload_wait_factor,
                "local executor ready"
            );
            let executor =
                LocalExecutor::new(supervisor.clone(), concurrency, args.max_queue, defaults.clone(), metrics.clone())
                    .with_overload_wait_factor(args.overload_wait_factor);
            match pool_refusal(&args.pool) {
                Some(reason) => {
                    tracing::info!(reason, "no pool of ready sandboxes: every script starts its own sandbox");
                    Arc::new(executor)
                }
                None => {
                    let slots = executor.slots();
                    let may_refill = Box::new(move || slots.available_permits() > 0);
                    if !supervisor.cgroups().enabled() {
                        tracing::info!(
                            "no cgroups: a ready sandbox lowers its rlimits to its job's when the job arrives; memory is bounded per process (RLIMIT_AS), not for the script's whole process tree"
                        );
                    }
                    let pool = Pool::start(supervisor, args.pool.clone(), defaults, may_refill, metrics.clone());
                    tracing::info!(
                        min = args.pool.pool_min,
                        max = args.pool.pool_max,
                        idle_seconds = args.pool.pool_idle_seconds,
                        starts_at_once = args.pool.starts_at_once(),
                        preload = ?args.pool.preload.preload_modules,
                        "pool of ready sandboxes on (min and max for each kind: plain, and preloaded)"
                    );
                    pool_for_shutdown = Some(pool.clone());
                    Arc::new(executor.with_pool(pool))
                }
            }
        }
        ExecutorKind::Kubernetes => {
            supervisor_for_shutdown = None;
            if args.max_script_bytes > crate::crd::MAX_SCRIPT_CHARS {
                // A larger script could not be stored in a PythonExecution: refuse it with 413.
                max_script_bytes = crate::crd::MAX_SCRIPT_CHARS;
                tracing::info!(max_script_bytes, "scripts are limited to what a PythonExecution holds");
            }
            let max_in_flight = args.max_concurrency.unwrap_or(DEFAULT_MAX_IN_FLIGHT) + args.max_queue;
            let executor = KubeExecutor::connect(args.kube.clone(), max_in_flight, metrics.clone())
                .await?
                .with_overload_wait_factor(args.overload_wait_factor);
            let executor = Arc::new(executor);
            tracing::info!(
                namespace = %args.kube.kube_namespace,
                keep_executions = args.kube.keep_executions,
                max_in_flight,
                overload_wait_factor = args.overload_wait_factor,
                "kubernetes executor ready; waiting on one shared watch of PythonExecutions"
            );
            kube_executor = Some(executor.clone());
            executor
        }
    };
    // Executions (POST /executions): kept in SQLite locally, as PythonExecutions on Kubernetes.
    let executions: Arc<dyn Executions> = match kube_executor {
        Some(kube) => Arc::new(KubeExecutions::new(kube, args.executions.clone(), metrics.clone())),
        None => LocalExecutions::open(args.executions.clone(), executor.clone(), metrics.clone())?,
    };
    let state = Arc::new(AppState {
        executions: executions.clone(),
        executor,
        limits,
        metrics,
        max_request_bytes: args.max_request_bytes,
        max_script_bytes,
        input_files: args.input_files.clone(),
        tolerant_json: !args.strict_json,
        guard,
        last_ready: Mutex::new(None),
    });
    let listener =
        TcpListener::bind(args.listen).await.map_err(|source| Error::Listen { addr: args.listen, source })?;
    let local = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(listen = %local, "pyexec serving; POST /execute runs a script");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let router = app_with(state.clone(), crate::mcp::router(state));
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    // Submitted executions get the same grace as the requests in flight, beside them.
    let executions_stopped = {
        let (executions, mut stop_rx) = (executions.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            executions.shutdown(grace).await;
        })
    };
    let forced = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: no new connections, finishing in-flight executions"
        );
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(Error::Serve)?,
        () = forced => {
            // Dropping the server drops in-flight executions: their sandboxes are killed and
            // their cgroups removed by the supervisor's guards.
            tracing::warn!("grace period over; killing in-flight executions");
        }
    }
    // The server ends only after the stop signal: the executions' shutdown is under way.
    if let Err(err) = executions_stopped.await {
        tracing::warn!(error = %err, "stopping the executions failed");
    }
    if let Some(pool) = pool_for_shutdown {
        pool.shutdown().await;
    }
    if let Some(supervisor) = supervisor_for_shutdown {
        supervisor.shutdown().await;
    }
    tracing::info!("pyexec stopped");
    Ok(())
}

/// `--cgroup-favor-dynmods`: says what it did; a failure is logged, not fatal (the sandboxes
/// work without it, only slower to start beside fork bombs).
fn favor_dynamic_modifications() {
    match cgroup::favor_dynamic_modifications() {
        Ok(DynMods::TurnedOn(mount)) => tracing::info!(
            mount = %mount.display(),
            "remounted cgroup2 with favordynmods (--cgroup-favor-dynmods): moving sandboxes into their cgroups no longer waits behind forks"
        ),
        Ok(DynMods::AlreadyOn(mount)) => tracing::info!(mount = %mount.display(), "cgroup2 already has favordynmods"),
        Ok(DynMods::NoCgroup2) => {
            tracing::info!("no cgroup2 mount: favordynmods not set (--cgroup-favor-dynmods)")
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not set favordynmods (--cgroup-favor-dynmods); continuing without")
        }
    }
}

/// Why the pool stays off, if it does: turned off. (Without cgroups a ready sandbox's harness
/// lowers its rlimits to its job's when the job arrives, as inside gVisor.)
fn pool_refusal(settings: &PoolSettings) -> Option<&'static str> {
    (!settings.enabled()).then_some("--pool-max is 0")
}

/// The API's guard from the settings: the token is read here, once.
fn guard(args: &ServeArgs) -> Result<Guard> {
    let token = args.api_token_file.as_deref().map(ApiToken::read).transpose()?;
    let loopback = args.listen.ip().is_loopback();
    if !loopback && token.is_none() {
        tracing::warn!(
            listen = %args.listen,
            "listening beyond loopback without --api-token-file: anyone who can reach this address can run code"
        );
    }
    tracing::info!(
        token_required = token.is_some(),
        loopback_hosts_only = loopback,
        allowed_origins = ?args.allowed_origins,
        "API guard"
    );
    Ok(Guard::new(&args.allowed_origins, loopback, token))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
