//! The fixed worker pool, the bounded queue between the poller and the
//! workers, the connection caps, shutdown, and the progress check the
//! systemd watchdog relies on.
//!
//! The poller ([`super::poll`]) holds every connection that waits for
//! bytes and queues the ones that became ready; `worker_threads` workers
//! take them off the queue, give each one turn ([`Conn::turn`]), and park
//! it back among the waiting ones (or close it). No thread is ever created per
//! connection, and no worker ever waits for a client.
//!
//! Shutdown: the poller stops accepting, closes the listener and every
//! connection between requests; requests in hand finish and are answered
//! with `Connection: close`; [`Server::run`] then waits for the workers,
//! bounded.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::conn::{Buffers, Conn, Env, Next, Phase};
use super::poll::Waiting;
use super::{Handler, LISTEN_BACKLOG};

/// Ready connections that may wait for a worker; past this a connection
/// that becomes ready is turned away (503 on plain HTTP). Room for a burst
/// of a few thousand new clients at once.
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// How long shutdown waits for workers once the poller is done, at least.
const WORKER_JOIN_MIN: Duration = Duration::from_secs(1);
/// Stack of a worker thread: requests are shallow, but ureq/rustls and
/// serde_json need some room; 256 KiB keeps many workers cheap.
const WORKER_STACK_BYTES: usize = 256 * 1024;
/// Descriptors the table is grown to hold at start, at most (the kernel
/// keeps 8 bytes for each: 512 KiB here).
const DESCRIPTORS_RESERVED_MAX: usize = 65_536;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Size of the fixed pool of worker threads.
    pub worker_threads: usize,
    /// Open connections at most, all clients together.
    pub max_connections: usize,
    /// Open connections at most from one client address (trusted proxies
    /// are exempt).
    pub max_connections_per_client: usize,
    /// Peers exempt from the per-client cap, whose `X-Forwarded-For` names
    /// the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Longest a request may take once read (the upstream timeout); bounds
    /// the shutdown wait.
    pub request_time_limit: Duration,
    /// Serve HTTPS with this configuration (built-in TLS), or plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Live counters of the HTTP layer, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) open_connections: AtomicUsize,
    /// Workers serving a connection right now.
    pub busy_workers: AtomicUsize,
    pub(crate) rejected_overloaded: AtomicU64,
    pub(crate) rejected_per_client_cap: AtomicU64,
}

/// Work for a worker.
pub(crate) enum Job {
    /// A connection with something to do.
    Serve(Box<Conn>),
    /// The watchdog's probe: a worker bumps the counter.
    Canary(Arc<AtomicU64>),
}

/// Which cap turned a new connection away.
pub(crate) enum Cap {
    Total,
    PerClient,
}

/// A counted connection; releases its counts when dropped.
pub(crate) struct ClientSlot {
    shared: Arc<Shared>,
    peer: Option<IpAddr>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.shared
            .stats
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(peer) = self.peer {
            let mut counts = lock(&self.shared.per_client);
            if let Some(n) = counts.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&peer);
                }
            }
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Workers asleep, waiting for a job.
    idle: usize,
    closed: bool,
}

/// What the poller, the workers and the handles share.
pub(crate) struct Shared {
    pub(crate) settings: ServerSettings,
    pub(crate) stats: Arc<Stats>,
    shutting_down: AtomicBool,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    queue: Mutex<Queue>,
    available: Condvar,
    /// The connections that wait, and the epoll set they wait in.
    pub(crate) waiting: Waiting,
    /// The watchdog's canary, on its way to the poller.
    canary: Mutex<Option<Arc<AtomicU64>>>,
    workers_alive: Mutex<usize>,
    worker_exited: Condvar,
}

impl Shared {
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Counts a new connection from `peer`, or says which cap it is over.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ClientSlot, Cap> {
        if self.stats.open_connections.load(Ordering::Relaxed) >= self.settings.max_connections {
            return Err(Cap::Total);
        }
        let counted = !self.settings.trusted_proxies.contains(&peer);
        if counted {
            let mut counts = lock(&self.per_client);
            let n = counts.entry(peer).or_insert(0);
            if *n >= self.settings.max_connections_per_client {
                return Err(Cap::PerClient);
            }
            *n += 1;
        }
        self.stats.open_connections.fetch_add(1, Ordering::Relaxed);
        Ok(ClientSlot {
            shared: Arc::clone(self),
            peer: counted.then_some(peer),
        })
    }

    /// Queues ready connections for the workers. Those waiting for bytes
    /// find no room past [`QUEUE_CAPACITY`] and are left in `ready`; those
    /// finishing an answer always do.
    #[allow(
        clippy::vec_box,
        reason = "connections move between the table, this list and the queue as boxes, never copied"
    )]
    pub(crate) fn push_ready(&self, ready: &mut Vec<Box<Conn>>) {
        let mut queue = lock(&self.queue);
        let before = queue.jobs.len();
        let mut refused = Vec::new();
        for conn in ready.drain(..) {
            if queue.jobs.len() >= QUEUE_CAPACITY && conn.phase() != Phase::Writing {
                refused.push(conn);
            } else {
                queue.jobs.push_back(Job::Serve(conn));
            }
        }
        let wake = (queue.jobs.len() - before).min(queue.idle);
        drop(queue);
        *ready = refused;
        // Only workers that sleep need a wake-up; a busy one looks at the
        // queue before it sleeps.
        for _ in 0..wake {
            self.available.notify_one();
        }
    }

    fn push(&self, job: Job) {
        let mut queue = lock(&self.queue);
        queue.jobs.push_back(job);
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.available.notify_one();
        }
    }

    /// Next job; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue.idle += 1;
            queue = self
                .available
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
            queue.idle -= 1;
        }
    }

    fn close_queue(&self) {
        lock(&self.queue).closed = true;
        self.available.notify_all();
    }

    /// Takes the canary the watchdog sent, if any, and queues it.
    pub(crate) fn forward_canary(&self) {
        if let Some(done) = lock(&self.canary).take() {
            self.push(Job::Canary(done));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind,
    // still usable; carry on rather than poison every later request.
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
            *lock(&self.shared.canary) = Some(Arc::clone(&self.done));
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
    /// Wraps a bound listener.
    pub fn new(
        listener: TcpListener,
        handler: Arc<H>,
        settings: ServerSettings,
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
        reserve_descriptors(
            &listener,
            settings.max_connections + settings.worker_threads + crate::RESERVED_FDS,
        );
        Ok(Server {
            listener,
            handler,
            shared: Arc::new(Shared {
                settings,
                stats,
                shutting_down: AtomicBool::new(false),
                per_client: Mutex::new(HashMap::new()),
                queue: Mutex::new(Queue {
                    jobs: VecDeque::with_capacity(64),
                    idle: 0,
                    closed: false,
                }),
                available: Condvar::new(),
                waiting: Waiting::new()?,
                canary: Mutex::new(None),
                workers_alive: Mutex::new(0),
                worker_exited: Condvar::new(),
            }),
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
        let polled = super::poll::run(self.listener, shared, &*self.handler);
        shared.close_queue();
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
}

fn worker<H: Handler>(shared: &Arc<Shared>, handler: &H) {
    let mut buffers = Buffers::default();
    while let Some(job) = shared.pop() {
        match job {
            Job::Canary(done) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Job::Serve(mut conn) => {
                shared.stats.busy_workers.fetch_add(1, Ordering::Relaxed);
                let next = serve_turn(shared, handler, &mut conn, &mut buffers);
                shared.stats.busy_workers.fetch_sub(1, Ordering::Relaxed);
                match next {
                    Ok(Next::Wait) if shared.shutting_down() && conn.between_requests() => {
                        drop(conn);
                    }
                    Ok(Next::Wait) => shared.waiting.park(conn, false),
                    // Unbounded: it is already counted among the open
                    // connections, and dropping it would lose a request.
                    Ok(Next::Ready) => shared.push(Job::Serve(conn)),
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
    let env = Env {
        handler,
        shutting_down: shared.shutting_down(),
        trusted_proxies: &shared.settings.trusted_proxies,
    };
    // A panic in the HTTP layer itself ends this connection, not the
    // worker (handler panics are caught closer, and answered 500).
    catch_unwind(AssertUnwindSafe(|| conn.turn(buffers, &env)))
}

/// Grows this process's table of descriptors to hold `count` of them now.
/// The kernel grows it when a new descriptor does not fit, doubling it;
/// in a process with threads each growth waits for an RCU grace period,
/// and the poller, stalled in `accept`, with it (about 10 ms each time, at
/// 256, 512, … descriptors). Done here, before any thread starts, it
/// costs no wait.
fn reserve_descriptors(any: &impl AsRawFd, count: usize) {
    let Ok(highest) = libc::c_int::try_from(count.min(DESCRIPTORS_RESERVED_MAX) - 1) else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, the lowest free one
    // from `highest` up, so it touches none in use; it is closed at once.
    // Past the open-files limit it fails, and nothing changes.
    unsafe {
        let copy = libc::fcntl(any.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest);
        if copy >= 0 {
            libc::close(copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conn::client_address;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_address_walks_forwarded_for_from_the_right() {
        // (trusted proxies, peer, X-Forwarded-For, the client)
        let cases = [
            // An untrusted peer is the client, whatever it forwards.
            ("127.0.0.1", "203.0.113.9", "1.2.3.4", "203.0.113.9"),
            // A trusted proxy names the rightmost untrusted entry.
            (
                "127.0.0.1 10.0.0.2",
                "127.0.0.1",
                "6.6.6.6, 198.51.100.7, 10.0.0.2",
                "198.51.100.7",
            ),
            // An entry that does not parse stops the walk.
            ("127.0.0.1", "127.0.0.1", "6.6.6.6, garbage", "127.0.0.1"),
            // Entries with ports are understood.
            ("127.0.0.1", "127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
            ("127.0.0.1", "127.0.0.1", "192.0.2.1:5000", "192.0.2.1"),
        ];
        for (trusted, peer, forwarded, client) in cases {
            let trusted: Vec<IpAddr> = trusted.split(' ').map(ip).collect();
            assert_eq!(
                client_address(&trusted, ip(peer), Some(forwarded)),
                ip(client),
                "{forwarded:?} from {peer}"
            );
        }
    }
}
