//! Per-client rate limiting of the token endpoints (`RATE_LIMIT_PER_MINUTE`).
//!
//! A token bucket per client — an IPv4 address, or the IPv6 network of
//! `CLIENT_IPV6_PREFIX` bits an address is in ([`ClientKey`]): `rate`
//! tokens per minute, holding at most [`burst`] of them. A limited client
//! is reported once per [`WARN_WINDOW`] (the caller logs it), so a flood
//! costs one log line a minute, not one per request.
//!
//! Memory is bounded: at most [`MAX_TRACKED_CLIENTS`] clients are tracked.
//! When the table is full, a new client takes the place of the one seen
//! least recently — never a reset of every bucket, which would hand every
//! limited client a fresh burst at once. The table keeps its clients in the
//! order they were last seen, a list threaded through its slots, so a
//! check is one hash lookup and a few index writes however full it is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::ClientKey;

/// Most clients tracked at once.
pub(crate) const MAX_TRACKED_CLIENTS: usize = 65_536;
/// A limited client is reported at most once in this long.
pub(crate) const WARN_WINDOW: Duration = Duration::from_secs(60);
/// The smallest burst (see [`burst`]).
const MIN_BURST: u32 = 10;

/// Requests a client may make at once: 10 s worth of the rate, at least 10
/// (or the rate itself, when that is lower). 60 a minute allows 10 at
/// once, then one a second.
pub(crate) fn burst(per_minute: u32) -> u32 {
    (per_minute / 6).max(MIN_BURST.min(per_minute))
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// When this client was last reported as limited.
    warned: Option<Instant>,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    /// Seconds until the client may try again (at least 1).
    pub(crate) retry_after_secs: u64,
    /// The first refusal of this client in [`WARN_WINDOW`]: log it.
    pub(crate) warn: bool,
}

/// The limiter, shared by all workers.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_minute: u32,
    /// IPv6 bits that name one client.
    ipv6_prefix: u8,
    buckets: Mutex<Table>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per minute per client, an
    /// IPv6 client being a network of `ipv6_prefix` bits.
    pub(crate) fn new(per_minute: u32, ipv6_prefix: u8) -> RateLimiter {
        RateLimiter::tracking(per_minute, ipv6_prefix, MAX_TRACKED_CLIENTS)
    }

    fn tracking(per_minute: u32, ipv6_prefix: u8, clients: usize) -> RateLimiter {
        RateLimiter {
            per_minute,
            ipv6_prefix,
            buckets: Mutex::new(Table::new(clients)),
        }
    }

    /// Takes one token for the client at `address`, or says when to retry.
    pub(crate) fn check(&self, address: IpAddr) -> Result<(), Limited> {
        self.check_at(address, Instant::now())
    }

    /// Whether the client at `address` has a token left, without taking
    /// it: for limits that count only failures (device login's wrong
    /// codes), where a limited client must be refused before its attempt
    /// is judged, right or wrong.
    pub(crate) fn allows(&self, address: IpAddr) -> Result<(), Limited> {
        self.judge(address, Instant::now(), false)
    }

    fn check_at(&self, address: IpAddr, now: Instant) -> Result<(), Limited> {
        self.judge(address, now, true)
    }

    /// Refills the client's bucket to `now`; takes a token if `take`.
    fn judge(&self, address: IpAddr, now: Instant, take: bool) -> Result<(), Limited> {
        let capacity = f64::from(burst(self.per_minute));
        let per_sec = f64::from(self.per_minute) / 60.0;
        // SECURITY: by network, not address: one IPv6 customer holds a /64,
        // and a bucket per address would be no limit at all.
        let client = ClientKey::new(address, self.ipv6_prefix);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.seen(
            client,
            Bucket {
                tokens: capacity,
                updated: now,
                warned: None,
            },
        );
        let tokens = refill(bucket, now, per_sec, capacity);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = if take { tokens - 1.0 } else { tokens };
            Ok(())
        } else {
            bucket.tokens = tokens;
            let wait = ((1.0 - tokens) / per_sec).ceil();
            let warn = bucket
                .warned
                .is_none_or(|at| now.saturating_duration_since(at) >= WARN_WINDOW);
            if warn {
                bucket.warned = Some(now);
            }
            Err(Limited {
                retry_after_secs: (wait as u64).max(1),
                warn,
            })
        }
    }

    /// Number of clients currently tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.index.len()).unwrap_or(0)
    }
}

/// A slot's place in the order of last sight: none (an end of the list).
const NO_SLOT: u32 = u32::MAX;

/// The tracked clients: their buckets in slots, found by key, and listed
/// from the most to the least recently seen through the slots' links.
#[derive(Debug)]
struct Table {
    /// Most clients tracked at once.
    capacity: usize,
    index: HashMap<ClientKey, u32>,
    slots: Vec<Slot>,
    /// The most recently seen client's slot ([`NO_SLOT`] when empty).
    newest: u32,
    /// The least recently seen client's slot: the next to give way.
    oldest: u32,
}

#[derive(Debug)]
struct Slot {
    client: ClientKey,
    bucket: Bucket,
    /// The slot seen just after this one.
    newer: u32,
    /// The slot seen just before this one.
    older: u32,
}

impl Table {
    fn new(capacity: usize) -> Table {
        // Slots are numbered by u32, and `NO_SLOT` is none of them.
        let capacity = capacity.clamp(1, NO_SLOT as usize);
        Table {
            capacity,
            index: HashMap::new(),
            slots: Vec::new(),
            newest: NO_SLOT,
            oldest: NO_SLOT,
        }
    }

    /// The bucket of `client`, now the most recently seen. A client not
    /// tracked gets `fresh`, in a new slot or, when the table is full, in
    /// the slot of the least recently seen client, who is forgotten.
    fn seen(&mut self, client: ClientKey, fresh: Bucket) -> &mut Bucket {
        let slot = match self.index.get(&client) {
            Some(&slot) => {
                self.unlink(slot);
                slot
            }
            None => {
                let slot = self.make_room();
                let new = Slot {
                    client,
                    bucket: fresh,
                    newer: NO_SLOT,
                    older: NO_SLOT,
                };
                match self.slots.get_mut(slot as usize) {
                    Some(old) => *old = new,
                    None => self.slots.push(new),
                }
                self.index.insert(client, slot);
                slot
            }
        };
        self.link_newest(slot);
        &mut self.slots[slot as usize].bucket
    }

    /// A free slot: a new one while the table is not full, else the least
    /// recently seen client's, taken out of the list and the index.
    fn make_room(&mut self) -> u32 {
        if self.slots.len() < self.capacity {
            // Below `capacity`, which fits in u32.
            return self.slots.len() as u32;
        }
        let oldest = self.oldest;
        self.unlink(oldest);
        self.index.remove(&self.slots[oldest as usize].client);
        oldest
    }

    /// Takes `slot` out of the list.
    fn unlink(&mut self, slot: u32) {
        let Slot { newer, older, .. } = self.slots[slot as usize];
        match self.slots.get_mut(newer as usize) {
            Some(next) => next.older = older,
            None => self.newest = older,
        }
        match self.slots.get_mut(older as usize) {
            Some(previous) => previous.newer = newer,
            None => self.oldest = newer,
        }
    }

    /// Puts `slot` (not in the list) at its newest end.
    fn link_newest(&mut self, slot: u32) {
        let previous = self.newest;
        {
            let this = &mut self.slots[slot as usize];
            this.older = previous;
            this.newer = NO_SLOT;
        }
        match self.slots.get_mut(previous as usize) {
            Some(previous) => previous.newer = slot,
            None => self.oldest = slot,
        }
        self.newest = slot;
    }
}

fn refill(bucket: &Bucket, now: Instant, per_sec: f64, capacity: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_sec).min(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn allows_asks_without_taking() {
        let limiter = RateLimiter::new(1, 64);
        let t = Instant::now();
        assert!(limiter.judge(ip(1), t, false).is_ok());
        assert!(limiter.judge(ip(1), t, false).is_ok());
        assert!(limiter.check_at(ip(1), t).is_ok());
        assert!(limiter.judge(ip(1), t, false).is_err());
    }

    #[test]
    fn burst_of_the_rate_then_refused_with_retry_after() {
        let limiter = RateLimiter::new(3, 64);
        let t = Instant::now();
        assert!(limiter.check_at(ip(1), t).is_ok());
        assert!(limiter.check_at(ip(1), t).is_ok());
        assert!(limiter.check_at(ip(1), t).is_ok());
        assert_eq!(
            limiter.check_at(ip(1), t).map_err(|l| l.retry_after_secs),
            Err(20)
        );
        // Another client is not affected.
        assert!(limiter.check_at(ip(2), t).is_ok());
    }

    #[test]
    fn sixty_a_minute_allows_ten_at_once_then_one_a_second() {
        let limiter = RateLimiter::new(60, 64);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check_at(ip(1), t).is_ok());
        }
        assert_eq!(
            limiter.check_at(ip(1), t).map_err(|l| l.retry_after_secs),
            Err(1)
        );
        assert!(limiter.check_at(ip(1), t + Duration::from_secs(1)).is_ok());
        assert!(limiter.check_at(ip(1), t + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn burst_is_ten_seconds_of_the_rate_and_at_least_ten() {
        assert_eq!(burst(1), 1);
        assert_eq!(burst(5), 5);
        assert_eq!(burst(10), 10);
        assert_eq!(burst(60), 10);
        assert_eq!(burst(120), 20);
        assert_eq!(burst(600), 100);
    }

    #[test]
    fn a_limited_client_is_reported_once_per_window() {
        let limiter = RateLimiter::new(1, 64);
        let t = Instant::now();
        assert!(limiter.check_at(ip(1), t).is_ok());
        let warned = |at: Instant| limiter.check_at(ip(1), at).map_err(|l| l.warn);
        assert_eq!(warned(t), Err(true));
        assert_eq!(warned(t + Duration::from_secs(1)), Err(false));
        assert_eq!(warned(t + Duration::from_secs(59)), Err(false));
        // Another client is reported on its own.
        assert!(limiter.check_at(ip(2), t).is_ok());
        assert_eq!(limiter.check_at(ip(2), t).map_err(|l| l.warn), Err(true));
        // A minute after the report, the next refusal is reported again.
        let later = t + WARN_WINDOW;
        assert!(
            limiter
                .check_at(ip(1), later + Duration::from_secs(60))
                .is_ok()
        );
        assert_eq!(warned(later + Duration::from_secs(60)), Err(true));
    }

    #[test]
    fn table_of_clients_stays_bounded() {
        let limiter = RateLimiter::new(10, 64);
        let t = Instant::now();
        for n in 0..(MAX_TRACKED_CLIENTS as u32 + 1000) {
            let _ = limiter.check_at(ip(n), t);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_CLIENTS);
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_seen_client_and_no_other() {
        let limiter = RateLimiter::new(1, 64);
        let t = Instant::now();
        let clients = MAX_TRACKED_CLIENTS as u32;
        // Every client of a full table has used its one request.
        for n in 0..clients {
            assert!(limiter.check_at(ip(n), t).is_ok());
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_CLIENTS);
        // Client 0 comes back (refused), so client 1 is now the least
        // recently seen; a new client takes its place.
        assert!(limiter.check_at(ip(0), t).is_err());
        assert!(limiter.check_at(ip(clients), t).is_ok());
        assert_eq!(limiter.tracked(), MAX_TRACKED_CLIENTS);
        // Everyone else keeps an empty bucket; only client 1 starts afresh.
        for n in [0, 2, clients / 2, clients - 1, clients] {
            assert!(limiter.check_at(ip(n), t).is_err(), "client {n}");
        }
        assert!(limiter.check_at(ip(1), t).is_ok());
    }

    #[test]
    fn clients_are_forgotten_in_the_order_they_were_last_seen() {
        let limiter = RateLimiter::tracking(1, 64, 3);
        let t = Instant::now();
        for n in 1..=3 {
            assert!(limiter.check_at(ip(n), t).is_ok());
        }
        // Seen again: 2, then 1; so 3 is the oldest, then 2.
        assert!(limiter.check_at(ip(2), t).is_err());
        assert!(limiter.check_at(ip(1), t).is_err());
        assert!(limiter.check_at(ip(4), t).is_ok());
        assert!(limiter.check_at(ip(5), t).is_ok());
        assert_eq!(limiter.tracked(), 3);
        // 1 is still tracked (and limited); 3 and 2 were forgotten.
        assert!(limiter.check_at(ip(1), t).is_err());
        assert!(limiter.check_at(ip(3), t).is_ok());
    }

    #[test]
    fn an_ipv6_network_is_one_client_and_an_ipv4_mapped_peer_its_ipv4_address() {
        let limiter = RateLimiter::new(1, 64);
        let t = Instant::now();
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(limiter.check_at(v6("2001:db8:1:2::1"), t).is_ok());
        assert!(limiter.check_at(v6("2001:db8:1:2:ffff::2"), t).is_err());
        assert!(limiter.check_at(v6("2001:db8:1:3::1"), t).is_ok());
        assert!(limiter.check_at(v6("::ffff:192.0.2.1"), t).is_ok());
        assert!(limiter.check_at(v6("192.0.2.1"), t).is_err());
        // With a prefix of 128, each address is a client.
        let exact = RateLimiter::new(1, 128);
        assert!(exact.check_at(v6("2001:db8:1:2::1"), t).is_ok());
        assert!(exact.check_at(v6("2001:db8:1:2::2"), t).is_ok());
    }
}
