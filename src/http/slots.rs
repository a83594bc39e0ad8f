//! The slow slots: how many slow requests — those the handler says may
//! take long, for this app a call to Spotify — are answered at once, and
//! the backlog of connections whose complete request waits for a slot.
//!
//! The workers less a small reserve may answer slow requests at the same
//! time, so the reserve is always free for the others (`/health`,
//! `/metrics`, preflights, the layer's own errors) however long the slow
//! ones take. A slow request that finds every slot taken is not answered
//! on that worker: its connection, with the request held, waits in a FIFO
//! backlog, and each slot that is freed goes to the oldest connection
//! there before any new request can take it, so a flood of other requests
//! cannot starve slow ones. No worker ever waits for a slot.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// One worker in this many is kept for requests that are not slow (at
/// least one when there are two workers or more; a single worker serves
/// everything). A worker answers a `/health` in microseconds: a few kept
/// free serve them all, and the rest of the pool still calls Spotify.
const RESERVE_ONE_WORKER_IN: usize = 8;
/// Connections whose slow request may wait for a slot; past this one more
/// is answered 503 with `Retry-After`. As many as the queue holds.
pub(crate) const BACKLOG_CAPACITY: usize = 4096;

/// Slow requests that may be answered at once with `workers` workers.
pub(crate) fn slow_slots(workers: usize) -> usize {
    let reserve = if workers >= 2 {
        (workers / RESERVE_ONE_WORKER_IN).max(1)
    } else {
        0
    };
    workers - reserve
}

/// What a turn is told when it asks for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// A slot is the turn's until its end.
    Slot,
    /// None free: the connection goes to the backlog.
    Wait,
    /// None free and the backlog full: the request is answered 503.
    Full,
}

/// The slots as a turn sees them: it may only ask for one.
pub(crate) trait Gate {
    /// Takes a slot if one is free and nobody waits for one.
    fn try_take(&self) -> Take;
}

struct State<T> {
    free: usize,
    /// Waiting for a slot, oldest first. Never holds anything while a slot
    /// is free.
    backlog: VecDeque<T>,
}

/// The slots and the backlog of `T` (a connection) waiting for one.
pub(crate) struct Slots<T> {
    state: Mutex<State<T>>,
}

impl<T> Slots<T> {
    pub(crate) fn new(slots: usize) -> Slots<T> {
        Slots {
            state: Mutex::new(State {
                free: slots,
                backlog: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `waiting` in the backlog, after a turn was told [`Take::Wait`].
    /// A slot freed meanwhile is taken for it at once: then it comes back,
    /// holding that slot.
    pub(crate) fn wait(&self, waiting: T) -> Option<T> {
        let mut state = self.state();
        if state.free > 0 {
            state.free -= 1;
            return Some(waiting);
        }
        state.backlog.push_back(waiting);
        None
    }

    /// Frees a slot: the oldest connection in the backlog gets it, and
    /// comes back to be served; `None` when nothing waits.
    pub(crate) fn release(&self) -> Option<T> {
        let mut state = self.state();
        let next = state.backlog.pop_front();
        if next.is_none() {
            state.free += 1;
        }
        next
    }

    /// Connections in the backlog.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state().backlog.len()
    }
}

impl<T> Gate for Slots<T> {
    fn try_take(&self) -> Take {
        let mut state = self.state();
        if state.free > 0 {
            state.free -= 1;
            Take::Slot
        } else if state.backlog.len() >= BACKLOG_CAPACITY {
            Take::Full
        } else {
            Take::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_is_kept_from_two_workers_on() {
        let slots: Vec<usize> = [1, 2, 4, 8, 15, 16, 32, 1024]
            .into_iter()
            .map(slow_slots)
            .collect();
        assert_eq!(slots, [1, 1, 3, 7, 14, 14, 28, 896]);
    }

    #[test]
    fn past_the_slots_requests_wait() {
        let slots: Slots<u32> = Slots::new(2);
        assert_eq!(slots.try_take(), Take::Slot);
        assert_eq!(slots.try_take(), Take::Slot);
        assert_eq!(slots.try_take(), Take::Wait);
        assert_eq!(slots.wait(1), None);
        assert_eq!(slots.waiting(), 1);
    }

    #[test]
    fn a_freed_slot_goes_to_the_oldest_waiting_first() {
        let slots: Slots<u32> = Slots::new(1);
        assert_eq!(slots.try_take(), Take::Slot);
        for n in 1..=3 {
            assert_eq!(slots.try_take(), Take::Wait);
            assert_eq!(slots.wait(n), None);
        }
        // Each freed slot is handed on, never left free for a newcomer.
        assert_eq!(slots.release(), Some(1));
        assert_eq!(slots.try_take(), Take::Wait);
        assert_eq!(slots.release(), Some(2));
        assert_eq!(slots.release(), Some(3));
        assert_eq!(slots.release(), None);
        assert_eq!(slots.try_take(), Take::Slot);
    }

    #[test]
    fn a_slot_freed_before_the_wait_is_taken_for_it() {
        let slots: Slots<u32> = Slots::new(1);
        assert_eq!(slots.try_take(), Take::Slot);
        assert_eq!(slots.try_take(), Take::Wait);
        // The holder finishes between the refusal and the wait.
        assert_eq!(slots.release(), None);
        assert_eq!(slots.wait(7), Some(7));
        assert_eq!(slots.try_take(), Take::Wait);
    }

    #[test]
    fn a_full_backlog_is_told_so() {
        let slots: Slots<usize> = Slots::new(0);
        for n in 0..BACKLOG_CAPACITY {
            assert_eq!(slots.try_take(), Take::Wait);
            assert_eq!(slots.wait(n), None);
        }
        assert_eq!(slots.try_take(), Take::Full);
    }
}
