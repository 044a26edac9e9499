//! The sandbox: one untrusted script run in nsjail under limits, reported as one envelope.

pub mod envelope;
pub mod jail;
pub mod job;
pub mod job_on_stdin;
pub mod limits;
pub mod run;
pub mod settings;
pub mod warm;

use std::path::PathBuf;

pub use envelope::{Envelope, Outcome};
pub use job::Job;
pub use job_on_stdin::{INVALID_JOB_EXIT_CODE, MAX_JOB_BYTES, NO_JOB_EXIT_CODE, NO_JOB_MESSAGE, READY_MARKER};
pub use limits::{LimitSettings, Limits, RequestedLimits};
pub use run::removal::Finished;
pub use run::supervisor::Supervisor;
pub use settings::{Isolation, SandboxSettings};

/// Why the sandbox could not be set up or started (never a script's own failure).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} not found at {path}; run `make setup` or set its option (see --help)")]
    Missing { what: &'static str, path: PathBuf },
    #[error("{0} not found on PATH; --isolation gvisor starts nsjail with util-linux's prlimit and setpriv")]
    MissingGvisorTool(&'static str),
    #[error("creating the cgroup of run {run_id}: {source}")]
    Cgroup {
        run_id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting nsjail: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("a ready sandbox ended before it was ready; its stderr: {0}")]
    NotReady(String),
    #[error("nsjail's {0} pipe was not set up")]
    Pipe(&'static str),
    #[error("the pool's template: {0}")]
    Template(String),
    #[error("sandbox ids: {0}")]
    Ids(#[from] jail::ids::IdError),
    #[error("the template jail's configuration cannot be derived from the nsjail configuration: {0}")]
    TemplateConfig(#[from] warm::template::ConfigError),
}
