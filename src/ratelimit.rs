//! Per-client rate limiting of the token endpoints (`RATE_LIMIT_PER_MINUTE`).
//!
//! A token bucket per client address: `rate` tokens per minute, holding at
//! most `rate` (the burst). Memory is bounded: at most
//! [`MAX_TRACKED_CLIENTS`] addresses are tracked; when the table is full,
//! buckets that have refilled (indistinguishable from a new client) are
//! dropped first, and if that frees nothing the table starts over, so a
//! flood of distinct addresses cannot grow it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most client addresses tracked at once.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The limiter, shared by all workers.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per minute per client.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; `Err(secs)` says when to retry.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
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
        });
        let tokens = refill(bucket, now, per_sec, capacity);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            let wait = ((1.0 - tokens) / per_sec).ceil();
            Err((wait as u64).max(1))
        }
    }

    /// Number of addresses currently tracked.
    pub fn tracked(&self) -> usize {
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
    use std::time::Duration;

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
        assert_eq!(limiter.check_at(ip(1), t), Err(20));
        // Another client is not affected.
        assert!(limiter.check_at(ip(2), t).is_ok());
    }

    #[test]
    fn tokens_refill_over_time() {
        let limiter = RateLimiter::new(60);
        let t = Instant::now();
        for _ in 0..60 {
            assert!(limiter.check_at(ip(1), t).is_ok());
        }
        assert_eq!(limiter.check_at(ip(1), t), Err(1));
        assert!(limiter.check_at(ip(1), t + Duration::from_secs(1)).is_ok());
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
