//! Ready sandboxes forked from the pool's templates (`template`): starting a template per list
//! of preloaded modules, restarting one that ended, and asking it for a sandbox in a cgroup slot
//! of its own.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use command_fds::FdMapping;

use crate::sandbox::jail::cgroup::CgroupMode;
use crate::sandbox::jail::nsjail::{self, Start};
use crate::sandbox::jail::Jail;
use crate::sandbox::limits::Limits;
use crate::sandbox::run::capture::read_tail;
use crate::sandbox::run::supervisor::{ready_jail, Supervisor};
use crate::sandbox::warm::ready::ReadySandbox;
use crate::sandbox::warm::template::{self, Life, Template};
use crate::sandbox::SandboxError;

impl Supervisor {
    /// Whether ready sandboxes can be forked from a template (`start_forked`): on a host kernel,
    /// with cgroups to put each in and host ids to give each.
    pub fn can_fork(&self) -> bool {
        self.inner.paths.gvisor.is_none()
            && self.inner.ids.is_some()
            && !matches!(self.inner.ready_cgroups.mode(), CgroupMode::Off { .. })
    }

    /// Memory the pool's templates hold (from their cgroups), unless one is being used right
    /// now.
    pub fn template_memory(&self) -> Option<u64> {
        let running = self.inner.templates.try_lock().ok()?;
        Some(running.all().filter_map(|t| t.cgroup.as_ref()?.memory_usage()).sum())
    }

    /// How many templates were started while a fork waited for them, and how many successors
    /// took over with none waiting (`start_successor`); None while the templates are in use.
    pub fn template_starts(&self) -> Option<(u64, u64)> {
        let running = self.inner.templates.try_lock().ok()?;
        Some((running.started_at_need, running.took_over))
    }

    /// How long the serving template for `preload` took to start (an interpreter started in a
    /// jail, importing `preload`: what a cold start of the same kind takes); None without one,
    /// or while the templates are in use.
    pub fn template_start(&self, preload: &[String]) -> Option<Duration> {
        let running = self.inner.templates.try_lock().ok()?;
        running.serving.iter().find(|t| t.preload == preload).map(|t| t.start_took)
    }

    /// `start_ready`, but forked from the pool's template for `preload` (started, or restarted,
    /// here when there is none running): a fork and fresh namespaces instead of an interpreter start and
    /// the import of `preload`. Needs cgroups: the sandbox's keeper is moved into its own slot
    /// before the sandbox is made.
    pub async fn start_forked(
        &self,
        id: &str,
        limits: &Limits,
        preload: &[String],
        backstop: Duration,
        life: &Life,
    ) -> Result<ReadySandbox, SandboxError> {
        let memory_bytes = limits.memory_mb * 1024 * 1024;
        let cgroup_error = |source| SandboxError::Cgroup { run_id: id.to_string(), source };
        let cgroup = self
            .inner
            .ready_cgroups
            .acquire(memory_bytes, limits.max_pids + 1)
            .map_err(cgroup_error)?
            .ok_or_else(|| SandboxError::Template("a forked sandbox needs cgroups".into()))?;
        cgroup.set_forking().map_err(cgroup_error)?;
        let ids = self
            .inner
            .ids
            .as_ref()
            .ok_or_else(|| SandboxError::Template("a forked sandbox needs sandbox ids".into()))?;
        let lease = ids.lease()?;
        let pending = {
            let mut templates = self.inner.templates.lock().await;
            templates.retire(preload, life).await;
            let at = match templates.serving.iter().position(|t| t.preload == preload) {
                Some(at) => at,
                None => {
                    let template = self.start_template(limits, preload).await?;
                    templates.started_at_need += 1;
                    templates.serving.push(template);
                    templates.serving.len() - 1
                }
            };
            let pending = templates.serving[at].fork(limits.tmp_mb * 1024 * 1024, backstop, lease)?;
            if templates.wants_successor(preload, life) {
                templates.succeeding.push(preload.to_vec());
                self.start_successor(limits, preload);
            }
            pending
        };
        let jail = ready_jail(pending.into_cgroup(cgroup).await?).await?;
        Ok(ReadySandbox { jail, born: Instant::now(), limits: limits.clone() })
    }

    /// Starts the successor of the template for `preload` in the background, beside it: ready
    /// when that one is spent (`Templates::retire` hands over), so that forks of these modules
    /// never wait for a template to import them. Tracked with the removals, so that shutdown
    /// waits for it; one that is ready after shutdown began is ended at once.
    fn start_successor(&self, limits: &Limits, preload: &[String]) {
        let (supervisor, limits, preload) = (self.clone(), limits.clone(), preload.to_vec());
        self.inner.removals.spawn(async move {
            let successor = match supervisor.start_template(&limits, &preload).await {
                Ok(successor) => Some(successor),
                Err(err) => {
                    tracing::warn!(modules = preload.join(","), error = %err, "a template's successor failed to start");
                    None
                }
            };
            let mut templates = supervisor.inner.templates.lock().await;
            match successor {
                Some(successor) if supervisor.inner.removals.is_closed() => {
                    templates.succeeded(&preload, None);
                    drop(templates);
                    successor.destroy().await;
                }
                successor => templates.succeeded(&preload, successor),
            }
        });
    }

    /// Starts the template: a jail of nsjail.cfg without its namespace and mount denials (each
    /// forked sandbox installs them itself), whose harness imports `preload` and then forks.
    async fn start_template(&self, limits: &Limits, preload: &[String]) -> Result<Template, SandboxError> {
        let base = std::fs::read_to_string(&self.inner.paths.config).map_err(SandboxError::Spawn)?;
        let config = template::template_config(&base)?;
        let config_fd = sealed_text("pyexec-template.cfg", &config)?;
        let (control, theirs) = std::os::unix::net::UnixStream::pair().map_err(SandboxError::Spawn)?;
        let start = Start::Template { preload: preload.to_vec(), filter_hex: template::filter::program_hex() };
        let extra = vec![
            FdMapping { parent_fd: config_fd, child_fd: nsjail::TEMPLATE_CONFIG_FD },
            FdMapping { parent_fd: theirs.into(), child_fd: nsjail::CONTROL_FD },
        ];
        let began = Instant::now();
        let jail = ready_jail(self.start_jail("template", limits, &start, extra)?).await?;
        let Jail { keeper, stderr, cgroup, terminate_on_drop, .. } = jail;
        // It writes only when something is wrong; keep its pipe from filling.
        tokio::spawn(async move {
            let said = read_tail(stderr, 4096).await;
            if !said.text().is_empty() {
                tracing::warn!(stderr = %said.text(), "the pool's template wrote to stderr");
            }
        });
        let start_took = began.elapsed();
        tracing::info!(
            ms = start_took.as_millis() as u64,
            modules = preload.join(","),
            "a template of the pool is ready"
        );
        Ok(Template {
            preload: preload.to_vec(),
            born: Instant::now(),
            forks: 0,
            start_took,
            live: std::sync::Arc::new(()),
            keeper,
            cgroup,
            terminate_on_drop,
            control,
        })
    }
}

/// `text` in a memory file, for a child to read at /proc/self/fd/N.
fn sealed_text(name: &str, text: &str) -> Result<OwnedFd, SandboxError> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let name = std::ffi::CString::new(name).map_err(|e| SandboxError::Spawn(std::io::Error::other(e)))?;
    let fd = memfd_create(&name, MemFdCreateFlag::MFD_CLOEXEC).map_err(|e| SandboxError::Spawn(e.into()))?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(SandboxError::Spawn)?;
    std::io::Seek::rewind(&mut file).map_err(SandboxError::Spawn)?;
    Ok(file.into())
}
