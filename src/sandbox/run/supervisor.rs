//! The sandbox supervisor: checks the installation once, starts nsjail for one script (cold, or
//! a ready sandbox that waits for its job) in a fresh cgroup slot, and hands the started jail to
//! `finish`, which feeds it and returns one envelope.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::capture::{read_tail, Tap};
use super::finish::Watched;
use super::finish::DRAIN_GRACE;
use super::removal::{Finished, Removal};
use crate::sandbox::envelope::{Envelope, Outcome};
use crate::sandbox::jail::cgroup::{self, CgroupMode, CgroupPool};
use crate::sandbox::jail::gvisor::{self, GvisorTools};
use crate::sandbox::jail::ids::{IdLease, IdRange};
use crate::sandbox::jail::install::{compile_harness, existing, resolve_program};
use crate::sandbox::jail::nsjail::{self, CgroupLimits, Harness, Identity, JailPaths, Start};
use crate::sandbox::jail::{cloexec_pipe, Jail, Keeper, TerminateOnDrop, NSJAIL_TERM_GRACE};
use crate::sandbox::job::Job;
use crate::sandbox::limits::Limits;
use crate::sandbox::settings::{Isolation, SandboxSettings};
use crate::sandbox::warm::ready::ReadySandbox;
use crate::sandbox::warm::template::{Template, Templates};
use crate::sandbox::SandboxError;

/// A shell that moves itself into the run's cgroups, then becomes nsjail: everything nsjail
/// starts is limited from its first instruction, with no window before the move.
const ENTER_CGROUPS: &str = r#"while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

/// Runs scripts in nsjail. Cheap to clone; shared by every request.
#[derive(Clone, Debug)]
pub struct Supervisor {
    pub(in crate::sandbox) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(in crate::sandbox) struct Inner {
    pub(in crate::sandbox) paths: JailPaths,
    pub(in crate::sandbox) cgroups: Arc<CgroupPool>,
    /// The slots of ready sandboxes (`ready-<pid>-<n>`), kept apart from the cold runs' (`slot-<pid>-<n>`).
    pub(in crate::sandbox) ready_cgroups: Arc<CgroupPool>,
    /// This process created the parent cgroup, so it removes it at shutdown.
    pub(in crate::sandbox) owns_parent_cgroup: bool,
    /// Removals of sandboxes that answered before their jail ended.
    pub(in crate::sandbox) removals: TaskTracker,
    /// The pool's templates, one per list of preloaded modules (each started by the first
    /// `start_forked` for its list), and their slots (`template-<pid>-<n>`).
    pub(in crate::sandbox) templates: tokio::sync::Mutex<Templates>,
    pub(in crate::sandbox) template_cgroups: Arc<CgroupPool>,
    /// The host ids sandboxes lease (`--isolation host` as root); None: every sandbox is the
    /// supervisor's own uid, or what nsjail-gvisor.cfg says.
    pub(in crate::sandbox) ids: Option<Arc<IdRange>>,
}

impl Supervisor {
    /// Checks the installation (nsjail, its configuration, the Python environment, and inside
    /// gVisor prlimit and setpriv) and finds the cgroup hierarchy. Runs once at start-up.
    pub fn new(settings: &SandboxSettings) -> Result<Self, SandboxError> {
        let python_env = existing(&settings.python_env, "Python environment")?;
        let interpreter = python_env.join("bin/python3");
        if !interpreter.exists() {
            return Err(SandboxError::Missing { what: "Python interpreter", path: interpreter });
        }
        let nsjail = resolve_program(&settings.nsjail, "nsjail")?;
        let ids = match settings.isolation {
            Isolation::Host if nix::unistd::geteuid().is_root() => {
                Some(IdRange::new(settings.sandbox_id_first, settings.sandbox_id_count, &settings.sandbox_id_dir)?)
            }
            Isolation::Host => {
                tracing::warn!(
                    uid = nix::unistd::geteuid().as_raw(),
                    "not root: every sandbox runs as this uid, sharing its per-user kernel budgets"
                );
                None
            }
            Isolation::Gvisor => None,
        };
        let (paths, cgroups, owns_parent_cgroup) = match settings.isolation {
            Isolation::Host => {
                let config = existing(&settings.nsjail_config, "nsjail configuration")?;
                let paths = JailPaths { nsjail, config, harness: Harness::Source, python_env, gvisor: None };
                let (cgroups, owns) = cgroup::detect_parent(settings.cgroups, &settings.cgroup_parent);
                cgroup::remove_orphan_slots(&cgroups);
                (paths, cgroups, owns)
            }
            Isolation::Gvisor => {
                let config = existing(&settings.nsjail_gvisor_config, "nsjail configuration for gVisor")?;
                let on_path = |name: &'static str| {
                    resolve_program(Path::new(name), name).map_err(|_| SandboxError::MissingGvisorTool(name))
                };
                let tools = GvisorTools { prlimit: on_path("prlimit")?, setpriv: on_path("setpriv")? };
                let paths = JailPaths { nsjail, config, harness: Harness::Source, python_env, gvisor: Some(tools) };
                // gVisor accepts cgroup memory limits without enforcing them: RLIMIT_AS instead.
                let reason = "--isolation gvisor: gVisor does not enforce cgroup memory limits".to_string();
                (paths, CgroupMode::Off { reason }, false)
            }
        };
        let ready_cgroups = CgroupPool::for_ready(cgroups.clone(), settings.cpu_share());
        let template_cgroups = CgroupPool::for_template(cgroups.clone(), settings.cpu_share());
        let cgroups = CgroupPool::new(cgroups, settings.cpu_share());
        let removals = TaskTracker::new();
        let templates = tokio::sync::Mutex::new(Templates::default());
        let inner =
            Inner { paths, cgroups, ready_cgroups, owns_parent_cgroup, removals, templates, template_cgroups, ids };
        Ok(Supervisor { inner: Arc::new(inner) })
    }

    /// Compiles the harness once with the sandbox's interpreter, so that runs skip compiling
    /// it: worth it for a server, not for a single run.
    pub fn with_compiled_harness(self) -> Self {
        let interpreter = self.inner.paths.python_env.join("bin/python3");
        let harness = compile_harness(&interpreter);
        let paths = JailPaths { harness, ..self.inner.paths.clone() };
        let inner = Inner {
            paths,
            cgroups: self.inner.cgroups.clone(),
            ready_cgroups: self.inner.ready_cgroups.clone(),
            owns_parent_cgroup: self.inner.owns_parent_cgroup,
            removals: self.inner.removals.clone(),
            templates: tokio::sync::Mutex::new(Templates::default()),
            template_cgroups: self.inner.template_cgroups.clone(),
            ids: self.inner.ids.clone(),
        };
        Supervisor { inner: Arc::new(inner) }
    }

    /// Removes what start-up and runs created (the runs' cgroups, the parent cgroup), once no
    /// run is left; on the blocking pool, since emptying a cgroup waits for processes to die.
    pub async fn shutdown(&self) {
        // Sandboxes that answered early end within their deadline; wait for them first.
        self.inner.removals.close();
        self.inner.removals.wait().await;
        let templates: Vec<Template> = {
            let Templates { serving, successors, retired, .. } =
                std::mem::take(&mut *self.inner.templates.lock().await);
            serving.into_iter().chain(successors).chain(retired).collect()
        };
        futures::future::join_all(templates.into_iter().map(Template::destroy)).await;
        let inner = self.inner.clone();
        let removed = tokio::task::spawn_blocking(move || {
            inner.cgroups.remove_idle();
            inner.ready_cgroups.remove_idle();
            inner.template_cgroups.remove_idle();
            if inner.owns_parent_cgroup {
                cgroup::remove_parent(inner.cgroups.mode());
            }
        });
        if let Err(err) = removed.await {
            tracing::warn!(error = %err, "removing the sandbox cgroups failed");
        }
    }

    pub fn cgroups(&self) -> &CgroupMode {
        self.inner.cgroups.mode()
    }

    pub fn paths(&self) -> &JailPaths {
        &self.inner.paths
    }

    /// Runs one job to completion. Never fails: every problem, the sandbox's own included, is
    /// described in the envelope. Returns once the sandbox is gone.
    pub async fn run(&self, run_id: &str, job: &Job) -> Envelope {
        let finished = self.run_cancellable(run_id, job, &CancellationToken::new(), None).await;
        finished.removal.wait().await;
        finished.envelope
    }

    /// `run`, except that cancelling `cancel` ends the run early the way a timeout does: nsjail
    /// kills and reaps the whole tree, and the run's cgroup is emptied and given back. Returns
    /// with the answer; the sandbox's removal may still be under way (`Finished::removal`).
    /// What stdout and stderr keep also goes to `tap`, as it is read.
    pub async fn run_cancellable(
        &self,
        run_id: &str,
        job: &Job,
        cancel: &CancellationToken,
        tap: Option<&Tap>,
    ) -> Finished {
        let started = Instant::now();
        let finished = match self.run_jailed(run_id, job, started, cancel, tap).await {
            Ok(finished) => finished,
            Err(err) => {
                tracing::error!(run_id, error = %err, "sandbox could not run");
                let envelope = Envelope::rejected(Outcome::SandboxFailure, "The sandbox failed to start");
                Finished { envelope, removal: Removal(None) }
            }
        };
        finished.timed(started)
    }

    /// A cold run: the bare script on stdin. A job with input files is handed whole to a jail
    /// started ready with nothing preloaded, since only a job document carries files.
    async fn run_jailed(
        &self,
        run_id: &str,
        job: &Job,
        started: Instant,
        cancel: &CancellationToken,
        tap: Option<&Tap>,
    ) -> Result<Finished, SandboxError> {
        let limits = &job.limits;
        let watched = Watched { cancel, tap };
        if job.files.is_empty() {
            let jail = self.start_jail(run_id, limits, &Start::Cold, Vec::new())?;
            return Ok(self.finish(run_id, jail, job.script.as_bytes().to_vec(), limits, started, watched).await);
        }
        let document = serde_json::to_vec(job).map_err(SandboxError::JobDocument)?;
        // nsjail's time limit as a cold run's, plus the moment the harness takes to say it is ready.
        let backstop_seconds = limits.timeout_ms.div_ceil(1000) + 2;
        let start = Start::Ready { preload: Vec::new(), backstop_seconds };
        let jail = ready_jail(self.start_jail(run_id, limits, &start, Vec::new())?).await?;
        Ok(self.finish(run_id, jail, document, limits, started, watched).await)
    }

    /// Starts a ready sandbox: a jail whose interpreter imports `preload` and then waits for
    /// one job. Returns once it has said it is ready; its memory and process limits are
    /// `limits`' until a job's are applied. Never used for more than one job.
    pub async fn start_ready(
        &self,
        id: &str,
        limits: &Limits,
        preload: &[String],
        backstop: Duration,
    ) -> Result<ReadySandbox, SandboxError> {
        let start = Start::Ready { preload: preload.to_vec(), backstop_seconds: backstop.as_secs().max(1) };
        let jail = self.start_jail(id, limits, &start, Vec::new())?;
        let jail = ready_jail(jail).await?;
        Ok(ReadySandbox { jail, born: Instant::now(), limits: limits.clone() })
    }

    /// Hands a ready sandbox its one job and runs it to completion, like `run_cancellable`:
    /// the deadline counts from now. The caller has `claim`ed the sandbox for these limits.
    pub async fn run_ready(
        &self,
        run_id: &str,
        ready: ReadySandbox,
        job: Job,
        cancel: &CancellationToken,
        tap: Option<&Tap>,
    ) -> Finished {
        let started = Instant::now();
        let document = match serde_json::to_vec(&job) {
            Ok(document) => document,
            Err(err) => {
                tracing::error!(run_id, error = %err, "the job could not be written");
                let envelope = Envelope::rejected(Outcome::SandboxFailure, "The sandbox failed to start");
                return Finished { envelope, removal: Removal(None) }.timed(started);
            }
        };
        self.finish(run_id, ready.jail, document, &job.limits, started, Watched { cancel, tap }).await.timed(started)
    }

    /// Starts nsjail in a fresh cgroup slot, with its pipes, and feeds it nothing yet.
    pub(in crate::sandbox) fn start_jail(
        &self,
        run_id: &str,
        limits: &Limits,
        start: &Start,
        extra_fds: Vec<FdMapping>,
    ) -> Result<Jail, SandboxError> {
        let inner = &self.inner;
        let memory_bytes = limits.memory_mb * 1024 * 1024;
        // One pid more than the script's allowance: nsjail itself lives in the group too.
        let slots = match start {
            Start::Cold => &inner.cgroups,
            Start::Ready { .. } => &inner.ready_cgroups,
            Start::Template { .. } => &inner.template_cgroups,
        };
        let mut fds = vec![];
        let cgroup = slots
            .acquire(memory_bytes, limits.max_pids + 1)
            .map_err(|source| SandboxError::Cgroup { run_id: run_id.to_string(), source })?;
        let cgroup_limits = CgroupLimits { memory: cgroup.is_some(), pids: cgroup.is_some() };
        let (identity, lease) = self.identity(start)?;
        if let Some(lease) = &lease {
            let held = lease.fd().try_clone_to_owned().map_err(SandboxError::Spawn)?;
            fds.push(FdMapping { parent_fd: held, child_fd: nsjail::LEASE_FD });
        }
        let args = nsjail::nsjail_args(&inner.paths, limits, cgroup_limits, start, &identity);

        let mut command = match (&cgroup, &inner.paths.gvisor) {
            (_, Some(tools)) => {
                let (program, args) = gvisor::launch_command(tools, &inner.paths.nsjail, args, limits, start);
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            (Some(group), None) => {
                let mut command = Command::new("/bin/sh");
                command.arg("-c").arg(ENTER_CGROUPS).arg("sh");
                command.args(group.procs_files()).arg("--").arg(&inner.paths.nsjail);
                command.args(args);
                command
            }
            (None, None) => {
                let mut command = Command::new(&inner.paths.nsjail);
                command.args(args);
                command
            }
        };
        // The service's own environment (tokens, secrets) never reaches nsjail or the script.
        command.env_clear();
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());

        let (result_read, result_write) = cloexec_pipe()?;
        let (log_read, log_write) = cloexec_pipe()?;
        fds.push(FdMapping { parent_fd: result_write, child_fd: nsjail::RESULT_FD });
        fds.push(FdMapping { parent_fd: log_write, child_fd: nsjail::LOG_FD });
        fds.extend(extra_fds);
        command.fd_mappings(fds).map_err(|e| SandboxError::Spawn(std::io::Error::other(e.to_string())))?;

        let mut child = command.spawn().map_err(SandboxError::Spawn)?;
        // If this run is abandoned (shutdown past its grace period), nsjail still gets to kill
        // and reap the script itself.
        let terminate_on_drop = TerminateOnDrop { pid: child.id(), gvisor: inner.paths.gvisor.clone() };
        // The parent's copies of the write ends live in `command`; drop them so readers see EOF.
        drop(command);

        let spawn = SandboxError::Spawn;
        let stdin = child.stdin.take().ok_or(SandboxError::Pipe("stdin"))?.into_owned_fd().map_err(spawn)?;
        let stdout = child.stdout.take().ok_or(SandboxError::Pipe("stdout"))?.into_owned_fd().map_err(spawn)?;
        let stderr = child.stderr.take().ok_or(SandboxError::Pipe("stderr"))?.into_owned_fd().map_err(spawn)?;
        Ok(Jail {
            keeper: Keeper::Nsjail(child),
            stdin: pipe::Sender::from_owned_fd(stdin).map_err(spawn)?,
            stdout: pipe::Receiver::from_owned_fd(stdout).map_err(spawn)?,
            stderr: pipe::Receiver::from_owned_fd(stderr).map_err(spawn)?,
            result: pipe::Receiver::from_owned_fd(result_read).map_err(spawn)?,
            log: pipe::Receiver::from_owned_fd(log_read).map_err(spawn)?,
            cgroup,
            terminate_on_drop,
            lease,
        })
    }

    /// Who a new jail is on the host: a leased id of its own, or (the template) the range for
    /// its forks.
    fn identity(&self, start: &Start) -> Result<(Identity, Option<IdLease>), SandboxError> {
        if self.inner.paths.gvisor.is_some() {
            return Ok((Identity::Configured, None));
        }
        let Some(ids) = &self.inner.ids else {
            let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
            return Ok((Identity::Own { uid, gid }, None));
        };
        if let Start::Template { .. } = start {
            let identity =
                Identity::Template { first: ids.first(), count: ids.count(), devices: ids.dir().to_path_buf() };
            return Ok((identity, None));
        }
        let lease = ids.lease()?;
        Ok((Identity::Leased { id: lease.id(), devices: lease.path() }, Some(lease)))
    }
}

/// Waits until a ready jail's harness says it is ready (one byte on its result pipe). If it
/// dies first (a preload module that fails to import), its stderr says why.
pub(in crate::sandbox) async fn ready_jail(mut jail: Jail) -> Result<Jail, SandboxError> {
    let mut byte = [0u8; 1];
    match jail.result.read_exact(&mut byte).await {
        Ok(_) if byte == *b"R" => Ok(jail),
        _ => {
            jail.terminate();
            let _ = tokio::time::timeout(NSJAIL_TERM_GRACE, jail.keeper.wait()).await;
            let stderr = tokio::time::timeout(DRAIN_GRACE, read_tail(jail.stderr, 2048)).await.unwrap_or_default();
            Err(SandboxError::NotReady(stderr.text()))
        }
    }
}
