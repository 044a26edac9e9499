//! Overload answered at once: when the work already waiting would not let a new request start
//! within its own timeout, it is refused with 429 and a `Retry-After` instead of waiting until
//! its caller gives up. Pure functions: the local placement's expected wait from its queue, its
//! run slots and the recent run times (the kubernetes placement estimates its own, see
//! `kube::backlog`), and the decision both placements share.

use std::time::Duration;

use super::ExecuteError;

/// The weight of a new run's time in the moving average of run times.
const SMOOTHING: f64 = 0.2;

/// The moving average of how long runs hold a slot, after one more took `seconds`; the first
/// is taken as it is.
pub fn averaged(average: Option<f64>, seconds: f64) -> f64 {
    match average {
        Some(average) => average + SMOOTHING * (seconds - average),
        None => seconds,
    }
}

/// What a request arriving now meets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// Run slots free now, and in all.
    pub free_slots: usize,
    pub slots: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// How long a run holds its slot, on average (None before any run ended).
    pub run: Option<Duration>,
}

/// How long a request arriving now is expected to wait for a slot: nothing while one is free;
/// otherwise the runs queued ahead of it and its own turn, each holding a slot for the average
/// run time, spread over the slots. None when no run time is known yet.
pub fn expected_wait(load: Load) -> Option<Duration> {
    if load.free_slots > 0 {
        return Some(Duration::ZERO);
    }
    let turns = (load.queued + 1) as f64 / load.slots.max(1) as f64;
    Some(load.run?.mul_f64(turns))
}

/// The `Retry-After` (whole seconds, at least one) of a request that would wait `wait` with a
/// timeout of `timeout`, when `factor` times its timeout is shorter; None to let it wait. A
/// factor of 0 (or less) never refuses.
pub fn refusal(wait: Duration, timeout: Duration, factor: f64) -> Option<u64> {
    if factor <= 0.0 || wait <= timeout.mul_f64(factor) {
        return None;
    }
    Some((wait.as_secs_f64().ceil() as u64).max(1))
}

/// `Ok` to take a request expected to wait `wait` with a timeout of `timeout`; else the
/// `Overloaded` refusal with its `Retry-After` (see `refusal`).
pub fn admission(wait: Duration, timeout: Duration, factor: f64) -> Result<(), ExecuteError> {
    match refusal(wait, timeout, factor) {
        None => Ok(()),
        Some(retry_after_seconds) => Err(ExecuteError::Overloaded {
            expected_seconds: wait.as_secs_f64(),
            timeout_seconds: timeout.as_secs_f64(),
            retry_after_seconds,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn load(free_slots: usize, slots: usize, queued: usize, run: Option<Duration>) -> Load {
        Load { free_slots, slots, queued, run }
    }

    #[test]
    fn a_free_slot_means_no_wait() {
        assert_eq!(expected_wait(load(1, 4, 10, Some(S(5)))), Some(Duration::ZERO));
    }

    #[test]
    fn the_wait_is_the_queue_ahead_and_its_own_turn_spread_over_the_slots() {
        assert_eq!(expected_wait(load(0, 1, 0, Some(S(3)))), Some(S(3)));
        assert_eq!(expected_wait(load(0, 1, 3, Some(S(2)))), Some(S(8)));
        assert_eq!(expected_wait(load(0, 4, 7, Some(S(2)))), Some(S(4)));
    }

    #[test]
    fn without_a_run_time_nothing_is_expected() {
        assert_eq!(expected_wait(load(0, 1, 5, None)), None);
    }

    #[test]
    fn a_request_is_refused_when_its_wait_passes_its_timeout_times_the_factor() {
        assert_eq!(refusal(S(12), S(10), 1.0), Some(12));
        assert_eq!(refusal(S(10), S(10), 1.0), None);
        assert_eq!(refusal(S(12), S(10), 2.0), None);
        assert_eq!(refusal(Duration::from_millis(300), Duration::from_millis(100), 1.0), Some(1));
        assert_eq!(refusal(S(1000), S(1), 0.0), None);
    }

    #[test]
    fn run_times_are_a_moving_average_seeded_by_the_first() {
        assert_eq!(averaged(None, 4.0), 4.0);
        assert!((averaged(Some(1.0), 6.0) - 2.0).abs() < 1e-9);
    }
}
