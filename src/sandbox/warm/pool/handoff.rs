//! The requests waiting for a ready sandbox of one kind (or, in the controller, for a warm pod),
//! first come first served: a sandbox that becomes ready goes to the oldest of them, never to
//! whoever looks first. Were every
//! waiter woken to race for it, requests that had just arrived would win it again and again,
//! and under a burst the unluckiest would wait several times the average.

use std::collections::VecDeque;

use tokio::sync::oneshot;

/// The waiting requests, oldest first, each by the channel its sandbox comes through.
#[derive(Debug)]
pub struct Waiters<T> {
    queue: VecDeque<oneshot::Sender<T>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters { queue: VecDeque::new() }
    }
}

impl<T> Waiters<T> {
    /// Joins the queue, at its end: what is handed to this request comes through the receiver.
    pub fn join(&mut self) -> oneshot::Receiver<T> {
        let (sender, receiver) = oneshot::channel();
        self.queue.push_back(sender);
        receiver
    }

    /// Hands `item` to the oldest request still waiting, skipping those that left; gives it
    /// back when none waits.
    pub fn hand(&mut self, mut item: T) -> Option<T> {
        while let Some(waiter) = self.queue.pop_front() {
            match waiter.send(item) {
                Ok(()) => return None,
                Err(back) => item = back,
            }
        }
        Some(item)
    }
}

/// Leaves the queue for good: what was handed to this request before it left, if anything
/// (for the caller to hand on, so that nothing handed over is lost).
pub fn leave<T>(mut receiver: oneshot::Receiver<T>) -> Option<T> {
    receiver.close();
    receiver.try_recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_becomes_ready_goes_to_the_oldest_waiter_first() {
        let mut waiters = Waiters::default();
        let mut first = waiters.join();
        let mut second = waiters.join();
        assert_eq!(waiters.hand(1), None);
        assert_eq!(first.try_recv(), Ok(1));
        assert!(second.try_recv().is_err(), "the second waits for the next");
        assert_eq!(waiters.hand(2), None);
        assert_eq!(second.try_recv(), Ok(2));
        assert_eq!(waiters.hand(3), Some(3), "nobody waits: it comes back");
    }

    #[test]
    fn a_waiter_that_left_is_skipped() {
        let mut waiters = Waiters::default();
        let gone = waiters.join();
        let mut staying = waiters.join();
        assert_eq!(leave(gone), None);
        assert_eq!(waiters.hand(7), None);
        assert_eq!(staying.try_recv(), Ok(7));
    }

    #[test]
    fn what_was_handed_just_before_a_waiter_left_comes_back_with_it() {
        let mut waiters = Waiters::default();
        let late = waiters.join();
        assert_eq!(waiters.hand(5), None);
        assert_eq!(leave(late), Some(5));
    }
}
