//! Listener, bounded queue and fixed worker pool.
//!
//! One accept thread takes connections, applies the per-client connection
//! cap and pushes them onto a bounded queue; `worker_threads` workers take
//! them off one at a time. No thread is ever created per connection. When
//! the queue is full the connection is answered 503 at once and closed.
//!
//! Shutdown: the listener is shut down (which wakes the blocked `accept`),
//! workers finish the request in hand, answer anything still queued with
//! `Connection: close`, and exit; [`Server::run`] waits for them, bounded.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::conn::{self, Buffers, Context};
use super::{Handler, Response};
use crate::error::Error;

/// Connections that may wait for a worker; beyond this they get 503.
pub const QUEUE_CAPACITY: usize = 1024;
/// How long shutdown waits for workers to finish, beyond the time a request
/// may legitimately take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Stack of a worker thread: requests are shallow, but ureq/rustls and
/// serde_json need some room; 256 KiB keeps many workers cheap.
const WORKER_STACK_BYTES: usize = 256 * 1024;
/// Pause after an `accept` error (e.g. out of file descriptors), so the
/// accept loop neither spins nor dies.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Connections the kernel holds until the accept thread takes them: as many
/// as our own queue (the kernel caps it at `net.core.somaxconn`). std listens
/// with 128; a burst larger than that, arriving while the accept thread waits
/// for a CPU, was dropped at SYN, and those clients retried only after 1 s,
/// 3 s, … instead of being queued or answered 503.
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub worker_threads: usize,
    pub max_connections_per_client: usize,
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
    pub open_connections: AtomicUsize,
    pub busy_workers: AtomicUsize,
    pub rejected_overloaded: AtomicU64,
    pub rejected_per_client_cap: AtomicU64,
}

struct Job {
    stream: TcpStream,
    peer: IpAddr,
    /// When it was accepted (its silence counts from then).
    accepted: Instant,
    _slot: ClientSlot,
}

/// A counted connection of one client; releases its count when dropped.
struct ClientSlot {
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

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    available: Condvar,
    queued: AtomicUsize,
    shutting_down: AtomicBool,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    workers_alive: Mutex<usize>,
    worker_exited: Condvar,
    settings: ServerSettings,
    stats: Arc<Stats>,
    listener_fd: i32,
}

impl Context for Shared {
    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    fn others_waiting(&self) -> bool {
        // Waiting means more queued connections than idle workers to take
        // them. Right after the accept thread queues a connection the queue
        // is non-empty for a moment while an idle worker wakes up; counting
        // that as pressure closed kept-alive connections at random whenever
        // two clients connected close together, with workers to spare.
        let queued = self.queued.load(Ordering::Relaxed);
        if queued == 0 {
            return false;
        }
        let alive = *lock(&self.workers_alive);
        let busy = self.stats.busy_workers.load(Ordering::Relaxed);
        queued > alive.saturating_sub(busy)
    }

    fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        client_address(&self.settings.trusted_proxies, peer, forwarded_for)
    }
}

/// The right-most `X-Forwarded-For` entry that is not a trusted proxy, when
/// the peer is a trusted proxy; otherwise the peer.
pub fn client_address(trusted: &[IpAddr], peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    for entry in list.rsplit(',') {
        match parse_forwarded_ip(entry.trim()) {
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return ip,
            // SECURITY: an entry we cannot parse may be forged; stop at it
            // and attribute the request to the last address we trust.
            None => return peer,
        }
    }
    peer
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // `1.2.3.4:5678` and `[::1]:5678` forms.
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind,
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
    /// Stops accepting and lets the workers drain. Returns at once.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: `listener_fd` is the descriptor of the listener that
        // `Server::run` owns for as long as the accept loop runs, and
        // shutdown(2) neither closes nor frees it; on Linux it wakes a
        // thread blocked in accept(2) on that socket, which then sees the
        // flag and returns. If the listener is already gone the call fails
        // harmlessly with EBADF/ENOTSOCK.
        unsafe {
            libc::shutdown(self.shared.listener_fd, libc::SHUT_RDWR);
        }
        let _queue = lock(&self.shared.queue);
        self.shared.available.notify_all();
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Relaxed)
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
    ) -> Server<H> {
        let listener_fd = listener.as_raw_fd();
        // SAFETY: listen(2) on the descriptor of the listener we own (bound
        // and already listening, or passed by systemd); on a listening
        // socket it only changes the backlog. If it fails, the old backlog
        // stays, which is harmless.
        unsafe {
            libc::listen(listener_fd, LISTEN_BACKLOG);
        }
        Server {
            listener,
            handler,
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::with_capacity(64)),
                available: Condvar::new(),
                queued: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                per_client: Mutex::new(HashMap::new()),
                workers_alive: Mutex::new(0),
                worker_exited: Condvar::new(),
                settings,
                stats,
                listener_fd,
            }),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The request handler this server runs.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs the accept loop on this thread and the workers on their own,
    /// until shut down; then waits (bounded) for the workers to finish.
    /// Returns whether every worker finished in time.
    pub fn run(self) -> bool {
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
        self.accept_loop();
        drop(self.listener);
        let mut alive = lock(&shared.workers_alive);
        let deadline = Instant::now() + shared.settings.request_time_limit + SHUTDOWN_GRACE;
        while *alive > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("shutdown: {} worker(s) still busy; exiting anyway", *alive);
                return false;
            }
            alive = shared
                .worker_exited
                .wait_timeout(alive, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    fn accept_loop(&self) {
        let shared = &self.shared;
        let mut last_error_log: Option<Instant> = None;
        while !shared.shutting_down.load(Ordering::SeqCst) {
            let (stream, addr) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) => {
                    if shared.shutting_down.load(Ordering::SeqCst) {
                        break;
                    }
                    // EMFILE/ENFILE/ENOBUFS and friends: the listener is
                    // fine, we are out of resources. Pause, then go on.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        log::warn!("accept failed: {e}; retrying");
                        last_error_log = Some(Instant::now());
                    }
                    std::thread::sleep(ACCEPT_ERROR_PAUSE);
                    continue;
                }
            };
            let peer = addr.ip().to_canonical();
            self.admit(stream, peer);
        }
    }

    /// Applies the per-client cap and queues the connection, or answers 503.
    fn admit(&self, stream: TcpStream, peer: IpAddr) {
        let shared = &self.shared;
        let counted = !shared.settings.trusted_proxies.contains(&peer);
        if counted {
            let mut counts = lock(&shared.per_client);
            let n = counts.entry(peer).or_insert(0);
            if *n >= shared.settings.max_connections_per_client {
                drop(counts);
                // SECURITY: one address must not occupy every worker; close
                // at once, without reading or answering.
                shared
                    .stats
                    .rejected_per_client_cap
                    .fetch_add(1, Ordering::Relaxed);
                log::debug!("connection from {peer} closed: per-client connection cap");
                return;
            }
            *n += 1;
        }
        shared
            .stats
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        let slot = ClientSlot {
            shared: Arc::clone(shared),
            peer: counted.then_some(peer),
        };
        let mut queue = lock(&shared.queue);
        if queue.len() >= QUEUE_CAPACITY {
            drop(queue);
            shared
                .stats
                .rejected_overloaded
                .fetch_add(1, Ordering::Relaxed);
            reject_overloaded(stream);
            drop(slot);
            return;
        }
        queue.push_back(Job {
            stream,
            peer,
            accepted: Instant::now(),
            _slot: slot,
        });
        shared.queued.store(queue.len(), Ordering::Relaxed);
        drop(queue);
        shared.available.notify_one();
    }
}

/// Answers 503 on the accept thread without ever blocking it.
fn reject_overloaded(mut stream: TcpStream) {
    let response = Response::error(&Error::Overloaded);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        response.body.len()
    );
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&response.body);
    log::debug!("connection closed with 503: all workers busy and the queue full");
}

fn worker<H: Handler>(shared: &Arc<Shared>, handler: &H) {
    let mut buffers = Buffers::default();
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.pop_front() {
                    shared.queued.store(queue.len(), Ordering::Relaxed);
                    break Some(job);
                }
                if shared.shutting_down.load(Ordering::SeqCst) {
                    break None;
                }
                queue = shared
                    .available
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(job) = job else { break };
        shared.stats.busy_workers.fetch_add(1, Ordering::Relaxed);
        let served = serve_job(shared, handler, job, &mut buffers);
        if served.is_err() {
            log::error!("connection handling panicked; connection dropped");
            buffers = Buffers::default();
        }
        shared.stats.busy_workers.fetch_sub(1, Ordering::Relaxed);
    }
    let mut alive = lock(&shared.workers_alive);
    *alive -= 1;
    shared.worker_exited.notify_all();
}

/// Serves one connection. Out of line so that an idle worker's stack frame
/// stays small: stack probes touch every page of a frame on entry, and
/// with the whole request path inlined into the worker loop each idle
/// worker held about 10 KiB more resident stack.
#[inline(never)]
fn serve_job<H: Handler>(
    shared: &Arc<Shared>,
    handler: &H,
    job: Job,
    buffers: &mut Buffers,
) -> std::thread::Result<()> {
    // A panic in the HTTP layer itself ends this connection, not the
    // worker (handler panics are caught closer, and answered 500).
    catch_unwind(AssertUnwindSafe(|| {
        match &shared.settings.tls {
            None => conn::serve(
                job.stream,
                job.peer,
                handler,
                &**shared,
                buffers,
                job.accepted,
            ),
            Some(config) => {
                // The handshake counts against the connection's time:
                // a stalled one is dropped after HANDSHAKE_TIMEOUT.
                if let Ok(stream) = crate::tls::accept(job.stream, config, &**shared, job.accepted)
                {
                    // Silence counts from the end of the handshake: the
                    // request of a TLS 1.2 client follows a round trip
                    // later.
                    let handshaken = Instant::now();
                    conn::serve(stream, job.peer, handler, &**shared, buffers, handshaken);
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = [ip("127.0.0.1")];
        assert_eq!(
            client_address(&trusted, ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxy_names_the_rightmost_untrusted_entry() {
        let trusted = [ip("127.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            client_address(
                &trusted,
                ip("127.0.0.1"),
                Some("6.6.6.6, 198.51.100.7, 10.0.0.2")
            ),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn unparsable_forwarded_entry_stops_the_walk() {
        let trusted = [ip("127.0.0.1")];
        assert_eq!(
            client_address(&trusted, ip("127.0.0.1"), Some("6.6.6.6, garbage")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_entries_with_ports_are_understood() {
        let trusted = [ip("127.0.0.1")];
        assert_eq!(
            client_address(&trusted, ip("127.0.0.1"), Some("[2001:db8::1]:443")),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(&trusted, ip("127.0.0.1"), Some("192.0.2.1:5000")),
            ip("192.0.2.1")
        );
    }
}
