//! Sign-in rate limits, per email (guessing one account's password) and per client
//! address (guessing many), and the sign-up limit per client address, each a token
//! bucket kept in this node's memory.
//!
//! A node limits what reaches it; behind nginx's round robin a client meets each node's
//! buckets, so the cluster-wide limit is at most the per-node one times the nodes. The
//! client's address is nginx's `X-Real-IP` when the request comes from one of the
//! `--trusted-proxies`, else the connection's own: a header believed from anyone else
//! would let a client draw a fresh bucket for every request.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actors::accounts::validation::normalize_email;
pub use actors::rate_limits::KeyedRateLimiter;

use crate::config::TrustedProxies;

/// Both sign-in limits of a node.
pub struct SignInLimits {
    /// Attempts per normalised email, whatever address they come from (guessing one password).
    pub per_email: KeyedRateLimiter,
    /// Attempts per client address, whatever email they name (spraying many accounts).
    pub per_address: KeyedRateLimiter,
}

impl SignInLimits {
    /// One sign-in attempt; the wait before the next is allowed when refused.
    pub fn check(&self, email: &str, client: IpAddr) -> Result<(), Duration> {
        self.per_address.check(&client.to_string())?;
        // The bucket of the email's one stored form: spelling it another way (case,
        // spaces, combining accents) does not earn fresh attempts.
        let canonical = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
        self.per_email.check(&canonical)
    }
}

/// The client's address: `X-Real-IP` from a trusted proxy, else the peer's.
pub fn client_address(
    peer: Option<SocketAddr>,
    real_ip_header: Option<&str>,
    trusted_proxies: &TrustedProxies,
) -> IpAddr {
    let peer_ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip().to_canonical());
    match real_ip_header.and_then(|value| value.trim().parse::<IpAddr>().ok()) {
        Some(forwarded) if trusted_proxies.contains(peer_ip) => forwarded,
        _ => peer_ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(address.parse().unwrap(), 40000))
    }

    #[test]
    fn the_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let loopback_only = TrustedProxies::default();
        let believed =
            |from: &str, header: Option<&str>| client_address(peer(from), header, &loopback_only).to_string();
        assert_eq!(believed("127.0.0.1", Some("198.51.100.7")), "198.51.100.7");
        assert_eq!(believed("::1", Some(" 198.51.100.7 ")), "198.51.100.7");
        assert_eq!(believed("::ffff:127.0.0.1", Some("2001:db8::7")), "2001:db8::7");
        // A stranger, and neighbours that are not configured (the old rule believed any
        // private or loopback peer), are counted as themselves.
        for stranger in ["203.0.113.9", "10.0.0.7", "192.168.1.7", "172.16.200.11", "127.0.0.2"] {
            assert_eq!(believed(stranger, Some("198.51.100.7")), stranger);
        }
        assert_eq!(believed("::ffff:203.0.113.9", Some("198.51.100.7")), "203.0.113.9");
        assert_eq!(believed("127.0.0.1", Some("not an address")), "127.0.0.1");
        assert_eq!(believed("127.0.0.1", None), "127.0.0.1");
        assert_eq!(
            client_address(None, Some("198.51.100.7"), &loopback_only).to_string(),
            "0.0.0.0"
        );
    }

    #[test]
    fn a_configured_proxy_is_believed_and_loopback_no_longer_is() {
        let nginx_in_compose = TrustedProxies::new(vec!["172.16.200.10".parse().unwrap()]);
        let believed =
            |from: &str, header: Option<&str>| client_address(peer(from), header, &nginx_in_compose).to_string();
        assert_eq!(believed("172.16.200.10", Some("198.51.100.7")), "198.51.100.7");
        assert_eq!(believed("172.16.200.11", Some("198.51.100.7")), "172.16.200.11");
        assert_eq!(believed("127.0.0.1", Some("198.51.100.7")), "127.0.0.1");
    }
}
