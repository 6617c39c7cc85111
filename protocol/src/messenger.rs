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

/// The kinds of chat.
pub mod chat_kinds {
    /// Two people; created by `create-chat`, never changes members.
    pub const DIRECT: &str = "direct";
    /// A titled group; members are added and leave.
    pub const GROUP: &str = "group";
}

/// `POST /messenger/create-group` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateGroupRequest {
    /// The group's title: 1 to 200 characters once trimmed.
    pub title: String,
    /// The other members' user ids (UUIDs); the caller is always a member and the
    /// group's creator, so the caller's own id and repeated ids are ignored.
    #[serde(default)]
    pub member_ids: Vec<String>,
}

/// `POST /messenger/chats/{chat_id}/members` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMemberRequest {
    /// The user to add (UUID).
    pub user_id: String,
}

/// The answer of adding or removing a group member.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChangeResponse {
    /// The group (UUID).
    pub chat_id: String,
    /// The member added or removed (UUID).
    pub user_id: String,
    /// False when there was nothing to do (adding someone already a member).
    pub changed: bool,
    /// The membership event's `seq` in the chat, or the chat's newest `seq` when nothing changed.
    pub seq: u64,
}

/// `GET /messenger/chats/{chat_id}/members` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMembersResponse {
    /// The chat (UUID).
    pub chat_id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// The group's title; none for a one-to-one chat.
    pub title: Option<String>,
    /// Who may remove members: the group's creator, or after the creator left, the
    /// longest-standing member. None for a one-to-one chat.
    pub creator_id: Option<String>,
    /// Every member, longest-standing first.
    pub members: Vec<Participant>,
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
    /// `direct` or `group` (absent in lists from nodes before groups: `direct`).
    #[serde(default = "direct_kind")]
    pub kind: String,
    /// The group's title; none for a one-to-one chat.
    #[serde(default)]
    pub title: Option<String>,
    /// How many members the chat has, the caller included.
    #[serde(default)]
    pub member_count: u64,
    /// Every member of a one-to-one chat, the caller included. Empty for a group, which
    /// may have a thousand: `GET /messenger/chats/{chat_id}/members` lists them.
    pub participants: Vec<Participant>,
    /// Sequence number of the newest message, 0 when the chat is empty.
    pub last_seq: u64,
    /// Messages of others above the caller's read cursor.
    pub unread: u64,
}

fn direct_kind() -> String {
    chat_kinds::DIRECT.to_owned()
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
    /// Set on a group's membership events; see the websocket's `DeliveredMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<crate::websocket::MembershipEvent>,
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
