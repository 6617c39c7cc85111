//! What every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actors::accounts::Accounts;
use actors::chats::Chats;
use actors::database::Database;
use actors::messaging::MessagingServices;
use actors::metrics::Metrics;

use crate::tokens::TokenIssuer;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest HTTP request body accepted, in bytes; a larger one is answered 413.
    pub max_body_bytes: u64,
    /// Largest `limit` of `GET /messenger/messages`; a larger one is refused with 400.
    pub max_page_size: u64,
    /// Largest websocket frame; a larger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Websockets one user may have open on this node.
    pub max_sockets_per_user: usize,
    /// Client frames one socket may have in the node at once (read, not yet answered).
    pub max_frames_in_flight: usize,
    /// When websockets are pinged and when a silent one is closed.
    pub websocket_heartbeat: crate::websocket::SocketHeartbeat,
}

/// Whether the node may take traffic.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    migrations_applied: Arc<AtomicBool>,
    sign_outs_loaded: Arc<AtomicBool>,
    cluster_joined: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// The schema is up to date on the master (set once at start-up).
    pub fn mark_migrations_applied(&self) {
        self.migrations_applied.store(true, Ordering::Release);
    }

    /// Whether the schema is known to be up to date; `/health/ready` waits for it.
    pub fn migrations_applied(&self) -> bool {
        self.migrations_applied.load(Ordering::Acquire)
    }

    /// The sign-outs of the last access-token lifetime have been read from the database.
    pub fn mark_sign_outs_loaded(&self) {
        self.sign_outs_loaded.store(true, Ordering::Release);
    }

    /// Whether the recent sign-outs are loaded; until then a revoked token could pass, so
    /// `/health/ready` waits for it.
    pub fn sign_outs_loaded(&self) -> bool {
        self.sign_outs_loaded.load(Ordering::Acquire)
    }

    /// The node has heard from a peer, or has none to wait for.
    pub fn mark_cluster_joined(&self) {
        self.cluster_joined.store(true, Ordering::Release);
    }

    /// Whether the node has joined its cluster (or gave up waiting); `/health/ready` waits for it.
    pub fn cluster_joined(&self) -> bool {
        self.cluster_joined.load(Ordering::Acquire)
    }

    /// The node is stopping: it still answers, but asks every client to go elsewhere.
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the node is stopping: `/health/ready` answers 503 and new websockets are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The node's name as users and operators see it (`node-1`), without incarnation.
    pub node_name: String,
    /// The routed database: the master for writes, the read endpoints for reads.
    pub database: Database,
    /// Sign-up, sign-in, profiles and refresh-token families.
    pub accounts: Accounts,
    /// Creating and listing chats, and reading their history.
    pub chats: Chats,
    /// Issues and checks the access and refresh JWTs.
    pub tokens: TokenIssuer,
    /// The actors' side: sessions, chats, the cluster routing.
    pub messaging: Arc<MessagingServices>,
    /// The node's Prometheus metrics, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Websockets open per user, to enforce `limits.max_sockets_per_user`.
    pub open_sockets: Arc<crate::websocket::OpenSockets>,
    /// What `/health/ready` reports.
    pub readiness: Readiness,
    /// Continues a caller's trace (`traceparent` header) in the request's span.
    pub trace_propagation: Arc<dyn actors::trace_context::TracePropagation>,
    /// Sign-in attempts per email and per client address.
    pub sign_in_limits: Arc<crate::http::rate_limits::SignInLimits>,
    /// Sign-ups per client address.
    pub sign_up_limit: Arc<crate::http::rate_limits::KeyedRateLimiter>,
    /// Group members each user may add per minute.
    pub member_additions_limit: Arc<crate::http::rate_limits::KeyedRateLimiter>,
    /// The proxies whose `X-Real-IP` names the client of the per-address limits.
    pub trusted_proxies: Arc<crate::config::TrustedProxies>,
    /// Request limits.
    pub limits: Limits,
}
