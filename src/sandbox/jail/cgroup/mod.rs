//! Per-run cgroups: memory and process limits for a run's whole process tree, its share of the
//! CPUs (see `cpu`), the out-of-memory verdict after it, and a kill of everything left in it.
//! Supports the v1 hierarchy (memory, pids and cpu controllers mounted apart) and the unified v2
//! hierarchy.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod cpu;
mod detect;
mod dynmods;
mod naming;
mod starvation;

pub use cpu::{parse_cpus, parse_seconds, CpuShare, Weight};
pub use detect::{detect_parent, remove_parent, CgroupMode};
pub use dynmods::{favor_dynamic_modifications, DynMods};
pub use naming::remove_orphan_slots;

/// How often a run's CPU time is looked at, to lower its weight once it is a long run.
const LONG_RUN_POLL: Duration = Duration::from_millis(50);
/// How long to wait for a killed run's processes to leave its cgroup before giving up on rmdir.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The lock on a group's weights, while no weight was set on it since `epoch` (its run goes on):
/// held while a weight is written, so that a run's pending change never lands after the next
/// weight set; None once one was (its run ended, or the next began).
fn unchanged(epochs: &Mutex<u64>, epoch: u64) -> Option<std::sync::MutexGuard<'_, u64>> {
    let current = epochs.lock().unwrap_or_else(|p| p.into_inner());
    (*current == epoch).then_some(current)
}

/// Gives the long run in the idle group `dir` a run's weight for the next step after each step
/// at which it has starved over the last span, and the idle class again once it has not (see
/// `starvation`), until the group's weight is set again (its run ended).
async fn keep_from_starving(cpu: CpuShare, dir: &std::path::Path, unified: bool, epochs: &Mutex<u64>, epoch: u64) {
    let mut history = std::collections::VecDeque::with_capacity(starvation::STEPS_PER_SPAN + 1);
    history.push_back(starvation::progress(dir, unified));
    let mut lifted = false;
    loop {
        tokio::time::sleep(starvation::STEP).await;
        let now = starvation::progress(dir, unified);
        let Some(_unchanged) = unchanged(epochs, epoch) else { return };
        history.push_back(now);
        if history.len() <= starvation::STEPS_PER_SPAN {
            continue;
        }
        let starving = match (history.pop_front().flatten(), now) {
            (Some(earlier), Some(now)) => starvation::starving(starvation::SPAN, now.since(earlier)),
            _ => false,
        };
        if starving == lifted {
            continue;
        }
        let weight = if starving { Weight::Starving } else { Weight::LongRun };
        match cpu.apply(dir, weight, unified) {
            Ok(()) => {
                tracing::debug!(cgroup = %dir.display(), starving, "a long run's CPU weight follows its progress");
                lifted = starving;
            }
            Err(err) => tracing::warn!(cgroup = %dir.display(), error = %err, "could not set a long run's CPU weight"),
        }
    }
}

/// Reusable cgroups for runs ("slots"), one run at a time in each. Creating and removing a
/// memory cgroup around every run cost about 7 ms of a 20 ms hello world on cgroup v1 (the
/// kernel offlines a removed memcg in the background, slowing the next run); a slot is made
/// once, emptied after each run, and removed at shutdown.
#[derive(Debug)]
pub struct CgroupPool {
    mode: CgroupMode,
    /// Names of the slots: `<prefix>-<n>`.
    prefix: &'static str,
    /// The CPU weight and cap of every slot.
    cpu: CpuShare,
    /// The CPU weight a slot has when acquired: a run's, or a refill's for ready sandboxes
    /// (raised to a run's by `RunCgroup::apply` when the job arrives).
    start_weight: Weight,
    idle: Mutex<Vec<Slot>>,
    next: AtomicUsize,
    /// Slots being emptied on the blocking pool; shutdown waits for them.
    draining: Mutex<usize>,
    drained: Condvar,
}

/// The directories of one slot.
#[derive(Debug)]
struct Slot {
    memory: PathBuf,
    pids: PathBuf,
    /// Its cpu group (the same directory as `memory` on v2), when the cpu controller is ours.
    cpu: Option<PathBuf>,
    unified: bool,
    /// Counts the weights set on the group, so that a run's pending demotion to a long run's
    /// weight never touches the group once it was set again (for the next run).
    cpu_epoch: Arc<Mutex<u64>>,
}

impl CgroupPool {
    /// The slots of scripts started on demand (`slot-<pid>-<n>`), at a run's CPU weight.
    pub fn new(mode: CgroupMode, cpu: CpuShare) -> Arc<Self> {
        Self::named(mode, "slot", cpu, Weight::Run)
    }

    /// The slots of ready sandboxes (`ready-<pid>-<n>`): they import at a refill's CPU weight until
    /// their job arrives.
    pub fn for_ready(mode: CgroupMode, cpu: CpuShare) -> Arc<Self> {
        Self::named(mode, "ready", cpu, Weight::Refill)
    }

    /// The slot of the pool's template (`template-<pid>-<n>`): it imports once, then only forks,
    /// at a run's weight (`Weight::Fork`).
    pub fn for_template(mode: CgroupMode, cpu: CpuShare) -> Arc<Self> {
        Self::named(mode, "template", cpu, Weight::Fork)
    }

    fn named(mode: CgroupMode, prefix: &'static str, cpu: CpuShare, start_weight: Weight) -> Arc<Self> {
        Arc::new(CgroupPool {
            mode,
            prefix,
            cpu,
            start_weight,
            idle: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            draining: Mutex::new(0),
            drained: Condvar::new(),
        })
    }

    pub fn mode(&self) -> &CgroupMode {
        &self.mode
    }

    /// A slot for one run with its memory and process limits, or None without cgroups.
    pub fn acquire(self: &Arc<Self>, memory_bytes: u64, max_pids: u64) -> io::Result<Option<RunCgroup>> {
        if !self.mode.enabled() {
            return Ok(None);
        }
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let slot = match reused {
            Some(slot) => slot,
            None => self.new_slot()?,
        };
        // From here on, dropping the lease returns or removes the slot.
        let mut lease = RunCgroup { slot: Some(slot), pool: self.clone(), oom_baseline: 0 };
        lease.set_limits(memory_bytes, max_pids)?;
        lease.set_cpu(self.start_weight)?;
        lease.oom_baseline = lease.oom_kills();
        Ok(Some(lease))
    }

    /// A new slot, named after this server (`naming`); a directory left by an earlier process
    /// of the same pid is reused only when it is empty, so that no run waits here for someone
    /// else's processes to die.
    fn new_slot(&self) -> io::Result<Slot> {
        loop {
            let name = naming::slot_name(self.prefix, std::process::id(), self.next.fetch_add(1, Ordering::SeqCst));
            let slot = match &self.mode {
                CgroupMode::V1 { memory, pids, cpu } => Slot {
                    memory: memory.join(&name),
                    pids: pids.join(&name),
                    cpu: cpu.as_ref().map(|cpu| cpu.join(&name)),
                    unified: false,
                    cpu_epoch: Arc::default(),
                },
                CgroupMode::V2 { parent, cpu } => Slot {
                    memory: parent.join(&name),
                    pids: parent.join(&name),
                    cpu: cpu.then(|| parent.join(&name)),
                    unified: true,
                    cpu_epoch: Arc::default(),
                },
                CgroupMode::Off { .. } => return Err(io::Error::other("cgroups are off")),
            };
            for dir in slot.dirs() {
                match fs::create_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            if pids_inside(&slot).is_empty() {
                return Ok(slot);
            }
            tracing::warn!(cgroup = %slot.memory.display(), "a leftover cgroup still has processes; skipping it");
        }
    }

    /// Takes back a slot after its run: at once when the run left no process (the usual case),
    /// else on the blocking pool, which kills and waits without holding up an async worker.
    fn give_back(self: &Arc<Self>, slot: Slot) {
        if pids_inside(&slot).is_empty() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
            return;
        }
        let drain = Draining::start(self.clone());
        let empty = move || drain.finish(slot);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(empty)),
            Err(_) => empty(),
        }
    }

    /// Removes the idle slots, after waiting (bounded) for slots still being emptied: at
    /// shutdown, once no run is left. Blocks; call it off the async workers.
    pub fn remove_idle(&self) {
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + DRAIN_TIMEOUT * 2;
        while *draining > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            draining = self.drained.wait_timeout(draining, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        drop(draining);
        let slots: Vec<Slot> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in slots {
            remove_slot(&slot);
        }
    }
}

/// One slot being emptied; counted in the pool until it is back or retired, also when the
/// blocking task never runs (a runtime shutting down drops it).
struct Draining(Arc<CgroupPool>);

impl Draining {
    fn start(pool: Arc<CgroupPool>) -> Self {
        *pool.draining.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Draining(pool)
    }

    fn finish(self, slot: Slot) {
        if kill_all(&slot) {
            self.0.idle.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
        } else {
            tracing::warn!(cgroup = %slot.memory.display(), "processes outlived a run; retiring its cgroup");
            remove_slot(&slot);
        }
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        *self.0.draining.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.drained.notify_all();
    }
}

impl Slot {
    fn dirs(&self) -> Vec<&PathBuf> {
        if self.unified {
            vec![&self.memory]
        } else {
            [Some(&self.memory), Some(&self.pids), self.cpu.as_ref()].into_iter().flatten().collect()
        }
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|dir| dir.join("cgroup.procs")).collect()
    }
}

/// One run's lease of a slot. Dropping it kills whatever is left inside and gives the slot back.
#[derive(Debug)]
pub struct RunCgroup {
    slot: Option<Slot>,
    pool: Arc<CgroupPool>,
    /// The slot's OOM-kill counter before this run.
    oom_baseline: u64,
}

impl RunCgroup {
    fn slot(&self) -> &Slot {
        // Only Drop takes the slot out.
        self.slot.as_ref().expect("a lease holds its slot until dropped")
    }

    fn set_limits(&self, memory_bytes: u64, max_pids: u64) -> io::Result<()> {
        let slot = self.slot();
        let limit = memory_bytes.to_string();
        if slot.unified {
            fs::write(slot.memory.join("memory.max"), &limit)?;
            // No swap: a run past its memory limit is killed, not slowed down.
            let _ = fs::write(slot.memory.join("memory.swap.max"), "0");
        } else {
            let memsw = slot.memory.join("memory.memsw.limit_in_bytes");
            // memory.limit must stay <= memsw.limit: lift memsw, set the limit, then pin memsw.
            let _ = fs::write(&memsw, "-1");
            let limit_file = slot.memory.join("memory.limit_in_bytes");
            if fs::write(&limit_file, &limit).is_err() {
                // Page cache of earlier runs is charged to the slot: drop it, then lower the limit.
                let _ = fs::write(slot.memory.join("memory.force_empty"), "0");
                fs::write(&limit_file, &limit)?;
            }
            let _ = fs::write(&memsw, &limit);
            let _ = fs::write(slot.memory.join("memory.swappiness"), "0");
            let _ = fs::write(slot.memory.join("memory.max_usage_in_bytes"), "0");
        }
        fs::write(slot.pids.join("pids.max"), max_pids.to_string())
    }

    /// Sets the group's CPU weight (and the cap), when the cpu controller is ours; a run's
    /// weight drops to a long run's once it used `long_run_after` of CPU, unless set again before.
    fn set_cpu(&self, weight: Weight) -> io::Result<()> {
        let slot = self.slot();
        let Some(dir) = &slot.cpu else { return Ok(()) };
        let cpu = self.pool.cpu;
        let epoch = {
            let mut epoch = slot.cpu_epoch.lock().unwrap_or_else(|p| p.into_inner());
            *epoch += 1;
            cpu.apply(dir, weight, slot.unified)?;
            *epoch
        };
        let (Weight::Run, Some(after)) = (weight, cpu.long_run_after) else { return Ok(()) };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return Ok(()) };
        let (dir, unified, epochs) = (dir.clone(), slot.unified, slot.cpu_epoch.clone());
        let baseline = cpu::cpu_used(&dir, unified).unwrap_or_default();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(LONG_RUN_POLL).await;
                let Some(_unchanged) = unchanged(&epochs, epoch) else { return };
                let used = cpu::cpu_used(&dir, unified).unwrap_or_default().saturating_sub(baseline);
                if used >= after {
                    if let Err(err) = cpu.apply(&dir, Weight::LongRun, unified) {
                        tracing::warn!(cgroup = %dir.display(), error = %err, "could not lower a long run's CPU weight");
                    }
                    break;
                }
            }
            if cpu.long_run_idle {
                keep_from_starving(cpu, &dir, unified, &epochs, epoch).await;
            }
        });
        Ok(())
    }

    /// Sets the run's memory and process limits again and a run's CPU weight, for a ready
    /// sandbox whose job has just arrived, and counts out-of-memory kills from now. Fails (v1)
    /// when the group already uses more than `memory_bytes`; callers check `memory_usage` first.
    pub fn apply(&mut self, memory_bytes: u64, max_pids: u64) -> io::Result<()> {
        self.set_limits(memory_bytes, max_pids)?;
        self.set_cpu(Weight::Run)?;
        self.oom_baseline = self.oom_kills();
        Ok(())
    }

    /// A ready sandbox forked from the template makes its namespaces at a run's CPU weight
    /// (`Weight::Fork`) instead of a refill's.
    pub fn set_forking(&self) -> io::Result<()> {
        self.set_cpu(Weight::Fork)
    }

    /// Memory charged to the group now, in bytes.
    pub fn memory_usage(&self) -> Option<u64> {
        let slot = self.slot();
        let file = if slot.unified { "memory.current" } else { "memory.usage_in_bytes" };
        fs::read_to_string(slot.memory.join(file)).ok()?.trim().parse().ok()
    }

    /// Processes and threads in the group now.
    pub fn process_count(&self) -> Option<u64> {
        fs::read_to_string(self.slot().pids.join("pids.current")).ok()?.trim().parse().ok()
    }

    /// The host pids of the processes in the group now.
    pub fn pids(&self) -> Vec<i32> {
        pids_inside(self.slot())
    }

    /// SIGKILL to every process in the group now: the end of a forked sandbox, which has no
    /// nsjail to reap it (`release` then kills until the group is empty).
    pub fn kill_all_once(&self) {
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// The `cgroup.procs` files a process writes its pid into to join the run's groups.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.slot().procs_files()
    }

    fn oom_kills(&self) -> u64 {
        let slot = self.slot();
        let file = if slot.unified { "memory.events" } else { "memory.oom_control" };
        fs::read_to_string(slot.memory.join(file)).map(|text| parse_oom_kills(&text)).unwrap_or(0)
    }

    /// Whether the kernel's OOM killer killed a process of this run.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills() > self.oom_baseline
    }

    /// Peak memory use of the slot in bytes (this run's on v1, where it is reset per run).
    pub fn peak_memory(&self) -> Option<u64> {
        let slot = self.slot();
        let file = if slot.unified { "memory.peak" } else { "memory.max_usage_in_bytes" };
        fs::read_to_string(slot.memory.join(file)).ok()?.trim().parse().ok()
    }
}

impl RunCgroup {
    /// Gives the slot back once the run is over: kills what is left in it and empties it, on
    /// the blocking pool, since that may wait on the kernel.
    pub async fn release(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // The run is over: a pending demotion of its weight must not touch the group.
            *slot.cpu_epoch.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            self.pool.give_back(slot);
        }
    }
}

/// Kills every process in the slot, SIGKILL, until none is left; false if some survived.
fn kill_all(slot: &Slot) -> bool {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let pids = pids_inside(slot);
        if pids.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pids_inside(slot: &Slot) -> Vec<i32> {
    let mut pids = Vec::new();
    for file in slot.procs_files() {
        if let Ok(text) = fs::read_to_string(file) {
            pids.extend(text.lines().filter_map(|line| line.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn remove_slot(slot: &Slot) {
    kill_all(slot);
    for dir in slot.dirs() {
        // rmdir fails while a process is still exiting; retry briefly.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if dir.exists() {
            tracing::warn!(cgroup = %dir.display(), "could not remove a cgroup");
        }
    }
}

/// The `oom_kill N` counter of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_is_read_from_v1_and_v2_files() {
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(parse_oom_kills("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"), 1);
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
