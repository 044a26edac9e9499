//! `pyexec sandbox`: one script, one envelope on stdout. The sandbox pod's entrypoint, and a
//! way to try the sandbox without the HTTP API.

use std::io::{Read, Write};

use crate::config::SandboxArgs;
use crate::sandbox::{gvisor, Envelope, Isolation, Job, Outcome, SandboxSettings, Supervisor};
use crate::{Error, Result};

pub async fn run(args: SandboxArgs) -> Result<()> {
    let Job { script, limits } = job(&args)?;
    let envelope = match refusal(&args.sandbox) {
        Some(envelope) => envelope,
        None => {
            let supervisor = Supervisor::new(&args.sandbox)?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            let envelope = supervisor.run(&id, &script, &limits).await;
            supervisor.shutdown().await;
            envelope
        }
    };
    let line = serde_json::to_string(&envelope).map_err(|e| Error::WriteEnvelope(e.into()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).map_err(Error::WriteEnvelope)?;
    if let Some(path) = &args.termination_log {
        let summary = format!(
            "{} returncode={} duration_ms={}",
            envelope.outcome.as_str(),
            envelope.returncode,
            envelope.duration_ms
        );
        // The termination message is a convenience; the envelope on stdout is the record.
        if let Err(err) = std::fs::write(path, summary) {
            tracing::warn!(path = %path.display(), error = %err, "could not write the termination message");
        }
    }
    Ok(())
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

/// The work to do: a job document (`--job`, then `--job-file`), else a script under the
/// default limits.
fn job(args: &SandboxArgs) -> Result<Job> {
    if let Some(text) = &args.job {
        return serde_json::from_str(text).map_err(Error::InvalidJob);
    }
    if let Some(file) = &args.job_file {
        let path = file.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).map_err(|source| Error::ReadJob { path, source })?;
        return serde_json::from_str(&text).map_err(Error::InvalidJob);
    }
    let script = match &args.script {
        Some(script) => script.clone(),
        None => read_script(&args.script_file)
            .map_err(|source| Error::ReadScript { path: args.script_file.to_string_lossy().into_owned(), source })?,
    };
    Ok(Job { script, limits: args.sandbox.limits.defaults()? })
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
