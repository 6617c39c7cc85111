//! Sign-in rate limits, per email (guessing one account's password) and per client
//! address (guessing many), and the sign-up limit per client address, each a token
//! bucket kept in this node's memory.
//!
//! A node limits what reaches it; behind nginx's round robin a client meets each node's
//! buckets, so the cluster-wide limit is at most the per-node one times the nodes. The
//! client's address is nginx's `X-Real-IP` when the request comes from a proxy on a
//! loopback or private address, else the connection's own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
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
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(self.refill_every.mul_f64(1.0 - bucket.tokens))
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(bucket.updated).as_secs_f64() / self.refill_every.as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + earned).min(self.burst),
            updated: now,
        }
    }
}

/// Both sign-in limits of a node.
pub struct SignInLimits {
    pub per_email: KeyedRateLimiter,
    pub per_address: KeyedRateLimiter,
}

impl SignInLimits {
    /// One sign-in attempt; the wait before the next is allowed when refused.
    pub fn check(&self, email: &str, client: IpAddr) -> Result<(), Duration> {
        self.per_address.check(&client.to_string())?;
        self.per_email.check(&email.trim().to_lowercase())
    }
}

/// The client's address: `X-Real-IP` from a trusted proxy, else the peer's.
pub fn client_address(peer: Option<SocketAddr>, real_ip_header: Option<&str>) -> IpAddr {
    let peer_ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip());
    let from_proxy = match peer_ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    };
    match real_ip_header.and_then(|value| value.trim().parse::<IpAddr>().ok()) {
        Some(forwarded) if from_proxy => forwarded,
        _ => peer_ip,
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
            assert!(limiter.check_at("bob", start).is_ok());
        }
        let wait = limiter.check_at("bob", start).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.check_at("alice", start).is_ok(), "keys have their own buckets");
        assert!(limiter.check_at("bob", start + Duration::from_secs(1)).is_ok());
        assert!(limiter.check_at("bob", start + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn zero_per_minute_means_no_limit() {
        let limiter = KeyedRateLimiter::new(0, 1);
        assert!((0..100).all(|_| limiter.check("bob").is_ok()));
    }

    #[test]
    fn the_forwarded_address_is_believed_only_from_a_proxy_nearby() {
        let nginx: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        assert_eq!(
            client_address(Some(nginx), Some("198.51.100.7")).to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            client_address(Some(stranger), Some("198.51.100.7")).to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            client_address(Some(nginx), Some("not an address")).to_string(),
            "127.0.0.1"
        );
        assert_eq!(client_address(Some(nginx), None).to_string(), "127.0.0.1");
    }
}
