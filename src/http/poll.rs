//! The poller: one thread, one epoll set. It owns the listener, accepts
//! and counts new connections, hands the ready ones to the workers through
//! the queue, and enforces every deadline of the waiting ones, whatever
//! the peer's pace.
//!
//! A connection is in the table of waiting ones ([`super::waiting`]), in
//! the queue, or with exactly one worker. The poller itself only accepts,
//! counts, writes the fixed 503 and 408 answers and drains lingering
//! connections — no handshakes, no decryption.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::admission::{self, Admission, Cap};
use super::conn::{Conn, Phase};
use super::epoll::{Events, GONE};
use super::handler::Handler;
use super::queue::Queue;
use super::settings::Settings;
use super::stats::Stats;
use super::waiting::{LISTENER, WAKE, Waiting};

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
/// A failing `accept` is logged at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// While shutting down, look this often whether every connection is gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);
/// Shutdown waits at most this long, beyond the time a request may take,
/// for connections with a request in progress and for the workers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the poller works with, lent by the server for as long as it runs.
pub(crate) struct Parts<'a, H> {
    pub(crate) handler: &'a H,
    pub(crate) settings: &'a Settings,
    /// Serve HTTPS with this configuration, or plain HTTP.
    pub(crate) tls: Option<&'a Arc<ServerConfig>>,
    pub(crate) stats: &'a Stats,
    pub(crate) admission: &'a Arc<Admission>,
    pub(crate) waiting: &'a Waiting,
    pub(crate) queue: &'a Queue,
    /// Set when shutdown begins.
    pub(crate) shutting_down: &'a AtomicBool,
}

struct Poller<'a, H: Handler> {
    parts: Parts<'a, H>,
    listener: Option<TcpListener>,
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
    parts: Parts<'_, H>,
) -> std::io::Result<Instant> {
    parts.waiting.add_listener(&listener)?;
    let mut poller = Poller {
        parts,
        listener: Some(listener),
        last_sweep: Instant::now(),
        accept_paused_until: None,
        last_accept_error_log: None,
        stopping: None,
        ready: Vec::with_capacity(EVENTS_PER_WAIT.get()),
    };
    poller.run()
}

impl<H: Handler> Poller<'_, H> {
    fn run(&mut self) -> std::io::Result<Instant> {
        let mut events = Events::new(EVENTS_PER_WAIT);
        loop {
            let timeout = self.timeout();
            self.parts.waiting.wait(&mut events, timeout)?;
            self.take_reported(&events);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKE => {
                        self.parts.waiting.clear_wake();
                        self.parts.queue.forward_canary();
                    }
                    _ => {}
                }
            }
            self.dispatch();
            let now = Instant::now();
            if self.parts.waiting.sweep_due(now) && now >= self.last_sweep + SWEEP_INTERVAL {
                self.sweep(now);
            }
            if self.stopping.is_none() && self.parts.shutting_down.load(Ordering::SeqCst) {
                self.begin_shutdown(now);
            }
            if let Some(give_up) = self.stopping {
                let open = self.parts.stats.open_connections.load(Ordering::SeqCst);
                if open == 0 || now >= give_up {
                    return Ok(give_up);
                }
            }
        }
    }

    /// Takes the connections `events` reports out of the table: those past
    /// their deadline are ended, those whose client hung up between
    /// requests closed, the others kept for [`Poller::dispatch`].
    fn take_reported(&mut self, events: &Events) {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut late = Vec::new();
        let ready = &mut self.ready;
        self.parts.waiting.take_reported(events, |conn, flags| {
            if conn.deadline <= now {
                // Past its deadline however busy the peer keeps it.
                late.push(conn);
            } else if flags & GONE != 0 && conn.between_requests() && !conn.has_unread_bytes() {
                // A client that hung up between requests is closed
                // here: no worker has anything to do for it.
                gone.push(conn);
            } else {
                ready.push(conn);
            }
        });
        drop(gone);
        self.expire_all(late);
    }

    /// How long `epoll_wait` may sleep: until the next sweep, or for ever.
    fn timeout(&self) -> Option<Duration> {
        let wait = self.parts.waiting.planned_sweep().map(|at| {
            at.max(self.last_sweep + SWEEP_INTERVAL)
                .saturating_duration_since(Instant::now())
        });
        match (wait, self.stopping) {
            (Some(wait), Some(_)) => Some(wait.min(SHUTDOWN_POLL)),
            (None, Some(_)) => Some(SHUTDOWN_POLL),
            (wait, None) => wait,
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
                    self.parts.waiting.park(conn, false);
                }
            } else {
                i += 1;
            }
        }
        if self.ready.is_empty() {
            return;
        }
        self.parts.queue.push_ready(&mut self.ready);
        for mut conn in self.ready.drain(..) {
            self.parts
                .stats
                .rejected_overloaded
                .fetch_add(1, Ordering::Relaxed);
            log::debug!("connection turned away: all workers busy and the queue full");
            if conn.refuse() {
                self.parts.waiting.park(conn, false);
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
                        .is_none_or(|t| now - t > ACCEPT_ERROR_LOG_INTERVAL)
                    {
                        log::warn!("accept failed: {e}; retrying");
                        self.last_accept_error_log = Some(now);
                    }
                    let _ = self.parts.waiting.listen(listener, false);
                    self.accept_paused_until = Some(now + ACCEPT_ERROR_PAUSE);
                    self.parts.waiting.plan_sweep(now + ACCEPT_ERROR_PAUSE);
                    return;
                }
            }
        }
    }

    /// Applies the caps to a new connection and starts waiting for it.
    fn admit(&mut self, stream: TcpStream, peer: IpAddr) {
        let tls = self.parts.tls;
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        // Every answer is written whole, as soon as it is ready: nothing
        // gains from Nagle's algorithm holding a small one back until the
        // client ACKs what went before — which a client delaying its ACK
        // makes ~40 ms. Without it the connection still works, so a
        // failure here is no reason to drop it.
        let _ = stream.set_nodelay(true);
        match self.parts.admission.admit(peer) {
            Ok(slot) => {
                let conn = Box::new(Conn::new(stream, peer, tls, slot, Instant::now()));
                self.parts.waiting.park(conn, true);
            }
            Err(cap) => {
                let stats = self.parts.stats;
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
                admission::turn_away(stream, tls.is_some());
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
                    let _ = self.parts.waiting.listen(listener, true);
                }
            } else {
                next = Some(until);
            }
        }
        let expired = self.parts.waiting.take_expired(now, next);
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
            if conn.expire(self.parts.handler) {
                self.parts.waiting.park(conn, false);
            }
        }
    }

    /// Stops accepting and closes every connection between requests that
    /// has sent nothing more; the others finish their request (answered
    /// with `Connection: close`).
    fn begin_shutdown(&mut self, now: Instant) {
        self.stopping = Some(now + self.parts.settings.request_time_limit + SHUTDOWN_GRACE);
        if let Some(listener) = self.listener.take() {
            // Closed here, by the thread that owns it: no other thread ever
            // uses its descriptor number.
            let _ = self.parts.waiting.remove_listener(&listener);
        }
        let closed = self
            .parts
            .waiting
            .take_if(|conn| conn.between_requests() && !conn.has_unread_bytes());
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
