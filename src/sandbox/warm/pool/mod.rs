//! The pool of ready, single-use sandboxes of `pyexec serve` (local placement): jails started
//! before any request, each with its own nsjail exec, namespaces, /tmp and cgroup slot, whose
//! interpreter waits for exactly one job. They come in two kinds (`kind`): preloaded ones have
//! imported `--preload-modules` and serve scripts that name one of them; plain ones serve the
//! rest. A request takes one of its kind (a hit) or, when none is ready or its limits cannot be
//! applied to a ready one, starts a sandbox itself (a cold start); nothing ever waits on the
//! pool. A sandbox is never handed a second job: `Supervisor::run_ready` consumes it.
//!
//! One background task keeps the pool filled, up to `--pool-starts-at-once` sandboxes at a time
//! (each at a hundredth of a run's CPU weight, so that refilling never takes the CPU of running
//! scripts) and only while a run slot is free; it replaces sandboxes that died or lived past
//! `--pool-idle-seconds`, and sizes each kind between `--pool-min` and `--pool-max`: each miss
//! asks for one more of its kind, each sandbox that expires unused for one fewer.

mod kind;

pub use kind::{kind_for, Kind};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::sandbox::limits::Limits;
use crate::sandbox::run::supervisor::Supervisor;
use crate::sandbox::warm::ready::{ReadySandbox, Unfit};
use crate::sandbox::warm::template::Life;
use kind::next_to_start;

/// How often the pool looks for dead and stale sandboxes when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// How long a sandbox may take to import the preloaded modules.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// nsjail's own time limit of a ready jail beyond its idle lifetime: a backstop only (the
/// supervisor kills at each job's deadline); jobs whose timeout would pass it go cold.
const BACKSTOP_BEYOND_IDLE: Duration = Duration::from_secs(3600);
/// Longest pause after ready sandboxes failed to start, doubling from one second.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Args, Clone, Debug)]
pub struct PoolSettings {
    /// Least number of ready sandboxes of each kind (local placement) kept waiting for a
    /// script, each a jailed interpreter that runs exactly one script: preloaded ones (which
    /// already imported --preload-modules) for scripts that name one of those modules, plain
    /// ones for the others.
    #[arg(long, env = "PYEXEC_POOL_MIN", default_value_t = 1)]
    pub pool_min: usize,
    /// Most ready sandboxes of each kind; a kind grows toward it with its misses and shrinks as
    /// idle ones expire. 0 turns the pool off: every script starts its own sandbox (the cold
    /// path).
    #[arg(long, env = "PYEXEC_POOL_MAX", default_value_t = 4)]
    pub pool_max: usize,
    /// Seconds a ready sandbox waits for a script before it is replaced (or, above
    /// --pool-min and unused, removed).
    #[arg(long, env = "PYEXEC_POOL_IDLE_SECONDS", default_value_t = 300)]
    pub pool_idle_seconds: u64,
    /// Most ready sandboxes started at the same time when the pool refills (default: the
    /// number of CPUs). They start at a hundredth of a running script's CPU weight.
    #[arg(long, env = "PYEXEC_POOL_STARTS_AT_ONCE", value_parser = clap::value_parser!(u16).range(1..))]
    pub pool_starts_at_once: Option<u16>,
    /// Fork the ready sandboxes from a template interpreter per kind (the preloaded kind's
    /// imported --preload-modules once, the plain kind's nothing), instead of starting an
    /// interpreter (and importing them) in each: a fork and the sandbox's own namespaces,
    /// cgroup, /tmp, filter and random state cost milliseconds where a start costs tens and an
    /// import hundreds (see README.md, "Security model", for what forked sandboxes share). Needs
    /// `--isolation host` and cgroups; elsewhere, or when a template cannot start, ready
    /// sandboxes start their own interpreter.
    #[arg(long, env = "PYEXEC_POOL_FORK", default_value_t = true, action = clap::ArgAction::Set)]
    pub pool_fork: bool,
    /// Most sandboxes one template forks before a new template takes over. Forks share the
    /// secrets their template's interpreter drew when it started (the hash seed, the stack
    /// canary, the pointer guard): this bounds how many sandboxes share them.
    #[arg(long, env = "PYEXEC_POOL_TEMPLATE_FORKS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pool_template_forks: u64,
    /// Most seconds one template forks sandboxes before a new template takes over (the old one
    /// ends once its last fork has): bounds how long forks share those secrets.
    #[arg(long, env = "PYEXEC_POOL_TEMPLATE_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub pool_template_seconds: u64,
    #[command(flatten)]
    pub preload: PreloadSettings,
}

/// What a ready sandbox imports before its job arrives: the pool's sandboxes and a sandbox pod's
/// (`pyexec sandbox --job-on-stdin`) alike.
#[derive(Args, Clone, Debug)]
pub struct PreloadSettings {
    /// Modules a ready sandbox (the pool's preloaded ones, or that of `pyexec sandbox` with
    /// --job-on-stdin) imports before its script arrives (comma-separated; empty for none). In
    /// the pool, a script that names one of them as a word (`import pandas`) gets a preloaded
    /// sandbox, any other a plain one. The import's memory counts toward the script's memory
    /// limit.
    #[arg(long, env = "PYEXEC_PRELOAD_MODULES", value_delimiter = ',', default_value = "numpy,pandas")]
    pub preload_modules: Vec<String>,
}

impl PreloadSettings {
    /// The module names, trimmed, empty ones left out.
    pub fn modules(&self) -> Vec<String> {
        self.preload_modules.iter().map(|name| name.trim().to_string()).filter(|name| !name.is_empty()).collect()
    }
}

impl PoolSettings {
    pub fn enabled(&self) -> bool {
        self.pool_max > 0
    }

    /// How long each template serves.
    fn template_life(&self) -> Life {
        Life { max_forks: self.pool_template_forks, max_age: Duration::from_secs(self.pool_template_seconds) }
    }

    fn idle_lifetime(&self) -> Duration {
        Duration::from_secs(self.pool_idle_seconds.max(1))
    }

    /// How many ready sandboxes may be started at the same time.
    pub fn starts_at_once(&self) -> usize {
        let cpus = || std::thread::available_parallelism().map_or(1, usize::from);
        self.pool_starts_at_once.map_or_else(cpus, usize::from)
    }

    /// The least and most ready sandboxes of `kind`, given the preloaded modules: none
    /// preloaded when there is nothing to preload.
    fn bounds(&self, kind: Kind, preload: &[String]) -> (usize, usize) {
        if kind == Kind::Preloaded && preload.is_empty() {
            return (0, 0);
        }
        (self.pool_min.min(self.pool_max), self.pool_max)
    }
}

/// What the pool's gauges and counters report to (`crate::metrics`), kept apart from it.
pub trait PoolObserver: Send + Sync {
    /// Ready sandboxes of `kind` now, and the memory they hold.
    fn ready(&self, kind: Kind, count: usize, memory_bytes: u64);
    /// A ready sandbox of `kind` took `seconds` to start.
    fn started(&self, kind: Kind, seconds: f64);
    /// Ready sandboxes being started now.
    fn starting(&self, count: usize);
    /// Memory of the template preloaded sandboxes are forked from (0 without one).
    fn template(&self, memory_bytes: u64);
}

/// The answer to a request for a ready sandbox.
#[derive(Debug)]
pub enum Claim {
    /// A ready sandbox, its cgroup already set to the job's memory and process limits.
    Hit(Box<ReadySandbox>),
    /// None was ready.
    Empty,
    /// The job's limits cannot be applied to a ready sandbox.
    Unfit(Unfit),
}

impl Claim {
    /// How the job starts, for logs: warm (a ready sandbox) or cold.
    pub fn start(&self) -> &'static str {
        match self {
            Claim::Hit(_) => "warm",
            Claim::Empty | Claim::Unfit(_) => "cold",
        }
    }
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

struct Shared {
    supervisor: Supervisor,
    settings: PoolSettings,
    preload: Vec<String>,
    /// The memory, process and /tmp limits a ready sandbox starts with.
    limits: Limits,
    backstop: Duration,
    /// The ready sandboxes of each kind (indexed by `Kind::index`), oldest first.
    ready: Mutex<[VecDeque<ReadySandbox>; 2]>,
    /// How many of each kind to keep ready.
    target: [AtomicUsize; 2],
    wake: Notify,
    stop: CancellationToken,
    /// Whether a sandbox may be started now (a run slot is free).
    may_refill: Box<dyn Fn() -> bool + Send + Sync>,
    observer: Arc<dyn PoolObserver>,
    started: AtomicU64,
    /// Sandboxes of each kind being started now.
    starting: [AtomicUsize; 2],
}

impl Pool {
    /// Starts the pool and its refilling task. `limits` are the server's default limits: a
    /// ready sandbox starts with their memory, process and /tmp limits, and a job whose /tmp
    /// size differs goes cold.
    pub fn start(
        supervisor: Supervisor,
        settings: PoolSettings,
        limits: Limits,
        may_refill: Box<dyn Fn() -> bool + Send + Sync>,
        observer: Arc<dyn PoolObserver>,
    ) -> Pool {
        let preload = settings.preload.modules();
        let least = |kind| AtomicUsize::new(settings.bounds(kind, &preload).0);
        let shared = Arc::new(Shared {
            supervisor,
            backstop: settings.idle_lifetime() + BACKSTOP_BEYOND_IDLE,
            target: [least(Kind::Plain), least(Kind::Preloaded)],
            preload,
            settings,
            limits,
            ready: Mutex::new([VecDeque::new(), VecDeque::new()]),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            may_refill,
            observer,
            started: AtomicU64::new(0),
            starting: [AtomicUsize::new(0), AtomicUsize::new(0)],
        });
        let task = tokio::spawn(refill(shared.clone()));
        Pool { shared, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// The kind of ready sandbox `script` runs in.
    pub fn kind_for(&self, script: &str) -> Kind {
        kind::kind_for(script, &self.shared.preload)
    }

    /// A ready sandbox of `kind` for a job with `limits`, if one is ready and the limits can be
    /// applied to it. Never waits.
    pub fn claim(&self, kind: Kind, limits: &Limits) -> Claim {
        let shared = &self.shared;
        let mut gone = Vec::new();
        let claim = {
            let mut all = shared.lock_ready();
            let ready = &mut all[kind.index()];
            loop {
                let Some(mut sandbox) = ready.pop_front() else { break Claim::Empty };
                match sandbox.claim(limits, shared.backstop) {
                    Ok(()) => break Claim::Hit(Box::new(sandbox)),
                    Err(Unfit::Gone) => gone.push(sandbox),
                    Err(unfit) => {
                        ready.push_front(sandbox);
                        break Claim::Unfit(unfit);
                    }
                }
            }
        };
        if matches!(claim, Claim::Empty) {
            // Demand exceeded the pool: keep one more of this kind ready from now on.
            let (_, max) = shared.settings.bounds(kind, &shared.preload);
            let target = &shared.target[kind.index()];
            let _ = target.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some((t + 1).min(max)));
        }
        for sandbox in gone {
            tokio::spawn(sandbox.destroy());
        }
        // The gauge follows at once: the claimed run may answer before the pool next looks. Only
        // this kind's: the report reads each ready sandbox's memory from its cgroup.
        shared.report_kind(&shared.lock_ready(), kind);
        // No refill is started here: it would take CPU from the run that just claimed; the
        // run's end wakes the pool (`wake`).
        claim
    }

    /// Tells the pool a run slot may have come free.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops refilling and removes every ready sandbox (their jails killed and reaped, their
    /// cgroup slots emptied).
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let left: Vec<ReadySandbox> = self.shared.lock_ready().iter_mut().flat_map(|ready| ready.drain(..)).collect();
        futures::future::join_all(left.into_iter().map(ReadySandbox::destroy)).await;
        self.shared.report();
    }
}

impl Shared {
    fn lock_ready(&self) -> std::sync::MutexGuard<'_, [VecDeque<ReadySandbox>; 2]> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes out the sandboxes that died or waited past their idle lifetime; returns them and
    /// how many of each kind expired (rather than died).
    fn prune(&self) -> (Vec<ReadySandbox>, [usize; 2]) {
        let lifetime = self.settings.idle_lifetime();
        let mut all = self.lock_ready();
        let mut removed = Vec::new();
        let mut expired = [0; 2];
        for (ready, expired) in all.iter_mut().zip(&mut expired) {
            let mut kept = VecDeque::with_capacity(ready.len());
            for mut sandbox in ready.drain(..) {
                if !sandbox.alive() {
                    tracing::warn!(?sandbox, "a ready sandbox ended while it waited; replacing it");
                    removed.push(sandbox);
                } else if sandbox.age() >= lifetime {
                    *expired += 1;
                    removed.push(sandbox);
                } else {
                    kept.push_back(sandbox);
                }
            }
            *ready = kept;
        }
        (removed, expired)
    }

    /// Ready sandboxes of each kind, counting those being started.
    fn counts_with_starting(&self) -> [usize; 2] {
        let all = self.lock_ready();
        Kind::ALL.map(|kind| all[kind.index()].len() + self.starting[kind.index()].load(Ordering::SeqCst))
    }

    fn targets(&self) -> [usize; 2] {
        Kind::ALL.map(|kind| self.target[kind.index()].load(Ordering::SeqCst))
    }

    fn report(&self) {
        let all = self.lock_ready();
        for kind in Kind::ALL {
            self.report_kind(&all, kind);
        }
        self.observer.starting(self.starting.iter().map(|n| n.load(Ordering::SeqCst)).sum());
        self.observer.template(self.supervisor.template_memory().unwrap_or(0));
    }

    /// Reports the ready sandboxes of `kind` in `all` and the memory they hold.
    fn report_kind(&self, all: &[VecDeque<ReadySandbox>; 2], kind: Kind) {
        let ready = &all[kind.index()];
        let memory = ready.iter().filter_map(ReadySandbox::memory_usage).sum();
        self.observer.ready(kind, ready.len(), memory);
    }
}

/// The pool's size after `expired` sandboxes went unused for their whole lifetime.
fn shrunk(target: usize, expired: usize, min: usize) -> usize {
    target.saturating_sub(expired).max(min)
}

/// The pause after `failures` failed starts in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

async fn refill(shared: Arc<Shared>) {
    let mut starts = JoinSet::new();
    let mut failures = 0u32;
    let mut paused_until: Option<Instant> = None;
    loop {
        let (removed, expired) = shared.prune();
        for kind in Kind::ALL.into_iter().filter(|kind| expired[kind.index()] > 0) {
            let (min, _) = shared.settings.bounds(kind, &shared.preload);
            let expired = expired[kind.index()];
            let target = &shared.target[kind.index()];
            let _ = target.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(shrunk(t, expired, min)));
        }
        futures::future::join_all(removed.into_iter().map(ReadySandbox::destroy)).await;

        if paused_until.is_some_and(|until| Instant::now() >= until) {
            paused_until = None;
        }
        while paused_until.is_none() && starts.len() < shared.settings.starts_at_once() {
            let wanted = next_to_start(shared.counts_with_starting(), shared.targets());
            let Some(kind) = wanted.filter(|_| (shared.may_refill)()) else { break };
            // Counted as under way before the loop looks again.
            starts.spawn(start_one(Starting::new(shared.clone(), kind)));
        }
        shared.report();

        let pause = paused_until.map_or(TICK, |until| until.saturating_duration_since(Instant::now()).min(TICK));
        tokio::select! {
            () = shared.stop.cancelled() => break,
            Some(done) = starts.join_next(), if !starts.is_empty() => {
                if done.unwrap_or(false) {
                    failures = 0;
                } else {
                    failures += 1;
                    paused_until = Some(Instant::now() + backoff(failures));
                }
            }
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    // Stopping: starts still under way are dropped, which kills their jails and empties their
    // cgroup slots; a sandbox that became ready meanwhile is in `ready`, which `shutdown` empties.
    starts.abort_all();
    while starts.join_next().await.is_some() {}
}

/// Starts one ready sandbox of the kind `starting` counts and puts it in the pool; false if it
/// failed to start.
async fn start_one(starting: Starting) -> bool {
    let (shared, kind) = (starting.shared.clone(), starting.kind);
    let n = shared.started.fetch_add(1, Ordering::SeqCst);
    let id = format!("ready-{}-{n}", std::process::id());
    let preload = match kind {
        Kind::Plain => &[][..],
        Kind::Preloaded => &shared.preload[..],
    };
    let began = Instant::now();
    let forked = shared.settings.pool_fork && shared.supervisor.can_fork();
    let start = async {
        if forked {
            let life = shared.settings.template_life();
            match shared.supervisor.start_forked(&id, &shared.limits, preload, shared.backstop, &life).await {
                Ok(sandbox) => return Ok(sandbox),
                Err(err) => {
                    tracing::warn!(error = %err, "a ready sandbox could not be forked; starting its own interpreter")
                }
            }
        }
        shared.supervisor.start_ready(&id, &shared.limits, preload, shared.backstop).await
    };
    match tokio::time::timeout(READY_TIMEOUT, start).await {
        Ok(Ok(sandbox)) => {
            let took = began.elapsed();
            shared.observer.started(kind, took.as_secs_f64());
            tracing::debug!(kind = kind.as_str(), id, ms = took.as_millis() as u64, forked, "a ready sandbox started");
            shared.lock_ready()[kind.index()].push_back(sandbox);
            drop(starting);
            // Let the refilling task look again (and the gauges follow) at once.
            shared.wake.notify_one();
            true
        }
        Ok(Err(err)) => {
            tracing::error!(kind = kind.as_str(), error = %err, "a ready sandbox failed to start");
            false
        }
        Err(_) => {
            let seconds = READY_TIMEOUT.as_secs();
            tracing::error!(kind = kind.as_str(), seconds, "a ready sandbox took too long to start");
            false
        }
    }
}

/// Counts a start of `kind` as under way for as long as it lives, however it ends.
struct Starting {
    shared: Arc<Shared>,
    kind: Kind,
}

impl Starting {
    fn new(shared: Arc<Shared>, kind: Kind) -> Self {
        shared.starting[kind.index()].fetch_add(1, Ordering::SeqCst);
        Starting { shared, kind }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.shared.starting[self.kind.index()].fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_shrinks_the_pool_but_never_below_its_least_size() {
        assert_eq!(shrunk(4, 1, 1), 3);
        assert_eq!(shrunk(2, 3, 1), 1);
        assert_eq!(shrunk(1, 1, 0), 0);
    }

    #[test]
    fn failed_starts_back_off_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn empty_names_in_the_preload_list_are_ignored() {
        let settings = PoolSettings {
            pool_min: 1,
            pool_max: 2,
            pool_idle_seconds: 0,
            pool_starts_at_once: None,
            pool_fork: true,
            pool_template_forks: 1000,
            pool_template_seconds: 300,
            preload: PreloadSettings { preload_modules: vec![" numpy".into(), String::new()] },
        };
        assert_eq!(settings.preload.modules(), ["numpy"]);
        assert_eq!(settings.idle_lifetime(), Duration::from_secs(1));
    }

    #[test]
    fn each_kind_has_the_pools_bounds_and_nothing_to_preload_means_no_preloaded_kind() {
        let settings = PoolSettings {
            pool_min: 3,
            pool_max: 2,
            pool_idle_seconds: 60,
            pool_starts_at_once: None,
            pool_fork: true,
            pool_template_forks: 1000,
            pool_template_seconds: 300,
            preload: PreloadSettings { preload_modules: vec![] },
        };
        let preload = vec!["pandas".to_string()];
        assert_eq!(settings.bounds(Kind::Plain, &preload), (2, 2));
        assert_eq!(settings.bounds(Kind::Preloaded, &preload), (2, 2));
        assert_eq!(settings.bounds(Kind::Plain, &[]), (2, 2));
        assert_eq!(settings.bounds(Kind::Preloaded, &[]), (0, 0));
    }
}
