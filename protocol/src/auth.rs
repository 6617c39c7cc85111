//! Bodies of the `/auth/...` endpoints, field for field as the seed's service has them.

use serde::{Deserialize, Serialize};

/// `POST /auth/sign-up` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignUpRequest {
    pub email: String,
    pub password: String,
    pub name: String,
    pub surname: String,
    /// RFC 3339 date-time, as the seed sends it (`1994-04-10T20:21:25+00:00`).
    pub birthday: String,
    /// `male`, `female` or `other`.
    pub sex: String,
    pub city: String,
    #[serde(default)]
    pub interests: String,
}

/// `POST /auth/sign-up` answer (201).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignUpResponse {
    pub user_id: String,
}

/// `POST /auth/sign-in` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInRequest {
    pub email: String,
    pub password: String,
}

/// `POST /auth/sign-in` and `PUT /auth/token` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
}

/// `PUT /auth/token` body: trade a refresh token for a new pair.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRequest {
    pub refresh_token: String,
}

/// `GET /auth/user/get-by-email` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdResponse {
    pub user_id: String,
}

/// `GET /auth/user/get-by-token` answer: the caller's own profile.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub surname: String,
    pub birthday: String,
    pub sex: String,
    pub city: String,
    pub interests: String,
    pub create_time: String,
}
