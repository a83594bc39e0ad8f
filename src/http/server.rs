//! The top of the layer: a [`Server`] around a bound listener, its fixed
//! pool of workers, shutdown, and the progress check the systemd watchdog
//! relies on.
//!
//! The poller ([`super::poll`]) holds every connection that waits for
//! bytes and queues the ones that became ready; `worker_threads` workers
//! take them off the queue, give each one turn ([`Conn::turn`]), and park
//! it back among the waiting ones (or close it). A connection whose slow
//! request found no slot goes to the backlog ([`super::slots`]); a worker
//! that frees a slot hands it to the oldest there and queues that one
//! first. No thread is ever created per connection, and no worker ever
//! waits for a client or a slot.
//!
//! Shutdown: the poller stops accepting, closes the listener and every
//! connection between requests; requests in hand finish and are answered
//! with `Connection: close`; [`Server::run`] then waits for the workers,
//! bounded.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::admission::{self, Admission, ProcessLimits};
use super::answer::Context;
use super::buffers::Buffers;
use super::conn::{Conn, Next};
use super::handler::Handler;
use super::limits::LISTEN_BACKLOG;
use super::poll::{self, Parts};
use super::queue::{Job, Queue};
use super::settings::Settings;
use super::slots::{Slots, slow_slots};
use super::stats::Stats;
use super::waiting::Waiting;

/// How long shutdown waits for workers once the poller is done, at least.
const WORKER_JOIN_MIN: Duration = Duration::from_secs(1);
/// Stack of a worker thread: requests are shallow, but ureq/rustls and
/// serde_json need some room; 256 KiB keeps many workers cheap.
const WORKER_STACK_BYTES: usize = 256 * 1024;

/// What the poller, the workers and the handles share.
struct Shared {
    settings: Settings,
    tls: Option<Arc<ServerConfig>>,
    stats: Arc<Stats>,
    admission: Arc<Admission>,
    waiting: Waiting,
    queue: Queue,
    /// Slots for slow requests, and the connections waiting for one.
    slots: Slots<Box<Conn>>,
    shutting_down: AtomicBool,
    workers_alive: Mutex<usize>,
    worker_exited: Condvar,
}

impl Shared {
    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock leaves a plain count behind, still
    // usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops a running [`Server`] from another thread (a signal handler thread,
/// a test).
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Stops accepting and lets the workers drain. Returns at once; the
    /// poller, which owns the listener, closes it.
    pub fn shutdown(&self) {
        if !self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            self.shared.waiting.wake();
        }
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down()
    }
}

/// Tells whether the poller and the workers still make progress: each
/// probe sends a canary through the poller and the queue to a worker.
pub(crate) struct ProgressProbe {
    shared: Arc<Shared>,
    done: Arc<AtomicU64>,
    sent: u64,
}

impl ProgressProbe {
    /// Whether every canary sent so far has come through; then sends the
    /// next one.
    pub(crate) fn check(&mut self) -> bool {
        let through = self.done.load(Ordering::SeqCst) >= self.sent;
        if through {
            self.sent += 1;
            self.shared.queue.hand_canary(Arc::clone(&self.done));
            self.shared.waiting.wake();
        }
        through
    }
}

/// A bound server, ready to run.
pub struct Server<H: Handler> {
    listener: TcpListener,
    handler: Arc<H>,
    shared: Arc<Shared>,
}

impl<H: Handler> Server<H> {
    /// Wraps a bound listener. `tls`: serve HTTPS with this configuration
    /// (else plain HTTP); `limits` size `max_connections` when the
    /// settings leave it unset.
    pub fn new(
        listener: TcpListener,
        handler: Arc<H>,
        settings: Settings,
        tls: Option<Arc<ServerConfig>>,
        limits: ProcessLimits,
        stats: Arc<Stats>,
    ) -> std::io::Result<Server<H>> {
        // SAFETY: listen(2) on the descriptor of the listener we own (bound
        // and already listening, or passed by systemd); on a listening
        // socket it only changes the backlog. If it fails, the old backlog
        // stays, which is harmless.
        unsafe {
            libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG);
        }
        listener.set_nonblocking(true)?;
        admission::cap_socket_buffers(&listener);
        let admission = Admission::new(&settings, limits, tls.is_some(), Arc::clone(&stats));
        admission.reserve_descriptors(&listener, settings.worker_threads);
        let slots = Slots::new(slow_slots(settings.worker_threads));
        let shared = Shared {
            settings,
            tls,
            stats,
            admission: Arc::new(admission),
            waiting: Waiting::new()?,
            queue: Queue::new(),
            slots,
            shutting_down: AtomicBool::new(false),
            workers_alive: Mutex::new(0),
            worker_exited: Condvar::new(),
        };
        Ok(Server {
            listener,
            handler,
            shared: Arc::new(shared),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The request handler this server runs.
    pub(crate) fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A probe of the pool's progress, for the watchdog.
    pub(crate) fn progress_probe(&self) -> ProgressProbe {
        ProgressProbe {
            shared: Arc::clone(&self.shared),
            done: Arc::new(AtomicU64::new(0)),
            sent: 0,
        }
    }

    /// Runs the poller on this thread and the workers on their own, until
    /// shut down; then waits (bounded) for the workers to finish. Returns
    /// whether every worker finished in time.
    pub fn run(self) -> std::io::Result<bool> {
        let shared = &self.shared;
        self.spawn_workers();
        let parts = Parts {
            handler: &*self.handler,
            settings: &shared.settings,
            tls: shared.tls.as_ref(),
            stats: &shared.stats,
            admission: &shared.admission,
            waiting: &shared.waiting,
            queue: &shared.queue,
            shutting_down: &shared.shutting_down,
        };
        let polled = poll::run(self.listener, parts);
        shared.queue.close();
        // One bound for the whole shutdown, counted from its start.
        let deadline = polled?.max(Instant::now() + WORKER_JOIN_MIN);
        let mut alive = lock(&shared.workers_alive);
        while *alive > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("shutdown: {} worker(s) still busy; exiting anyway", *alive);
                return Ok(false);
            }
            alive = shared
                .worker_exited
                .wait_timeout(alive, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(true)
    }

    /// Starts `worker_threads` workers; one that cannot start is logged
    /// and not waited for.
    fn spawn_workers(&self) {
        let shared = &self.shared;
        let workers = shared.settings.worker_threads;
        *lock(&shared.workers_alive) = workers;
        for index in 0..workers {
            let for_worker = Arc::clone(shared);
            let handler = Arc::clone(&self.handler);
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || worker(&for_worker, &*handler));
            if spawned.is_err() {
                log::error!("could not start worker thread {index}");
                *lock(&shared.workers_alive) -= 1;
            }
        }
    }
}

fn worker<H: Handler>(shared: &Shared, handler: &H) {
    let mut buffers = Buffers::default();
    while let Some(job) = shared.queue.pop() {
        match job {
            Job::Canary(done) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Job::Serve(mut conn) => {
                shared.stats.busy_workers.fetch_add(1, Ordering::Relaxed);
                let next = serve_turn(shared, handler, &mut conn, &mut buffers);
                shared.stats.busy_workers.fetch_sub(1, Ordering::Relaxed);
                if conn.give_back_slot() {
                    if let Some(mut oldest) = shared.slots.release() {
                        oldest.grant();
                        shared.queue.push_granted(oldest);
                    }
                }
                match next {
                    Ok(Next::Wait) if shared.shutting_down() && conn.between_requests() => {
                        drop(conn);
                    }
                    Ok(Next::Wait) => shared.waiting.park(conn, false),
                    // Unbounded: it is already counted among the open
                    // connections, and dropping it would lose a request.
                    Ok(Next::Ready) => shared.queue.push(Job::Serve(conn)),
                    Ok(Next::Backlog) => {
                        // A slot freed since the turn asked is taken for it.
                        if let Some(mut conn) = shared.slots.wait(conn) {
                            conn.grant();
                            shared.queue.push_granted(conn);
                        }
                    }
                    Ok(Next::Close) => drop(conn),
                    Err(_) => {
                        log::error!("connection handling panicked; connection dropped");
                        buffers = Buffers::default();
                    }
                }
            }
        }
    }
    let mut alive = lock(&shared.workers_alive);
    *alive -= 1;
    shared.worker_exited.notify_all();
}

/// One turn of one connection. Out of line so that an idle worker's stack
/// frame stays small: stack probes touch every page of a frame on entry.
#[inline(never)]
fn serve_turn<H: Handler>(
    shared: &Shared,
    handler: &H,
    conn: &mut Conn,
    buffers: &mut Buffers,
) -> std::thread::Result<Next> {
    let cx = Context {
        handler,
        settings: &shared.settings,
        shutting_down: shared.shutting_down(),
        slots: &shared.slots,
        stats: &shared.stats,
    };
    // A panic in the HTTP layer itself ends this connection, not the
    // worker (handler panics are caught closer, and answered 500).
    catch_unwind(AssertUnwindSafe(|| conn.turn(buffers, &cx)))
}
