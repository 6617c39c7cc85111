//! `NodeRouter`: the one remote-capable actor of each node.
//!
//! ```text
//! RootSupervisor
//!  └── NodeRouter (remote-capable; pg groups "parley.routers" and "parley.router.<node>")
//!        from peers:  deliveries and receipts for users with sessions here, presence,
//!                     heartbeats, snapshot requests, sign-outs
//!        every tick:  heartbeat to every peer; peers silent past the failure timeout are
//!                     declared dead (a frozen or partitioned peer never closes its TCP
//!                     session, so the cluster layer alone would never notice)
//!        pg Leave:    a peer's connection closed: declared dead at once
//! ```
//!
//! Payloads are [`PeerMessage`]s in JSON: one wire format for every kind of traffic, so
//! only this actor's message type has to be serialisable.

use std::sync::Arc;
use std::time::Duration;

use protocol::cluster::PeerMessage;
use ractor::pg::{self, GroupChangeMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;

use super::peer_network::remote_router_of;
use super::peers::Heard;
use crate::messaging::MessagingServices;

/// Every node's router is in this group.
pub const ROUTERS_GROUP: &str = "parley.routers";
const ROUTER_GROUP_PREFIX: &str = "parley.router.";

/// The group holding only `node`'s router.
pub fn router_group(node: &str) -> String {
    format!("{ROUTER_GROUP_PREFIX}{node}")
}

/// The `NodeRouter` actor.
pub struct NodeRouter;

/// Messages of the `NodeRouter`. Variants travel by name between nodes: add, never rename.
#[derive(RactorClusterMessage)]
pub enum NodeRouterMessage {
    /// A JSON-encoded [`PeerMessage`] from another node.
    FromPeer(Vec<u8>),
    /// A JSON-encoded [`PeerMessage::Presence`], answered once recorded: from then on this
    /// node routes that user's deliveries to the announcing node.
    #[rpc]
    Announce(Vec<u8>, RpcReplyPort<bool>),
    /// Heartbeat tick (sent by the router to itself). The flag carries nothing: every
    /// variant of a remote-capable message has a serialisable field.
    Tick(bool),
}

/// Start-up arguments of the `NodeRouter`.
pub struct NodeRouterArguments {
    /// The node's messaging services: sessions to deliver to, peers, storage.
    pub services: Arc<MessagingServices>,
    /// How often the router heartbeats its peers (and checks them for silence).
    pub heartbeat_interval: Duration,
}

/// The router's state.
pub struct NodeRouterState {
    services: Arc<MessagingServices>,
}

impl Actor for NodeRouter {
    type Msg = NodeRouterMessage;
    type State = NodeRouterState;
    type Arguments = NodeRouterArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: NodeRouterArguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let node = arguments.services.peers.node_name().to_owned();
        pg::monitor_scope(pg::DEFAULT_SCOPE.to_owned(), myself.get_cell());
        pg::join(ROUTERS_GROUP.to_owned(), vec![myself.get_cell()]);
        pg::join(router_group(&node), vec![myself.get_cell()]);
        myself.send_interval(arguments.heartbeat_interval, || NodeRouterMessage::Tick(true));
        Ok(NodeRouterState {
            services: arguments.services,
        })
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let node = state.services.peers.node_name().to_owned();
        pg::leave(router_group(&node), vec![myself.get_cell()]);
        pg::leave(ROUTERS_GROUP.to_owned(), vec![myself.get_cell()]);
        pg::demonitor_scope(pg::DEFAULT_SCOPE.to_owned(), myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeRouterMessage::FromPeer(bytes) => match PeerMessage::from_bytes(&bytes) {
                Ok(message) => receive_from_peer(&state.services, message),
                Err(error) => tracing::warn!(%error, "undecodable peer message dropped"),
            },
            NodeRouterMessage::Announce(bytes, reply) => {
                if let Ok(message) = PeerMessage::from_bytes(&bytes) {
                    receive_from_peer(&state.services, message);
                }
                let _ = reply.send(true);
            }
            NodeRouterMessage::Tick(_) => heartbeat_and_expire(&state.services),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            handle_group_change(&state.services, change);
        }
        Ok(())
    }
}

/// Acts on a message from a peer: the router's whole job, and what in-process networks
/// of tests call directly.
pub fn receive_from_peer(services: &Arc<MessagingServices>, message: PeerMessage) {
    let from = message.from_node().to_owned();
    if services.peers.heard_from(&from) == Heard::Revived {
        tracing::info!(peer = %from, "peer joined");
        greet(services, &from);
    }
    match message {
        PeerMessage::Heartbeat { .. } => {}
        PeerMessage::SnapshotRequest { from } => services.peer_network.send_to(&from, &snapshot_of(services)),
        PeerMessage::PresenceSnapshot { from, users } => {
            // Users back with a revived peer: their companions here see them online again.
            for user in users.iter().filter(|user| !services.online_anywhere(user)) {
                services.announce_presence(user, true, false);
            }
            services.peers.set_snapshot(&from, users);
        }
        PeerMessage::Presence { from, user_id, online } => services.peers.set_presence(&from, &user_id, online),
        PeerMessage::Deliver {
            from,
            recipients,
            delivery,
            traceparent,
        } => {
            let span = tracing::info_span!(parent: None, "cluster.deliver", from = %from, chat_id = %delivery.chat_id);
            if let Some(traceparent) = &traceparent {
                services.trace_propagation.continue_trace(&span, traceparent);
            }
            services.deliver_locally(&recipients, Arc::new(delivery), None, &span);
        }
        PeerMessage::Status { recipients, status, .. } => services.notify_status_locally(&recipients, Arc::new(status)),
        PeerMessage::PresenceChanged {
            recipients, presence, ..
        } => services.notify_presence_locally(&recipients, Arc::new(presence)),
        PeerMessage::SignedOut {
            user_id,
            family_id,
            until_ms,
            ..
        } => services.sign_out_device(&user_id, &family_id, until_ms, false),
    }
}

/// A peer appeared (or came back): it gets our users and we ask for its users.
fn greet(services: &MessagingServices, peer: &str) {
    services.peer_network.send_to(peer, &snapshot_of(services));
    services.peer_network.send_to(
        peer,
        &PeerMessage::SnapshotRequest {
            from: services.peers.node_name().to_owned(),
        },
    );
}

fn snapshot_of(services: &MessagingServices) -> PeerMessage {
    PeerMessage::PresenceSnapshot {
        from: services.peers.node_name().to_owned(),
        users: services.sessions.online_users(),
    }
}

fn heartbeat_and_expire(services: &Arc<MessagingServices>) {
    services.peer_network.tell_every_peer(&PeerMessage::Heartbeat {
        from: services.peers.node_name().to_owned(),
    });
    for (peer, users) in services.peers.expire_silent() {
        tracing::warn!(%peer, users = users.len(), "peer silent past the failure timeout, declared dead");
        services.peer_users_gone(users);
    }
}

fn handle_group_change(services: &Arc<MessagingServices>, change: GroupChangeMessage) {
    match change {
        GroupChangeMessage::Join(_, group, cells) => {
            let Some(peer) = group.strip_prefix(ROUTER_GROUP_PREFIX) else {
                return;
            };
            if peer != services.peers.node_name() && cells.iter().any(|cell| !cell.get_id().is_local()) {
                // Say hello; its answer (or heartbeat) makes it alive here.
                greet(services, peer);
            }
        }
        GroupChangeMessage::Leave(_, group, cells) => {
            let Some(peer) = group.strip_prefix(ROUTER_GROUP_PREFIX) else {
                return;
            };
            // The peer may still be reachable over another session (two sessions raced and
            // one was torn down): only a peer with no router left in the group is dead.
            let still_reachable = remote_router_of(peer).is_some();
            if peer != services.peers.node_name()
                && cells.iter().any(|cell| !cell.get_id().is_local())
                && !still_reachable
            {
                let users = services.peers.mark_dead(peer);
                tracing::warn!(%peer, users = users.len(), "peer connection closed, declared dead");
                services.peer_users_gone(users);
            }
        }
    }
}

/// Tells every live peer that `user` is now online here and waits (bounded) until each
/// has recorded it: after this, a commit anywhere routes that user's deliveries here.
pub async fn announce_online(services: &MessagingServices, user: &str, timeout: Duration) {
    let announcement = PeerMessage::Presence {
        from: services.peers.node_name().to_owned(),
        user_id: user.to_owned(),
        online: true,
    };
    let started = std::time::Instant::now();
    services
        .peer_network
        .announce_to_every_peer(&announcement, timeout)
        .await;
    tracing::debug!(%user, elapsed = ?started.elapsed(), "announced online to peers");
}

/// Tells every peer that `user` has no session here any more.
pub fn announce_offline(services: &MessagingServices, user: &str) {
    services.peer_network.tell_every_peer(&PeerMessage::Presence {
        from: services.peers.node_name().to_owned(),
        user_id: user.to_owned(),
        online: false,
    });
}
