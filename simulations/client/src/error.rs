//! The one error type of the client crate: what went wrong, with the request or frame
//! that it went wrong on, so an application can tell a refusal from an outage.

use std::time::Duration;

use tokio_tungstenite::tungstenite;

/// Why a call of this crate failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP request got no answer: connection refused, reset or timed out.
    #[error("{request}: {source}")]
    Transport {
        /// Method and path, as `POST /auth/sign-in`.
        request: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with another status than the call expects.
    #[error("{what}: expected {expected}, got {status} {body}")]
    UnexpectedStatus {
        /// The API call, as `sign-in`.
        what: &'static str,
        /// The status the call expects (e.g. 200).
        expected: u16,
        /// The status the server answered.
        status: u16,
        /// The answer's JSON body (its `message` says why), or null.
        body: serde_json::Value,
    },
    /// The answer had the expected status but not the expected shape.
    #[error("{what}: the answer does not parse: {source}")]
    UnexpectedBody {
        /// The API call, as `sign-in`.
        what: &'static str,
        /// Why the body did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The websocket could not be opened (refused, or the upgrade answered with an
    /// HTTP error such as 401 for a bad token).
    #[error("connecting {url}: {source}")]
    Connect {
        /// The socket's URL without its token.
        url: String,
        /// The websocket client's error (for an HTTP answer, it holds the status).
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// Opening the websocket took longer than allowed.
    #[error("connecting {url}: no answer within {timeout:?}")]
    ConnectTimedOut {
        /// The socket's URL without its token.
        url: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// Reading or writing an open websocket failed.
    #[error("websocket: {0}")]
    Socket(#[source] Box<tungstenite::Error>),
    /// No frame arrived in time.
    #[error("no frame within {0:?}")]
    NoFrameWithin(Duration),
    /// The server closed the socket, with this close code if it sent one.
    #[error("the server closed the socket ({0:?})")]
    Closed(Option<u16>),
    /// A text frame that is not a JSON envelope.
    #[error("the server sent a frame that is not an envelope: {frame}")]
    NotAnEnvelope {
        /// The frame's text.
        frame: String,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A [`crate::ChatClient`] wait ended before its condition held.
    #[error("{what} did not happen within {timeout:?}: {stats}")]
    WaitTimedOut {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// The client's counters when the wait gave up.
        stats: String,
    },
    /// The [`crate::ChatClient`]'s task has stopped (shut down or signed out).
    #[error("the chat client has stopped")]
    Stopped,
    /// The [`crate::ChatClient`]'s task stopped while a wait was on.
    #[error("the chat client stopped before {what}: {stats}")]
    StoppedBefore {
        /// What was waited for.
        what: String,
        /// The client's counters when it stopped.
        stats: String,
    },
    /// [`crate::ChatClient::shutdown`] did not finish in time.
    #[error("the chat client did not stop within {0:?}")]
    ShutdownTimedOut(Duration),
    /// The [`crate::ChatClient`]'s task panicked.
    #[error("the chat client's task failed: {0}")]
    TaskFailed(#[source] tokio::task::JoinError),
}

impl From<tungstenite::Error> for ClientError {
    fn from(error: tungstenite::Error) -> ClientError {
        ClientError::Socket(Box::new(error))
    }
}
