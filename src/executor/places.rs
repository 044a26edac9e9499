//! A count of places with a ceiling, mirrored in a gauge: the local executor's queue and the
//! kube executor's in-flight requests are both this.

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug)]
pub struct Places {
    taken: AtomicUsize,
    max: usize,
}

impl Places {
    pub fn new(max: usize) -> Self {
        Places { taken: AtomicUsize::new(0), max }
    }

    /// How many places are taken now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }

    /// Takes a place, or None when all are taken. The place is given back when the returned
    /// guard drops, however the request ends (it may be cancelled).
    pub fn take<'a>(&'a self, gauge: &'a Gauge) -> Option<Place<'a>> {
        self.taken.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max).then_some(n + 1)).ok()?;
        gauge.inc();
        Some(Place { places: self, gauge })
    }
}

pub struct Place<'a> {
    places: &'a Places,
    gauge: &'a Gauge,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.places.taken.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_refused_past_the_ceiling_and_given_back_on_drop() {
        let places = Places::new(2);
        let gauge = Gauge::default();
        let first = places.take(&gauge).expect("first");
        let _second = places.take(&gauge).expect("second");
        assert!(places.take(&gauge).is_none());
        assert_eq!(gauge.get(), 2);
        drop(first);
        assert_eq!(gauge.get(), 1);
        assert!(places.take(&gauge).is_some());
    }

    #[test]
    fn a_ceiling_of_zero_refuses_every_place() {
        assert!(Places::new(0).take(&Gauge::default()).is_none());
    }
}
