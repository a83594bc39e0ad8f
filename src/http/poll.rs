//! The poller: one thread, one epoll set. It owns the listener and every
//! connection that waits — for its first bytes, between keep-alive
//! requests, mid-head, mid-body, mid-handshake, finishing a write, or
//! lingering after a close — and every deadline.
//!
//! Each connection is registered one-shot: when it becomes ready the
//! poller takes it out of the table of waiting connections and queues it
//! for a worker, which parks it back in the table and re-arms it itself
//! after its turn (or closes it) — the hand-back costs no wake-up of the
//! poller. A connection is thus in the table, in the queue, or with
//! exactly one worker. Deadlines are
//! swept here, whatever the peer's pace; the poller itself only accepts,
//! counts, writes the fixed 503 and 408 answers and drains lingering
//! connections — no handshakes, no decryption.

use std::net::{IpAddr, TcpListener};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Handler;
use super::conn::{self, Conn, Env, Phase};
use super::epoll::{Epoll, EventFd, Events, GONE, READABLE};
use super::server::{Cap, Shared};

/// Token of the listener in the epoll set.
const LISTENER: u64 = u64::MAX;
/// Token of the wake-up eventfd.
const WAKE: u64 = u64::MAX - 1;
/// Readiness reports taken per `epoll_wait`.
const EVENTS_PER_WAIT: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(n) => n,
    None => unreachable!(),
};
/// Connections accepted per readiness report of the listener, so a burst
/// of new clients does not keep ready ones waiting.
const ACCEPTS_PER_TURN: usize = 128;
/// Deadlines are swept at most this often: each sweep looks at every
/// waiting connection.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// After `accept` fails for want of resources (no file descriptors), the
/// listener rests this long instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// While shutting down, look this often whether every connection is gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);
/// Shutdown waits at most this long, beyond the time a request may take,
/// for connections with a request in progress and for the workers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The waiting connections, by token: an index and a generation, so a
/// report for a connection that has since left never reaches a newcomer in
/// its slot.
#[derive(Default)]
pub(crate) struct Table {
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
    /// (`u64::MAX`: not planned).
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
            planned_sweep: AtomicU64::new(u64::MAX),
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

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Puts a connection (new, or after a worker's turn) among the waiting
    /// ones and arms it for what it waits for. `new`: not in the epoll set
    /// yet.
    pub(crate) fn park(&self, conn: Box<Conn>, new: bool) {
        let interest = conn.interest();
        let deadline = self.nanos(conn.deadline);
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
        if self.planned_sweep.fetch_min(deadline, Ordering::SeqCst) > deadline {
            self.wake();
        }
    }
}

struct Poller<'a, H: Handler> {
    listener: Option<TcpListener>,
    shared: &'a Arc<Shared>,
    handler: &'a H,
    last_sweep: Instant,
    accept_paused_until: Option<Instant>,
    last_accept_error_log: Option<Instant>,
    /// Set once shutdown has begun: when to give up waiting.
    stopping: Option<Instant>,
    /// Ready connections of one `epoll_wait`, queued together.
    #[allow(
        clippy::vec_box,
        reason = "connections move between the table, this list and the queue as boxes, never copied"
    )]
    ready: Vec<Box<Conn>>,
}

/// Runs the poller until shutdown is complete (or its wait ran out);
/// returns when shutdown as a whole must end, workers included.
pub(crate) fn run<H: Handler>(
    listener: TcpListener,
    shared: &Arc<Shared>,
    handler: &H,
) -> std::io::Result<Instant> {
    shared.waiting.epoll.add(&listener, READABLE, LISTENER)?;
    let mut poller = Poller {
        listener: Some(listener),
        shared,
        handler,
        last_sweep: Instant::now(),
        accept_paused_until: None,
        last_accept_error_log: None,
        stopping: None,
        ready: Vec::with_capacity(EVENTS_PER_WAIT.get()),
    };
    poller.run()
}

impl<H: Handler> Poller<'_, H> {
    fn waiting(&self) -> &Waiting {
        &self.shared.waiting
    }

    fn run(&mut self) -> std::io::Result<Instant> {
        let mut events = Events::new(EVENTS_PER_WAIT);
        loop {
            let timeout = self.timeout();
            self.waiting().epoll.wait(&mut events, timeout)?;
            let shared = self.shared;
            let now = Instant::now();
            let mut table = shared.waiting.table();
            let mut gone = Vec::new();
            let mut late = Vec::new();
            for event in events.iter() {
                let Some(conn) = table.take(event.token()) else {
                    continue;
                };
                if conn.deadline <= now {
                    // Past its deadline however busy the peer keeps it.
                    late.push(conn);
                } else if event.flags() & GONE != 0
                    && conn.between_requests()
                    && !conn.has_unread_bytes()
                {
                    // A client that hung up between requests is closed
                    // here: no worker has anything to do for it.
                    gone.push(conn);
                } else {
                    self.ready.push(conn);
                }
            }
            drop(table);
            drop(gone);
            self.expire_all(late);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKE => {
                        self.waiting().wake.clear();
                        self.shared.forward_canary();
                    }
                    _ => {}
                }
            }
            self.dispatch();
            let now = Instant::now();
            let planned = self.waiting().planned_sweep.load(Ordering::SeqCst);
            if planned != u64::MAX
                && self.waiting().nanos(now) >= planned
                && now >= self.last_sweep + SWEEP_INTERVAL
            {
                self.sweep(now);
            }
            if self.stopping.is_none() && self.shared.shutting_down() {
                self.begin_shutdown(now);
            }
            if let Some(give_up) = self.stopping {
                let open = self.shared.stats.open_connections.load(Ordering::SeqCst);
                if open == 0 || now >= give_up {
                    return Ok(give_up);
                }
            }
        }
    }

    /// How long `epoll_wait` may sleep: until the next sweep, or for ever.
    fn timeout(&self) -> Option<Duration> {
        let planned = self.waiting().planned_sweep.load(Ordering::SeqCst);
        let wait = (planned != u64::MAX).then(|| {
            let at = self.waiting().epoch + Duration::from_nanos(planned);
            at.max(self.last_sweep + SWEEP_INTERVAL)
                .saturating_duration_since(Instant::now())
        });
        match (wait, self.stopping) {
            (Some(wait), Some(_)) => Some(wait.min(SHUTDOWN_POLL)),
            (None, Some(_)) => Some(SHUTDOWN_POLL),
            (wait, None) => wait,
        }
    }

    fn env(&self) -> Env<'_, H> {
        Env {
            handler: self.handler,
            shutting_down: self.stopping.is_some(),
            trusted_proxies: &self.shared.settings.trusted_proxies,
        }
    }

    /// Sends what became ready to the workers: lingering connections are
    /// drained here; past a full queue the rest is turned away.
    fn dispatch(&mut self) {
        let mut i = 0;
        while i < self.ready.len() {
            if self.ready[i].phase() == Phase::Lingering {
                let mut conn = self.ready.swap_remove(i);
                if conn.drain() {
                    self.waiting().park(conn, false);
                }
            } else {
                i += 1;
            }
        }
        if self.ready.is_empty() {
            return;
        }
        self.shared.push_ready(&mut self.ready);
        for mut conn in self.ready.drain(..) {
            self.shared
                .stats
                .rejected_overloaded
                .fetch_add(1, Ordering::Relaxed);
            log::debug!("connection turned away: all workers busy and the queue full");
            if conn.refuse() {
                self.shared.waiting.park(conn, false);
            }
        }
    }

    /// Accepts what the listener has, up to [`ACCEPTS_PER_TURN`].
    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => self.admit(stream, addr.ip().to_canonical()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // A connection that failed before we took it (reset,
                // aborted): nothing to do but take the next.
                Err(e) if is_about_one_connection(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory, or anything else that
                    // would fail again at once: rest the listener a moment
                    // instead of spinning.
                    let now = Instant::now();
                    if self
                        .last_accept_error_log
                        .is_none_or(|t| now - t > Duration::from_secs(10))
                    {
                        log::warn!("accept failed: {e}; retrying");
                        self.last_accept_error_log = Some(now);
                    }
                    let _ = self.waiting().epoll.modify(listener, 0, LISTENER);
                    self.accept_paused_until = Some(now + ACCEPT_ERROR_PAUSE);
                    let at = self.waiting().nanos(now + ACCEPT_ERROR_PAUSE);
                    self.waiting().planned_sweep.fetch_min(at, Ordering::SeqCst);
                    return;
                }
            }
        }
    }

    /// Applies the caps to a new connection and starts waiting for it.
    fn admit(&mut self, stream: std::net::TcpStream, peer: IpAddr) {
        let tls = self.shared.settings.tls.as_ref();
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        match self.shared.admit(peer) {
            Ok(slot) => {
                let conn = Box::new(Conn::new(stream, peer, tls, slot, Instant::now()));
                self.waiting().park(conn, true);
            }
            Err(cap) => {
                let stats = &self.shared.stats;
                match cap {
                    Cap::Total => {
                        stats.rejected_overloaded.fetch_add(1, Ordering::Relaxed);
                        log::debug!("connection from {peer} turned away: MAX_CONNECTIONS reached");
                    }
                    Cap::PerClient => {
                        // SECURITY: one address must not hold every
                        // connection the server may open.
                        stats
                            .rejected_per_client_cap
                            .fetch_add(1, Ordering::Relaxed);
                        log::debug!("connection from {peer} turned away: per-client cap");
                    }
                }
                conn::refuse(stream, tls.is_some());
            }
        }
    }

    /// Ends every connection past its deadline; plans the next sweep.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let mut next: Option<Instant> = None;
        if let Some(until) = self.accept_paused_until {
            if now >= until {
                self.accept_paused_until = None;
                if let Some(listener) = &self.listener {
                    let _ = self.waiting().epoll.modify(listener, READABLE, LISTENER);
                }
            } else {
                next = Some(until);
            }
        }
        let mut expired = Vec::new();
        let mut table = self.waiting().table();
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
        let planned = next.map_or(u64::MAX, |at| self.waiting().nanos(at));
        self.waiting()
            .planned_sweep
            .store(planned, Ordering::SeqCst);
        drop(table);
        self.expire_all(expired);
    }

    /// Ends connections past their deadline: a late request is answered
    /// `408` and lingers, anything else closes.
    #[allow(
        clippy::vec_box,
        reason = "connections move between the table, this list and the queue as boxes, never copied"
    )]
    fn expire_all(&self, expired: Vec<Box<Conn>>) {
        for mut conn in expired {
            if conn.expire(&self.env()) {
                self.waiting().park(conn, false);
            }
        }
    }

    /// Stops accepting and closes every connection between requests that
    /// has sent nothing more; the others finish their request (answered
    /// with `Connection: close`).
    fn begin_shutdown(&mut self, now: Instant) {
        self.stopping = Some(now + self.shared.settings.request_time_limit + SHUTDOWN_GRACE);
        if let Some(listener) = self.listener.take() {
            // Closed here, by the thread that owns it: no other thread ever
            // uses its descriptor number.
            let _ = self.waiting().epoll.delete(&listener);
        }
        let mut closed = Vec::new();
        let mut table = self.waiting().table();
        for index in 0..table.slots.len() {
            if table.slots[index]
                .conn
                .as_ref()
                .is_some_and(|conn| conn.between_requests() && !conn.has_unread_bytes())
            {
                closed.extend(table.take_at(index));
            }
        }
        drop(table);
        drop(closed);
    }
}

/// Whether `accept` failed for one connection only (accept(2): pending
/// network errors are passed on), so the next one may succeed at once.
fn is_about_one_connection(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Interrupted
        || matches!(
            e.raw_os_error(),
            Some(
                libc::ECONNABORTED
                    | libc::EPROTO
                    | libc::EPERM
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH
            )
        )
}
