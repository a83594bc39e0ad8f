//! The connections that wait — for their first bytes, between keep-alive
//! requests, mid-head, mid-body, mid-handshake, finishing a write, or
//! lingering after a close — and the epoll set they wait in.
//!
//! Each connection sits in a [`Table`] slot under a token (an index and a
//! generation, so a report for a connection that has since left never
//! reaches a newcomer in its slot), registered one-shot: when it becomes
//! ready the poller takes it out; a worker parks it back and re-arms it
//! itself after its turn, which costs no wake-up of the poller. Each slot
//! keeps its connection's deadline, so a sweep reads the slots in order and
//! follows no pointer. [`Waiting`] also holds the eventfd that wakes the
//! poller and when it plans to sweep next.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::epoll::{Epoll, EventFd, Events, READABLE};

/// Token of the listener in the epoll set.
pub(crate) const LISTENER: u64 = u64::MAX;
/// Token of the wake-up eventfd.
pub(crate) const WAKE: u64 = u64::MAX - 1;
/// A planned sweep of `u64::MAX` nanoseconds: none planned.
const NOT_PLANNED: u64 = u64::MAX;

/// The waiting connections, by token.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    /// The connection's deadline, kept beside it: a sweep reads the slots
    /// in order and follows no pointer.
    deadline: Option<Instant>,
    conn: Option<Box<Conn>>,
}

impl Table {
    fn insert(&mut self, conn: Box<Conn>) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index as usize,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.deadline = Some(conn.deadline);
        slot.conn = Some(conn);
        self.len += 1;
        (u64::from(slot.generation) << 32) | index as u64
    }

    fn get(&self, token: u64) -> Option<&Conn> {
        let slot = self.slots.get((token & u64::from(u32::MAX)) as usize)?;
        if u64::from(slot.generation) != token >> 32 {
            return None;
        }
        slot.conn.as_deref()
    }

    fn take(&mut self, token: u64) -> Option<Box<Conn>> {
        let index = (token & u64::from(u32::MAX)) as usize;
        let slot = self.slots.get_mut(index)?;
        if u64::from(slot.generation) != token >> 32 {
            return None;
        }
        self.take_at(index)
    }

    fn take_at(&mut self, index: usize) -> Option<Box<Conn>> {
        let slot = self.slots.get_mut(index)?;
        let conn = slot.conn.take()?;
        slot.deadline = None;
        self.free.push(index as u32);
        self.len -= 1;
        Some(conn)
    }
}

/// The waiting connections and the epoll set they wait in, shared by the
/// poller (which takes out the ready ones and sweeps deadlines) and the
/// workers (which park connections after their turn).
pub(crate) struct Waiting {
    epoll: Epoll,
    table: Mutex<Table>,
    /// Wakes the poller: shutdown, the watchdog's canary, or a deadline
    /// earlier than its next sweep.
    wake: EventFd,
    /// When the poller means to sweep next, in nanoseconds since `epoch`
    /// ([`NOT_PLANNED`]: not planned).
    planned_sweep: AtomicU64,
    epoch: Instant,
}

impl Waiting {
    pub(crate) fn new() -> std::io::Result<Waiting> {
        let epoll = Epoll::new()?;
        let wake = EventFd::new()?;
        epoll.add(&wake, READABLE, WAKE)?;
        Ok(Waiting {
            epoll,
            table: Mutex::new(Table::default()),
            wake,
            planned_sweep: AtomicU64::new(NOT_PLANNED),
            epoch: Instant::now(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table holds plain data; a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the poller.
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }

    /// Takes the wake-up in: the eventfd is no longer readable.
    pub(crate) fn clear_wake(&self) {
        self.wake.clear();
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(NOT_PLANNED - 1)
    }

    /// Reports the listener (level-triggered) while it has connections.
    pub(crate) fn add_listener(&self, listener: &TcpListener) -> std::io::Result<()> {
        self.epoll.add(listener, READABLE, LISTENER)
    }

    /// Pauses (`false`) or resumes reports of the listener.
    pub(crate) fn listen(&self, listener: &TcpListener, on: bool) -> std::io::Result<()> {
        let interest = if on { READABLE } else { 0 };
        self.epoll.modify(listener, interest, LISTENER)
    }

    /// Takes the listener out of the set, before it is closed.
    pub(crate) fn remove_listener(&self, listener: &TcpListener) -> std::io::Result<()> {
        self.epoll.delete(listener)
    }

    /// Waits for reports, at most `timeout` (`None`: no limit).
    pub(crate) fn wait(
        &self,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        self.epoll.wait(events, timeout)
    }

    /// Takes out of the table each connection `events` reports, under one
    /// lock, and hands it to `each` with what was reported.
    pub(crate) fn take_reported(&self, events: &Events, mut each: impl FnMut(Box<Conn>, u32)) {
        let mut table = self.table();
        for event in events.iter() {
            if let Some(conn) = table.take(event.token()) {
                each(conn, event.flags());
            }
        }
    }

    /// Puts a connection (new, or after a worker's turn) among the waiting
    /// ones and arms it for what it waits for. `new`: not in the epoll set
    /// yet.
    pub(crate) fn park(&self, conn: Box<Conn>, new: bool) {
        let interest = conn.interest();
        let deadline = conn.deadline;
        let mut table = self.table();
        let token = table.insert(conn);
        // Armed under the lock: once the table lets go, a sweep may close
        // the connection, and its descriptor number may go to a newcomer.
        let armed = match table.get(token) {
            Some(conn) if new => self.epoll.add_oneshot(conn.socket(), interest, token),
            Some(conn) => self.epoll.rearm(conn.socket(), interest, token),
            None => return,
        };
        if armed.is_err() {
            // Cannot wait for it: let it go.
            let conn = table.take(token);
            drop(table);
            drop(conn);
            return;
        }
        drop(table);
        if self.plan_sweep(deadline) {
            self.wake();
        }
    }

    /// Plans a sweep at `at` at the latest; whether that is earlier than
    /// the one planned.
    pub(crate) fn plan_sweep(&self, at: Instant) -> bool {
        let at = self.nanos(at);
        self.planned_sweep.fetch_min(at, Ordering::SeqCst) > at
    }

    /// When the next sweep is planned, if one is.
    pub(crate) fn planned_sweep(&self) -> Option<Instant> {
        let planned = self.planned_sweep.load(Ordering::SeqCst);
        (planned != NOT_PLANNED).then(|| self.epoch + Duration::from_nanos(planned))
    }

    /// Whether the planned sweep is due at `now`.
    pub(crate) fn sweep_due(&self, now: Instant) -> bool {
        let planned = self.planned_sweep.load(Ordering::SeqCst);
        planned != NOT_PLANNED && self.nanos(now) >= planned
    }

    /// Takes out every connection past its deadline at `now`, and plans
    /// the next sweep for the earliest deadline left (or `next`, if
    /// earlier).
    #[allow(
        clippy::vec_box,
        reason = "connections move between the table, this list and the queue as boxes, never copied"
    )]
    pub(crate) fn take_expired(&self, now: Instant, mut next: Option<Instant>) -> Vec<Box<Conn>> {
        let mut expired = Vec::new();
        let mut table = self.table();
        // Workers that park a connection while this runs lower the plan
        // themselves; it is set here, under the lock, before they can.
        for index in 0..table.slots.len() {
            let Some(deadline) = table.slots[index].deadline else {
                continue;
            };
            if deadline > now {
                if next.is_none_or(|next| deadline < next) {
                    next = Some(deadline);
                }
            } else if let Some(conn) = table.take_at(index) {
                expired.push(conn);
            }
        }
        let planned = next.map_or(NOT_PLANNED, |at| self.nanos(at));
        self.planned_sweep.store(planned, Ordering::SeqCst);
        expired
    }

    /// Takes out every connection `close` picks.
    #[allow(
        clippy::vec_box,
        reason = "connections move between the table, this list and the queue as boxes, never copied"
    )]
    pub(crate) fn take_if(&self, close: impl Fn(&Conn) -> bool) -> Vec<Box<Conn>> {
        let mut taken = Vec::new();
        let mut table = self.table();
        for index in 0..table.slots.len() {
            if table.slots[index].conn.as_deref().is_some_and(&close) {
                taken.extend(table.take_at(index));
            }
        }
        taken
    }
}
