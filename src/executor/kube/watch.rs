//! The one watch every request shares: a reflector's store of the namespace's PythonExecutions,
//! a wake-up for each request waiting for an execution (several may wait for one), and the
//! backlog that says how long a new execution would wait for a pod.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ::kube::runtime::reflector::{ObjectRef, Store};
use ::kube::runtime::watcher;
use ::kube::ResourceExt;
use futures::StreamExt;
use tokio::sync::Notify;

use super::backlog::{stage_of, Backlog};
use crate::crd::PythonExecution;
use crate::metrics::Metrics;

/// The shared watch: the reflector's store, and the wake-ups of the requests waiting, by the
/// name of the execution they wait for.
pub(super) struct SharedWatch {
    pub(super) store: Store<PythonExecution>,
    waiters: Mutex<HashMap<String, Vec<Arc<Notify>>>>,
    pub(super) synced: AtomicBool,
    backlog: Mutex<Backlog>,
}

#[derive(Debug, PartialEq)]
pub(super) enum WaitError {
    Timeout,
    Deleted,
}

impl SharedWatch {
    pub(super) fn new(store: Store<PythonExecution>) -> Self {
        SharedWatch {
            store,
            waiters: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            backlog: Mutex::new(Backlog::new(Instant::now())),
        }
    }

    pub(super) fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Notify>>>> {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the requests waiting for `name`, if any; a wake-up before one waits is kept.
    fn wake(&self, name: &str) {
        for notify in self.waiters().get(name).into_iter().flatten() {
            notify.notify_one();
        }
    }

    fn wake_all(&self) {
        for notify in self.waiters().values().flatten() {
            notify.notify_one();
        }
    }

    /// Waits until the store holds `key` finished, it disappears, or `deadline` passes.
    pub(super) async fn wait_finished(
        &self,
        key: &ObjectRef<PythonExecution>,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<PythonExecution>, WaitError> {
        let notify = Arc::new(Notify::new());
        self.waiters().entry(key.name.clone()).or_default().push(notify.clone());
        let _unregister = Unregister { watch: self, name: &key.name, notify: &notify };
        let mut seen = false;
        loop {
            match self.store.get(key) {
                Some(execution) if execution.is_finished() => return Ok(execution),
                Some(_) => seen = true,
                None if seen => return Err(WaitError::Deleted),
                None => {}
            }
            tokio::time::timeout_at(deadline, notify.notified()).await.map_err(|_| WaitError::Timeout)?;
        }
    }
}

struct Unregister<'a> {
    watch: &'a SharedWatch,
    name: &'a str,
    notify: &'a Arc<Notify>,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut waiters = self.watch.waiters();
        if let Some(list) = waiters.get_mut(self.name) {
            list.retain(|notify| !Arc::ptr_eq(notify, self.notify));
            if list.is_empty() {
                waiters.remove(self.name);
            }
        }
    }
}

/// Drives the reflector (which fills the store) and wakes the requests whose executions changed.
pub(super) async fn follow_watch<S>(stream: S, watch: Arc<SharedWatch>, metrics: Arc<Metrics>)
where
    S: futures::Stream<Item = Result<watcher::Event<PythonExecution>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        match event {
            Ok(watcher::Event::Apply(execution)) => {
                watch.backlog().saw(&execution.name_any(), stage_of(&execution), now);
                watch.wake(&execution.name_any())
            }
            Ok(watcher::Event::Delete(execution)) => {
                watch.backlog().gone(&execution.name_any(), now);
                watch.wake(&execution.name_any())
            }
            Ok(watcher::Event::InitDone) => {
                watch.synced.store(true, Ordering::SeqCst);
                watch.wake_all();
            }
            Ok(watcher::Event::Init) => watch.backlog().relisting(now),
            Ok(watcher::Event::InitApply(execution)) => {
                watch.backlog().saw(&execution.name_any(), stage_of(&execution), now)
            }
            Err(err) => tracing::warn!(error = %err, "watching PythonExecutions failed; retrying"),
        }
        metrics.queue_depth.set(i64::try_from(watch.backlog().waiting()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::execution;
    use super::*;
    use crate::crd::Phase;
    use ::kube::runtime::reflector::{self, store::Writer};
    use std::time::Duration;

    fn watch() -> (Arc<SharedWatch>, Writer<PythonExecution>) {
        let (store, writer) = reflector::store();
        (Arc::new(SharedWatch::new(store)), writer)
    }

    /// Lets a spawned waiter run until it has registered and looked at the store.
    async fn registered(watch: &SharedWatch, name: &str) {
        while !watch.waiters().contains_key(name) {
            tokio::task::yield_now().await;
        }
    }

    fn apply(writer: &mut Writer<PythonExecution>, watch: &SharedWatch, execution: PythonExecution) {
        let name = execution.name_any();
        writer.apply_watcher_event(&watcher::Event::Apply(execution));
        watch.wake(&name);
    }

    #[tokio::test]
    async fn a_waiting_request_wakes_when_its_execution_finishes() {
        let (watch, mut writer) = watch();
        let key = ObjectRef::new("pyx-a").within("default");
        let waiting = {
            let watch = watch.clone();
            tokio::spawn(async move {
                watch.wait_finished(&key, tokio::time::Instant::now() + Duration::from_secs(5)).await.map(|e| e.phase())
            })
        };
        registered(&watch, "pyx-a").await;
        apply(&mut writer, &watch, execution("pyx-b", Phase::Succeeded));
        apply(&mut writer, &watch, execution("pyx-a", Phase::Running));
        apply(&mut writer, &watch, execution("pyx-a", Phase::Succeeded));
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("joined");
        assert_eq!(outcome, Ok(Phase::Succeeded));
        assert!(watch.waiters().is_empty(), "the waiter unregisters");
    }

    #[tokio::test]
    async fn an_execution_already_finished_is_returned_at_once() {
        let (watch, mut writer) = watch();
        apply(&mut writer, &watch, execution("pyx-a", Phase::Failed));
        let key = ObjectRef::new("pyx-a").within("default");
        let found = watch.wait_finished(&key, tokio::time::Instant::now() + Duration::from_millis(10)).await;
        assert_eq!(found.map(|e| e.phase()), Ok(Phase::Failed));
    }

    #[tokio::test]
    async fn a_request_gives_up_at_its_deadline() {
        let (watch, mut writer) = watch();
        apply(&mut writer, &watch, execution("pyx-a", Phase::Running));
        let key = ObjectRef::new("pyx-a").within("default");
        let outcome = watch.wait_finished(&key, tokio::time::Instant::now() + Duration::from_millis(20)).await;
        assert_eq!(outcome.map(|e| e.phase()), Err(WaitError::Timeout));
    }

    #[tokio::test]
    async fn a_deleted_execution_ends_the_wait() {
        let (watch, mut writer) = watch();
        let running = execution("pyx-a", Phase::Running);
        apply(&mut writer, &watch, running.clone());
        let key = ObjectRef::new("pyx-a").within("default");
        let waiting = {
            let watch = watch.clone();
            let key = key.clone();
            tokio::spawn(async move {
                watch.wait_finished(&key, tokio::time::Instant::now() + Duration::from_secs(5)).await.map(|e| e.phase())
            })
        };
        registered(&watch, "pyx-a").await;
        writer.apply_watcher_event(&watcher::Event::Delete(running));
        watch.wake("pyx-a");
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("joined");
        assert_eq!(outcome, Err(WaitError::Deleted));
    }

    #[tokio::test]
    async fn two_requests_waiting_for_one_execution_both_wake() {
        let (watch, mut writer) = watch();
        apply(&mut writer, &watch, execution("pyx-a", Phase::Running));
        let key = ObjectRef::new("pyx-a").within("default");
        let waiter = || {
            let (watch, key) = (watch.clone(), key.clone());
            tokio::spawn(async move {
                watch.wait_finished(&key, tokio::time::Instant::now() + Duration::from_secs(5)).await.map(|e| e.phase())
            })
        };
        let (first, second) = (waiter(), waiter());
        while watch.waiters().get("pyx-a").map_or(0, Vec::len) < 2 {
            tokio::task::yield_now().await;
        }
        apply(&mut writer, &watch, execution("pyx-a", Phase::Succeeded));
        for waiting in [first, second] {
            let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("joined");
            assert_eq!(outcome, Ok(Phase::Succeeded));
        }
        assert!(watch.waiters().is_empty(), "both unregister");
    }
}
