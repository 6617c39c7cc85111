//! Websocket messaging: sessions, chats, delivery, resume.
//!
//! ```text
//! RootSupervisor
//!  ├── DbRouter
//!  ├── Session per websocket (local)   parses frames, writes deliveries, replays on connect
//!  └── Chat per active chat (local)    commits sends, delivers to members' sessions
//! ```
//!
//! [`MessagingServices`] is what they share: the database, the node's session registry
//! and its chat directory.

pub mod chat;
pub mod frames;
pub mod outbound;
pub mod session;
pub mod session_registry;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use protocol::websocket::{actions, DeliveryPayload, Envelope, OutgoingMessage, StatusPayload};
use ractor::rpc::CallResult;

use crate::database::{Database, DbError};
use chat::{ChatDirectory, ChatMessage};
use frames::FrameLimits;
use session::SessionMessage;
use session_registry::{SessionId, SessionRegistry};
use store::{CommittedMessage, CursorKind, SendError};

/// How long a session waits for its chat to commit a frame.
const CHAT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Shared by every session and chat of the node.
pub struct MessagingServices {
    pub node_name: String,
    pub database: Database,
    pub sessions: SessionRegistry,
    pub chats: ChatDirectory,
    pub frame_limits: FrameLimits,
    /// Frames a session may have queued for a slow client before it is closed.
    pub outbound_capacity: usize,
    next_session_id: AtomicU64,
}

impl MessagingServices {
    pub fn new(
        node_name: String,
        database: Database,
        frame_limits: FrameLimits,
        outbound_capacity: usize,
    ) -> Arc<Self> {
        Arc::new(MessagingServices {
            node_name,
            database,
            sessions: SessionRegistry::default(),
            chats: ChatDirectory::default(),
            frame_limits,
            outbound_capacity,
            next_session_id: AtomicU64::new(1),
        })
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Commits a frame through the chat's actor (started on demand).
    pub async fn send(
        self: &Arc<Self>,
        chat_id: &str,
        sender: &str,
        messages: Vec<OutgoingMessage>,
        origin: Option<SessionId>,
    ) -> Result<Vec<CommittedMessage>, SendError> {
        self.call_chat(chat_id, |reply| ChatMessage::Send {
            sender: sender.to_owned(),
            messages: messages.clone(),
            origin,
            reply,
        })
        .await
    }

    /// Moves a cursor through the chat's actor.
    pub async fn move_cursor(
        self: &Arc<Self>,
        chat_id: &str,
        user: &str,
        kind: CursorKind,
        seq: u64,
    ) -> Result<u64, SendError> {
        self.call_chat(chat_id, |reply| ChatMessage::MoveCursor {
            user: user.to_owned(),
            kind,
            seq,
            reply,
        })
        .await
    }

    async fn call_chat<T, F>(self: &Arc<Self>, chat_id: &str, message: F) -> Result<T, SendError>
    where
        T: Send + 'static,
        F: Fn(ractor::RpcReplyPort<Result<T, SendError>>) -> ChatMessage,
    {
        // A chat that just passivated refuses the call: start a fresh one and try again.
        for _ in 0..2 {
            let chat = self
                .chats
                .get_or_start(chat_id, self)
                .await
                .map_err(|error| internal(format!("starting the chat actor: {error}")))?;
            match chat.call(&message, Some(CHAT_CALL_TIMEOUT)).await {
                Ok(CallResult::Success(outcome)) => return outcome,
                Ok(CallResult::Timeout) => {
                    return Err(SendError::Database(DbError::Timeout {
                        endpoint: "chat".to_owned(),
                        timeout: CHAT_CALL_TIMEOUT,
                    }))
                }
                Ok(CallResult::SenderError) | Err(_) => self.chats.forget(chat_id, &chat).await,
            }
        }
        Err(internal("the chat actor is unavailable".to_owned()))
    }

    /// Hands committed messages to every local session of `members`, except the socket
    /// they came from.
    pub fn deliver(&self, members: &[String], delivery: Arc<DeliveryPayload>, except: Option<SessionId>) {
        for member in members {
            for session in self.sessions.sessions_of(member) {
                if Some(session.session_id) != except {
                    let _ = session.actor.cast(SessionMessage::Deliver(Arc::clone(&delivery)));
                }
            }
        }
    }

    /// Tells every local session of `members` that a cursor moved.
    pub fn notify_status(&self, members: &[String], status: Arc<StatusPayload>) {
        for member in members {
            for session in self.sessions.sessions_of(member) {
                let _ = session.actor.cast(SessionMessage::Status(Arc::clone(&status)));
            }
        }
    }

    /// Closes every session with `code` (1001 at shutdown) and stops every chat.
    pub async fn close_all(&self, code: u16, reason: &str) {
        for session in self.sessions.all_sessions() {
            let _ = session.actor.cast(SessionMessage::Close {
                code,
                reason: reason.to_owned(),
            });
        }
        self.chats.stop_all().await;
    }
}

fn internal(message: String) -> SendError {
    SendError::Database(DbError::Unavailable {
        endpoint: "chat".to_owned(),
        reason: message,
    })
}

/// The `send-message` envelope a recipient gets.
pub fn delivery_envelope(delivery: &DeliveryPayload) -> Envelope {
    Envelope::messenger(actions::SEND_MESSAGE, delivery, None)
}
