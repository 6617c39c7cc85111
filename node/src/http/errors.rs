//! Every failure becomes a JSON `{"message", "code"}` with a meaningful status.

use std::convert::Infallible;

use actors::accounts::passwords::HashingError;
use actors::accounts::AccountError;
use actors::chats::ChatError;
use actors::database::DbError;
use protocol::errors::codes;
use protocol::ErrorBody;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Rejection;

use crate::tokens::TokenError;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// The body's stable code, one of `protocol::errors::codes`.
    pub code: &'static str,
    /// The body's human-readable message.
    pub message: String,
    /// Seconds for `Retry-After` (a 503 always says 1).
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// An error answer without `Retry-After` (a 503 still gets one of 1 s).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// A 429: try again in `retry_after_seconds`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: u64) -> ApiError {
        ApiError {
            retry_after_seconds: Some(retry_after_seconds.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED, message)
        }
    }

    /// A 400 with `code` (`invalid_body` or `invalid_parameter`).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 401 `unauthorized`: the access token is missing, invalid, expired or revoked.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message)
    }

    /// A 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }

    /// The JSON `{"message", "code"}` answer, with `Retry-After` when set or for a 503.
    pub fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message,
            code: self.code.to_owned(),
        };
        let mut response = warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        let retry_after = match (self.retry_after_seconds, self.status) {
            (Some(seconds), _) => Some(seconds),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            (None, _) => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        if error.is_unavailable() {
            tracing::warn!(%error, "database unavailable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::DATABASE_UNAVAILABLE,
                "the database is unavailable, try again shortly",
            );
        }
        if let DbError::Duplicate { key } = &error {
            return ApiError::new(
                StatusCode::CONFLICT,
                codes::CONFLICT,
                format!("duplicate value for {key}"),
            );
        }
        tracing::error!(%error, "database query failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, "internal error")
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> ApiError {
        match error {
            AccountError::Invalid(invalid) => ApiError::bad_request(codes::INVALID_BODY, invalid.to_string()),
            AccountError::EmailTaken => ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, error.to_string()),
            AccountError::InvalidCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, codes::INVALID_CREDENTIALS, error.to_string())
            }
            AccountError::Hashing(HashingError::Busy) => {
                ApiError::too_many_requests("too many sign-ins are being checked; try again shortly", 1)
            }
            AccountError::Hashing(hashing) => {
                tracing::error!(error = %hashing, "password hashing failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, "internal error")
            }
            AccountError::Database(database) => database.into(),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> ApiError {
        match error {
            ChatError::UnknownUser(_) | ChatError::ChatNotFound => ApiError::not_found(error.to_string()),
            ChatError::ChatWithSelf => ApiError::bad_request(codes::INVALID_PARAMETER, error.to_string()),
            ChatError::TooManyChats(_) | ChatError::TooManyMembers(_) | ChatError::TooManyGroups { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, codes::LIMIT_REACHED, error.to_string())
            }
            ChatError::InvalidTitle(_) | ChatError::NotAGroup => {
                ApiError::bad_request(codes::INVALID_PARAMETER, error.to_string())
            }
            ChatError::NotAMember(_) => ApiError::not_found(error.to_string()),
            ChatError::OnlyTheCreatorRemoves => {
                ApiError::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, error.to_string())
            }
            ChatError::Database(database) => database.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> ApiError {
        ApiError::unauthorized(error.to_string())
    }
}

/// An [`ApiError`] raised inside a filter chain (before a handler runs).
#[derive(Debug)]
pub struct ApiRejection(pub ApiError);
impl warp::reject::Reject for ApiRejection {}

/// The request body is larger than the configured limit.
#[derive(Debug)]
pub struct BodyTooLarge;
impl warp::reject::Reject for BodyTooLarge {}

/// The client stopped sending the body midway.
#[derive(Debug)]
pub struct BodyUnreadable;
impl warp::reject::Reject for BodyUnreadable {}

/// Turns warp's own rejections (no route, wrong method, body too large, ...) into JSON.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    use warp::reject;
    if let Some(ApiRejection(error)) = rejection.find::<ApiRejection>() {
        return Ok(ApiError::new(error.status, error.code, error.message.clone()).into_response());
    }
    let error = if rejection.is_not_found() {
        ApiError::not_found("no such endpoint")
    } else if rejection.find::<BodyTooLarge>().is_some() || rejection.find::<reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            "the request body is too large",
        )
    } else if rejection.find::<BodyUnreadable>().is_some() {
        ApiError::bad_request(codes::INVALID_BODY, "the request body could not be read")
    } else if rejection.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            "this endpoint does not take that method",
        )
    } else if rejection.find::<reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
        )
    } else if let Some(header) = rejection.find::<reject::InvalidHeader>() {
        ApiError::bad_request(codes::INVALID_PARAMETER, format!("invalid header {}", header.name()))
    } else if let Some(header) = rejection.find::<reject::MissingHeader>() {
        ApiError::bad_request(codes::INVALID_PARAMETER, format!("missing header {}", header.name()))
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::bad_request(codes::INVALID_PARAMETER, "the request could not be understood")
    };
    Ok(error.into_response())
}
