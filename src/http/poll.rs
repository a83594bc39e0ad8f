//! The poller: one thread, one epoll set. It owns the listener and every
//! connection that waits — for its first bytes, between keep-alive
//! requests, mid-head, mid-body, mid-handshake, finishing a write, or
//! lingering after a close — and every deadline.
//!
//! Each connection is registered one-shot: when it becomes ready the
//! poller takes it out of its table and queues it for a worker, which
//! hands it back (or closes it) after its turn. A connection is thus
//! either here, in the queue, or with exactly one worker. Deadlines are
//! swept here, whatever the peer's pace; the poller itself only accepts,
//! counts, writes the fixed 503 and 408 answers and drains lingering
//! connections — no handshakes, no decryption.

use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Handler;
use super::conn::{self, Conn, Env, Phase};
use super::epoll::{Epoll, Event, READABLE};
use super::server::{Cap, Job, Shared};

/// Token of the listener in the epoll set.
const LISTENER: u64 = u64::MAX;
/// Token of the wake-up eventfd.
const WAKE: u64 = u64::MAX - 1;
/// Readiness reports taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
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
/// for connections with a request in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The waiting connections, by token: an index and a generation, so a
/// report for a connection that has since left never reaches a newcomer in
/// its slot.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Default)]
struct Slot {
    generation: u32,
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
        let conn = self.slots.get_mut(index)?.conn.take()?;
        self.free.push(index as u32);
        self.len -= 1;
        Some(conn)
    }
}

struct Poller<'a, H: Handler> {
    epoll: Epoll,
    listener: Option<TcpListener>,
    table: Table,
    shared: &'a Arc<Shared>,
    handler: &'a H,
    /// When to sweep deadlines next.
    next_sweep: Option<Instant>,
    last_sweep: Instant,
    accept_paused_until: Option<Instant>,
    last_accept_error_log: Option<Instant>,
    /// Set once shutdown has begun: when to give up waiting.
    stopping: Option<Instant>,
    /// Reused list of what workers handed back.
    returned: Vec<Job>,
}

/// Runs the poller until shutdown is complete (or its wait ran out).
pub(crate) fn run<H: Handler>(
    listener: TcpListener,
    shared: &Arc<Shared>,
    handler: &H,
) -> std::io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.add(&listener, READABLE, LISTENER)?;
    epoll.add(&shared.wake, READABLE, WAKE)?;
    let mut poller = Poller {
        epoll,
        listener: Some(listener),
        table: Table::default(),
        shared,
        handler,
        next_sweep: None,
        last_sweep: Instant::now(),
        accept_paused_until: None,
        last_accept_error_log: None,
        stopping: None,
        returned: Vec::with_capacity(64),
    };
    poller.run()
}

impl<H: Handler> Poller<'_, H> {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events: Vec<Event> = Vec::with_capacity(EVENTS_PER_WAIT);
        loop {
            let timeout = self.timeout();
            self.epoll.wait(&mut events, timeout)?;
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKE => self.take_returns(),
                    token => self.ready(token),
                }
            }
            let now = Instant::now();
            if self.next_sweep.is_some_and(|at| now >= at)
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
                    return Ok(());
                }
            }
        }
    }

    /// How long `epoll_wait` may sleep: until the next sweep, or for ever.
    fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let sweep = self
            .next_sweep
            .map(|at| at.max(self.last_sweep + SWEEP_INTERVAL));
        let wait = sweep.map(|at| at.saturating_duration_since(now));
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

    /// Puts a connection (new, or handed back) in the table and arms it for
    /// what it waits for.
    fn register(&mut self, conn: Box<Conn>, new: bool) {
        let interest = conn.interest();
        let deadline = conn.deadline;
        let token = self.table.insert(conn);
        let armed = match self.table.get(token) {
            Some(conn) if new => self.epoll.add_oneshot(conn.socket(), interest, token),
            Some(conn) => self.epoll.rearm(conn.socket(), interest, token),
            None => return,
        };
        if armed.is_err() {
            // Cannot wait for it: let it go.
            drop(self.table.take(token));
            return;
        }
        self.sweep_by(deadline);
    }

    fn sweep_by(&mut self, at: Instant) {
        if self.next_sweep.is_none_or(|next| at < next) {
            self.next_sweep = Some(at);
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
                Err(e) if is_out_of_resources(&e) => {
                    // The listener is fine, we are out of descriptors or
                    // memory: rest it a moment instead of spinning.
                    let now = Instant::now();
                    if self
                        .last_accept_error_log
                        .is_none_or(|t| now - t > Duration::from_secs(10))
                    {
                        log::warn!("accept failed: {e}; retrying");
                        self.last_accept_error_log = Some(now);
                    }
                    let _ = self.epoll.modify(listener, 0, LISTENER);
                    self.accept_paused_until = Some(now + ACCEPT_ERROR_PAUSE);
                    self.sweep_by(now + ACCEPT_ERROR_PAUSE);
                    return;
                }
                // A connection that failed before we took it (reset,
                // aborted): nothing to do but take the next.
                Err(_) => {}
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
                self.register(conn, true);
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

    /// A waiting connection became ready.
    fn ready(&mut self, token: u64) {
        let Some(mut conn) = self.table.take(token) else {
            return;
        };
        if conn.phase() == Phase::Lingering {
            if conn.drain() {
                self.register(conn, false);
            }
            return;
        }
        // Output already begun is finished whatever the queue holds.
        let bounded = conn.phase() != Phase::Writing;
        if let Err(Job::Serve(mut conn)) = self.shared.push(Job::Serve(conn), bounded) {
            self.shared
                .stats
                .rejected_overloaded
                .fetch_add(1, Ordering::Relaxed);
            log::debug!("connection turned away: all workers busy and the queue full");
            if conn.refuse() {
                self.register(conn, false);
            }
        }
    }

    /// Takes back what workers are done with.
    fn take_returns(&mut self) {
        let mut returned = std::mem::take(&mut self.returned);
        self.shared.take_returns(&mut returned);
        for job in returned.drain(..) {
            match job {
                Job::Serve(conn) if self.stopping.is_some() && conn.between_requests() => {
                    drop(conn);
                }
                Job::Serve(conn) => self.register(conn, false),
                // The watchdog's canary, on its way to a worker.
                canary @ Job::Canary(_) => {
                    let _ = self.shared.push(canary, false);
                }
            }
        }
        self.returned = returned;
    }

    /// Ends every connection past its deadline.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.next_sweep = None;
        if let Some(until) = self.accept_paused_until {
            if now >= until {
                self.accept_paused_until = None;
                if let Some(listener) = &self.listener {
                    let _ = self.epoll.modify(listener, READABLE, LISTENER);
                }
            } else {
                self.sweep_by(until);
            }
        }
        let mut lingering = Vec::new();
        let mut next: Option<Instant> = None;
        for index in 0..self.table.slots.len() {
            let Some(conn) = &self.table.slots[index].conn else {
                continue;
            };
            if conn.deadline > now {
                next = Some(next.map_or(conn.deadline, |n| n.min(conn.deadline)));
                continue;
            }
            if let Some(mut conn) = self.table.take_at(index) {
                if conn.expire(&self.env()) {
                    lingering.push(conn);
                }
            }
        }
        if let Some(next) = next {
            self.sweep_by(next);
        }
        for conn in lingering {
            self.register(conn, false);
        }
    }

    /// Stops accepting and closes every connection between requests; the
    /// others finish their request (answered with `Connection: close`).
    fn begin_shutdown(&mut self, now: Instant) {
        self.stopping = Some(now + self.shared.settings.request_time_limit + SHUTDOWN_GRACE);
        if let Some(listener) = self.listener.take() {
            // Closed here, by the thread that owns it: no other thread ever
            // uses its descriptor number.
            let _ = self.epoll.delete(&listener);
        }
        for index in 0..self.table.slots.len() {
            if self.table.slots[index]
                .conn
                .as_ref()
                .is_some_and(|conn| conn.between_requests())
            {
                drop(self.table.take_at(index));
            }
        }
    }
}

fn is_out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
