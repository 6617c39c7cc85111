//! The error frames a session answers a client frame with: a failed send, a frame
//! refused, a send past the sender's rate.

use protocol::websocket::{actions, Envelope, ErrorPayload};

use crate::messaging::frames::{codes, FrameError};
use crate::messaging::store::SendError;

pub(super) fn send_failure(error: SendError, reference: Option<String>, client_ids: Vec<String>) -> FrameError {
    let (code, message) = match error.database_error() {
        None => (codes::CHAT_NOT_FOUND, error.to_string()),
        Some(database) if database.is_unavailable() => (
            codes::DATABASE_UNAVAILABLE,
            "the database is unavailable; send again shortly (a resend with the same client_id is stored once)"
                .to_owned(),
        ),
        Some(database) => {
            tracing::error!(error = %database, "send failed");
            (
                codes::INTERNAL,
                "internal error; send again (a resend with the same client_id is stored once)".to_owned(),
            )
        }
    };
    FrameError {
        code,
        message,
        reference,
        client_ids,
    }
}

pub(super) fn error_envelope(error: &FrameError) -> Envelope {
    Envelope::messenger(
        actions::ERROR,
        &ErrorPayload {
            message: error.message.clone(),
            code: error.code.to_owned(),
            client_ids: error.client_ids.clone(),
            retry_after_ms: None,
        },
        error.reference.clone(),
    )
}

/// The refusal of a frame past the sender's send rate: which messages, and when they
/// would be allowed.
pub(super) fn rate_limited(reference: Option<String>, client_ids: Vec<String>, wait: std::time::Duration) -> Envelope {
    let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Envelope::messenger(
        actions::ERROR,
        &ErrorPayload {
            message: format!(
                "you are sending faster than allowed; nothing of this frame was stored, send it again in {retry_after_ms} ms"
            ),
            code: codes::RATE_LIMITED.to_owned(),
            client_ids,
            retry_after_ms: Some(retry_after_ms),
        },
        reference,
    )
}
