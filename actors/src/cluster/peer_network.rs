//! How a node's messaging reaches the other nodes: the seam between what is said to peers
//! ([`PeerMessage`]s: deliveries, receipts, presence, sign-outs, heartbeats) and how it
//! travels.
//!
//! On a node it travels through ractor_cluster to the peers' `NodeRouter`s
//! ([`RactorPeerNetwork`]); in-process tests join two or more nodes' services in one
//! process through a network of channels instead, so routing between nodes is tested
//! without sockets.

#[cfg(test)]
pub mod in_process;

use std::time::Duration;

use futures::future::BoxFuture;
use protocol::cluster::PeerMessage;
use ractor::pg;
use ractor::{ActorCell, ActorRef};

use super::node_router::{router_group, NodeRouterMessage, ROUTERS_GROUP};

/// Carries peer messages to the other nodes' routers. Every send is fire-and-forget
/// except [`PeerNetwork::announce_to_every_peer`]: a peer that cannot be reached misses
/// the message, and its users resume from the database when they reconnect.
pub trait PeerNetwork: Send + Sync + 'static {
    /// Sends `message` to `node`'s router (the node's incarnation name, as in
    /// [`super::peers::Peers::node_name`]); dropped when the node is unreachable.
    fn send_to(&self, node: &str, message: &PeerMessage);
    /// Sends `message` to every reachable peer's router.
    fn tell_every_peer(&self, message: &PeerMessage);
    /// Sends `message` to every reachable peer and returns once each has handled it, or
    /// once `timeout` has passed for the slow ones.
    fn announce_to_every_peer<'a>(&'a self, message: &'a PeerMessage, timeout: Duration) -> BoxFuture<'a, ()>;
}

/// The peers' `NodeRouter`s, found in ractor's process groups (joined over the cluster).
pub struct RactorPeerNetwork;

impl RactorPeerNetwork {
    /// Every router of the group that lives on another node.
    fn remote_routers() -> Vec<ActorRef<NodeRouterMessage>> {
        pg::get_members(&ROUTERS_GROUP.to_owned())
            .into_iter()
            .filter(|cell| !cell.get_id().is_local())
            .map(ActorRef::from)
            .collect()
    }
}

/// `node`'s router, when a session to it is up.
pub(super) fn remote_router_of(node: &str) -> Option<ActorCell> {
    pg::get_members(&router_group(node))
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
}

impl PeerNetwork for RactorPeerNetwork {
    fn send_to(&self, node: &str, message: &PeerMessage) {
        if let Some(cell) = remote_router_of(node) {
            let router: ActorRef<NodeRouterMessage> = cell.into();
            let _ = router.cast(NodeRouterMessage::FromPeer(message.to_bytes()));
        }
    }

    fn tell_every_peer(&self, message: &PeerMessage) {
        let bytes = message.to_bytes();
        for router in Self::remote_routers() {
            let _ = router.cast(NodeRouterMessage::FromPeer(bytes.clone()));
        }
    }

    fn announce_to_every_peer<'a>(&'a self, message: &'a PeerMessage, timeout: Duration) -> BoxFuture<'a, ()> {
        let bytes = message.to_bytes();
        let calls = Self::remote_routers().into_iter().map(move |router| {
            let bytes = bytes.clone();
            async move {
                // A peer that does not answer in time is slow or gone; the announcement
                // reaches it with its next snapshot request if it comes back.
                let _ = router
                    .call(|reply| NodeRouterMessage::Announce(bytes, reply), Some(timeout))
                    .await;
            }
        });
        Box::pin(async move {
            futures::future::join_all(calls).await;
        })
    }
}
