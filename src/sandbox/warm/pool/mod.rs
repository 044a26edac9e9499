//! The pool of ready, single-use sandboxes of `pyexec serve` (local placement): jails started
//! before any request, each with its own nsjail exec, namespaces, /tmp and cgroup slot, whose
//! interpreter waits for exactly one job. They come in two kinds (`kind`): preloaded ones have
//! imported `--preload-modules` and serve scripts that name one of them; plain ones serve the
//! rest. A request takes one of its kind (a hit) or, when none is ready or its limits cannot be
//! applied to a ready one, starts a sandbox itself (a cold start). A request that finds none
//! ready waits for a start of its kind already under way, or queues for one not begun yet, when
//! that is expected sooner than a cold start, and no longer than a cold start takes (`demand`);
//! the sandboxes started go to the waiting requests first come, first served (`handoff`). A
//! sandbox is never handed a second job: `Supervisor::run_ready` consumes it.
//!
//! One background task keeps the pool filled, up to `--pool-starts-at-once` sandboxes at a time
//! (each at a hundredth of a run's CPU weight, so that refilling never takes the CPU of running
//! scripts), while a run slot is free or a request waits for a start; it replaces sandboxes that
//! died or lived past `--pool-idle-seconds`. Each kind's size follows demand (`demand`): the
//! recent arrival rate of its scripts times how long one of its starts takes (measured), or room
//! for the last burst of its requests that found none ready, within `--pool-min` and
//! `--pool-max`, shrinking again as arrivals stop and bursts fade.

pub mod demand;
pub mod handoff;
mod kind;
mod settings;

pub use kind::{kind_for, Kind};
pub use settings::{PoolSettings, PreloadSettings};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::sandbox::limits::Limits;
use crate::sandbox::run::supervisor::Supervisor;
use crate::sandbox::warm::ready::{fits, ReadySandbox, Unfit};
use demand::{Arrivals, Burst, Starts};
use handoff::Waiters;
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

/// What the pool's gauges and counters report to (`crate::metrics`), kept apart from it.
pub trait PoolObserver: Send + Sync {
    /// Ready sandboxes of `kind` now, and the memory they hold.
    fn ready(&self, kind: Kind, count: usize, memory_bytes: u64);
    /// A ready sandbox of `kind` took `seconds` to start.
    fn started(&self, kind: Kind, seconds: f64);
    /// Ready sandboxes being started now.
    fn starting(&self, count: usize);
    /// How many ready sandboxes of `kind` the pool keeps now (from demand).
    fn target(&self, kind: Kind, count: usize);
    /// Memory of the template preloaded sandboxes are forked from (0 without one).
    fn template(&self, memory_bytes: u64);
    /// Templates started so far while a fork waited for them (`at_need`), and successors that
    /// took over from a spent template with no fork waiting (`ahead`).
    fn template_starts(&self, at_need: u64, ahead: u64);
}

/// The answer to a request for a ready sandbox.
#[derive(Debug)]
pub enum Claim {
    /// A ready sandbox, its cgroup already set to the job's memory and process limits; `waited`
    /// when the request waited for it to be started.
    Hit { sandbox: Box<ReadySandbox>, waited: bool },
    /// No ready sandbox: the job starts cold.
    Miss(Miss),
}

/// Why a request got no ready sandbox.
#[derive(Debug)]
pub enum Miss {
    /// None was ready, and none was expected sooner than a cold start.
    Empty,
    /// It waited for a start under way for as long as a cold start takes, in vain.
    WaitedInVain,
    /// The job's limits cannot be applied to a ready sandbox.
    Unfit(Unfit),
}

impl Miss {
    /// For metric labels and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Miss::Empty => "empty",
            Miss::WaitedInVain => "waited_in_vain",
            Miss::Unfit(_) => "unfit",
        }
    }
}

impl Claim {
    /// How the job starts, for logs: warm (a ready sandbox) or cold.
    pub fn start(&self) -> &'static str {
        match self {
            Claim::Hit { .. } => "warm",
            Claim::Miss(_) => "cold",
        }
    }
}

/// What the pool knows of one kind's demand and of how long its starts take.
#[derive(Clone, Copy, Debug)]
struct Demand {
    /// Arrivals of scripts of this kind.
    arrivals: Arrivals,
    /// The largest recent burst of its requests that found none ready.
    burst: Burst,
    /// Moving averages, in seconds, of a ready sandbox's start, of an interpreter's start in a
    /// jail importing the kind's modules (a template's, or a ready sandbox's that did not fork),
    /// and of the successful cold runs; None until one was measured.
    start: Option<f64>,
    interpreter: Option<f64>,
    cold_runs: Option<f64>,
}

impl Demand {
    /// What a cold start of this kind takes: the cold runs, which measure it under the current
    /// load (their scripts' own time included), or else an interpreter's start.
    fn cold(&self) -> Option<f64> {
        self.cold_runs.or(self.interpreter)
    }
}

/// The starts under way, when each began, and the requests waiting for one, per kind.
#[derive(Debug, Default)]
struct Starting {
    began: [Vec<Instant>; 2],
    waiting: [usize; 2],
}

impl Starting {
    /// Starts under way, of either kind.
    fn in_flight(&self) -> usize {
        self.began.iter().map(Vec::len).sum()
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
    /// The requests of each kind waiting for a sandbox being started, oldest first. Locked
    /// after `ready`, when both are.
    waiters: Mutex<[Waiters<ReadySandbox>; 2]>,
    /// Each kind's arrivals and start times, from which its target follows.
    demand: Mutex<[Demand; 2]>,
    wake: Notify,
    /// Told when a start of each kind ends, however, for the requests waiting for one: they look
    /// again whether one may still come.
    start_ended: [Notify; 2],
    stop: CancellationToken,
    /// Whether a sandbox may be started now (a run slot is free).
    may_refill: Box<dyn Fn() -> bool + Send + Sync>,
    observer: Arc<dyn PoolObserver>,
    started: AtomicU64,
    /// Sandboxes of each kind being started now, and the requests waiting for them.
    starting: Mutex<Starting>,
    /// Whether the pool pauses after failed starts (`backoff`).
    paused: AtomicBool,
    /// Cold starts (jobs that got no ready sandbox) running now, of either kind.
    colds: AtomicUsize,
}

/// One cold start counted as running until this is dropped (`Pool::cold_start`).
pub struct ColdStart(Arc<Shared>);

impl Drop for ColdStart {
    fn drop(&mut self) {
        self.0.colds.fetch_sub(1, Ordering::SeqCst);
    }
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
        let demand = Demand {
            arrivals: Arrivals::default(),
            burst: Burst::default(),
            start: None,
            interpreter: None,
            cold_runs: None,
        };
        let shared = Arc::new(Shared {
            supervisor,
            backstop: settings.idle_lifetime() + BACKSTOP_BEYOND_IDLE,
            demand: Mutex::new([demand; 2]),
            start_ended: [Notify::new(), Notify::new()],
            preload,
            settings,
            limits,
            ready: Mutex::new([VecDeque::new(), VecDeque::new()]),
            waiters: Mutex::new([Waiters::default(), Waiters::default()]),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            may_refill,
            observer,
            started: AtomicU64::new(0),
            starting: Mutex::new(Starting::default()),
            paused: AtomicBool::new(false),
            colds: AtomicUsize::new(0),
        });
        let task = tokio::spawn(refill(shared.clone()));
        Pool { shared, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// The kind of ready sandbox `script` runs in.
    pub fn kind_for(&self, script: &str) -> Kind {
        kind::kind_for(script, &self.shared.preload)
    }

    /// A ready sandbox of `kind` for a job with `limits`: one that is ready, or else one being
    /// started when that is expected sooner than a cold start (waiting at most as long as a
    /// cold start takes); a miss when the job should start cold.
    pub async fn claim(&self, kind: Kind, limits: &Limits) -> Claim {
        let shared = &self.shared;
        shared.arrival(kind);
        match shared.take(kind, limits) {
            Taken::Ready(sandbox) => return Claim::Hit { sandbox, waited: false },
            Taken::Unfit(unfit) => return Claim::Miss(Miss::Unfit(unfit)),
            Taken::None => {}
        }
        // A sandbox being started would not take these limits either.
        if let Err(unfit) = fits(&shared.limits, limits, Duration::ZERO, shared.backstop) {
            return Claim::Miss(Miss::Unfit(unfit));
        }
        shared.short(kind);
        let Some((waiting, cold)) = shared.wait_for_start(kind) else { return Claim::Miss(Miss::Empty) };
        // The refilling task begins a start for this request if none is under way for it.
        shared.wake.notify_one();
        let deadline = tokio::time::Instant::now() + cold;
        // This request's place in the queue of waiters, once it joined it.
        let mut place = None;
        let claim = loop {
            let ended = shared.start_ended[kind.index()].notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let mut handed = match place.take() {
                Some(handed) => handed,
                None => match shared.take_or_join(kind, limits) {
                    Ok(Taken::Ready(sandbox)) => break Claim::Hit { sandbox, waited: true },
                    Ok(Taken::Unfit(unfit)) => break Claim::Miss(Miss::Unfit(unfit)),
                    // (Not when joining: a request finding none joins the queue instead.)
                    Ok(Taken::None) => break Claim::Miss(Miss::WaitedInVain),
                    Err(handed) => handed,
                },
            };
            if !shared.may_start(kind) {
                place = Some(handed);
                break Claim::Miss(Miss::WaitedInVain);
            }
            tokio::select! {
                sandbox = &mut handed => match sandbox {
                    Ok(sandbox) => match shared.fit(kind, sandbox, limits) {
                        Some(claim) => break claim,
                        // It died while it waited: join the queue again.
                        None => continue,
                    },
                    Err(_) => continue,
                },
                // A start ended (perhaps failed): look again whether one may still come.
                () = &mut ended => place = Some(handed),
                () = tokio::time::sleep_until(deadline) => {
                    place = Some(handed);
                    break Claim::Miss(Miss::WaitedInVain);
                }
            }
        };
        // Leaving the queue: a sandbox handed over meanwhile goes on to the next waiter.
        if let Some(sandbox) = place.and_then(handoff::leave) {
            shared.give(kind, sandbox);
        }
        drop(waiting);
        claim
    }

    /// Counts a job that got no ready sandbox as starting cold until the returned guard drops:
    /// a request that finds none ready weighs the wait for a start against a cold start beside
    /// those (`demand::cold_beside`).
    pub fn cold_start(&self) -> ColdStart {
        self.shared.colds.fetch_add(1, Ordering::SeqCst);
        ColdStart(self.shared.clone())
    }

    /// Tells the pool that a script of `kind` started cold and succeeded after `took`: what a
    /// request that waits for a start weighs the wait against.
    pub fn cold_run(&self, kind: Kind, took: Duration) {
        let mut demand = self.shared.lock_demand();
        let demand = &mut demand[kind.index()];
        demand.cold_runs = Some(demand::averaged(demand.cold_runs, took.as_secs_f64()));
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

    fn lock_demand(&self) -> std::sync::MutexGuard<'_, [Demand; 2]> {
        self.demand.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_starting(&self) -> std::sync::MutexGuard<'_, Starting> {
        self.starting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a script of `kind` arriving now.
    fn arrival(&self, kind: Kind) {
        let now = Instant::now();
        let mut demand = self.lock_demand();
        let demand = &mut demand[kind.index()];
        demand.arrivals.arrive(now);
    }

    /// Records that a request of `kind` found none ready, with those already waiting for a start:
    /// a burst the pool keeps room for (`demand::Burst`).
    fn short(&self, kind: Kind) {
        let short = self.lock_starting().waiting[kind.index()] + 1;
        self.lock_demand()[kind.index()].burst.short(short, Instant::now());
    }

    /// Records that a ready sandbox of `kind` took `took` to start, and how long the start of an
    /// interpreter importing its modules took, when one was measured.
    fn measured(&self, kind: Kind, took: Duration, interpreter: Option<Duration>) {
        let mut demand = self.lock_demand();
        let demand = &mut demand[kind.index()];
        demand.start = Some(demand::averaged(demand.start, took.as_secs_f64()));
        if let Some(interpreter) = interpreter {
            demand.interpreter = Some(demand::averaged(demand.interpreter, interpreter.as_secs_f64()));
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, [Waiters<ReadySandbox>; 2]> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready sandbox of `kind` that takes `limits`, if one is ready.
    fn take(&self, kind: Kind, limits: &Limits) -> Taken {
        let (taken, gone) = self.take_from(&mut self.lock_ready()[kind.index()], limits);
        self.took(kind, &taken, gone);
        taken
    }

    /// `take`, or else, when none is ready, this request's place at the end of the queue of
    /// waiters (`handoff`): the sandbox started for it comes through the receiver.
    fn take_or_join(&self, kind: Kind, limits: &Limits) -> Result<Taken, tokio::sync::oneshot::Receiver<ReadySandbox>> {
        let (taken, gone, joined) = {
            let mut all = self.lock_ready();
            let (taken, gone) = self.take_from(&mut all[kind.index()], limits);
            // Joined while `ready` is locked: what `give` hands on next reaches it.
            let joined = matches!(taken, Taken::None).then(|| self.lock_waiters()[kind.index()].join());
            (taken, gone, joined)
        };
        self.took(kind, &taken, gone);
        joined.map_or(Ok(taken), Err)
    }

    /// The first of the `ready` sandboxes that takes `limits`, and those found ended on the way.
    fn take_from(&self, ready: &mut VecDeque<ReadySandbox>, limits: &Limits) -> (Taken, Vec<ReadySandbox>) {
        let mut gone = Vec::new();
        while let Some(mut sandbox) = ready.pop_front() {
            match sandbox.claim(limits, self.backstop) {
                Ok(()) => return (Taken::Ready(Box::new(sandbox)), gone),
                Err(Unfit::Gone) => gone.push(sandbox),
                Err(unfit) => {
                    ready.push_front(sandbox);
                    return (Taken::Unfit(unfit), gone);
                }
            }
        }
        (Taken::None, gone)
    }

    /// After a take from `kind`'s ready sandboxes, with the pool unlocked: the ended ones found
    /// are destroyed, and the gauge follows at once when the pool changed (the claimed run may
    /// answer before the pool next looks; only this kind's, since the report reads each ready
    /// sandbox's memory from its cgroup). No refill is started here: it would take CPU from the
    /// run that just claimed; the run's end wakes the pool (`wake`).
    fn took(&self, kind: Kind, taken: &Taken, gone: Vec<ReadySandbox>) {
        let changed = matches!(taken, Taken::Ready(_)) || !gone.is_empty();
        for sandbox in gone {
            tokio::spawn(sandbox.destroy());
        }
        if changed {
            self.report_kind(&self.lock_ready(), kind);
        }
    }

    /// A sandbox of `kind` that became ready, or came back: to the oldest request waiting for
    /// one, or else into the pool.
    fn give(&self, kind: Kind, sandbox: ReadySandbox) {
        let mut all = self.lock_ready();
        if let Some(sandbox) = self.lock_waiters()[kind.index()].hand(sandbox) {
            all[kind.index()].push_back(sandbox);
        }
    }

    /// What a request waiting for a start makes of the sandbox handed to it: a hit when the
    /// sandbox takes its `limits`; a miss when it cannot (the sandbox goes on to the next
    /// waiter); None when it ended while it waited.
    fn fit(&self, kind: Kind, mut sandbox: ReadySandbox, limits: &Limits) -> Option<Claim> {
        match sandbox.claim(limits, self.backstop) {
            Ok(()) => Some(Claim::Hit { sandbox: Box::new(sandbox), waited: true }),
            Err(Unfit::Gone) => {
                tokio::spawn(sandbox.destroy());
                None
            }
            Err(unfit) => {
                self.give(kind, sandbox);
                Some(Claim::Miss(Miss::Unfit(unfit)))
            }
        }
    }

    /// Whether a request of `kind` that found none ready should wait for a start (`demand`):
    /// if so, it is counted as waiting until the returned guard drops, and may wait as long as
    /// the returned cold start takes.
    fn wait_for_start(self: &Arc<Self>, kind: Kind) -> Option<(Waiting, Duration)> {
        let (start, cold) = {
            let demand = self.lock_demand()[kind.index()];
            (Duration::from_secs_f64(demand.start?), Duration::from_secs_f64(demand.cold()?))
        };
        let cold = demand::cold_beside(cold, self.colds.load(Ordering::SeqCst), settings::cpus());
        let now = Instant::now();
        let mut starting = self.lock_starting();
        let under_way: Vec<Duration> =
            starting.began[kind.index()].iter().map(|began| now.saturating_duration_since(*began)).collect();
        if self.paused.load(Ordering::SeqCst) && under_way.len() <= starting.waiting[kind.index()] {
            // No start begins while the pool pauses after failed ones.
            return None;
        }
        let other = kind.other().index();
        let starts = Starts {
            under_way: &under_way,
            waiting: starting.waiting[kind.index()],
            waiting_elsewhere: starting.waiting[other].saturating_sub(starting.began[other].len()),
            free: self.settings.starts_at_once().saturating_sub(starting.in_flight()),
            at_once: self.settings.starts_at_once(),
            start,
            cold,
        };
        demand::wait_for_start(starts)?;
        starting.waiting[kind.index()] += 1;
        Some((Waiting { shared: self.clone(), kind }, cold))
    }

    /// Whether a sandbox may still come for a waiting request: a start is under way, or the
    /// pool is not pausing after failed starts.
    fn may_start(&self, kind: Kind) -> bool {
        !self.lock_starting().began[kind.index()].is_empty() || !self.paused.load(Ordering::SeqCst)
    }

    /// Takes out the sandboxes that died or waited past their idle lifetime, and those above
    /// their kind's target that waited past the grace (`demand::surplus`).
    fn prune(&self) -> Vec<ReadySandbox> {
        let lifetime = self.settings.idle_lifetime();
        let targets = self.targets();
        let mut all = self.lock_ready();
        let mut removed = Vec::new();
        for (ready, target) in all.iter_mut().zip(targets) {
            let ages: Vec<Duration> = ready.iter().map(ReadySandbox::age).collect();
            removed.extend(ready.drain(..demand::surplus(&ages, target)));
            let mut kept = VecDeque::with_capacity(ready.len());
            for mut sandbox in ready.drain(..) {
                if !sandbox.alive() {
                    tracing::warn!(?sandbox, "a ready sandbox ended while it waited; replacing it");
                    removed.push(sandbox);
                } else if sandbox.age() >= lifetime {
                    removed.push(sandbox);
                } else {
                    kept.push_back(sandbox);
                }
            }
            *ready = kept;
        }
        removed
    }

    /// Ready sandboxes of each kind, counting those being started.
    fn counts_with_starting(&self) -> [usize; 2] {
        let all = self.lock_ready();
        let starting = self.lock_starting();
        Kind::ALL.map(|kind| all[kind.index()].len() + starting.began[kind.index()].len())
    }

    /// How many of each kind to keep ready now, from demand.
    fn targets(&self) -> [usize; 2] {
        let now = Instant::now();
        let demand = self.lock_demand();
        Kind::ALL.map(|kind| {
            let (min, max) = self.settings.bounds(kind, &self.preload);
            let demand = demand[kind.index()];
            let rate = demand.arrivals.rate_at(now);
            let target = demand.start.map_or(min, |start| demand::target(rate, start, min, max));
            demand::with_burst(target, demand.burst.at(now), min, max)
        })
    }

    /// How many of each kind to start: the targets when the pool may refill, and in any case
    /// one for each request waiting for a start.
    fn wanted(&self, may_refill: bool) -> [usize; 2] {
        let waiting = self.lock_starting().waiting;
        let targets = if may_refill { self.targets() } else { [0; 2] };
        Kind::ALL.map(|kind| targets[kind.index()] + waiting[kind.index()])
    }

    fn report(&self) {
        let all = self.lock_ready();
        for kind in Kind::ALL {
            self.report_kind(&all, kind);
        }
        for (kind, target) in Kind::ALL.into_iter().zip(self.targets()) {
            self.observer.target(kind, target);
        }
        self.observer.starting(self.lock_starting().in_flight());
        self.observer.template(self.supervisor.template_memory().unwrap_or(0));
        if let Some((at_need, ahead)) = self.supervisor.template_starts() {
            self.observer.template_starts(at_need, ahead);
        }
    }

    /// Reports the ready sandboxes of `kind` in `all` and the memory they hold.
    fn report_kind(&self, all: &[VecDeque<ReadySandbox>; 2], kind: Kind) {
        let ready = &all[kind.index()];
        let memory = ready.iter().filter_map(ReadySandbox::memory_usage).sum();
        self.observer.ready(kind, ready.len(), memory);
    }
}

/// What `Shared::take` found.
enum Taken {
    Ready(Box<ReadySandbox>),
    None,
    Unfit(Unfit),
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
        let removed = shared.prune();
        futures::future::join_all(removed.into_iter().map(ReadySandbox::destroy)).await;

        if paused_until.is_some_and(|until| Instant::now() >= until) {
            paused_until = None;
        }
        shared.paused.store(paused_until.is_some(), Ordering::SeqCst);
        while paused_until.is_none() && starts.len() < shared.settings.starts_at_once() {
            let wanted = shared.wanted((shared.may_refill)());
            let Some(kind) = next_to_start(shared.counts_with_starting(), wanted) else { break };
            // Counted as under way before the loop looks again.
            starts.spawn(start_one(StartUnderWay::new(shared.clone(), kind)));
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
async fn start_one(starting: StartUnderWay) -> bool {
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
            // A sandbox that started its own interpreter took what a cold start takes; a fork's
            // template did.
            let cold = if forked { shared.supervisor.template_start(preload) } else { Some(took) };
            shared.measured(kind, took, cold);
            tracing::debug!(kind = kind.as_str(), id, ms = took.as_millis() as u64, forked, "a ready sandbox started");
            shared.give(kind, sandbox);
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
struct StartUnderWay {
    shared: Arc<Shared>,
    kind: Kind,
    began: Instant,
}

impl StartUnderWay {
    fn new(shared: Arc<Shared>, kind: Kind) -> Self {
        let began = Instant::now();
        shared.lock_starting().began[kind.index()].push(began);
        StartUnderWay { shared, kind, began }
    }
}

impl Drop for StartUnderWay {
    fn drop(&mut self) {
        let mut starting = self.shared.lock_starting();
        let began = &mut starting.began[self.kind.index()];
        if let Some(at) = began.iter().position(|b| *b == self.began) {
            began.remove(at);
        }
        drop(starting);
        // A start that failed leaves its waiters to look again (and, in time, start cold).
        self.shared.start_ended[self.kind.index()].notify_waiters();
    }
}

/// Counts a request as waiting for a start of `kind` for as long as it lives.
struct Waiting {
    shared: Arc<Shared>,
    kind: Kind,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut starting = self.shared.lock_starting();
        let waiting = &mut starting.waiting[self.kind.index()];
        *waiting = waiting.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_starts_back_off_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
