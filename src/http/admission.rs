//! Who may open a connection: at most `max_connections` in all, at most
//! `max_connections_per_client` from one client — an IPv4 address or an
//! IPv6 network of `client_ipv6_prefix` bits ([`ClientKey`]); trusted
//! proxies are exempt. A [`ClientSlot`] is one counted connection; it gives
//! its counts back when dropped, wherever the connection ends.
//!
//! A connection over a cap is turned away at once: plain HTTP is told
//! 503 with `Retry-After`, a TLS port closes without a word.
//!
//! When `MAX_CONNECTIONS` is not set, the cap is the smaller of what the
//! open-files limit leaves and what fits in the process's memory limit
//! when it has one, each connection counted at the most a peer can make
//! it cost ([`CONNECTION_BYTES_PLAIN`], [`CONNECTION_BYTES_TLS`]) and room
//! kept for the workers; the descriptor table is grown for all of them
//! once, at start. What the kernel may buffer for one connection is capped
//! too (its socket buffers), since a memory limit counts that as well.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::Error;
use super::limits::{MAX_UNSENT_BYTES, SOCKET_BUFFER_BYTES};
use super::net::{ClientKey, IpNet, any_contains};
use super::response::write_response;
use super::settings::Settings;
use super::stats::Stats;
use super::transport::{DISCARD_CHUNK_BYTES, read_some, write_some};

/// Descriptors kept free for what is not a client connection: the
/// listener, epoll, upstream connections (one per worker at most), files.
pub(crate) const RESERVED_FDS: usize = 64;
/// Descriptors the table is grown to hold at start, at most (the kernel
/// keeps 8 bytes for each: 512 KiB here).
const DESCRIPTORS_RESERVED_MAX: usize = 65_536;
/// The open-files limit assumed when it is not known.
const OPEN_FILES_LIMIT_UNKNOWN: usize = 1024;
/// The most memory one plain-HTTP connection can be made to cost, as its
/// cgroup counts it: the process's memory (24 kB at most, 17 kB measured),
/// the kernel's objects for the socket, and its socket buffers full
/// ([`SOCKET_BUFFER_BYTES`]). Measured with bench/worst_case_memory.py
/// (docs/performance.md, "Worst-case memory per connection").
pub(crate) const CONNECTION_BYTES_PLAIN: u64 = 40_000;
/// The same for a connection to an HTTPS port (40 kB of the process's
/// memory at most, 38 kB measured).
pub(crate) const CONNECTION_BYTES_TLS: u64 = 56_000;
/// Memory kept aside from connections under a memory limit: the program,
/// its start-up state and the allocator's slack (peak RSS under full load
/// was 7.5 MiB, docs/performance.md).
pub(crate) const MEMORY_RESERVE_BYTES: u64 = 8 << 20;
/// … and per worker: the stack pages it touched, its read and write
/// buffers, its pooled upstream connection (ureq's buffers and rustls
/// state) and an answer from the accounts service being read (64 KiB at
/// most).
pub(crate) const MEMORY_RESERVE_PER_WORKER_BYTES: u64 = 128 << 10;

/// What limits the process's resources, read at start by the program (the
/// layer reads no system file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessLimits {
    /// The open-files limit in force (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// The most memory the process may use, in bytes (its cgroup's limit).
    pub memory: Option<u64>,
}

/// `MAX_CONNECTIONS` when it is not set, and what set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DefaultCap {
    /// The connections allowed.
    pub(crate) connections: usize,
    /// What bounds them.
    pub(crate) bound: Bound,
}

/// What bounds the default `MAX_CONNECTIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// The open-files limit (the limit assumed when it is not known).
    OpenFiles(u64),
    /// The memory limit, with the bytes counted per connection.
    Memory {
        /// The limit, in bytes.
        limit: u64,
        /// The most one connection can cost.
        per_connection: u64,
    },
}

/// The most one connection can cost under a memory limit, as its cgroup
/// counts it.
pub(crate) fn connection_bytes(tls: bool) -> u64 {
    if tls {
        CONNECTION_BYTES_TLS
    } else {
        CONNECTION_BYTES_PLAIN
    }
}

/// How many connections fit in `memory` bytes beside `worker_threads`
/// workers, each at the most a peer can make it cost.
pub(crate) fn connections_in_memory(memory: u64, worker_threads: usize, tls: bool) -> usize {
    let workers = u64::try_from(worker_threads).unwrap_or(u64::MAX);
    let reserve = MEMORY_RESERVE_BYTES
        .saturating_add(workers.saturating_mul(MEMORY_RESERVE_PER_WORKER_BYTES));
    let fit = memory.saturating_sub(reserve) / connection_bytes(tls);
    usize::try_from(fit).unwrap_or(usize::MAX)
}

/// `MAX_CONNECTIONS` when it is not set: what the open-files limit leaves
/// after the workers' upstream connections and [`RESERVED_FDS`], or, if
/// fewer, what fits in the memory limit ([`connections_in_memory`]).
/// At least one.
pub(crate) fn default_max_connections(
    limits: ProcessLimits,
    worker_threads: usize,
    tls: bool,
) -> DefaultCap {
    let open_files = limits.open_files.unwrap_or(OPEN_FILES_LIMIT_UNKNOWN as u64);
    let by_files = usize::try_from(open_files)
        .unwrap_or(usize::MAX)
        .saturating_sub(worker_threads + RESERVED_FDS);
    let by_memory = limits
        .memory
        .map(|limit| (connections_in_memory(limit, worker_threads, tls), limit));
    let (connections, bound) = match by_memory {
        Some((fit, limit)) if fit < by_files => (
            fit,
            Bound::Memory {
                limit,
                per_connection: connection_bytes(tls),
            },
        ),
        _ => (by_files, Bound::OpenFiles(open_files)),
    };
    DefaultCap {
        connections: connections.max(1),
        bound,
    }
}

impl fmt::Display for DefaultCap {
    /// `1,234, from the memory limit of 64 MiB at 40,000 bytes a
    /// connection`, or `4,000, from the open-files limit of 4,096`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connections = Grouped(self.connections as u64);
        match self.bound {
            Bound::OpenFiles(limit) => write!(
                f,
                "{connections}, from the open-files limit of {}",
                Grouped(limit)
            ),
            Bound::Memory {
                limit,
                per_connection,
            } => write!(
                f,
                "{connections}, from the memory limit of {} MiB at {} bytes a connection",
                Grouped(limit >> 20),
                Grouped(per_connection)
            ),
        }
    }
}

/// A whole number with its thousands separated by commas.
struct Grouped(u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_str(",")?;
            }
            write!(f, "{digit}")?;
        }
        Ok(())
    }
}

/// Which cap turned a new connection away.
pub(crate) enum Cap {
    Total,
    PerClient,
}

/// The caps, and the connections counted against them.
pub(crate) struct Admission {
    max_connections: usize,
    max_per_client: usize,
    /// IPv6 bits that name one client.
    ipv6_prefix: u8,
    /// Trusted proxies: not counted per client.
    exempt: Vec<IpNet>,
    per_client: Mutex<HashMap<ClientKey, usize>>,
    stats: Arc<Stats>,
}

impl Admission {
    /// The caps `settings` name; `limits` size the total when
    /// `max_connections` is not set (`tls`: an HTTPS port). Says so in
    /// the log when the memory limit sets it, and warns when a set
    /// `max_connections` does not fit in the memory limit.
    pub(crate) fn new(
        settings: &Settings,
        limits: ProcessLimits,
        tls: bool,
        stats: Arc<Stats>,
    ) -> Admission {
        let workers = settings.worker_threads;
        let max_connections = match (settings.max_connections, limits.memory) {
            (Some(set), Some(memory)) => {
                let fit = connections_in_memory(memory, workers, tls);
                if set > fit {
                    log::warn!(
                        "MAX_CONNECTIONS={set} does not fit in the memory limit of {} MiB: \
                         at {} bytes a connection, {fit} do; past that, peers can get the \
                         process killed for want of memory",
                        memory >> 20,
                        connection_bytes(tls)
                    );
                }
                set
            }
            (Some(set), None) => set,
            (None, _) => {
                let cap = default_max_connections(limits, workers, tls);
                if matches!(cap.bound, Bound::Memory { .. }) {
                    log::info!("MAX_CONNECTIONS={cap}");
                }
                cap.connections
            }
        };
        Admission {
            max_connections,
            max_per_client: settings.max_connections_per_client,
            ipv6_prefix: settings.client_ipv6_prefix,
            exempt: settings.trusted_proxies.clone(),
            per_client: Mutex::new(HashMap::new()),
            stats,
        }
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<ClientKey, usize>> {
        // Plain counts; a panic elsewhere leaves them usable.
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `peer`, or says which cap it is over.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ClientSlot, Cap> {
        if self.stats.open_connections.load(Ordering::Relaxed) >= self.max_connections {
            return Err(Cap::Total);
        }
        // SECURITY: counted by network, not address: one IPv6 customer
        // holds a /64, and a cap per address would be no cap at all.
        let client =
            (!any_contains(&self.exempt, peer)).then(|| ClientKey::new(peer, self.ipv6_prefix));
        if let Some(client) = client {
            let mut counts = self.counts();
            let n = counts.entry(client).or_insert(0);
            if *n >= self.max_per_client {
                return Err(Cap::PerClient);
            }
            *n += 1;
        }
        self.stats.open_connections.fetch_add(1, Ordering::Relaxed);
        Ok(ClientSlot {
            admission: Arc::clone(self),
            client,
        })
    }

    /// Grows this process's table of descriptors to hold, now, every
    /// connection the server may keep, besides `workers` upstream
    /// connections and [`RESERVED_FDS`]. The kernel grows it when a new
    /// descriptor does not fit, doubling it; in a process with threads each
    /// growth waits for an RCU grace period, and the poller, stalled in
    /// `accept`, with it (about 10 ms each time, at 256, 512, …
    /// descriptors). Done before any thread starts, it costs no wait.
    pub(crate) fn reserve_descriptors(&self, any: &impl AsRawFd, workers: usize) {
        let count = self.max_connections + workers + RESERVED_FDS;
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
}

/// Caps what the kernel may buffer for each connection `listener` accepts
/// (they inherit the listener's options): small fixed socket buffers
/// ([`SOCKET_BUFFER_BYTES`]; by default the kernel grows a send buffer to
/// megabytes while the peer does not read), and room to write reported
/// only while less than [`MAX_UNSENT_BYTES`] waits unsent. A memory limit
/// counts socket buffers (cgroup v2) as the process's.
pub(crate) fn cap_socket_buffers(listener: &TcpListener) {
    let options = [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER_BYTES),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER_BYTES),
        (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, MAX_UNSENT_BYTES),
    ];
    for (level, option, bytes) in options {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads one c_int from `value`, which lives for
        // the call, on the descriptor of a socket we own. If it fails, the
        // kernel's defaults stay.
        unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                level,
                option,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// A counted connection; releases its counts when dropped.
pub(crate) struct ClientSlot {
    admission: Arc<Admission>,
    /// The client counted; `None` for a trusted proxy.
    client: Option<ClientKey>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.admission
            .stats
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(client) = self.client {
            let mut counts = self.admission.counts();
            if let Some(n) = counts.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&client);
                }
            }
        }
    }
}

/// Turns away a connection over a cap before it becomes a connection of
/// the server: plain HTTP gets 503 with `Retry-After`, a TLS port a close
/// with no word.
pub(crate) fn turn_away(mut stream: TcpStream, tls: bool) {
    if !tls {
        let _ = write_some(&mut stream, &overloaded_answer());
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Take in what already arrived, so the close is not a reset.
    let mut sink = [0u8; DISCARD_CHUNK_BYTES];
    let _ = read_some(&mut stream, &mut sink);
}

/// The 503 written to a connection there is no room for.
pub(crate) fn overloaded_answer() -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &Error::Overloaded.response(), 1, false, true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(max_connections: Option<usize>, per_client: usize) -> Settings {
        Settings {
            worker_threads: 4,
            max_connections,
            max_connections_per_client: per_client,
            client_ipv6_prefix: 64,
            trusted_proxies: vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            request_time_limit: Duration::from_secs(10),
        }
    }

    fn files(open_files: Option<u64>) -> usize {
        let limits = ProcessLimits {
            open_files,
            memory: None,
        };
        default_max_connections(limits, 4, false).connections
    }

    #[test]
    fn default_cap_leaves_room_for_workers_and_reserved_descriptors() {
        assert_eq!(files(Some(4096)), 4096 - 4 - 64);
        assert_eq!(files(None), 1024 - 4 - 64);
        assert_eq!(files(Some(10)), 1);
        assert_eq!(files(Some(u64::MAX)), usize::MAX - 68);
    }

    #[test]
    fn a_memory_limit_caps_the_default_at_what_fits() {
        let limits = ProcessLimits {
            open_files: Some(4096),
            memory: Some(64 << 20),
        };
        let reserve = MEMORY_RESERVE_BYTES + 32 * MEMORY_RESERVE_PER_WORKER_BYTES;
        for tls in [false, true] {
            let fit = ((64 << 20) - reserve) / connection_bytes(tls);
            let cap = default_max_connections(limits, 32, tls);
            assert_eq!(cap.connections as u64, fit);
            assert_eq!(
                cap.bound,
                Bound::Memory {
                    limit: 64 << 20,
                    per_connection: connection_bytes(tls)
                }
            );
        }
        // A roomy limit leaves the open-files limit in charge.
        let roomy = ProcessLimits {
            memory: Some(1 << 40),
            ..limits
        };
        assert_eq!(
            default_max_connections(roomy, 32, true),
            DefaultCap {
                connections: 4096 - 32 - 64,
                bound: Bound::OpenFiles(4096)
            }
        );
        // Less than the reserve: one connection, not none.
        let tiny = ProcessLimits {
            memory: Some(1 << 20),
            ..limits
        };
        assert_eq!(default_max_connections(tiny, 32, false).connections, 1);
    }

    #[test]
    fn the_default_cap_says_what_set_it() {
        let memory = DefaultCap {
            connections: 1234,
            bound: Bound::Memory {
                limit: 64 << 20,
                per_connection: 40_000,
            },
        };
        assert_eq!(
            memory.to_string(),
            "1,234, from the memory limit of 64 MiB at 40,000 bytes a connection"
        );
        let files = DefaultCap {
            connections: 4000,
            bound: Bound::OpenFiles(4096),
        };
        assert_eq!(
            files.to_string(),
            "4,000, from the open-files limit of 4,096"
        );
        assert_eq!(Grouped(1_000_000).to_string(), "1,000,000");
        assert_eq!(Grouped(999).to_string(), "999");
    }

    #[test]
    fn per_client_cap_counts_each_address_and_frees_on_drop() {
        let stats = Arc::new(Stats::default());
        let admission = Arc::new(Admission::new(
            &settings(Some(10), 2),
            ProcessLimits::default(),
            false,
            Arc::clone(&stats),
        ));
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let first = admission.admit(client).ok().unwrap();
        let _second = admission.admit(client).ok().unwrap();
        assert!(matches!(admission.admit(client), Err(Cap::PerClient)));
        // Trusted proxies are not counted per client.
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let _proxied: Vec<ClientSlot> = (0..3)
            .map(|_| admission.admit(proxy).ok().unwrap())
            .collect();
        assert_eq!(stats.open_connections.load(Ordering::Relaxed), 5);
        drop(first);
        assert!(admission.admit(client).is_ok());
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client_and_its_slots_come_back() {
        let stats = Arc::new(Stats::default());
        let admission = Arc::new(Admission::new(
            &settings(Some(100), 2),
            ProcessLimits::default(),
            false,
            stats,
        ));
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let first = admission.admit(ip("2001:db8:1:2::1")).ok().unwrap();
        let _second = admission.admit(ip("2001:db8:1:2::2")).ok().unwrap();
        assert!(matches!(
            admission.admit(ip("2001:db8:1:2:ffff::3")),
            Err(Cap::PerClient)
        ));
        // The next /64 is another client.
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
        // A slot given back by one address of the /64 serves another.
        drop(first);
        assert!(admission.admit(ip("2001:db8:1:2::4")).is_ok());
    }

    #[test]
    fn every_peer_in_a_trusted_range_is_exempt() {
        let stats = Arc::new(Stats::default());
        let admission = Arc::new(Admission::new(
            &settings(Some(100), 1),
            ProcessLimits::default(),
            false,
            stats,
        ));
        let proxy: IpAddr = "10.20.30.40".parse().unwrap();
        let _held: Vec<ClientSlot> = (0..5)
            .map(|_| admission.admit(proxy).ok().unwrap())
            .collect();
        let outside: IpAddr = "11.0.0.1".parse().unwrap();
        let _one = admission.admit(outside).ok().unwrap();
        assert!(matches!(admission.admit(outside), Err(Cap::PerClient)));
    }

    #[test]
    fn total_cap_holds_for_every_client() {
        let stats = Arc::new(Stats::default());
        let limits = ProcessLimits::default();
        let admission = Arc::new(Admission::new(&settings(Some(1), 8), limits, false, stats));
        let _only = admission.admit("192.0.2.1".parse().unwrap()).ok().unwrap();
        assert!(matches!(
            admission.admit("192.0.2.2".parse().unwrap()),
            Err(Cap::Total)
        ));
    }

    #[test]
    fn overload_answer_is_the_fixed_503() {
        assert_eq!(
            String::from_utf8(overloaded_answer()).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
             Content-Length: 97\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
             {\"error\":\"temporarily_unavailable\",\"error_description\":\"the server is overloaded; retry shortly\"}"
        );
    }
}
