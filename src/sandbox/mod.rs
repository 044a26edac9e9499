//! The sandbox: one untrusted script run in nsjail under limits, reported as one envelope.
//!
//! The life of a request, one step a line (the folders are its stages: `jail`, `warm`, `run`):
//!
//! 1. A job arrives: `executor::local` asks `warm::pool::Pool::claim` for a ready sandbox of the
//!    script's kind; a miss runs cold, `run::supervisor::Supervisor::run_cancellable`. A sandbox
//!    pod's job arrives on stdin instead (`job_on_stdin::from_stdin`), for the one ready sandbox
//!    `commands::sandbox` prepared (cold if it could not be claimed).
//! 2. Cold: `Supervisor::start_jail` takes a cgroup slot with the job's memory and pids limits
//!    (`jail::cgroup::CgroupPool::acquire`) and leases a host id (`jail::ids::IdRange::lease`).
//! 3. It builds nsjail's command line: namespaces, seccomp, rlimits, time limit
//!    (`jail::nsjail::nsjail_args`; inside gVisor, `jail::gvisor::launch_command`).
//! 4. It spawns nsjail with an empty environment, entering the cgroups first (`ENTER_CGROUPS`),
//!    with the result and log pipes: a `jail::Jail`, whose `jail::Keeper` is nsjail.
//! 5. `run::finish` (`Supervisor::finish`) feeds the script (a `job::Job` when warm) on stdin;
//!    the harness (`harness/`, compiled by `jail::install::compile_harness`) runs main() and
//!    writes its report on the result pipe.
//! 6. It reads stdout, stderr and the report with their caps (`run::capture::Reading`), and the
//!    tail of nsjail's log.
//! 7. It waits for the jail's end, the deadline (`limits::Limits::timeout`) or cancellation; a
//!    run past its deadline, cancelled, or whose keeper was lost is ended (`jail::Keeper::end`).
//! 8. The verdict: `run::verdict::decide`, a pure function of the exit status (from nsjail's
//!    log), the cgroup's OOM kill, the report and the limits.
//! 9. The envelope: `envelope::Envelope`, built from the verdict and the captured output.
//! 10. Removal: the cgroup is released and the id lease dropped; a run whose harness reported
//!     success early (`early_answer`) answers first and leaves the jail to
//!     `run::removal::Removal::ended` (`Finished::removal` waits for it).
//!
//! The warm path replaces steps 2 to 4:
//!
//! - W1. `warm::pool` keeps sandboxes ready (`refill`): forked from a template when it can
//!   (`warm::fork`, `Supervisor::start_forked`: `warm::template::Template::fork`, moved into its
//!   own slot), else `Supervisor::start_ready`, a jail whose harness imports the preloaded
//!   modules and says so (`run::supervisor::ready_jail`).
//! - W2. The claim: `warm::ready::ReadySandbox::claim` checks that the job fits (`fits`) and puts
//!   its memory and pids limits on the sandbox's cgroup (without cgroups, checks its rlimits).
//! - W3. `Supervisor::run_ready` feeds it the job as JSON: steps 5 to 10; the harness applies the
//!   job's CPU, file and open-file limits before the script's first line (`_wait_for_job`).

pub mod envelope;
pub mod files;
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
    #[error("writing the job document: {0}")]
    JobDocument(#[source] serde_json::Error),
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
