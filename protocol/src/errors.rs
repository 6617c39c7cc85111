//! The error body every failed HTTP request answers with.

use serde::{Deserialize, Serialize};

/// `{"message": "...", "code": "..."}`: `message` is for people (the seed's
/// field), `code` is a stable identifier for programs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable explanation, for logs and people; its wording may change.
    pub message: String,
    /// Stable machine-readable code, one of [`codes`]: match on this, not on `message`.
    pub code: String,
}

/// Stable error codes carried in [`ErrorBody::code`].
pub mod codes {
    /// The JSON body could not be read or a field broke a rule (400); `message` names the
    /// field. Fix the request; retrying it unchanged fails again.
    pub const INVALID_BODY: &str = "invalid_body";
    /// A query parameter, path segment or header is missing or malformed (400), or the
    /// request asks for something impossible (a chat with oneself).
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    /// No access token, or one that is invalid, expired, revoked or of the wrong kind (401):
    /// refresh the token pair or sign in again.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Sign-in with an unknown email or a wrong password (401); the two are not told apart.
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    /// No such endpoint, user or chat, or a chat the caller is not a member of (404).
    pub const NOT_FOUND: &str = "not_found";
    /// A unique value is taken (409), e.g. signing up with an email already registered.
    pub const CONFLICT: &str = "conflict";
    /// The path exists but not with this HTTP method (405).
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The request body is over the node's size limit (413).
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The request's content type or encoding is not one the endpoint takes (415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// No database endpoint could serve the request right now (503 with `Retry-After: 1`),
    /// e.g. during a failover: retry shortly.
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    /// This node is shutting down and refuses new websockets (503): connect again; nginx
    /// retries a refused upgrade on another node.
    pub const NOT_READY: &str = "not_ready";
    /// Too many attempts (sign-in per email or per client address, or a full hashing
    /// queue): the answer is a 429 with `Retry-After`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A per-user limit (chats started, open websockets) is reached.
    pub const LIMIT_REACHED: &str = "limit_reached";
    /// An unexpected server-side failure (500); details are in the node's log, not in the answer.
    pub const INTERNAL: &str = "internal";
    /// The caller may not do this to this resource (a group member removing another
    /// member, when only the group's creator may).
    pub const FORBIDDEN: &str = "forbidden";
}
