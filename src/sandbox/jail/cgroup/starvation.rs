//! A floor for long runs in the idle class. An idle group runs only when no other group wants
//! the CPU, so while short runs and forks keep every CPU busy, a long run (a pandas import that
//! passed `--cpu-long-run-seconds`, or a spinner) gets almost nothing, and can reach its timeout
//! without having run. So a long run's group is looked at every `STEP`: one that over the last
//! `SPAN` waited on a run queue for more than half of it and ran less than `FLOOR_SHARE` of a
//! CPU is starving, and gets a run's weight, outside the idle class, for the next step. A long
//! run that gets CPU now and then (a cold pandas import beside a few short scripts) is never
//! lifted; one that gets none gets about its floor; one that gets the CPU nobody else wants
//! stays idle. The scheduler's own counts, per thread, say how long each ran and waited
//! (`/proc/TID/schedstat`).

use std::fs;
use std::path::Path;
use std::time::Duration;

/// How often a long run's progress is looked at, and how long a starving one is lifted for.
pub const STEP: Duration = Duration::from_millis(250);
/// How many steps back its progress is measured from.
pub const STEPS_PER_SPAN: usize = 4;
/// The span its progress is measured over.
pub const SPAN: Duration = Duration::from_millis(250 * STEPS_PER_SPAN as u64);
/// The least share of one CPU a long run that wants the CPU gets over a span.
const FLOOR_SHARE: f64 = 0.05;
/// The share of a span that a long run's threads, together, waited to run.
const WAITING_SHARE: f64 = 0.5;

/// What a group's threads have done so far: time on a CPU and time waiting on a run queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub ran: Duration,
    pub waited: Duration,
}

impl Progress {
    /// What happened between `earlier` and this (threads that ended take their counts with
    /// them, so never less than nothing).
    pub fn since(self, earlier: Progress) -> Progress {
        Progress { ran: self.ran.saturating_sub(earlier.ran), waited: self.waited.saturating_sub(earlier.waited) }
    }
}

/// Whether a long run starved over a span of `span` in which it made `progress`: it wanted the
/// CPU (its threads waited for more than half the span) and ran less than its floor.
pub fn starving(span: Duration, progress: Progress) -> bool {
    progress.waited > span.mul_f64(WAITING_SHARE) && progress.ran < span.mul_f64(FLOOR_SHARE)
}

/// The progress of the threads in the cpu group `dir` now (v1 `tasks`, v2 `cgroup.threads`);
/// None when the group cannot be read.
pub fn progress(dir: &Path, unified: bool) -> Option<Progress> {
    let threads = fs::read_to_string(dir.join(if unified { "cgroup.threads" } else { "tasks" })).ok()?;
    let mut total = Progress::default();
    for tid in threads.lines() {
        // A thread that ended since the list was read has nothing more to count.
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/schedstat", tid.trim())) else { continue };
        if let Some(thread) = parse_schedstat(&stat) {
            total.ran += thread.ran;
            total.waited += thread.waited;
        }
    }
    Some(total)
}

/// `/proc/TID/schedstat`: nanoseconds on a CPU, nanoseconds waiting on a run queue, timeslices.
fn parse_schedstat(text: &str) -> Option<Progress> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let ran = fields.next()?.ok()?;
    let waited = fields.next()?.ok()?;
    Some(Progress { ran: Duration::from_nanos(ran), waited: Duration::from_nanos(waited) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_run_that_waited_most_of_the_span_and_ran_under_its_floor_is_starving() {
        assert!(starving(MS(1000), Progress { ran: MS(1), waited: MS(990) }));
        assert!(starving(MS(1000), Progress { ran: MS(49), waited: MS(501) }));
    }

    #[test]
    fn a_run_that_got_its_floor_or_did_not_want_the_cpu_is_not() {
        assert!(!starving(MS(1000), Progress { ran: MS(50), waited: MS(950) }));
        // It slept: it neither ran nor waited.
        assert!(!starving(MS(1000), Progress { ran: MS(0), waited: MS(10) }));
        assert!(!starving(MS(1000), Progress { ran: MS(0), waited: MS(500) }));
    }

    #[test]
    fn schedstat_gives_time_on_a_cpu_and_time_waiting() {
        let parsed = parse_schedstat("129252 3702013 2\n");
        assert_eq!(
            parsed,
            Some(Progress { ran: Duration::from_nanos(129_252), waited: Duration::from_nanos(3_702_013) })
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("12 x 3"), None);
    }

    #[test]
    fn progress_since_counts_what_happened_and_never_less_than_nothing() {
        let earlier = Progress { ran: MS(10), waited: MS(50) };
        let now = Progress { ran: MS(30), waited: MS(40) };
        assert_eq!(now.since(earlier), Progress { ran: MS(20), waited: MS(0) });
    }

    #[test]
    fn this_process_threads_are_read() {
        let dir = std::env::temp_dir().join(format!("pyexec-starvation-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a temp dir");
        fs::write(dir.join("tasks"), format!("{}\n999999999\n", std::process::id())).expect("tasks");
        let read = progress(&dir, false);
        fs::remove_dir_all(&dir).expect("cleanup");
        assert!(read.is_some_and(|p| p.ran > Duration::ZERO), "{read:?}");
    }
}
