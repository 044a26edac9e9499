//! How many ready sandboxes of one kind the pool keeps, from demand, and whether a request that
//! finds none waits for one being started: pure functions of the arrival rate, the measured
//! time a start takes and the measured time a cold start takes.
//!
//! The pool needs about as many ready sandboxes as arrive while one is being started (Little's
//! law: arrivals per second times seconds per start), with room for bursts; when arrivals stop
//! the rate decays, and so does the target, down to `--pool-min`, and ready sandboxes above it
//! are removed once they have waited `SURPLUS_GRACE`.

use std::time::{Duration, Instant};

/// How far back the arrival rate looks: an arrival's weight halves every `RATE_HALF_LIFE`.
pub const RATE_HALF_LIFE: Duration = Duration::from_secs(5);
/// Room for bursts above the mean: arrivals come in clumps, not evenly spaced.
const HEADROOM: f64 = 2.0;
/// The weight of a new measurement in a moving average of times.
const SMOOTHING: f64 = 0.2;
/// How long a ready sandbox above its kind's target may still wait for a script: a lull of a
/// few seconds in a steady load does not throw away what the next burst needs.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(30);

/// `value` after `since` of halving every `half_life`.
fn halved(value: f64, since: Duration, half_life: Duration) -> f64 {
    value * 0.5f64.powf(since.as_secs_f64() / half_life.as_secs_f64())
}

/// An arrival rate that decays exponentially between arrivals: each arrival adds
/// `ln 2 / RATE_HALF_LIFE`, so a steady stream of r per second settles at r.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// The rate `since` after it was last updated, with nothing arriving meanwhile.
    pub fn decayed(self, since: Duration) -> Rate {
        Rate { per_second: halved(self.per_second, since, RATE_HALF_LIFE) }
    }

    /// The rate after one arrival, `since` after the last update.
    pub fn arrived(self, since: Duration) -> Rate {
        let step = std::f64::consts::LN_2 / RATE_HALF_LIFE.as_secs_f64();
        Rate { per_second: self.decayed(since).per_second + step }
    }

    pub fn per_second(self) -> f64 {
        self.per_second
    }
}

/// A kind's arrivals: their rate as of the last one, and when that was.
#[derive(Clone, Copy, Debug)]
pub struct Arrivals {
    rate: Rate,
    updated: Instant,
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals { rate: Rate::default(), updated: Instant::now() }
    }
}

impl Arrivals {
    /// Counts one arriving at `now`.
    pub fn arrive(&mut self, now: Instant) {
        self.rate = self.rate.arrived(now.saturating_duration_since(self.updated));
        self.updated = now;
    }

    /// The rate at `now`, decayed since the last arrival.
    pub fn rate_at(&self, now: Instant) -> Rate {
        self.rate.decayed(now.saturating_duration_since(self.updated))
    }
}

/// How long the pool remembers a burst: the size of the last one halves every
/// `BURST_HALF_LIFE`.
pub const BURST_HALF_LIFE: Duration = Duration::from_secs(30);

/// The largest recent burst of a kind: how many of its requests at once found none of its
/// ready sandboxes, decaying with `BURST_HALF_LIFE`. An arrival rate cannot foresee a step (eight
/// clients that send at the same moment after a lull look like a slow stream until they do); a
/// pool that keeps room for the last burst it met serves the next one like it from ready
/// sandboxes instead of from a queue of starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Burst {
    size: f64,
    updated: Option<Instant>,
}

impl Burst {
    /// Counts `short` requests at once without a ready sandbox at `now`: the burst is the larger
    /// of that and the last one, decayed.
    pub fn short(&mut self, short: usize, now: Instant) {
        self.size = self.at(now).max(short as f64);
        self.updated = Some(now);
    }

    /// The burst's size at `now`, decayed since it was met.
    pub fn at(&self, now: Instant) -> f64 {
        let Some(updated) = self.updated else { return 0.0 };
        halved(self.size, now.saturating_duration_since(updated), BURST_HALF_LIFE)
    }
}

/// The target with room for a burst of `burst` more than the least size, within `max`.
pub fn with_burst(target: usize, burst: f64, min: usize, max: usize) -> usize {
    // Less than a hundredth of a sandbox is none, as for the rate.
    let room = (burst - 0.01).ceil().max(0.0) as usize;
    target.max(min.saturating_add(room).min(max))
}

/// A moving average of `seconds` measurements: the first is taken as it is.
pub fn averaged(average: Option<f64>, seconds: f64) -> f64 {
    match average {
        Some(average) => average + SMOOTHING * (seconds - average),
        None => seconds,
    }
}

/// How many ready sandboxes to keep: the arrivals expected while one starts, doubled for
/// bursts, rounded up, within `min` and `max`.
pub fn target(rate: Rate, start_seconds: f64, min: usize, max: usize) -> usize {
    // Less than a hundredth of a sandbox is none: a rate decays towards zero without reaching it.
    let wanted = (rate.per_second() * start_seconds.max(0.0) * HEADROOM - 0.01).ceil();
    // A float past usize's range saturates; NaN becomes 0.
    (wanted as usize).clamp(min.min(max), max)
}

/// How many of the ready sandboxes of a kind (their ages, the oldest first) to remove when the
/// target is `target`: the oldest of those above it that have waited at least `SURPLUS_GRACE`.
pub fn surplus(ages: &[Duration], target: usize) -> usize {
    let above = ages.len().saturating_sub(target);
    ages.iter().take(above).take_while(|age| **age >= SURPLUS_GRACE).count()
}

/// What a request that found no ready sandbox of its kind knows about the starts of that kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Starts<'a> {
    /// How long each start under way has been going, the longest first.
    pub under_way: &'a [Duration],
    /// Requests already waiting for one of them (each takes the next one ready).
    pub waiting: usize,
    /// Requests of the other kind waiting for a start not begun yet: the pool may begin theirs
    /// first.
    pub waiting_elsewhere: usize,
    /// How many more starts (of any kind) the pool may begin now.
    pub free: usize,
    /// How many starts the pool runs at the same time (`--pool-starts-at-once`).
    pub at_once: usize,
    /// What a start of this kind takes (measured).
    pub start: Duration,
    /// What a cold start of this kind takes (measured).
    pub cold: Duration,
}

/// What a cold start is expected to take beside `under_way` others on `cpus` CPUs, when one
/// alone takes `alone`: an interpreter's start is CPU work, so each cold start already running
/// slows the next by its share of the CPUs (eight cold starts at once on 2 CPUs take 3 to 8 times
/// as long as one alone).
pub fn cold_beside(alone: Duration, under_way: usize, cpus: usize) -> Duration {
    alone.mul_f64(1.0 + under_way as f64 / cpus.max(1) as f64)
}

/// Whether to wait for a start rather than start cold, and how long that start is expected to
/// take: the start under way that no earlier waiter counts on, or else one not begun yet. The
/// pool begins it now if it has room to; otherwise it begins once as many starts have ended as
/// there are earlier waiters ahead of it past the room, `at_once` of them ending each start's
/// time. None when the start it would get is not expected sooner than a cold start: a burst
/// queues behind starts of a few milliseconds (forks) rather than start cold beside them, but
/// not behind starts as slow as a cold start, where one more cold start beside them is sooner.
pub fn wait_for_start(starts: Starts<'_>) -> Option<Duration> {
    let expected = match starts.under_way.get(starts.waiting) {
        Some(going_for) => starts.start.saturating_sub(*going_for),
        None => {
            // Starts not begun yet that earlier waiters, of either kind, count on.
            let ahead = starts.waiting - starts.under_way.len() + starts.waiting_elsewhere;
            match (ahead + 1).checked_sub(starts.free) {
                Some(0) | None => starts.start,
                // Its start begins after `ends` starts have ended.
                Some(ends) => {
                    let rounds = u32::try_from(ends.div_ceil(starts.at_once.max(1))).unwrap_or(u32::MAX);
                    starts.start.saturating_mul(rounds.saturating_add(1))
                }
            }
        }
    };
    (expected < starts.cold).then_some(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// The rate after `n` arrivals `every` apart.
    fn steady(n: usize, every: Duration) -> Rate {
        (0..n).fold(Rate::default(), |rate, _| rate.arrived(every))
    }

    #[test]
    fn a_steady_stream_settles_at_its_rate() {
        let rate = steady(2000, MS(50));
        assert!((rate.per_second() - 20.0).abs() < 1.0, "{rate:?}");
        let rate = steady(200, MS(500));
        assert!((rate.per_second() - 2.0).abs() < 0.2, "{rate:?}");
    }

    #[test]
    fn the_rate_halves_with_each_half_life_of_silence() {
        let rate = steady(2000, MS(50));
        let later = rate.decayed(RATE_HALF_LIFE * 2);
        assert!((later.per_second() - rate.per_second() / 4.0).abs() < 1e-9);
        assert_eq!(Rate::default().decayed(RATE_HALF_LIFE).per_second(), 0.0);
    }

    #[test]
    fn the_target_is_arrivals_during_a_start_with_room_for_bursts_within_the_bounds() {
        let rate = steady(2000, MS(50)); // about 20 per second
        assert_eq!(target(rate, 0.09, 1, 8), 4);
        assert_eq!(target(rate, 0.01, 1, 8), 1);
        assert_eq!(target(rate, 1.0, 1, 8), 8);
        assert_eq!(target(rate, f64::NAN, 2, 8), 2);
        assert_eq!(target(Rate::default(), 0.5, 0, 8), 0);
        // --pool-min above --pool-max: the max wins, as for the bounds.
        assert_eq!(target(Rate::default(), 0.5, 5, 3), 3);
    }

    #[test]
    fn the_target_shrinks_back_to_the_least_size_when_arrivals_stop() {
        let busy = steady(2000, MS(50));
        assert_eq!(target(busy, 0.18, 1, 8), 8);
        assert_eq!(target(busy.decayed(RATE_HALF_LIFE), 0.18, 1, 8), 4);
        assert_eq!(target(busy.decayed(RATE_HALF_LIFE * 20), 0.18, 1, 8), 1);
        assert_eq!(target(busy.decayed(RATE_HALF_LIFE * 20), 0.18, 0, 8), 0);
    }

    #[test]
    fn ready_sandboxes_above_the_target_go_once_they_have_waited_past_the_grace() {
        let s = Duration::from_secs;
        let ages = [s(90), s(40), s(31), s(5)];
        assert_eq!(surplus(&ages, 4), 0);
        assert_eq!(surplus(&ages, 2), 2);
        assert_eq!(surplus(&ages, 0), 3, "the youngest has not waited long enough");
        assert_eq!(surplus(&[s(5), s(1)], 0), 0);
        assert_eq!(surplus(&[], 1), 0);
    }

    #[test]
    fn a_burst_is_remembered_as_room_above_the_least_size_and_fades() {
        let t0 = Instant::now();
        let mut burst = Burst::default();
        assert_eq!(burst.at(t0), 0.0);
        assert_eq!(with_burst(1, burst.at(t0), 1, 4), 1);
        burst.short(3, t0);
        burst.short(2, t0);
        assert_eq!(burst.at(t0), 3.0, "the larger burst stays");
        assert_eq!(with_burst(1, burst.at(t0), 1, 4), 4);
        assert_eq!(with_burst(1, burst.at(t0), 1, 3), 3, "within the most");
        assert_eq!(with_burst(4, burst.at(t0), 0, 8), 4, "the rate's target when it is larger");
        let later = t0 + BURST_HALF_LIFE;
        assert_eq!(burst.at(later), 1.5);
        assert_eq!(with_burst(1, burst.at(later), 1, 4), 3);
        assert_eq!(with_burst(1, burst.at(t0 + BURST_HALF_LIFE * 20), 1, 4), 1, "faded");
    }

    #[test]
    fn times_are_a_moving_average_seeded_by_the_first() {
        assert_eq!(averaged(None, 0.3), 0.3);
        assert!((averaged(Some(1.0), 2.0) - 1.2).abs() < 1e-9);
    }

    /// Starts of 30 ms, two at a time, `free` more of them possible now; cold starts of 200 ms.
    fn starts(under_way: &[Duration], waiting: usize, free: usize) -> Starts<'_> {
        Starts { under_way, waiting, waiting_elsewhere: 0, free, at_once: 2, start: MS(30), cold: MS(200) }
    }

    #[test]
    fn a_request_waits_for_a_start_under_way_that_is_sooner_than_a_cold_start() {
        assert_eq!(wait_for_start(starts(&[MS(10)], 0, 0)), Some(MS(20)));
        // A start running late is expected any moment.
        assert_eq!(wait_for_start(starts(&[MS(90)], 0, 0)), Some(Duration::ZERO));
        // The second waiter counts on the second start.
        assert_eq!(wait_for_start(starts(&[MS(25), MS(5)], 1, 0)), Some(MS(25)));
    }

    #[test]
    fn with_every_start_counted_on_a_request_waits_for_the_next_one_if_the_pool_may_begin_it() {
        assert_eq!(wait_for_start(starts(&[MS(10)], 1, 1)), Some(MS(30)));
        assert_eq!(wait_for_start(starts(&[], 0, 2)), Some(MS(30)));
        assert_eq!(wait_for_start(starts(&[], 1, 2)), Some(MS(30)));
        // Waiters of the other kind take the room first.
        assert_eq!(wait_for_start(Starts { waiting_elsewhere: 1, ..starts(&[], 0, 2) }), Some(MS(30)));
    }

    #[test]
    fn past_the_room_a_request_queues_for_as_many_rounds_of_starts_as_are_ahead_of_it() {
        // One start must end before its own begins: one round, then its own start.
        assert_eq!(wait_for_start(starts(&[MS(10)], 1, 0)), Some(MS(60)));
        assert_eq!(wait_for_start(starts(&[], 2, 2)), Some(MS(60)));
        assert_eq!(wait_for_start(Starts { waiting_elsewhere: 2, ..starts(&[], 0, 2) }), Some(MS(60)));
        // Two at a time: the fourth waiter past the room needs two rounds.
        assert_eq!(wait_for_start(starts(&[], 5, 2)), Some(MS(90)));
        // Deeper than a cold start takes: cold, beside the starts.
        assert_eq!(wait_for_start(starts(&[], 11, 2)), Some(MS(180)));
        assert_eq!(wait_for_start(starts(&[], 13, 2)), None);
        let slow = Starts { start: MS(120), ..starts(&[], 2, 2) };
        assert_eq!(wait_for_start(slow), None, "240 ms of starts ahead, a cold start takes 200");
    }

    #[test]
    fn each_cold_start_under_way_slows_the_next_by_its_share_of_the_cpus() {
        assert_eq!(cold_beside(MS(20), 0, 2), MS(20));
        assert_eq!(cold_beside(MS(20), 1, 2), MS(30));
        assert_eq!(cold_beside(MS(20), 4, 2), MS(60));
        assert_eq!(cold_beside(MS(20), 3, 0), MS(80), "no CPU count is taken as one");
        // Five waiting ahead: queueing takes 90 ms, a cold start alone 40 but beside three
        // others 100, so the request queues.
        let queued = Starts { cold: cold_beside(MS(40), 3, 2), ..starts(&[], 5, 2) };
        assert_eq!(wait_for_start(queued), Some(MS(90)));
        assert_eq!(wait_for_start(Starts { cold: MS(40), ..queued }), None);
    }

    #[test]
    fn a_request_starts_cold_when_that_is_sooner() {
        let under_way = [MS(100)];
        let slow = Starts { start: MS(500), cold: MS(200), ..starts(&under_way, 0, 1) };
        assert_eq!(wait_for_start(slow), None);
        let late = [MS(450)];
        let nearly_done = Starts { under_way: &late, ..slow };
        assert_eq!(wait_for_start(nearly_done), Some(MS(50)));
    }
}
