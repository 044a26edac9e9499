//! A ready sandbox of the pool: a jail whose interpreter has imported the preloaded modules and
//! waits for exactly one job, and the decision whether a job's limits fit it.

use std::time::{Duration, Instant};

use crate::sandbox::jail::cgroup::RunCgroup;
use crate::sandbox::jail::procfs;
use crate::sandbox::jail::{Jail, NSJAIL_TERM_GRACE};
use crate::sandbox::limits::Limits;

/// Why a ready sandbox cannot take a job: the job goes the cold path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// /tmp's size is fixed when the jail starts.
    TmpSize,
    /// The preloaded interpreter already uses more memory (or processes) than the job may.
    AlreadyUses,
    /// The job's deadline would pass nsjail's own time limit of the ready jail.
    Backstop,
    /// The sandbox has ended (or its cgroup could not be set).
    Gone,
    /// Without cgroups its memory and process limits are rlimits, which can only be lowered:
    /// the job may use more than the ready sandbox.
    AboveReady,
}

/// Whether a ready jail started with `ready` limits `age` ago, under nsjail's time limit
/// `backstop`, can take a job with `job` limits (before its cgroup is looked at).
pub fn fits(ready: &Limits, job: &Limits, age: Duration, backstop: Duration) -> Result<(), Unfit> {
    if ready.tmp_mb != job.tmp_mb {
        return Err(Unfit::TmpSize);
    }
    // The supervisor kills at the deadline; nsjail's backstop must not come first.
    if age + job.timeout() + NSJAIL_TERM_GRACE * 2 >= backstop {
        return Err(Unfit::Backstop);
    }
    Ok(())
}

/// Whether a job's memory and process limits can be set as rlimits (no cgroups) in a jail
/// started with `ready` limits as their ceiling: only lowered, never raised.
pub fn within_rlimits(ready: &Limits, job: &Limits) -> Result<(), Unfit> {
    if job.memory_mb > ready.memory_mb || job.max_pids > ready.max_pids {
        return Err(Unfit::AboveReady);
    }
    Ok(())
}

/// Memory a job must have beyond what its ready interpreter already uses (the first
/// allocations of any script).
const MEMORY_HEADROOM_BYTES: u64 = 16 * 1024 * 1024;

/// A jail whose interpreter has imported the preloaded modules and waits for exactly one job.
/// `Supervisor::run_ready` consumes it; dropping it unused kills it.
pub struct ReadySandbox {
    pub(in crate::sandbox) jail: Jail,
    pub(in crate::sandbox) born: Instant,
    pub(in crate::sandbox) limits: Limits,
}

impl std::fmt::Debug for ReadySandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadySandbox")
            .field("nsjail", &self.jail.keeper.nsjail_pid())
            .field("born", &self.born)
            .finish()
    }
}

impl ReadySandbox {
    /// How long ago it became ready.
    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }

    /// Whether its jail still runs.
    pub fn alive(&mut self) -> bool {
        !self.jail.keeper.ended()
    }

    /// Memory its (idle) interpreter holds, from its cgroup.
    pub fn memory_usage(&self) -> Option<u64> {
        self.jail.cgroup.as_ref().and_then(RunCgroup::memory_usage)
    }

    /// Takes it for a job with `limits`, under nsjail's time limit `backstop`: applies the
    /// job's memory and process limits to its cgroup or, without cgroups, checks that its
    /// harness can lower its rlimits to them (it does so when the job arrives). On `Err` nothing
    /// was changed except when the sandbox is `Gone`.
    pub fn claim(&mut self, limits: &Limits, backstop: Duration) -> Result<(), Unfit> {
        fits(&self.limits, limits, self.age(), backstop)?;
        if !self.alive() {
            return Err(Unfit::Gone);
        }
        if self.jail.cgroup.is_none() {
            return self.claim_rlimits(limits);
        }
        let Some(group) = self.jail.cgroup.as_mut() else { return Err(Unfit::Gone) };
        // nsjail notices a dead interpreter only when it reaps it; the cgroup lists only the
        // living: nsjail and its interpreter.
        if group.pids().len() < 2 {
            return Err(Unfit::Gone);
        }
        let memory_bytes = limits.memory_mb * 1024 * 1024;
        let used = group.memory_usage().ok_or(Unfit::Gone)?;
        let processes = group.process_count().ok_or(Unfit::Gone)?;
        if used + MEMORY_HEADROOM_BYTES > memory_bytes || processes > limits.max_pids {
            return Err(Unfit::AlreadyUses);
        }
        group.apply(memory_bytes, limits.max_pids + 1).map_err(|_| Unfit::Gone)
    }

    /// `claim` without cgroups: RLIMIT_AS bounds each process's address space, which the idle
    /// interpreter (nsjail's one child) already holds part of.
    fn claim_rlimits(&self, limits: &Limits) -> Result<(), Unfit> {
        within_rlimits(&self.limits, limits)?;
        let nsjail = self.jail.keeper.nsjail_pid().ok_or(Unfit::Gone)?;
        let interpreter = *procfs::children(nsjail).first().ok_or(Unfit::Gone)?;
        let used = procfs::address_space_bytes(interpreter).ok_or(Unfit::Gone)?;
        if used + MEMORY_HEADROOM_BYTES > limits.memory_mb * 1024 * 1024 {
            return Err(Unfit::AlreadyUses);
        }
        Ok(())
    }

    /// Kills it and waits until nsjail is reaped (at shutdown, or when it went stale).
    pub async fn destroy(mut self) {
        self.jail.keeper.destroy(self.jail.cgroup.as_ref(), self.jail.terminate_on_drop.gvisor.as_ref()).await;
        self.jail.terminate_on_drop.pid = None;
        if let Some(group) = self.jail.cgroup.take() {
            group.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        crate::sandbox::limits::testing::small_limits()
    }

    #[test]
    fn a_job_fits_a_ready_jail_with_the_same_tmp_size() {
        let backstop = Duration::from_secs(600);
        assert_eq!(fits(&limits(), &limits(), Duration::from_secs(5), backstop), Ok(()));
        let bigger_tmp = Limits { tmp_mb: limits().tmp_mb * 2, ..limits() };
        assert_eq!(fits(&limits(), &bigger_tmp, Duration::ZERO, backstop), Err(Unfit::TmpSize));
    }

    #[test]
    fn without_cgroups_a_job_may_lower_memory_and_processes_but_not_raise_them() {
        assert_eq!(within_rlimits(&limits(), &limits()), Ok(()));
        let less = Limits { memory_mb: limits().memory_mb / 2, max_pids: 1, ..limits() };
        assert_eq!(within_rlimits(&limits(), &less), Ok(()));
        let more_memory = Limits { memory_mb: limits().memory_mb + 1, ..limits() };
        assert_eq!(within_rlimits(&limits(), &more_memory), Err(Unfit::AboveReady));
        let more_processes = Limits { max_pids: limits().max_pids + 1, ..limits() };
        assert_eq!(within_rlimits(&limits(), &more_processes), Err(Unfit::AboveReady));
    }

    #[test]
    fn a_job_whose_deadline_would_pass_the_backstop_goes_cold() {
        let long = Limits { timeout_ms: 60_000, ..limits() };
        assert_eq!(fits(&limits(), &long, Duration::from_secs(590), Duration::from_secs(600)), Err(Unfit::Backstop));
        assert_eq!(fits(&limits(), &long, Duration::from_secs(10), Duration::from_secs(600)), Ok(()));
    }
}
