//! Bodies of the `/auth/...` endpoints, field for field as the seed's service has them.

use serde::{Deserialize, Serialize};

/// `POST /auth/sign-up` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignUpRequest {
    /// The account's email. Stored trimmed, lowercased and in Unicode NFC, so sign-in
    /// matches however it was typed; at most 254 characters, `name@domain.tld` shape.
    pub email: String,
    /// The password in clear (sent over TLS): at least 8 characters, at most 256 bytes, no
    /// NUL. Only its scrypt hash is stored.
    pub password: String,
    /// Given name, 1 to 100 characters after trimming, no control characters.
    pub name: String,
    /// Family name, same rules as `name`.
    pub surname: String,
    /// RFC 3339 date-time, as the seed sends it (`1994-04-10T20:21:25+00:00`).
    pub birthday: String,
    /// `male`, `female` or `other`.
    pub sex: String,
    /// City, same rules as `name`.
    pub city: String,
    /// Free text, may be empty (and may be left out), at most 2000 characters; newlines allowed.
    #[serde(default)]
    pub interests: String,
}

/// `POST /auth/sign-up` answer (201).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignUpResponse {
    /// The new user's id: a UUID (v4) the server assigned.
    pub user_id: String,
}

/// `POST /auth/sign-in` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInRequest {
    /// The email signed up with; compared after the same normalisation as at sign-up.
    pub email: String,
    /// The password in clear. A wrong email or password both answer 401 `invalid_credentials`.
    pub password: String,
}

/// `POST /auth/sign-in` and `PUT /auth/token` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    /// JWT (HS256) to send as `Authorization` (raw or `Bearer <token>`) and as `?token=` on
    /// the websocket; short-lived (one hour by default).
    pub access_token: String,
    /// JWT for `PUT /auth/token` only (one day by default). Single-use: each refresh
    /// rotates it, and presenting an already rotated one revokes the whole sign-in.
    pub refresh_token: String,
}

/// `PUT /auth/token` body: trade a refresh token for a new pair.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRequest {
    /// The latest refresh token of the sign-in; it is rotated by this call.
    pub refresh_token: String,
}

/// `GET /auth/user/get-by-email` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdResponse {
    /// The user's id (UUID) of the looked-up email.
    pub user_id: String,
}

/// `GET /auth/user/get-by-token` answer: the caller's own profile.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    /// The caller's id (UUID).
    pub user_id: String,
    /// The normalised email (trimmed, lowercase, NFC).
    pub email: String,
    /// Given name as stored (trimmed).
    pub name: String,
    /// Family name as stored (trimmed).
    pub surname: String,
    /// Birthday normalised to UTC, RFC 3339 with microseconds (`1994-04-10T20:21:25.000000Z`).
    pub birthday: String,
    /// `male`, `female` or `other` (lowercased).
    pub sex: String,
    /// City as stored (trimmed).
    pub city: String,
    /// Interests as stored; empty when none were given.
    pub interests: String,
    /// When the account was created: RFC 3339 in UTC with microseconds.
    pub create_time: String,
}
