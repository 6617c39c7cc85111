//! Sign-in rate limits, per email (guessing one account's password) and per client
//! address (guessing many), and the sign-up limit per client address, each a token
//! bucket kept in this node's memory.
//!
//! A node limits what reaches it; behind nginx's round robin a client meets each node's
//! buckets, so the cluster-wide limit is at most the per-node one times the nodes. The
//! client's address is nginx's `X-Real-IP` when the request comes from a proxy on a
//! loopback or private address, else the connection's own.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actors::accounts::validation::normalize_email;
pub use actors::rate_limits::KeyedRateLimiter;

/// Both sign-in limits of a node.
pub struct SignInLimits {
    pub per_email: KeyedRateLimiter,
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
