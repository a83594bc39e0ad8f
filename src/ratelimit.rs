//! Per-client rate limiting of the token endpoints (`RATE_LIMIT_PER_MINUTE`).
//!
//! A token bucket per client address: `rate` tokens per minute, holding at
//! most [`burst`] of them. A limited client is reported once per
//! [`WARN_WINDOW`] (the caller logs it), so a flood costs one log line a
//! minute, not one per request. Memory is bounded: at most
//! [`MAX_TRACKED_CLIENTS`] addresses are tracked; when the table is full,
//! buckets that have refilled (indistinguishable from a new client) are
//! dropped first, and if that frees nothing the table starts over, so a
//! flood of distinct addresses cannot grow it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
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
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per minute per client.
    pub(crate) fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`, or says when to retry.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Limited> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), Limited> {
        let capacity = f64::from(burst(self.per_minute));
        let per_sec = f64::from(self.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, b| refill(b, now, per_sec, capacity) < capacity);
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            warned: None,
        });
        let tokens = refill(bucket, now, per_sec, capacity);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
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

    /// Number of addresses currently tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
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
    fn burst_of_the_rate_then_refused_with_retry_after() {
        let limiter = RateLimiter::new(3);
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
        let limiter = RateLimiter::new(60);
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
        let limiter = RateLimiter::new(1);
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
        let limiter = RateLimiter::new(10);
        let t = Instant::now();
        for n in 0..(MAX_TRACKED_CLIENTS as u32 + 1000) {
            let _ = limiter.check_at(ip(n), t);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_CLIENTS);
    }
}
