//! Looking up the accounts host: one lookup at a time, answers cached,
//! failures remembered briefly.
//!
//! ureq resolves the host before it looks in its connection pool, and with
//! a timeout set its own resolver starts a thread per lookup. With DNS
//! down, that is a thread per token request, each blocked in
//! `getaddrinfo` for as long as the system resolver waits (the unit's
//! `TasksMax=` would run out first). Here:
//!
//! - an answer is reused for [`ANSWER_TTL`];
//! - at most one lookup runs at a time, on a thread of its own; every
//!   request that needs it waits for that one, no longer than its own
//!   deadline nor the lookup's (the upstream timeout of the request that
//!   started it) — past that, the lookup counts as failed;
//! - a failure is remembered for [`FAILURE_TTL`], so requests in that time
//!   fail at once without a lookup;
//! - IP-literal hosts are never looked up.
//!
//! Every failure is `HostNotFound` to ureq, which the client answers 502.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a looked-up answer is reused.
pub(crate) const ANSWER_TTL: Duration = Duration::from_secs(30);
/// How long a failed lookup is remembered: requests in that time are
/// answered 502 at once.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(1);
/// The longest a lookup is waited for when a call has no deadline.
const MAX_LOOKUP_WAIT: Duration = Duration::from_secs(300);
/// Most addresses handed to ureq (its own limit).
const MAX_ADDRS: usize = 16;

/// The function that looks up `host:port` (std's `getaddrinfo`; tests
/// substitute their own).
pub(crate) type Lookup = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The resolver the agent uses.
pub(crate) struct SingleFlightResolver {
    shared: Arc<Shared>,
    lookup: Arc<Lookup>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a lookup finishes.
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// The last finished lookup: its `host:port` and what it found.
    last: Option<(String, Outcome)>,
    /// The lookup running now.
    running: Option<Running>,
    /// Lookups started, for tests.
    started: u64,
}

enum Outcome {
    Found(Vec<SocketAddr>, Instant),
    Failed(Instant),
}

struct Running {
    key: String,
    /// Past this, the lookup counts as failed for everyone waiting.
    deadline: Instant,
    /// Whether its overrun has been logged.
    overdue_logged: bool,
}

impl std::fmt::Debug for SingleFlightResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlightResolver")
            .finish_non_exhaustive()
    }
}

impl Default for SingleFlightResolver {
    fn default() -> SingleFlightResolver {
        SingleFlightResolver::with_lookup(Arc::new(|host_port: &str| {
            host_port.to_socket_addrs().map(Iterator::collect)
        }))
    }
}

impl SingleFlightResolver {
    /// A resolver looking names up with `lookup`.
    pub(crate) fn with_lookup(lookup: Arc<Lookup>) -> SingleFlightResolver {
        SingleFlightResolver {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                done: Condvar::new(),
            }),
            lookup,
        }
    }

    /// How many lookups have been started.
    #[cfg(test)]
    fn lookups_started(&self) -> u64 {
        self.shared.lock().started
    }

    /// The addresses of `key` (`host:port`), waiting at most until
    /// `deadline`; `None` when the lookup failed, was failed within
    /// [`FAILURE_TTL`], or did not finish in time.
    pub(crate) fn addresses(&self, key: &str, deadline: Instant) -> Option<Vec<SocketAddr>> {
        let mut state = self.shared.lock();
        loop {
            let now = Instant::now();
            match &state.last {
                Some((k, Outcome::Found(addrs, at)))
                    if k == key && now.saturating_duration_since(*at) < ANSWER_TTL =>
                {
                    return Some(addrs.clone());
                }
                Some((k, Outcome::Failed(at)))
                    if k == key && now.saturating_duration_since(*at) < FAILURE_TTL =>
                {
                    return None;
                }
                _ => {}
            }
            let Some(running) = &mut state.running else {
                if !self.start(&mut state, key, deadline) {
                    return None;
                }
                continue;
            };
            if running.key != key {
                // Another host (never, with one token URL): not worth a
                // second thread; wait for the running lookup to finish.
            } else if now >= running.deadline {
                if !running.overdue_logged {
                    running.overdue_logged = true;
                    log::warn!(
                        "looking up {key}: no answer in time; answering 502 until one comes"
                    );
                }
                return None;
            }
            if now >= deadline {
                return None;
            }
            let until = if running.key == key {
                deadline.min(running.deadline)
            } else {
                deadline
            };
            state = self
                .shared
                .done
                .wait_timeout(state, until.saturating_duration_since(now))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Starts a lookup of `key` on a thread of its own; false if no thread
    /// could be started.
    fn start(&self, state: &mut MutexGuard<'_, State>, key: &str, deadline: Instant) -> bool {
        state.running = Some(Running {
            key: key.to_owned(),
            deadline,
            overdue_logged: false,
        });
        state.started += 1;
        let shared = Arc::clone(&self.shared);
        let lookup = Arc::clone(&self.lookup);
        let owned_key = key.to_owned();
        let spawned = std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || {
                let result = lookup(&owned_key);
                let now = Instant::now();
                let outcome = match result {
                    Ok(addrs) if !addrs.is_empty() => Outcome::Found(addrs, now),
                    Ok(_) => {
                        log::warn!("looking up {owned_key}: no address");
                        Outcome::Failed(now)
                    }
                    Err(e) => {
                        log::warn!("looking up {owned_key} failed: {e}");
                        Outcome::Failed(now)
                    }
                };
                let mut state = shared.lock();
                state.last = Some((owned_key, outcome));
                state.running = None;
                drop(state);
                shared.done.notify_all();
            });
        if let Err(e) = spawned {
            log::error!("looking up {key}: cannot start a thread: {e}");
            state.running = None;
            state.last = Some((key.to_owned(), Outcome::Failed(Instant::now())));
            return false;
        }
        true
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent between statements; carry on
        // after a panic elsewhere rather than fail every later lookup.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Resolver for SingleFlightResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let host = uri.host().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let mut out = self.empty();
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        let wait = if timeout.after.is_not_happening() {
            MAX_LOOKUP_WAIT
        } else {
            (*timeout.after).min(MAX_LOOKUP_WAIT)
        };
        let addrs = self
            .addresses(&format!("{host}:{port}"), Instant::now() + wait)
            .ok_or(ureq::Error::HostNotFound)?;
        for addr in config
            .ip_family()
            .keep_wanted(addrs.into_iter())
            .take(MAX_ADDRS)
        {
            out.push(addr);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const KEY: &str = "accounts.example:443";

    fn addr() -> SocketAddr {
        "192.0.2.1:443".parse().unwrap()
    }

    /// A resolver whose lookups take `delay` and then give `answer`,
    /// counting the calls.
    fn resolver(
        delay: Duration,
        answer: fn() -> io::Result<Vec<SocketAddr>>,
    ) -> (SingleFlightResolver, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&calls);
        let resolver = SingleFlightResolver::with_lookup(Arc::new(move |_: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            answer()
        }));
        (resolver, calls)
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// What `callers` threads asking at once, each with `ms` to wait, got.
    fn ask_at_once(
        resolver: &Arc<SingleFlightResolver>,
        callers: usize,
        ms: u64,
    ) -> Vec<Option<Vec<SocketAddr>>> {
        let threads: Vec<_> = (0..callers)
            .map(|_| {
                let resolver = Arc::clone(resolver);
                std::thread::spawn(move || resolver.addresses(KEY, soon(ms)))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn concurrent_callers_share_one_lookup() {
        let (resolver, calls) = resolver(Duration::from_millis(200), || Ok(vec![addr()]));
        let resolver = Arc::new(resolver);
        for answer in ask_at_once(&resolver, 8, 5000) {
            assert_eq!(answer, Some(vec![addr()]));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // And the answer is reused.
        assert_eq!(resolver.addresses(KEY, soon(0)), Some(vec![addr()]));
        assert_eq!(resolver.lookups_started(), 1);
    }

    #[test]
    fn a_failure_is_remembered_for_a_second() {
        let (resolver, calls) = resolver(Duration::ZERO, || Err(io::Error::other("no DNS")));
        for _ in 0..20 {
            assert_eq!(resolver.addresses(KEY, soon(1000)), None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        std::thread::sleep(FAILURE_TTL + Duration::from_millis(50));
        assert_eq!(resolver.addresses(KEY, soon(1000)), None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_lookup_that_never_answers_fails_callers_at_its_deadline_and_is_not_repeated() {
        // Blocks on a loopback UDP socket that nobody writes to: a name
        // server that never answers.
        let (resolver, calls) = resolver(Duration::ZERO, || {
            let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let mut buf = [0u8; 512];
            silent.recv(&mut buf)?;
            Err(io::Error::other(
                "unreachable: nothing sends to this socket",
            ))
        });
        let resolver = Arc::new(resolver);
        let started = Instant::now();
        assert_eq!(ask_at_once(&resolver, 4, 300), vec![None; 4]);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // The lookup is overdue: later callers fail at once, without
        // starting another.
        let again = Instant::now();
        assert_eq!(resolver.addresses(KEY, soon(5000)), None);
        assert!(again.elapsed() < Duration::from_millis(100));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn empty_answer_is_a_failure() {
        let (resolver, _) = resolver(Duration::ZERO, || Ok(Vec::new()));
        assert_eq!(resolver.addresses(KEY, soon(1000)), None);
    }
}
