//! `pyexec sandbox`: one script, one envelope on stdout. The sandbox pod's entrypoint, and a
//! way to try the sandbox without the HTTP API. With `--job-on-stdin` it prepares a ready
//! sandbox first and then waits for its one job on stdin (a sandbox pod started ahead).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::{Error, Result};
use crate::config::SandboxArgs;
use crate::sandbox::jail::gvisor;
use crate::sandbox::job_on_stdin::{self, Delivery};
use crate::sandbox::run::capture::Tap;
use crate::sandbox::run::frames::FrameWriter;
use crate::sandbox::warm::pool::READY_TIMEOUT;
use crate::sandbox::warm::ready::ReadySandbox;
use crate::sandbox::{
    Envelope, Finished, Isolation, Job, Limits, Outcome, SandboxSettings, Supervisor, INVALID_JOB_EXIT_CODE,
    NO_JOB_EXIT_CODE, NO_JOB_MESSAGE, READY_MARKER,
};

/// nsjail's own time limit of `--job-on-stdin`'s ready jail: only a backstop for a sandbox
/// left waiting (the controller replaces idle pods far sooner); a job that comes later runs cold.
const READY_BACKSTOP: Duration = Duration::from_secs(24 * 3600);

/// Runs the command; the exit code is SUCCESS whenever an envelope was printed, except for
/// `--job-on-stdin`'s own codes (`job_on_stdin::NO_JOB_EXIT_CODE`, `INVALID_JOB_EXIT_CODE`).
pub async fn run(args: SandboxArgs) -> Result<ExitCode> {
    if args.job_on_stdin {
        return job_on_stdin(&args).await;
    }
    let job = job(&args)?;
    let envelope = match refusal(&args.sandbox) {
        Some(envelope) => envelope,
        None => {
            let supervisor = Supervisor::new(&args.sandbox)?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            let envelope = supervisor.run(&id, &job).await;
            supervisor.shutdown().await;
            envelope
        }
    };
    report(&args, &envelope)?;
    Ok(ExitCode::SUCCESS)
}

/// `--job-on-stdin`: prepare, say so on stderr, take one job from stdin, run it.
async fn job_on_stdin(args: &SandboxArgs) -> Result<ExitCode> {
    if let Some(envelope) = refusal(&args.sandbox) {
        report(args, &envelope)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Registered first, so that a SIGTERM while preparing is not lost. As a pod's first process
    // this one would otherwise ignore SIGTERM, and an idle pod being deleted would wait for
    // its grace period's SIGKILL.
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let supervisor = Supervisor::new(&args.sandbox)?;
    let defaults = args.sandbox.limits.defaults()?;
    let ready = prepare(&supervisor, &defaults, &args.preload.modules()).await;
    announce_ready();
    let delivery = tokio::select! {
        delivery = job_on_stdin::from_stdin() => delivery,
        () = terminated(&mut sigterm) => {
            tracing::info!("SIGTERM before a job arrived");
            Delivery::Nothing
        }
    };
    let job = match delivery {
        Delivery::Job(job) => *job,
        Delivery::Nothing => {
            discard(&supervisor, ready).await;
            tracing::info!("no job arrived on stdin; nothing ran");
            write_termination_message(args, NO_JOB_MESSAGE);
            return Ok(ExitCode::from(NO_JOB_EXIT_CODE));
        }
        Delivery::Invalid(invalid) => {
            discard(&supervisor, ready).await;
            let error = crate::telemetry::chain(&invalid);
            tracing::error!(error, "refusing what arrived on stdin; nothing ran");
            report(args, &Envelope::rejected(Outcome::SandboxFailure, error))?;
            return Ok(ExitCode::from(INVALID_JOB_EXIT_CODE));
        }
    };
    // The envelope goes out as soon as there is one; the sandbox's removal finishes after.
    let Finished { envelope, removal } = run_job(&supervisor, ready, job).await;
    let reported = report(args, &envelope);
    removal.wait().await;
    supervisor.shutdown().await;
    reported?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the one ready sandbox, under the default limits. Without it (a preload module that
/// fails to import, say) the job still runs, cold; the log says why.
async fn prepare(supervisor: &Supervisor, limits: &Limits, preload: &[String]) -> Option<ReadySandbox> {
    let started = Instant::now();
    let id = format!("ready-{}", std::process::id());
    let starting = supervisor.start_ready(&id, limits, preload, READY_BACKSTOP);
    match tokio::time::timeout(READY_TIMEOUT, starting).await {
        Ok(Ok(sandbox)) => {
            tracing::info!(?preload, ms = started.elapsed().as_millis() as u64, "ready sandbox prepared");
            Some(sandbox)
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "the ready sandbox failed to start; the job will start its own");
            None
        }
        Err(_) => {
            tracing::error!(
                seconds = READY_TIMEOUT.as_secs(),
                "the ready sandbox took too long; the job will start its own"
            );
            None
        }
    }
}

/// The readiness marker, on a line of its own.
fn announce_ready() {
    let mut stderr = std::io::stderr().lock();
    // A closed stderr means nobody waits for the marker; a job that comes anyway still runs.
    let _ = writeln!(stderr, "{READY_MARKER}").and_then(|()| stderr.flush());
}

/// Resolves on SIGTERM; never when it could not be watched.
async fn terminated(sigterm: &mut Option<Signal>) {
    match sigterm {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs the job, its output written as frames to stderr (the pod's log) as it is read, for the
/// API to stream; the envelope stays the record.
async fn run_job(supervisor: &Supervisor, ready: Option<ReadySandbox>, job: Job) -> Finished {
    let frames = FrameWriter::start(Box::new(std::io::stderr()));
    let finished = run_job_with(supervisor, ready, job, frames.tap()).await;
    frames.finish();
    finished
}

/// Runs the job in the ready sandbox when its limits can be applied there, else cold (after the
/// ready sandbox is gone: inside gVisor its processes count toward the job's RLIMIT_NPROC).
async fn run_job_with(supervisor: &Supervisor, ready: Option<ReadySandbox>, job: Job, tap: Tap) -> Finished {
    let id = uuid::Uuid::new_v4().simple().to_string();
    if let Some(mut sandbox) = ready {
        match sandbox.claim(&job.limits, READY_BACKSTOP) {
            Ok(()) => {
                tracing::info!(run_id = id, start = "warm", "running the job in the ready sandbox");
                return supervisor.run_ready(&id, sandbox, job, &CancellationToken::new(), Some(&tap)).await;
            }
            Err(unfit) => {
                tracing::info!(run_id = id, start = "cold", ?unfit, "the job's limits do not fit the ready sandbox");
                sandbox.destroy().await;
            }
        }
    }
    supervisor.run_cancellable(&id, &job, &CancellationToken::new(), Some(&tap)).await
}

/// Kills the unused ready sandbox and removes the cgroups.
async fn discard(supervisor: &Supervisor, ready: Option<ReadySandbox>) {
    if let Some(sandbox) = ready {
        sandbox.destroy().await;
    }
    supervisor.shutdown().await;
}

/// Prints the envelope as one line and writes its summary as the termination message.
fn report(args: &SandboxArgs, envelope: &Envelope) -> Result<()> {
    let line = serde_json::to_string(envelope).map_err(|e| Error::WriteEnvelope(e.into()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).map_err(Error::WriteEnvelope)?;
    let summary = format!(
        "{} returncode={} duration_ms={}",
        envelope.outcome.as_str(),
        envelope.returncode,
        envelope.duration_ms
    );
    write_termination_message(args, &summary);
    Ok(())
}

fn write_termination_message(args: &SandboxArgs, text: &str) {
    let Some(path) = &args.termination_log else { return };
    // The termination message is a convenience; the envelope on stdout is the record.
    if let Err(err) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), error = %err, "could not write the termination message");
    }
}

/// Fails closed: the gVisor profile runs only where it finds gVisor without network devices.
fn refusal(settings: &SandboxSettings) -> Option<Envelope> {
    if settings.isolation != Isolation::Gvisor {
        return None;
    }
    let refusal = gvisor::check_this_environment().err()?;
    tracing::error!(error = %refusal, "refusing to run the script");
    Some(Envelope::rejected(Outcome::SandboxFailure, refusal.to_string()))
}

/// The work to do without `--job-on-stdin`: one script under the default limits.
fn job(args: &SandboxArgs) -> Result<Job> {
    let script = match &args.script {
        Some(script) => script.clone(),
        None => read_script(&args.script_file)
            .map_err(|source| Error::ReadScript { path: args.script_file.to_string_lossy().into_owned(), source })?,
    };
    Ok(Job::new(script, args.sandbox.limits.defaults()?))
}

fn read_script(path: &std::path::Path) -> std::io::Result<String> {
    let mut script = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut script)?;
    } else {
        script = std::fs::read_to_string(path)?;
    }
    Ok(script)
}
