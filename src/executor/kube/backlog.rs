//! How long a new execution would wait for a sandbox pod, from what the shared watch sees: the
//! executions waiting (accepted, their job not yet handed to a pod) and how fast the cluster
//! finishes executions while some wait. Only busy time counts: while nothing waits, finishes
//! measure demand, not what the cluster can do, and a short lull or a small burst says nothing
//! about its capacity. Decisions are pure functions of the stages seen and the time passed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::crd::{Delivery, PythonExecution};

/// How far back the throughput looks: busy time and finishes halve in weight every `HALF_LIFE`.
pub const HALF_LIFE: Duration = Duration::from_secs(10);
/// Busy time needed before the throughput is trusted: a burst that waits a second or two for
/// cold pods is not overload.
pub const MIN_BUSY: Duration = Duration::from_secs(3);

/// Where an execution is, as far as waiting goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; no job handed to a pod yet (no pod, or one still starting).
    Waiting,
    /// Its job was handed to a pod.
    Started,
    Finished,
}

pub fn stage_of(execution: &PythonExecution) -> Stage {
    if execution.is_finished() {
        return Stage::Finished;
    }
    match execution.status.as_ref().and_then(|status| status.delivery) {
        Some(Delivery::Started) => Stage::Started,
        _ => Stage::Waiting,
    }
}

/// Finishes per second of busy time (time during which executions waited), both decaying
/// with a half-life of `HALF_LIFE`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throughput {
    busy_seconds: f64,
    finishes: f64,
}

impl Throughput {
    /// After `elapsed` more time, busy or not, in which `finished` executions finished.
    pub fn advanced(self, elapsed: Duration, busy: bool, finished: u32) -> Throughput {
        let decay = 0.5f64.powf(elapsed.as_secs_f64() / HALF_LIFE.as_secs_f64());
        let (busy_seconds, finishes) = if busy { (elapsed.as_secs_f64(), f64::from(finished)) } else { (0.0, 0.0) };
        Throughput {
            busy_seconds: self.busy_seconds * decay + busy_seconds,
            finishes: self.finishes * decay + finishes,
        }
    }

    /// Executions finished per busy second, counting one about to finish (so a cluster that
    /// finished nothing yet is slow, not stopped); none before `MIN_BUSY` of busy time.
    pub fn per_second(self) -> Option<f64> {
        (self.busy_seconds >= MIN_BUSY.as_secs_f64()).then(|| (self.finishes + 1.0) / self.busy_seconds)
    }
}

/// How long an execution arriving now is expected to wait for a pod: nothing while none waits;
/// otherwise its own turn and the waiting ahead of it, at the busy throughput. None while the
/// throughput is unknown.
pub fn expected_wait(waiting: usize, throughput: Throughput) -> Option<Duration> {
    if waiting == 0 {
        return Some(Duration::ZERO);
    }
    let per_second = throughput.per_second()?;
    Some(Duration::from_secs_f64((waiting + 1) as f64 / per_second))
}

/// The stages of the namespace's executions, and the throughput measured from them.
#[derive(Debug)]
pub struct Backlog {
    stages: HashMap<String, Stage>,
    waiting: usize,
    throughput: Throughput,
    /// When the throughput was last advanced.
    at: Instant,
}

impl Backlog {
    pub fn new(now: Instant) -> Self {
        Backlog { stages: HashMap::new(), waiting: 0, throughput: Throughput::default(), at: now }
    }

    /// Counts the time since the last look as busy or not, by what waited during it.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.throughput = self.throughput.advanced(elapsed, self.waiting > 0, 0);
        self.at = now;
    }

    /// The watch saw execution `name` at `stage`. A finish counts while others wait, and only
    /// for an execution seen unfinished before (one first seen finished, as when the watch lists
    /// again, finished some other time).
    pub fn saw(&mut self, name: &str, stage: Stage, now: Instant) {
        self.advance(now);
        let before = self.stages.insert(name.to_string(), stage);
        if before.is_some_and(|before| before != Stage::Finished) && stage == Stage::Finished {
            self.throughput = self.throughput.advanced(Duration::ZERO, self.waiting > 0, 1);
        }
        self.waiting =
            self.waiting + usize::from(stage == Stage::Waiting) - usize::from(before == Some(Stage::Waiting));
    }

    /// The execution `name` was deleted.
    pub fn gone(&mut self, name: &str, now: Instant) {
        self.advance(now);
        if self.stages.remove(name) == Some(Stage::Waiting) {
            self.waiting -= 1;
        }
    }

    /// The watch lists every execution again: what it sees next is the whole namespace.
    pub fn relisting(&mut self, now: Instant) {
        self.advance(now);
        self.stages.clear();
        self.waiting = 0;
    }

    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// How long an execution arriving `now` is expected to wait for a pod (see `expected_wait`).
    pub fn expected_wait(&mut self, now: Instant) -> Option<Duration> {
        self.advance(now);
        expected_wait(self.waiting, self.throughput)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn idle_time_and_its_finishes_do_not_count() {
        let idle = Throughput::default().advanced(S(60), false, 30);
        assert_eq!(idle.per_second(), None);
        assert_eq!(expected_wait(3, idle), None, "unknown throughput: nothing to refuse on");
        assert_eq!(expected_wait(0, idle), Some(Duration::ZERO));
    }

    #[test]
    fn busy_time_gives_the_rate_executions_finish_at() {
        // One finish a second for 30 busy seconds: about one a second.
        let busy = (0..30).fold(Throughput::default(), |t, _| t.advanced(S(1), true, 1));
        let rate = busy.per_second().expect("known");
        assert!((rate - 1.0).abs() < 0.15, "{rate}");
        // Nine waiting and this one, at about one a second: about ten seconds.
        let wait = expected_wait(9, busy).expect("known").as_secs_f64();
        assert!((8.5..11.0).contains(&wait), "{wait}");
    }

    #[test]
    fn a_short_burst_is_not_enough_to_judge() {
        let short = Throughput::default().advanced(Duration::from_millis(2500), true, 0);
        assert_eq!(short.per_second(), None);
        let stuck = short.advanced(S(1), true, 0);
        // Nothing finished in 3.5 busy seconds: counted as one about to, not as never.
        let rate = stuck.per_second().expect("known");
        assert!(rate > 0.2 && rate < 0.35, "{rate}");
    }

    #[test]
    fn old_busy_time_fades() {
        let busy = (0..30).fold(Throughput::default(), |t, _| t.advanced(S(1), true, 1));
        let later = busy.advanced(HALF_LIFE * 4, false, 0);
        assert_eq!(later.per_second(), None, "a minute of calm forgets the busy spell");
    }

    #[test]
    fn the_backlog_counts_waiting_executions_and_finishes_of_those_it_saw_unfinished() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + S(s);
        let mut backlog = Backlog::new(t0);
        backlog.saw("old", Stage::Finished, at(0));
        for name in ["a", "b", "c", "d"] {
            backlog.saw(name, Stage::Waiting, at(0));
        }
        backlog.saw("a", Stage::Waiting, at(0));
        assert_eq!(backlog.waiting(), 4);
        backlog.saw("a", Stage::Started, at(1));
        backlog.saw("a", Stage::Finished, at(2));
        backlog.saw("a", Stage::Finished, at(2));
        backlog.saw("b", Stage::Finished, at(4));
        assert_eq!(backlog.waiting(), 2);
        // Busy from 0 to 4 s with two finishes (the old one was never seen unfinished), and
        // one more counted as about to finish: 3 per 4 s; two waiting and the new one: 4 s.
        let wait = backlog.expected_wait(at(4)).expect("known").as_secs_f64();
        assert!((3.5..4.5).contains(&wait), "{wait}");
        backlog.gone("c", at(4));
        backlog.gone("d", at(4));
        backlog.gone("d", at(4));
        assert_eq!(backlog.waiting(), 0);
        assert_eq!(backlog.expected_wait(at(5)), Some(Duration::ZERO));
    }

    #[test]
    fn listing_again_starts_the_stages_afresh_and_keeps_the_throughput() {
        let t0 = Instant::now();
        let mut backlog = Backlog::new(t0);
        backlog.saw("a", Stage::Waiting, t0);
        backlog.relisting(t0 + S(5));
        assert_eq!(backlog.waiting(), 0);
        backlog.saw("a", Stage::Finished, t0 + S(5));
        backlog.saw("b", Stage::Waiting, t0 + S(5));
        assert_eq!(backlog.waiting(), 1);
        assert!(backlog.expected_wait(t0 + S(6)).is_some(), "5 busy seconds before the relist still count");
    }
}
