//! Websocket frames: the seed's envelope `{"topic", "action", "payload"}`, where
//! `payload` is a JSON document carried as a string.
//!
//! Client → server actions: `send-message` (the seed's), `received`, `read`, `heartbeat`,
//! `renew`. Server → client actions: `send-message` (a delivery: the same envelope the
//! seed's recipient gets, with ids and sequence numbers added), `ack`, `status`,
//! `presence`, `replay-complete`, `heartbeat`, `renewed`, `error`. New actions extend the envelope; the seed's
//! frames stay valid verbatim.
//!
//! `heartbeat` exists for clients that cannot send websocket pings (browsers): the
//! server answers each one at once, so a client that hears nothing for a while knows
//! its node is gone or frozen and reconnects. The server, for its part, pings every
//! socket at the protocol level and closes one it has heard nothing from (see the
//! node's `--websocket-ping-interval-ms` and `--websocket-idle-timeout-ms`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The only topic so far.
pub const TOPIC_MESSENGER: &str = "messenger";

/// Action names.
pub mod actions {
    /// Client: send messages. Server: deliver messages.
    pub const SEND_MESSAGE: &str = "send-message";
    /// Client: everything up to `seq` in `chat_id` reached me.
    pub const RECEIVED: &str = "received";
    /// Client: I have read everything up to `seq` in `chat_id`.
    pub const READ: &str = "read";
    /// Server: your messages are committed.
    pub const ACK: &str = "ack";
    /// Server: a member's cursor moved (the seed's statuses: received, read).
    pub const STATUS: &str = "status";
    /// Server: a companion went online or offline.
    pub const PRESENCE: &str = "presence";
    /// Server: every message pending at connect time has been sent; live traffic follows.
    pub const REPLAY_COMPLETE: &str = "replay-complete";
    /// Server: a frame could not be handled.
    pub const ERROR: &str = "error";
    /// Client: are you there? Server: yes (answered at once, ahead of pending acks).
    pub const HEARTBEAT: &str = "heartbeat";
    /// Client: here is a fresh access token for this socket (it would otherwise be
    /// closed when the token it was opened with expires).
    pub const RENEW: &str = "renew";
    /// Server: the fresh token is taken; the socket now lives until its expiry.
    pub const RENEWED: &str = "renewed";
}

/// Close codes of the messenger socket besides RFC 6455's own (1001 node stopping or
/// client silent, 1007, 1008, 1009, 1011). Codes 4000-4999 are the application's.
pub mod close_codes {
    /// The access token the socket lives on expired and no fresh one came over it
    /// (`renew`): refresh the token pair and connect again.
    pub const ACCESS_TOKEN_EXPIRED: u16 = 4401;
    /// The device signed out (its sign-in was revoked): do not reconnect with its tokens;
    /// they are refused from now on.
    pub const SIGNED_OUT: u16 = 4403;
}

/// The envelope of every text frame, both ways.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always `messenger` ([`TOPIC_MESSENGER`]); any other topic is refused with `unknown_topic`.
    pub topic: String,
    /// What the frame does: one of [`actions`]; it decides how `payload` decodes.
    pub action: String,
    /// A JSON document, as a string (the seed's format).
    pub payload: String,
    /// Optional client-chosen reference, echoed in the answer to this frame.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl Envelope {
    /// A messenger-topic envelope around `payload`.
    pub fn messenger<T: Serialize>(action: &str, payload: &T, reference: Option<String>) -> Envelope {
        Envelope {
            topic: TOPIC_MESSENGER.to_owned(),
            action: action.to_owned(),
            payload: to_json(payload),
            reference,
        }
    }

    /// The frame's text.
    pub fn to_text(&self) -> String {
        to_json(self)
    }

    /// Decodes the payload string as `T`.
    pub fn decode_payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain data structs with string keys always serialise.
    serde_json::to_string(value).expect("wire types serialise to JSON")
}

/// One message in a client's `send-message` payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// The message text: not empty, at most 4096 characters by default.
    pub text: String,
    /// The seed sends `created`; ignored otherwise.
    #[serde(default)]
    pub status: Option<String>,
    /// Makes a resend idempotent: the same `client_id` from the same sender in the same chat is stored once; in another chat it is another message.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// Client `send-message` payload (the seed's).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessagePayload {
    /// The chat to send to (UUID); the sender must be a member.
    pub chat_id: String,
    /// Messages to store in order, one `ack` entry each; at most 100 per frame by default.
    pub messages: Vec<OutgoingMessage>,
}

/// One delivered message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredMessage {
    /// Global message id (a UUID); clients de-duplicate deliveries by it.
    pub id: String,
    /// Per-chat sequence number: from 1, gap-free, strictly increasing.
    pub seq: u64,
    /// The chat the message belongs to (UUID).
    pub chat_id: String,
    /// The sender.
    pub user_id: String,
    /// The message text as sent.
    pub text: String,
    /// Always `created` in a delivery; later changes come as `status` frames.
    pub status: String,
    /// Commit time on the master: RFC 3339 in UTC with microseconds.
    pub create_time: String,
    /// The sender's `client_id`, when the send had one (lets the sender match its own messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Set on a group's membership events (someone created the group, was added, left
    /// or was removed); `user_id` is who acted and `text` says it in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<MembershipEvent>,
}

/// A change of a group's members, stored as a message in the chat's sequence so that
/// replay and history show it in its place.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEvent {
    /// `created`, `added`, `left` or `removed` (see [`membership_events`]).
    pub kind: String,
    /// The member the change is about (the creator for `created`).
    pub subject_id: String,
}

/// The kinds of [`MembershipEvent`].
pub mod membership_events {
    /// The group was created; the subject is its creator.
    pub const CREATED: &str = "created";
    /// The subject was added by the message's `user_id`.
    pub const ADDED: &str = "added";
    /// The subject left the group.
    pub const LEFT: &str = "left";
    /// The subject was removed by the message's `user_id` (the group's creator).
    pub const REMOVED: &str = "removed";
}

/// Server `send-message` payload: a delivery.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPayload {
    /// The chat of every message in `messages` (UUID).
    pub chat_id: String,
    /// Messages in `seq` order; a replay may repeat messages already seen (de-duplicate by `id`).
    pub messages: Vec<DeliveredMessage>,
}

/// The commit of one sent message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAck {
    /// The `client_id` the message was sent with, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The stored message's global id (UUID); a resend with the same `client_id` gets the same.
    pub id: String,
    /// The message's per-chat sequence number (from 1).
    pub seq: u64,
    /// Commit time on the master: RFC 3339 in UTC with microseconds.
    pub create_time: String,
}

/// Server `ack` payload: one entry per message of the acknowledged frame, in order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckPayload {
    /// The chat the messages were stored in (UUID).
    pub chat_id: String,
    /// One entry per message of the frame, in the frame's order.
    pub acks: Vec<MessageAck>,
}

/// Client `received` / `read` payload: a cursor move.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPayload {
    /// The chat whose cursor moves (UUID).
    pub chat_id: String,
    /// The highest `seq` received or read (`read` moves the received cursor too). Cursors
    /// never move back, so a lower one changes nothing, and stop at the chat's newest `seq`.
    pub seq: u64,
}

/// Server `status` payload. In a one-to-one chat: `user_id` has received or read
/// everything up to `seq`. In a group it is a summary, sent only to the sender of the
/// message `seq`: `user_id` is that sender, `status` is the message's status (`read` once
/// every other member read it), and `received_by` / `read_by` of `members` say how far it
/// got; a sender's earlier messages got at least as far.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusPayload {
    /// The chat whose member's cursor moved (UUID).
    pub chat_id: String,
    /// The member (UUID) whose cursor moved.
    pub user_id: String,
    /// `received` or `read`.
    pub status: String,
    /// The member's new cursor: every message with `seq` up to this one.
    pub seq: u64,
    /// Groups only: other members whose received cursor reached `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_by: Option<u64>,
    /// Groups only: other members whose read cursor reached `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_by: Option<u64>,
    /// Groups only: the group's members other than the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
}

/// Server `presence` payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresencePayload {
    /// The companion (UUID) whose presence changed.
    pub user_id: String,
    /// True when the user now has a session on some node of the cluster.
    pub online: bool,
}

/// Server `replay-complete` payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayCompletePayload {
    /// Messages replayed from the database before live traffic.
    pub replayed: u64,
    /// The node serving this connection.
    pub node: String,
}

/// Client `heartbeat` payload. The payload is optional: absent, `""` and `"{}"` are all
/// a heartbeat without a time; any other field is refused (an `error` frame with
/// `invalid_payload`), so a typo is not silently ignored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatPayload {
    /// Any number the client likes, typically its clock in milliseconds; echoed in the
    /// answer so the client can time the round trip without keeping state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<u64>,
}

/// Server `heartbeat` payload: the answer to a client's `heartbeat`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswerPayload {
    /// The client's `sent_at_ms`, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<u64>,
    /// The node serving this connection.
    pub node: String,
}

/// Client `renew` payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewPayload {
    /// A fresh access token of the same user (from `PUT /auth/token`).
    pub access_token: String,
}

/// Server `renewed` payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewedPayload {
    /// When the socket will be closed with 4401 unless renewed again (Unix time, ms).
    pub expires_at_ms: u64,
}

/// Server `error` payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// Human-readable explanation; its wording may change.
    pub message: String,
    /// Stable machine-readable code (e.g. `invalid_payload`, `chat_not_found`, `rate_limited`).
    pub code: String,
    /// The `client_id`s of the refused messages, when the frame had any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ids: Vec<String>,
    /// When to send again, in milliseconds (`rate_limited`: when the sender's limit
    /// allows the refused messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_frame_decodes() {
        let frame = r#"{"topic":"messenger", "action": "send-message", "payload":"{\"chat_id\":\"e8d3dc26-a218-4ca1-ae4b-da38b27ed9b3\", \"messages\":[{\"text\": \"Hello, Alice!\", \"status\": \"created\"}]}"}"#;
        let envelope: Envelope = serde_json::from_str(frame).unwrap();
        assert_eq!(envelope.action, actions::SEND_MESSAGE);
        assert_eq!(envelope.reference, None);
        let payload: SendMessagePayload = envelope.decode_payload().unwrap();
        assert_eq!(payload.chat_id, "e8d3dc26-a218-4ca1-ae4b-da38b27ed9b3");
        assert_eq!(payload.messages[0].text, "Hello, Alice!");
        assert_eq!(payload.messages[0].client_id, None);
    }

    #[test]
    fn envelopes_round_trip_with_the_payload_as_a_string() {
        let payload = CursorPayload {
            chat_id: "c".into(),
            seq: 3,
        };
        let text = Envelope::messenger(actions::RECEIVED, &payload, Some("r1".into())).to_text();
        assert!(text.contains(r#""payload":"{\"chat_id\":\"c\",\"seq\":3}""#), "{text}");
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.decode_payload::<CursorPayload>().unwrap(), payload);
        assert_eq!(back.reference.as_deref(), Some("r1"));
    }
}
