//! The error body every failed HTTP request answers with.

use serde::{Deserialize, Serialize};

/// `{"message": "...", "code": "..."}`: `message` is for people (the seed's
/// field), `code` is a stable identifier for programs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    pub code: String,
}

/// Stable error codes carried in [`ErrorBody::code`].
pub mod codes {
    pub const INVALID_BODY: &str = "invalid_body";
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    pub const NOT_READY: &str = "not_ready";
    /// Too many attempts (sign-in per email or per client address, or a full hashing
    /// queue): the answer is a 429 with `Retry-After`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A per-user limit (chats started, open websockets) is reached.
    pub const LIMIT_REACHED: &str = "limit_reached";
    pub const INTERNAL: &str = "internal";
}
