//! The warm pool of sandbox pods (one per sandbox namespace): pods started before any execution,
//! each running `pyexec sandbox --job-on-stdin` with `--preload-modules` imported, attached to as
//! soon as their container runs so that only writing the job and reading the envelope lie on an
//! execution's path. A pod is claimed by one execution (a label and owner patch conditional on
//! its resourceVersion: two claims of one pod cannot both succeed), receives that execution's job
//! and nothing else, and is deleted with it like any sandbox pod; the pool starts a replacement.
//!
//! Sessions are this process's: a pod another controller replica attached to stays that
//! replica's to claim (or, if it claims one this replica holds, this replica keeps its session
//! open, unused, until the pod is gone, since closing it would close the pod's stdin). After a
//! restart the old process's sessions are gone, so the pods they held get end-of-file on stdin
//! and exit without a job; the pool replaces them.
//!
//! The pool's size follows demand with the local pool's rules (`sandbox::warm::pool::demand`):
//! the executions that want this kind arrive at a rate, a pod takes a measured time from its
//! creation to ready, and the pool keeps about twice the arrivals of one start, within its floor
//! and ceiling; ready pods above that target are deleted once they have waited
//! `SURPLUS_GRACE`. An execution that finds no ready pod of either kind waits for a pod already
//! starting that no earlier waiter counts on, at most a measured start's time, since a pod of its
//! own would take longer to start than that one's remainder; the pods that become ready go to
//! the waiting executions first come, first served (`handoff`), never to an execution that
//! arrived later.

pub mod claim;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::Notify;

use super::attach::{Attacher, Session};
use super::metrics::ControllerMetrics;
use super::reconcile::api_code;
use super::{Error, Result};
use crate::crd::PythonExecution;
use crate::sandbox::warm::pool::demand::{self, Arrivals, SURPLUS_GRACE};
use crate::sandbox::warm::pool::handoff::{self, Waiters};
use crate::sandbox::warm::pool::Kind;
use crate::sandbox::Limits;
use claim::PoolPod;

/// How often the pool looks at its pods when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// How long a pool pod may take from a running container to its ready line (gVisor start-up
/// and the preloaded imports).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A pod the pool created counts as alive this long before the watch shows it.
const CREATED_GRACE: Duration = Duration::from_secs(30);
/// What a pool pod's start (creation to ready) is taken to cost before one was measured.
const FIRST_START_GUESS: Duration = Duration::from_secs(2);
/// The longest an execution waits for a starting pool pod.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Why a claim found no pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No ready pod in this process.
    Empty,
    /// The execution's limits need a bigger pod than the pool's.
    Unfit,
}

impl Miss {
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::Empty => "empty",
            Miss::Unfit => "unfit",
        }
    }
}

/// What waiting for a starting pod came to.
pub enum Wait {
    /// No start under way that an earlier waiter does not count on: nothing was waited for.
    None,
    Claimed(Box<dyn Session>),
    /// None was ready in time.
    InVain,
}

/// The pool of one kind of warm pod in one sandbox namespace.
pub struct WarmPool {
    namespace: String,
    kind: Kind,
    /// The fewest and the most pods kept (starting or ready) whatever the demand.
    min: usize,
    max: usize,
    idle: Duration,
    /// The pod every pool pod is made from; the API server names each.
    template: Pod,
    /// The limits a pool pod is sized for: the controller's defaults.
    limits: Limits,
    api: Api<Pod>,
    cache: Store<Pod>,
    attacher: Arc<dyn Attacher>,
    metrics: Arc<ControllerMetrics>,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Sessions to pods whose sandbox said it is ready, oldest first.
    ready: Vec<Ready>,
    /// Pods being attached to.
    attaching: HashSet<String>,
    /// Sessions kept open, unused, for pods another replica claimed.
    lingering: Vec<Box<dyn Session>>,
    /// Pods created and not yet seen by the watch, with when.
    created: HashMap<String, Instant>,
    /// Pods whose session was taken for a claim: never attached to again, even while the watch
    /// still shows them unclaimed.
    taken: HashSet<String>,
    /// When each pod this process created was created, until it is ready (its start time).
    born: HashMap<String, Instant>,
    /// Executions that want this kind.
    arrivals: Arrivals,
    /// The moving average of a pod's start, creation to ready, in seconds.
    start_seconds: Option<f64>,
    /// Pods starting or being attached to, as of the last look.
    warming: usize,
    /// Executions waiting for one of them.
    waiting: usize,
    /// Their places in the queue, oldest first: a pod that becomes ready goes to the first
    /// (`handoff`), never to whichever execution looks first.
    waiters: Waiters<Box<dyn Session>>,
}

/// A ready pod's open session, and since when it has waited.
struct Ready {
    session: Box<dyn Session>,
    since: Instant,
}

impl State {
    /// The pods to keep: about twice the executions expected while one starts, within bounds.
    fn target(&self, min: usize, max: usize, now: Instant) -> usize {
        let start = self.start_seconds.unwrap_or(FIRST_START_GUESS.as_secs_f64());
        demand::target(self.arrivals.rate_at(now), start, min, max)
    }
}

pub struct PoolConfig {
    pub namespace: String,
    /// Which pods are this pool's: the template's kind (`pod::LABEL_POOL_KIND`).
    pub kind: Kind,
    /// The fewest pods kept, and the most however high the demand.
    pub min: usize,
    pub max: usize,
    pub idle: Duration,
    pub template: Pod,
    pub limits: Limits,
}

/// What a pod handed to a waiting execution comes through.
type Handed = tokio::sync::oneshot::Receiver<Box<dyn Session>>;

/// An execution's place in the queue of waiters (`claim_before`): when it stops waiting, a
/// session handed to it meanwhile goes on to the next waiter, or back to the ready list.
struct Place<'a> {
    pool: &'a WarmPool,
    handed: Option<Handed>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.handed.take().and_then(handoff::leave) {
            self.pool.give(session);
        }
    }
}

/// One execution counted as waiting for a starting pod until this is dropped: when the wait
/// ends, or when the future waiting is dropped midway (its reconcile cancelled), so that a
/// cancelled wait does not keep the next executions from waiting.
struct Waiter<'a>(&'a WarmPool);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

impl WarmPool {
    pub fn new(
        config: PoolConfig,
        api: Api<Pod>,
        cache: Store<Pod>,
        attacher: Arc<dyn Attacher>,
        metrics: Arc<ControllerMetrics>,
    ) -> Arc<Self> {
        Arc::new(WarmPool {
            namespace: config.namespace,
            kind: config.kind,
            min: config.min,
            max: config.max.max(config.min),
            idle: config.idle,
            template: config.template,
            limits: config.limits,
            api,
            cache,
            attacher,
            metrics,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether `pod` is of this pool's namespace and kind.
    fn holds(&self, pod: &Pod) -> bool {
        pod.namespace().as_deref() == Some(&self.namespace) && claim::kind_of(pod) == self.kind
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A ready pod claimed for `execution`, whose job has `limits` and whose script asked for a
    /// `wanted` pod: its open session. `Ok(Err)` when the pool has none that fits; the caller
    /// then tries the other kind, or gives the execution a pod of its own.
    pub async fn claim(
        &self,
        execution: &PythonExecution,
        limits: &Limits,
        wanted: Kind,
    ) -> Result<std::result::Result<Box<dyn Session>, Miss>> {
        let started = Instant::now();
        if wanted == self.kind {
            self.state().arrivals.arrive(started);
        }
        if !claim::job_fits(&self.limits, limits) {
            return Ok(Err(Miss::Unfit));
        }
        match self.claim_next(execution, wanted, started).await? {
            Some(session) => Ok(Ok(session)),
            None => {
                self.wake.notify_one();
                Ok(Err(Miss::Empty))
            }
        }
    }

    /// Claims the oldest ready pod for `execution` (asked for at `started`); none when no ready
    /// pod is left to claim.
    async fn claim_next(
        &self,
        execution: &PythonExecution,
        wanted: Kind,
        started: Instant,
    ) -> Result<Option<Box<dyn Session>>> {
        while let Some(session) = self.take_ready() {
            if let Some(session) = self.claim_taken(execution, session, wanted, started).await? {
                return Ok(Some(session));
            }
        }
        Ok(None)
    }

    /// A pod for `execution` once one already starting is ready: none when every start under
    /// way is counted on by an earlier waiter, when the one it would get is not expected within
    /// `within` (any time, when none), or when none is ready by then (one and a half `within`, or
    /// a measured start's time; `MAX_WAIT` at most). The caller then tries elsewhere.
    pub async fn claim_when_ready(
        &self,
        execution: &PythonExecution,
        limits: &Limits,
        wanted: Kind,
        within: Option<Duration>,
    ) -> Result<Wait> {
        if !claim::job_fits(&self.limits, limits) {
            return Ok(Wait::None);
        }
        let wait = {
            let mut state = self.state();
            if state.warming <= state.waiting {
                return Ok(Wait::None);
            }
            let start = Duration::from_secs_f64(state.start_seconds.unwrap_or(FIRST_START_GUESS.as_secs_f64()));
            // The starts under way, the longest going first: this waiter counts on the one after
            // those earlier waiters count on (a pod another process created counts as just begun).
            let mut going: Vec<Duration> = state.born.values().map(Instant::elapsed).collect();
            going.sort_unstable_by(|a, b| b.cmp(a));
            let expected = start.saturating_sub(going.get(state.waiting).copied().unwrap_or_default());
            if within.is_some_and(|within| expected > within) {
                return Ok(Wait::None);
            }
            state.waiting += 1;
            // Bounded by what the caller would do instead: its own pod takes at least a start.
            within.map_or(start, |within| within.mul_f64(1.5)).min(MAX_WAIT)
        };
        let waiter = Waiter(self);
        let claimed = self.claim_before(execution, wanted, tokio::time::Instant::now() + wait).await;
        drop(waiter);
        let claimed = claimed?;
        self.metrics.record_pool_wait(self.kind.as_str(), claimed.is_some());
        Ok(claimed.map_or(Wait::InVain, Wait::Claimed))
    }

    /// Claims the next pod to become ready, until `deadline`: a ready one, or else the one handed
    /// to this execution's place in the queue of waiters.
    async fn claim_before(
        &self,
        execution: &PythonExecution,
        wanted: Kind,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Box<dyn Session>>> {
        let started = Instant::now();
        let mut place = Place { pool: self, handed: None };
        loop {
            let session = match place.handed.take() {
                Some(mut handed) => tokio::select! {
                    session = &mut handed => match session {
                        // `give` counted its pod as taken when it handed it over.
                        Ok(session) if self.claimable(session.as_ref()) => session,
                        Ok(session) => {
                            self.state().lingering.push(session);
                            continue;
                        }
                        Err(_) => continue,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        place.handed = Some(handed);
                        return Ok(None);
                    }
                },
                None => match self.take_ready_or_join() {
                    Ok(session) => session,
                    Err(handed) => {
                        place.handed = Some(handed);
                        continue;
                    }
                },
            };
            if let Some(session) = self.claim_taken(execution, session, wanted, started).await? {
                return Ok(Some(session));
            }
        }
    }

    /// Claims the pod of `session`, taken from the pool for `execution` (asked for at
    /// `started`): the session when the claim succeeded; None when the pod is no longer the
    /// pool's (its session is kept open, unused, while the pod lives).
    async fn claim_taken(
        &self,
        execution: &PythonExecution,
        session: Box<dyn Session>,
        wanted: Kind,
        started: Instant,
    ) -> Result<Option<Box<dyn Session>>> {
        match self.claim_pod(execution, session.pod()).await {
            Ok(true) => {
                self.metrics.record_pool_claim(self.kind.as_str(), wanted.as_str(), started.elapsed());
                self.wake.notify_one();
                Ok(Some(session))
            }
            // Claimed by another replica, or gone: keep the stream open while the pod lives.
            Ok(false) => {
                self.state().lingering.push(session);
                Ok(None)
            }
            Err(err) => {
                self.state().lingering.push(session);
                Err(err)
            }
        }
    }

    /// Whether `session`'s stream is still open and its pod still the pool's.
    fn claimable(&self, session: &dyn Session) -> bool {
        let pod = self.cache.get(&ObjectRef::new(session.pod()).within(&self.namespace));
        session.is_open()
            && pod.is_some_and(|pod| claim::classify(&pod, self.idle, Timestamp::now()) == PoolPod::Running)
    }

    /// The oldest ready session whose stream is still open, and whose pod is still the pool's.
    fn take_ready(&self) -> Option<Box<dyn Session>> {
        self.take_ready_from(&mut self.state())
    }

    /// `take_ready`, or else, when none is ready, a place at the end of the queue of waiters
    /// (taken while the state is locked, so that no pod becomes ready unseen in between).
    fn take_ready_or_join(&self) -> std::result::Result<Box<dyn Session>, Handed> {
        let mut state = self.state();
        self.take_ready_from(&mut state).ok_or_else(|| state.waiters.join())
    }

    fn take_ready_from(&self, state: &mut State) -> Option<Box<dyn Session>> {
        while !state.ready.is_empty() {
            let Ready { session, .. } = state.ready.remove(0);
            if self.claimable(session.as_ref()) {
                state.taken.insert(session.pod().to_string());
                return Some(session);
            }
            state.lingering.push(session);
        }
        None
    }

    /// A session whose pod became ready (or came back from a waiter that left): to the oldest
    /// execution waiting for one, or else into the ready list.
    fn give(&self, session: Box<dyn Session>) {
        let pod = session.pod().to_string();
        let mut state = self.state();
        match state.waiters.hand(session) {
            Some(session) => state.ready.push(Ready { session, since: Instant::now() }),
            // On its way to a claim: never attached to again meanwhile.
            None => {
                state.taken.insert(pod);
            }
        }
    }

    /// Patches `pod_name` as `execution`'s if nobody changed it since it was read: true when the
    /// claim succeeded, false when the pod is no longer the pool's.
    async fn claim_pod(&self, execution: &PythonExecution, pod_name: &str) -> Result<bool> {
        let cached = self.cache.get(&ObjectRef::new(pod_name).within(&self.namespace));
        let mut version = cached.and_then(|pod| pod.resource_version());
        // The cache may lag behind a status update: one fresh read, then the claim is decided.
        for attempt in 0..2 {
            let Some(rv) = version.take() else { return Ok(false) };
            let Some(patch) = claim::claim_patch(execution, &rv) else {
                return Err(Error::MissingObjectKey("uid"));
            };
            match self.api.patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::info!(pod = pod_name, execution = %execution.name_any(), "claimed a warm pod");
                    return Ok(true);
                }
                Err(e) if api_code(&e) == Some(404) => return Ok(false),
                Err(e) if api_code(&e) == Some(409) && attempt == 0 => {
                    let fresh = self.api.get_opt(pod_name).await.map_err(Error::PodGetFailed)?;
                    version = fresh.filter(claim::is_pool_pod).and_then(|pod| pod.resource_version());
                }
                Err(e) if api_code(&e) == Some(409) => return Ok(false),
                Err(e) => return Err(Error::PodClaimFailed(e)),
            }
        }
        Ok(false)
    }

    /// Executions waiting for a starting pod now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.state().waiting
    }

    /// Puts an open session in the ready list, as an attach that saw the ready line does.
    #[cfg(test)]
    pub fn add_ready(&self, session: Box<dyn Session>) {
        self.give(session);
    }

    /// Takes the ready sessions out, counting their pods as starting, as if none were ready yet.
    #[cfg(test)]
    pub fn hold_back_ready(&self) -> Vec<Box<dyn Session>> {
        let mut state = self.state();
        let held: Vec<_> = state.ready.drain(..).map(|ready| ready.session).collect();
        state.warming += held.len();
        held
    }

    /// Keeps the pool filled until the process ends.
    pub async fn run(self: Arc<Self>) {
        tracing::info!(namespace = %self.namespace, kind = self.kind.as_str(), min = self.min, max = self.max, "warm pod pool running");
        loop {
            self.tick().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// One look at the pool's pods: retire the dead, the stale and the surplus, attach to the
    /// running, create what is missing.
    async fn tick(self: &Arc<Self>) {
        let now = Timestamp::now();
        let pods: Vec<Arc<Pod>> = self.cache.state().into_iter().filter(|pod| self.holds(pod)).collect();
        let mut alive = HashSet::new();
        for pod in &pods {
            let name = pod.name_any();
            match claim::classify(pod, self.idle, now) {
                PoolPod::Starting => {
                    alive.insert(name);
                }
                PoolPod::Running => {
                    alive.insert(name.clone());
                    self.attach_if_new(&name);
                }
                PoolPod::Retire(why) => self.retire(pod, why).await,
                PoolPod::Gone => {}
            }
        }
        let present: HashSet<String> = pods.iter().map(|pod| pod.name_any()).collect();
        let (missing, surplus) = {
            let mut state = self.state();
            // Sessions of pods that left the pool go unused; those of deleted pods are dropped.
            let (keep, left): (Vec<_>, Vec<_>) = std::mem::take(&mut state.ready)
                .into_iter()
                .partition(|ready| ready.session.is_open() && alive.contains(ready.session.pod()));
            state.ready = keep;
            state.lingering.extend(left.into_iter().map(|ready| ready.session));
            state.lingering.retain(|session| present.contains(session.pod()) && session.is_open());
            state.created.retain(|name, at| !present.contains(name) && at.elapsed() < CREATED_GRACE);
            state.taken.retain(|name| present.contains(name));
            state.born.retain(|name, at| present.contains(name) || at.elapsed() < CREATED_GRACE);
            let target = state.target(self.min, self.max, Instant::now());
            let ages: Vec<Duration> = state.ready.iter().map(|ready| ready.since.elapsed()).collect();
            let surplus: Vec<String> = state
                .ready
                .drain(..demand::surplus(&ages, target))
                .map(|ready| ready.session.pod().to_string())
                .collect();
            // Never attached to again while the watch still shows them.
            state.taken.extend(surplus.iter().cloned());
            let count = alive.len() + state.created.len() - surplus.len().min(alive.len());
            state.warming = count.saturating_sub(state.ready.len());
            self.metrics.set_pool(self.kind.as_str(), state.ready.len(), state.warming);
            self.metrics.set_pool_target(self.kind.as_str(), target);
            (claim::to_create(target, count), surplus)
        };
        for name in surplus {
            tracing::info!(pod = %name, idle_seconds = SURPLUS_GRACE.as_secs(), "deleting a ready warm pod above the pool's target");
            self.delete(&name, None).await;
        }
        for _ in 0..missing {
            self.create().await;
        }
    }

    fn attach_if_new(self: &Arc<Self>, name: &str) {
        {
            let mut state = self.state();
            if state.attaching.contains(name)
                || state.taken.contains(name)
                || state.ready.iter().any(|ready| ready.session.pod() == name)
            {
                return;
            }
            if state.lingering.iter().any(|s| s.pod() == name) {
                return;
            }
            state.attaching.insert(name.to_string());
        }
        let pool = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let opened = pool.attacher.open(&pool.namespace, &name, READY_TIMEOUT).await;
            match opened {
                Ok(session) => {
                    pool.mark_ready(&name).await;
                    let mut state = pool.state();
                    state.attaching.remove(&name);
                    if let Some(born) = state.born.remove(&name) {
                        let seconds = born.elapsed().as_secs_f64();
                        state.start_seconds = Some(demand::averaged(state.start_seconds, seconds));
                    }
                    state.warming = state.warming.saturating_sub(1);
                    drop(state);
                    pool.give(session);
                    tracing::info!(pod = %name, "warm pod ready");
                }
                Err(err) => {
                    pool.state().attaching.remove(&name);
                    tracing::warn!(pod = %name, error = %err, "a warm pod did not get ready; it will be replaced");
                    pool.delete(&name, None).await;
                }
            }
            pool.wake.notify_one();
        });
    }

    /// Labels the pod ready, for `kubectl get pods -L pyexec.dev/state`; never over a claim.
    async fn mark_ready(&self, name: &str) {
        let Some(pod) = self.cache.get(&ObjectRef::new(name).within(&self.namespace)) else { return };
        let Some(rv) = pod.resource_version() else { return };
        let patch = claim::ready_patch(&rv);
        if let Err(err) = self.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(pod = name, error = %err, "could not label the warm pod ready");
        }
    }

    async fn retire(&self, pod: &Pod, why: &str) {
        tracing::info!(pod = %pod.name_any(), why, "replacing a warm pod");
        self.delete(&pod.name_any(), pod.uid()).await;
    }

    async fn delete(&self, name: &str, uid: Option<String>) {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid, resource_version: None }),
            ..DeleteParams::background()
        };
        match self.api.delete(name, &params).await {
            Ok(_) => {}
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
            Err(e) => tracing::warn!(pod = name, error = %e, "could not delete a warm pod"),
        }
    }

    async fn create(&self) {
        match self.api.create(&PostParams::default(), &self.template).await {
            Ok(pod) => {
                let mut state = self.state();
                state.created.insert(pod.name_any(), Instant::now());
                state.born.insert(pod.name_any(), Instant::now());
                drop(state);
                self.metrics.record_pool_created(self.kind.as_str());
            }
            Err(e) => tracing::warn!(error = %e, "could not create a warm pod"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_demand_for_the_kind_within_the_floor_and_ceiling() {
        let now = Instant::now();
        let mut state = State::default();
        assert_eq!(state.target(2, 6, now), 2, "no demand: the floor");
        // Two executions a second, and pods that take 1.5 s to start: about six wanted.
        let last = now + Duration::from_millis(500) * 199;
        for i in 0..200u32 {
            state.arrivals.arrive(now + Duration::from_millis(500) * i);
        }
        state.start_seconds = Some(1.5);
        assert_eq!(state.target(2, 6, last), 6);
        assert_eq!(state.target(2, 4, last), 4, "never above the ceiling");
        // A minute without arrivals: back to the floor.
        assert_eq!(state.target(2, 6, last + Duration::from_secs(60)), 2);
    }
}
