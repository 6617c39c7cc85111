//! Messages between nodes' `NodeRouter`s, JSON-encoded inside the one remote-capable
//! actor message. Every message names its sender node (name with incarnation).

use serde::{Deserialize, Serialize};

use crate::websocket::{DeliveryPayload, PresencePayload, StatusPayload};

/// A message from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeerMessage {
    /// Sent to every peer every heartbeat interval; silence means the peer is gone.
    Heartbeat { from: String },
    /// Asks the receiver for its `PresenceSnapshot` (sent when a peer appears or revives).
    SnapshotRequest { from: String },
    /// Every user with a session on `from`; replaces what the receiver knew of `from`.
    PresenceSnapshot { from: String, users: Vec<String> },
    /// `user_id` opened their first session on `from`, or closed their last one there.
    Presence {
        from: String,
        user_id: String,
        online: bool,
    },
    /// Messages committed in a chat, for the `recipients` who have sessions on the receiver.
    Deliver {
        from: String,
        recipients: Vec<String>,
        delivery: DeliveryPayload,
        /// W3C `traceparent` of the commit, so the recipient's node continues its trace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// A member's cursor moved, for `recipients` on the receiver.
    Status {
        from: String,
        recipients: Vec<String>,
        status: StatusPayload,
    },
    /// A user went online or offline cluster-wide, for `recipients` (their companions).
    PresenceChanged {
        from: String,
        recipients: Vec<String>,
        presence: PresencePayload,
    },
    /// A sign-in (refresh-token family) was revoked: the receiver closes that device's
    /// sockets and refuses its access tokens until `until_ms` (Unix time), when the last
    /// of them would have expired anyway.
    SignedOut {
        from: String,
        user_id: String,
        family_id: String,
        until_ms: u64,
    },
}

impl PeerMessage {
    pub fn from_node(&self) -> &str {
        match self {
            PeerMessage::Heartbeat { from }
            | PeerMessage::SnapshotRequest { from }
            | PeerMessage::PresenceSnapshot { from, .. }
            | PeerMessage::Presence { from, .. }
            | PeerMessage::Deliver { from, .. }
            | PeerMessage::Status { from, .. }
            | PeerMessage::PresenceChanged { from, .. }
            | PeerMessage::SignedOut { from, .. } => from,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("peer messages serialise to JSON")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<PeerMessage, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `GET /cluster` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's cluster name (`node-1#<incarnation>`).
    pub node: String,
    pub members: Vec<ClusterMember>,
}

/// One node as seen from the answering node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub name: String,
    /// True for the answering node and for peers heard from within the failure timeout.
    pub alive: bool,
    /// Milliseconds since the last heartbeat (0 for the answering node).
    pub last_heard_ms: u64,
    /// Users with sessions there.
    pub users: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_messages_round_trip_tagged() {
        let message = PeerMessage::Presence {
            from: "node-1#ab".into(),
            user_id: "u".into(),
            online: true,
        };
        let bytes = message.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""kind":"presence""#));
        assert_eq!(PeerMessage::from_bytes(&bytes).unwrap(), message);
        assert_eq!(message.from_node(), "node-1#ab");
    }
}
