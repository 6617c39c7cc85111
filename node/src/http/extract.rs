//! Reading requests: JSON bodies, query strings and the caller's token, each failure
//! with a precise 4xx message.

use std::collections::HashMap;

use protocol::errors::codes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::errors::ApiError;
use crate::app_state::AppState;
use crate::tokens::TokenIssuer;
use actors::messaging::device_access::AccessGrant;

/// A JSON body of type `T`, naming the problem (syntax, missing field, wrong type).
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            codes::INVALID_BODY,
            "the request body is empty; JSON expected",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(codes::INVALID_BODY, format!("invalid JSON body: {error}")))
}

/// Query parameters; a repeated parameter keeps its first value.
pub struct QueryParameters(HashMap<String, String>);

impl QueryParameters {
    /// Parses a raw query string (without `?`); 400 `invalid_parameter` when it is not
    /// URL-encoded pairs.
    pub fn parse(raw: &str) -> Result<QueryParameters, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|error| {
            ApiError::bad_request(codes::INVALID_PARAMETER, format!("invalid query string: {error}"))
        })?;
        let mut parameters = HashMap::new();
        for (name, value) in pairs {
            parameters.entry(name).or_insert(value);
        }
        Ok(QueryParameters(parameters))
    }

    /// The trimmed value of `name`; 400 `invalid_parameter` when absent or blank.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.0.get(name).map(String::as_str) {
            Some(value) if !value.trim().is_empty() => Ok(value.trim()),
            _ => Err(ApiError::bad_request(
                codes::INVALID_PARAMETER,
                format!("query parameter {name} is required"),
            )),
        }
    }

    /// An unsigned integer parameter within `min..=max`, or `default` when absent.
    pub fn bounded_integer(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        let Some(raw) = self.0.get(name).filter(|value| !value.trim().is_empty()) else {
            return Ok(default);
        };
        let out_of_range = || {
            ApiError::bad_request(
                codes::INVALID_PARAMETER,
                format!("query parameter {name} must be an integer from {min} to {max}"),
            )
        };
        let value: u64 = raw.trim().parse().map_err(|_| out_of_range())?;
        if value < min || value > max {
            return Err(out_of_range());
        }
        Ok(value)
    }
}

/// A UUID in its canonical lowercase hyphenated form, or a 400 naming the field.
pub fn uuid_field(name: &str, value: &str) -> Result<String, ApiError> {
    Uuid::parse_str(value.trim())
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| ApiError::bad_request(codes::INVALID_PARAMETER, format!("{name} must be a UUID")))
}

/// The caller's user id from the `Authorization` header: the raw token as the seed sends
/// it, or `Bearer <token>`.
pub fn authenticated_user(tokens: &TokenIssuer, authorization: Option<&str>) -> Result<String, ApiError> {
    access_grant(tokens, authorization).map(|grant| grant.user_id)
}

/// What the caller's access token grants (user, sign-in, expiry), from the header forms
/// [`authenticated_user`] takes.
pub fn access_grant(tokens: &TokenIssuer, authorization: Option<&str>) -> Result<AccessGrant, ApiError> {
    let header = authorization
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header with an access token is required"))?;
    let token = match header.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => header,
    };
    Ok(tokens.access_grant(token)?)
}

/// Like [`authenticated_user`], and the token's user must still exist: tokens are
/// stateless, so a deleted user's unexpired token is stopped here (one primary-key read).
pub async fn authenticated_existing_user(state: &AppState, authorization: Option<&str>) -> Result<String, ApiError> {
    let user_id = authenticated_user(&state.tokens, authorization)?;
    require_existing_user(state, user_id).await
}

/// `user_id` back if that user still exists, else the 401 for a deleted user's token.
pub async fn require_existing_user(state: &AppState, user_id: String) -> Result<String, ApiError> {
    if state.accounts.user_exists(&user_id).await? {
        Ok(user_id)
    } else {
        Err(ApiError::unauthorized(USER_GONE))
    }
}

/// The answer to any token whose user was deleted.
pub const USER_GONE: &str = "the token's user no longer exists";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_out_of_range_or_negative_are_refused() {
        let query = QueryParameters::parse("limit=0&offset=-1&big=99999999999999999999999").unwrap();
        assert!(query.bounded_integer("limit", 100, 1, 1000).is_err());
        assert!(query.bounded_integer("offset", 0, 0, u64::MAX).is_err());
        assert!(query.bounded_integer("big", 0, 0, u64::MAX).is_err());
        assert_eq!(query.bounded_integer("absent", 7, 0, 10).unwrap(), 7);
    }

    #[test]
    fn both_token_header_forms_work() {
        let tokens = TokenIssuer::new(&"s".repeat(40), 60, 60, Default::default());
        let user = "6a3b2f50-7d0c-4a4e-9f0e-0d1f8c2b3a41";
        let token = tokens.issue_access(user, "family", chrono::Utc::now());
        assert_eq!(authenticated_user(&tokens, Some(&token)).unwrap(), user);
        assert_eq!(
            authenticated_user(&tokens, Some(&format!("Bearer {token}"))).unwrap(),
            user
        );
        assert!(authenticated_user(&tokens, None).is_err());
    }

    #[test]
    fn uuids_are_canonicalised() {
        assert_eq!(
            uuid_field("chat_id", "6A3B2F50-7D0C-4A4E-9F0E-0D1F8C2B3A41").unwrap(),
            "6a3b2f50-7d0c-4a4e-9f0e-0d1f8c2b3a41"
        );
        assert!(uuid_field("chat_id", "' OR 1=1 --").is_err());
    }
}
