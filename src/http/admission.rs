//! Who may open a connection: at most `max_connections` in all, at most
//! `max_connections_per_client` from one client — an IPv4 address or an
//! IPv6 network of `client_ipv6_prefix` bits ([`ClientKey`]); trusted
//! proxies are exempt. A [`ClientSlot`] is one counted connection; it gives
//! its counts back when dropped, wherever the connection ends.
//!
//! A connection over a cap is turned away at once: plain HTTP is told
//! 503 with `Retry-After`, a TLS port closes without a word.
//!
//! When `MAX_CONNECTIONS` is not set, the cap is what the open-files limit
//! leaves; the descriptor table is grown for all of them once, at start.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::Error;
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

/// `MAX_CONNECTIONS` when it is not set: what the open-files limit leaves
/// after the workers' upstream connections and [`RESERVED_FDS`].
pub(crate) fn default_max_connections(
    open_files_limit: Option<u64>,
    worker_threads: usize,
) -> usize {
    let limit = open_files_limit.map_or(OPEN_FILES_LIMIT_UNKNOWN, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    limit.saturating_sub(worker_threads + RESERVED_FDS).max(1)
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
    /// The caps `settings` name; `open_files_limit` sizes the total when
    /// `max_connections` is not set.
    pub(crate) fn new(
        settings: &Settings,
        open_files_limit: Option<u64>,
        stats: Arc<Stats>,
    ) -> Admission {
        Admission {
            max_connections: settings.max_connections.unwrap_or_else(|| {
                default_max_connections(open_files_limit, settings.worker_threads)
            }),
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

    #[test]
    fn default_cap_leaves_room_for_workers_and_reserved_descriptors() {
        assert_eq!(default_max_connections(Some(4096), 4), 4096 - 4 - 64);
        assert_eq!(default_max_connections(None, 4), 1024 - 4 - 64);
        assert_eq!(default_max_connections(Some(10), 4), 1);
        assert_eq!(default_max_connections(Some(u64::MAX), 4), usize::MAX - 68);
    }

    #[test]
    fn per_client_cap_counts_each_address_and_frees_on_drop() {
        let stats = Arc::new(Stats::default());
        let admission = Arc::new(Admission::new(
            &settings(Some(10), 2),
            None,
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
        let admission = Arc::new(Admission::new(&settings(Some(100), 2), None, stats));
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
        let admission = Arc::new(Admission::new(&settings(Some(100), 1), None, stats));
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
        let admission = Arc::new(Admission::new(&settings(Some(1), 8), None, stats));
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
