//! Messages between nodes' `NodeRouter`s, JSON-encoded inside the one remote-capable
//! actor message. Every message names its sender node (name with incarnation).

use serde::{Deserialize, Serialize};

use crate::websocket::{DeliveryPayload, PresencePayload, StatusPayload};

/// A message from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeerMessage {
    /// Sent to every peer every heartbeat interval; silence means the peer is gone.
    Heartbeat {
        /// Sender's cluster name with incarnation (`node-1#<incarnation>`).
        from: String,
    },
    /// Asks the receiver for its `PresenceSnapshot` (sent when a peer appears or revives).
    SnapshotRequest {
        /// Sender's cluster name with incarnation; the snapshot is sent back to it.
        from: String,
    },
    /// Every user with a session on `from`; replaces what the receiver knew of `from`.
    PresenceSnapshot {
        /// Sender's cluster name with incarnation.
        from: String,
        /// Ids of the users with at least one session on `from`, in no particular order.
        users: Vec<String>,
    },
    /// `user_id` opened their first session on `from`, or closed their last one there.
    Presence {
        /// Sender's cluster name with incarnation (where the user's sessions are).
        from: String,
        /// The user (UUID) whose presence on `from` changed.
        user_id: String,
        /// True: first session opened on `from`; false: last one closed there.
        online: bool,
    },
    /// Messages committed in a chat, for the `recipients` who have sessions on the receiver.
    Deliver {
        /// Sender's cluster name with incarnation (the node that committed the messages).
        from: String,
        /// User ids the receiver should deliver to (only those with sessions on the receiver).
        recipients: Vec<String>,
        /// The committed messages, as the websocket `send-message` delivery carries them.
        delivery: DeliveryPayload,
        /// W3C `traceparent` of the commit, so the recipient's node continues its trace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// A member's cursor moved, for `recipients` on the receiver.
    Status {
        /// Sender's cluster name with incarnation.
        from: String,
        /// User ids the receiver should tell (only those with sessions on the receiver).
        recipients: Vec<String>,
        /// The member's new cursor, as the websocket `status` frame carries it.
        status: StatusPayload,
    },
    /// A user went online or offline cluster-wide, for `recipients` (their companions).
    PresenceChanged {
        /// Sender's cluster name with incarnation.
        from: String,
        /// Companions of the user, among those with sessions on the receiver.
        recipients: Vec<String>,
        /// Who went online or offline, as the websocket `presence` frame carries it.
        presence: PresencePayload,
    },
    /// A sign-in (refresh-token family) was revoked: the receiver closes that device's
    /// sockets and refuses its access tokens until `until_ms` (Unix time), when the last
    /// of them would have expired anyway.
    SignedOut {
        /// Sender's cluster name with incarnation (the node that took the sign-out).
        from: String,
        /// The user (UUID) who signed out.
        user_id: String,
        /// The revoked refresh-token family (the `fam` claim of that sign-in's tokens).
        family_id: String,
        /// Milliseconds since the Unix epoch when the family's last access token expires; the
        /// receiver may forget the revocation after that.
        until_ms: u64,
    },
}

impl PeerMessage {
    /// The sending node's cluster name (with incarnation), whatever the kind.
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

    /// JSON encoding of the message, tagged by `kind` (snake_case variant name).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("peer messages serialise to JSON")
    }

    /// Decodes what [`PeerMessage::to_bytes`] produced; fails on malformed JSON or an unknown
    /// `kind` (e.g. from a newer peer), which the receiver should log and drop.
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
    /// Every node the answering node knows, itself included, alive or not.
    pub members: Vec<ClusterMember>,
    /// The database tier as the answering node sees it (absent where a node does not
    /// report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseView>,
}

/// The database tier as one node sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseView {
    /// Whether the node accepts writes now: false while the master is unreachable or no
    /// replica acknowledges its commits (writes then get 503 `database_unavailable`).
    pub writes_accepted: bool,
    /// The master first, then the read endpoints, by the node's last probes.
    pub endpoints: Vec<DatabaseEndpointView>,
    /// The master's semi-synchronous replication at the last probe that read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semi_sync: Option<SemiSyncView>,
    /// With automatic failover: every database server as the node read it last (every
    /// 500 ms), in the configured order. Empty without failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<DatabaseServerView>,
}

/// One database server, as a node's automatic failover reads it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseServerView {
    /// The name given with `--database-server` (`master`, `replica-1`, …).
    pub name: String,
    /// `master` (the server this node writes to), `replica` (read-only), `writable`
    /// (takes writes but is not the master: a stray old master about to be demoted), or
    /// `unreachable`.
    pub role: String,
    /// `@@gtid_current_pos`: everything it has applied or written (absent when
    /// unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_current_pos: Option<String>,
    /// `host:port` it replicates from, when it is a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates_from: Option<String>,
    /// Its IO thread is connected to that server (`Slave_IO_Running: Yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_connected: Option<bool>,
}

/// One database endpoint of a node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseEndpointView {
    /// `master`, or the name given to a read endpoint (`haproxy-read`).
    pub name: String,
    /// `master` or `read`.
    pub role: String,
    /// The node routes to it (its last probe or query succeeded).
    pub healthy: bool,
}

/// The master's semi-synchronous replication.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemiSyncView {
    /// Commits wait for a replica's acknowledgement (`rpl_semi_sync_master_enabled`).
    pub enabled: bool,
    /// The master is waiting for acknowledgements now (`Rpl_semi_sync_master_status`).
    pub active: bool,
    /// Replicas connected that acknowledge (`Rpl_semi_sync_master_clients`).
    pub acknowledging_replicas: u64,
    /// Commits returned without an acknowledgement since the master started
    /// (`Rpl_semi_sync_master_no_tx`).
    pub unacknowledged_commits: u64,
}

/// One node as seen from the answering node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// The member's cluster name with incarnation (`node-1#<incarnation>`).
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
