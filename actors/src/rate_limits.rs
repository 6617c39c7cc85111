//! Token buckets per key (a user, an email, a client address), kept in this node's
//! memory: sign-in and sign-up limits over HTTP, the send limit per user over websockets.
//!
//! A node limits what reaches it; behind nginx's round robin a client meets each node's
//! buckets, so the cluster-wide limit is at most the per-node one times the nodes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most per limiter; past it, buckets that have refilled are dropped
/// (a full bucket is the same as none), so a flood of distinct keys cannot grow memory.
const MAX_TRACKED_KEYS: usize = 100_000;

/// A token bucket per key: `burst` attempts at once, then one every `refill_every`.
pub struct KeyedRateLimiter {
    burst: f64,
    refill_every: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl KeyedRateLimiter {
    /// `per_minute` attempts a minute on average, `burst` at once; 0 per minute: no limit.
    pub fn new(per_minute: u32, burst: u32) -> KeyedRateLimiter {
        KeyedRateLimiter {
            burst: f64::from(burst.max(1)),
            refill_every: if per_minute == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(60.0 / f64::from(per_minute))
            },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `key`, or says how long until the next is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, 1, Instant::now())
    }

    /// Takes `count` attempts for `key` at once (a frame of several messages), or none
    /// and says how long until that many are allowed. More than the burst are allowed
    /// once the bucket is full, and the bucket goes into debt for the rest.
    pub fn check_many(&self, key: &str, count: u32) -> Result<(), Duration> {
        self.check_at(key, count, Instant::now())
    }

    fn check_at(&self, key: &str, count: u32, now: Instant) -> Result<(), Duration> {
        if self.refill_every.is_zero() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, bucket| self.refilled(*bucket, now).tokens < self.burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        *bucket = self.refilled(*bucket, now);
        let wanted = f64::from(count.max(1));
        let needed = wanted.min(self.burst);
        if bucket.tokens >= needed {
            bucket.tokens -= wanted;
            return Ok(());
        }
        Err(self.refill_every.mul_f64(needed - bucket.tokens))
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(bucket.updated).as_secs_f64() / self.refill_every.as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + earned).min(self.burst),
            updated: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_attempt_per_refill() {
        let limiter = KeyedRateLimiter::new(60, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("bob", 1, start).is_ok());
        }
        let wait = limiter.check_at("bob", 1, start).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
        assert!(
            limiter.check_at("alice", 1, start).is_ok(),
            "keys have their own buckets"
        );
        assert!(limiter.check_at("bob", 1, start + Duration::from_secs(1)).is_ok());
        assert!(limiter.check_at("bob", 1, start + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn zero_per_minute_means_no_limit() {
        let limiter = KeyedRateLimiter::new(0, 1);
        assert!((0..100).all(|_| limiter.check("bob").is_ok()));
    }

    #[test]
    fn several_attempts_are_taken_at_once_or_not_at_all() {
        let limiter = KeyedRateLimiter::new(60, 10);
        let start = Instant::now();
        assert!(limiter.check_at("bob", 6, start).is_ok());
        let wait = limiter.check_at("bob", 6, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2), "two more seconds earn the missing two");
        assert!(
            limiter.check_at("bob", 4, start).is_ok(),
            "the refused frame took nothing"
        );
        let wait = limiter.check_at("bob", 50, start).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(10),
            "more than the burst: until the bucket is full"
        );
        let full = start + Duration::from_secs(10);
        assert!(
            limiter.check_at("bob", 50, full).is_ok(),
            "allowed once full, in debt after"
        );
        assert_eq!(limiter.check_at("bob", 1, full).unwrap_err(), Duration::from_secs(41));
    }
}
