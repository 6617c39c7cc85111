//! What a socket lives on: the access token it was opened with (whose, which sign-in,
//! until when), and the sign-ins that were revoked.
//!
//! ```text
//! RootSupervisor
//!  └── Session (one per socket) holds its SocketGrant:
//!        sign-out anywhere  → MessagingServices::sign_out_device here and, through the
//!                             NodeRouters, on every peer → the sign-in's sessions close
//!                             with 4403 and its access tokens are refused
//!        `renew` frame      → the AccessTokenCheck (the node's token issuer) → a later
//!                             expiry, which the socket's reader enforces with 4401
//! ```
//!
//! A sign-in is a refresh-token family. Its access tokens carry the family id, so a
//! revoked family refuses them on every node until the last of them would have expired
//! anyway; after that the entry is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a valid access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The user (UUID) the token was issued to.
    pub user_id: String,
    /// The sign-in (refresh-token family) it was issued for; `None` for tokens issued
    /// before access tokens carried it (they cannot be revoked, and expire on their own).
    pub family_id: Option<String>,
    /// Unix time, milliseconds.
    pub expires_at_ms: u64,
}

/// Why a presented access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefused {
    /// The token is malformed, forged, expired or of the wrong kind.
    #[error("the access token is invalid or expired")]
    Invalid,
    /// The token is valid but its sign-in was revoked.
    #[error("this sign-in was signed out; sign in again")]
    SignedOut,
}

/// Checks access tokens presented over an open socket. The node implements it with its
/// token issuer (which consults [`RevokedFamilies`]); the actors never see the secret.
pub trait AccessTokenCheck: Send + Sync {
    /// Verifies `token` as an access token and says what it grants.
    fn check_access(&self, token: &str) -> Result<AccessGrant, AccessRefused>;
}

/// Refuses every token: for nodes and tests that never renew over a socket.
pub struct NoAccessTokenCheck;

impl AccessTokenCheck for NoAccessTokenCheck {
    fn check_access(&self, _token: &str) -> Result<AccessGrant, AccessRefused> {
        Err(AccessRefused::Invalid)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Revoked sign-ins on this node, each kept until its last access token would have
/// expired (`until_ms`). Filled by sign-outs on this node, by peers' `SignedOut`
/// messages, and by the node's periodic read of the database (which covers a node that
/// was down or cut off when the sign-out happened).
#[derive(Debug, Default)]
pub struct RevokedFamilies {
    until_ms_by_family: Mutex<HashMap<String, u64>>,
}

impl RevokedFamilies {
    /// Records a revoked family; true when it was not known yet.
    pub fn revoke(&self, family_id: &str, until_ms: u64) -> bool {
        let now = unix_now_ms();
        let mut families = self
            .until_ms_by_family
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Pruned on insert: entries only ever come with sign-outs, so the map never holds
        // more than the sign-outs of one access-token lifetime.
        families.retain(|_, until| *until > now);
        if until_ms <= now {
            return false;
        }
        match families.get_mut(family_id) {
            Some(known) => {
                *known = (*known).max(until_ms);
                false
            }
            None => {
                families.insert(family_id.to_owned(), until_ms);
                true
            }
        }
    }

    /// Whether the family is signed out and some of its access tokens may still be valid.
    pub fn is_revoked(&self, family_id: &str) -> bool {
        let families = self
            .until_ms_by_family
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        families.get(family_id).is_some_and(|until| *until > unix_now_ms())
    }

    /// Families currently held (for the metrics and tests).
    pub fn len(&self) -> usize {
        let now = unix_now_ms();
        let families = self
            .until_ms_by_family
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        families.values().filter(|until| **until > now).count()
    }

    /// True when no family is currently held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When a socket's access token expires (Unix ms), shared by its session (which moves
/// it on `renew`) and its reader (which closes the socket with 4401 once it passes).
#[derive(Debug, Clone)]
pub struct SocketExpiry(Arc<AtomicU64>);

impl SocketExpiry {
    /// Expires at `expires_at_ms` (Unix time, milliseconds).
    pub fn at(expires_at_ms: u64) -> SocketExpiry {
        SocketExpiry(Arc::new(AtomicU64::new(expires_at_ms)))
    }

    /// Never expires (sockets of tests that do not exercise tokens).
    pub fn never() -> SocketExpiry {
        SocketExpiry::at(u64::MAX)
    }

    /// When the socket's token expires (Unix time, milliseconds; `u64::MAX`: never).
    pub fn expires_at_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves the expiry to `expires_at_ms`, never earlier than it already is.
    pub fn extend_to(&self, expires_at_ms: u64) {
        self.0.fetch_max(expires_at_ms, Ordering::AcqRel);
    }

    /// Time left from `now_ms`; zero once expired.
    pub fn remaining(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at_ms().saturating_sub(now_ms))
    }
}

/// The grant a socket was opened with, handed to its session.
#[derive(Debug, Clone)]
pub struct SocketGrant {
    /// The sign-in (refresh-token family), `None` for tokens without one.
    pub family_id: Option<String>,
    /// When the socket must be closed unless its token is renewed.
    pub expiry: SocketExpiry,
}

impl SocketGrant {
    /// A grant that never expires and belongs to no sign-in (tests of actor logic).
    pub fn unlimited() -> SocketGrant {
        SocketGrant {
            family_id: None,
            expiry: SocketExpiry::never(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_family_is_refused_until_its_last_token_expires_then_forgotten() {
        let revoked = RevokedFamilies::default();
        let now = unix_now_ms();
        assert!(revoked.revoke("family-a", now + 60_000));
        assert!(!revoked.revoke("family-a", now + 30_000), "known already");
        assert!(revoked.is_revoked("family-a"));
        assert!(!revoked.is_revoked("family-b"));
        assert!(!revoked.revoke("family-old", now.saturating_sub(1)), "already past");
        assert!(!revoked.is_revoked("family-old"));
        assert_eq!(revoked.len(), 1);
    }

    #[test]
    fn a_socket_expiry_only_moves_later() {
        let expiry = SocketExpiry::at(1_000);
        expiry.extend_to(5_000);
        expiry.extend_to(2_000);
        assert_eq!(expiry.expires_at_ms(), 5_000);
        assert_eq!(expiry.remaining(4_000), Duration::from_secs(1));
        assert_eq!(expiry.remaining(6_000), Duration::ZERO);
    }
}
