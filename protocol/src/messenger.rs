//! Bodies of the `/messenger/...` HTTP endpoints.

use serde::{Deserialize, Serialize};

/// The statuses a message goes through, as the seed names them.
pub mod status {
    /// Stored on the master, not yet received by every other member.
    pub const CREATED: &str = "created";
    /// Every other member's `received` cursor has reached the message.
    pub const RECEIVED: &str = "received";
    /// Every other member's `read` cursor has reached the message.
    pub const READ: &str = "read";
}

/// `POST /messenger/create-chat` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateChatRequest {
    /// The other user's id (a UUID, from `get-by-email`); must not be the caller's own.
    pub companion_id: String,
}

/// `POST /messenger/create-chat` answer. The same pair of users always gets the same chat.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateChatResponse {
    /// The direct chat of the caller and the companion (a UUID), new or existing.
    pub chat_id: String,
}

/// One member of a chat as listed by `GET /messenger/chats`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The member's user id (UUID).
    pub user_id: String,
    /// The member's given name.
    pub name: String,
    /// The member's family name.
    pub surname: String,
    /// Connected to some node of the cluster when the list was made, as the answering
    /// node knows it; `presence` frames on the websocket tell the changes after that.
    #[serde(default)]
    pub online: bool,
}

/// One chat of the caller.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The chat's id (UUID).
    pub chat_id: String,
    /// When the chat was created: RFC 3339 in UTC with microseconds.
    pub create_time: String,
    /// Every member of the chat, the caller included.
    pub participants: Vec<Participant>,
    /// Sequence number of the newest message, 0 when the chat is empty.
    pub last_seq: u64,
    /// Messages of others above the caller's read cursor.
    pub unread: u64,
}

/// `GET /messenger/chats` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatsResponse {
    /// The caller's chats, oldest first (by creation time, then id).
    pub chats: Vec<ChatSummary>,
}

/// A stored message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// Global id (a UUID).
    pub id: String,
    /// Per-chat sequence number: gap-free, strictly increasing.
    pub seq: u64,
    /// The chat the message belongs to (UUID).
    pub chat_id: String,
    /// The sender.
    pub user_id: String,
    /// The message text as sent (at most 4096 characters by default).
    pub text: String,
    /// `created`, `received` or `read`, as seen from the other participants' cursors.
    pub status: String,
    /// RFC 3339 with microseconds, UTC.
    pub create_time: String,
}

/// `GET /messenger/messages` answer: one page of a chat's history in `seq` order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesPage {
    /// Messages in the chat: its newest `seq`, since sequence numbers start at 1 without gaps.
    pub total: u64,
    /// The `offset` asked for (0 when omitted): the page holds messages with `seq > offset`.
    pub offset: u64,
    /// The page size used: the one asked for, else the default (100, or the node's
    /// maximum when lower). A `limit` above the maximum is refused, not clamped.
    pub limit: u64,
    /// Messages with `offset < seq <= offset + limit`, in `seq` order; fewer than `limit`
    /// (possibly none) at the end of the history.
    pub messages: Vec<MessageView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_chat_request_reads_the_seed_body() {
        let body = r#"{"companion_id": "6a3b2f50-7d0c-4a4e-9f0e-0d1f8c2b3a41"}"#;
        let request: CreateChatRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.companion_id, "6a3b2f50-7d0c-4a4e-9f0e-0d1f8c2b3a41");
    }

    #[test]
    fn a_participant_without_the_online_field_still_decodes() {
        // Lists written before the field existed (older nodes) read as offline.
        let body = r#"{"user_id": "u1", "name": "Bob", "surname": "Tallor"}"#;
        let participant: Participant = serde_json::from_str(body).unwrap();
        assert!(!participant.online);
    }
}
