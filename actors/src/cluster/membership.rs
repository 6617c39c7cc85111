//! `Membership`: runs the ractor_cluster `NodeServer` and keeps the node connected to
//! its seeds.
//!
//! ```text
//! RootSupervisor
//!  └── Membership
//!        └── NodeServer (ractor_cluster: cookie challenge, transitive mesh; or TLS)
//!        every second: connect to each seed that has no session, with at most one
//!        attempt in flight per seed (ractor_cluster has no seed list and no reconnect)
//! ```
//!
//! With TLS (`cluster::tls`) the listener and every dial are TLS with mutual
//! authentication, and the mesh is not transitive: ractor_cluster dials the peers a peer
//! names over plain TCP, which a TLS listener refuses. Every node then reaches every
//! other through its own seed list, which must name them all.
//!
//! Liveness is not judged here: a frozen or partitioned peer keeps its TCP session open,
//! so the `NodeRouter`'s heartbeats decide who is alive.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage, RactorMessage};

use crate::cluster::tls::ClusterTls;

/// How often missing seeds are retried.
const SEED_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// A node left alone this long dials every seed, not only those above its address.
const DIAL_EVERYONE_AFTER: Duration = Duration::from_secs(3);
/// Bound on one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `Membership` actor.
pub struct Membership;

/// How this node joins the cluster.
#[derive(Debug, Clone)]
pub struct MembershipArguments {
    /// Where the `NodeServer` listens.
    pub listen: SocketAddr,
    /// The host peers should use to reach this node (transitive connections).
    pub advertise_host: String,
    /// `host:port` of other nodes' `NodeServer`s.
    pub seeds: Vec<String>,
    /// Shared secret of the cluster's nodes.
    pub cookie: String,
    /// This node's cluster name, incarnation included.
    pub cluster_name: String,
    /// TLS for the listener and every dial; None: plain TCP (the network must be private).
    pub tls: Option<ClusterTls>,
}

/// Messages of `Membership`.
#[derive(RactorMessage)]
pub enum MembershipMessage {
    /// Connect to every seed without a session (sent periodically to itself).
    ConnectSeeds,
    /// An attempt to connect to this seed ended.
    ConnectFinished(String),
}

/// Membership's state.
pub struct MembershipState {
    server: ActorRef<NodeServerMessage>,
    arguments: MembershipArguments,
    in_flight: HashSet<String>,
    /// Since when this node has had no peer session at all.
    isolated_since: Option<std::time::Instant>,
}

impl Actor for Membership {
    type Msg = MembershipMessage;
    type State = MembershipState;
    type Arguments = MembershipArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: MembershipArguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (encryption, connection_mode) = match &arguments.tls {
            Some(tls) => (
                IncomingEncryptionMode::Tls(tls.acceptor.clone()),
                NodeConnectionMode::Isolated,
            ),
            None => (IncomingEncryptionMode::Raw, NodeConnectionMode::Transitive),
        };
        let server = NodeServer::new(
            arguments.listen.port(),
            arguments.cookie.clone(),
            arguments.cluster_name.clone(),
            arguments.advertise_host.clone(),
            Some(encryption),
            Some(connection_mode),
        )
        .with_listen_addr(arguments.listen.ip());
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        tracing::info!(
            name = %arguments.cluster_name,
            listen = %arguments.listen,
            seeds = ?arguments.seeds,
            tls = arguments.tls.is_some(),
            "cluster node server started"
        );
        myself.send_interval(SEED_RETRY_INTERVAL, || MembershipMessage::ConnectSeeds);
        myself.cast(MembershipMessage::ConnectSeeds)?;
        Ok(MembershipState {
            server,
            arguments,
            in_flight: HashSet::new(),
            isolated_since: None,
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.server.stop(Some("membership stopping".to_owned()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMessage::ConnectSeeds => connect_missing_seeds(&myself, state).await,
            MembershipMessage::ConnectFinished(seed) => {
                state.in_flight.remove(&seed);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) if cell.get_id() == state.server.get_id() => {
                // Let the root supervisor restart membership with a fresh node server.
                Err(format!("the cluster node server failed: {error}").into())
            }
            SupervisionEvent::ActorTerminated(cell, _, _) if cell.get_id() == state.server.get_id() => {
                Err("the cluster node server stopped".into())
            }
            _ => Ok(()),
        }
    }
}

async fn connect_missing_seeds(myself: &ActorRef<MembershipMessage>, state: &mut MembershipState) {
    let own_addresses = own_addresses(&state.arguments);
    let seeds: Vec<String> = state
        .arguments
        .seeds
        .iter()
        .filter(|seed| !own_addresses.contains(*seed))
        .cloned()
        .collect();
    if seeds.is_empty() {
        return;
    }
    let Ok(CallResult::Success(sessions)) = state
        .server
        .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(1)))
        .await
    else {
        return;
    };
    // Every seed reached (directly or through the transitive mesh): nothing to do.
    if sessions.len() >= seeds.len() {
        state.isolated_since = None;
        return;
    }
    let isolated_for = match (sessions.is_empty(), state.isolated_since) {
        (false, _) => {
            state.isolated_since = None;
            Duration::ZERO
        }
        (true, Some(since)) => since.elapsed(),
        (true, None) => {
            state.isolated_since = Some(std::time::Instant::now());
            Duration::ZERO
        }
    };
    // A session is known by the socket's peer address and by the address the peer
    // advertises (its `host:port` as the seed lists name it, e.g. `node-2:4369` under
    // docker, where the socket only shows an IP).
    let connected: HashSet<String> = sessions
        .values()
        .flat_map(|session| {
            let advertised = session.peer_name.as_ref().map(|name| name.connection_string.clone());
            std::iter::once(session.peer_addr.clone()).chain(advertised)
        })
        .collect();
    let to_dial = seeds_to_dial(
        &advertised_address(&state.arguments),
        &seeds,
        &connected,
        isolated_for >= DIAL_EVERYONE_AFTER,
    );
    for seed in to_dial {
        if !state.in_flight.insert(seed.clone()) {
            continue;
        }
        let (server, reporter, tls) = (state.server.clone(), myself.clone(), state.arguments.tls.clone());
        tokio::spawn(async move {
            // The bound covers the TLS handshake too: a peer that never answers it must
            // not hold the seed's one attempt forever.
            let outcome = tokio::time::timeout(CONNECT_TIMEOUT, dial(&server, &seed, tls)).await;
            match outcome {
                Ok(Ok(())) => tracing::debug!(%seed, "connected to seed"),
                Ok(Err(error)) => tracing::debug!(%seed, %error, "seed unreachable"),
                Err(_) => tracing::debug!(%seed, "seed connection timed out"),
            }
            let _ = reporter.cast(MembershipMessage::ConnectFinished(seed));
        });
    }
}

/// Opens a session to `seed`, over TLS when the cluster uses it.
async fn dial(
    server: &ActorRef<NodeServerMessage>,
    seed: &str,
    tls: Option<ClusterTls>,
) -> Result<(), ractor_cluster::ClientConnectErr> {
    match tls {
        Some(tls) => ractor_cluster::client_connect_enc(server, seed, tls.connector, tls.server_name).await,
        None => ractor_cluster::client_connect(server, seed).await,
    }
}

/// The `host:port` peers know this node by: the advertised host (a docker service name,
/// say) with the cluster port.
fn advertised_address(arguments: &MembershipArguments) -> String {
    format!("{}:{}", arguments.advertise_host, arguments.listen.port())
}

/// Seed entries that are this node itself: its listen address (`0.0.0.0:4369` under
/// docker) and its advertised one, so every node can share one seed list.
fn own_addresses(arguments: &MembershipArguments) -> HashSet<String> {
    HashSet::from([arguments.listen.to_string(), advertised_address(arguments)])
}

/// The seeds to dial now. Two nodes dialling each other at once leave one session torn
/// down by ractor_cluster, and the remote actors announced over it vanish with it. So
/// only the node whose advertised address sorts lower dials; the other dials too only
/// after waiting alone for a while (its seed list may not be the mirror image of the
/// other's). Both sides compare the same two strings, advertised addresses, so they
/// agree on who dials also when the seeds are host names rather than IPs.
fn seeds_to_dial(
    advertised_address: &str,
    seeds: &[String],
    connected: &HashSet<String>,
    dial_everyone: bool,
) -> Vec<String> {
    seeds
        .iter()
        .filter(|seed| dial_everyone || seed.as_str() > advertised_address)
        .filter(|seed| !connected.contains(*seed))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(listen: &str, advertise_host: &str) -> MembershipArguments {
        MembershipArguments {
            listen: listen.parse().unwrap(),
            advertise_host: advertise_host.to_owned(),
            seeds: Vec::new(),
            cookie: String::new(),
            cluster_name: "node".to_owned(),
            tls: None,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn a_node_recognises_itself_by_listen_and_advertised_address() {
        let own = own_addresses(&arguments("0.0.0.0:4369", "node-1"));
        assert!(own.contains("node-1:4369"));
        assert!(own.contains("0.0.0.0:4369"));
        assert!(!own.contains("node-2:4369"));
    }

    #[test]
    fn with_host_name_seeds_exactly_one_of_two_nodes_dials() {
        let nobody = HashSet::new();
        let node_1 = seeds_to_dial("node-1:4369", &strings(&["node-2:4369"]), &nobody, false);
        let node_2 = seeds_to_dial("node-2:4369", &strings(&["node-1:4369"]), &nobody, false);
        assert_eq!(node_1, ["node-2:4369"]);
        assert!(node_2.is_empty());
        let lonely_node_2 = seeds_to_dial("node-2:4369", &strings(&["node-1:4369"]), &nobody, true);
        assert_eq!(lonely_node_2, ["node-1:4369"]);
    }

    #[test]
    fn a_seed_connected_under_its_advertised_name_is_not_dialled_again() {
        let connected = HashSet::from(["172.18.0.5:4369".to_owned(), "node-2:4369".to_owned()]);
        let seeds = strings(&["node-2:4369", "node-3:4369"]);
        assert_eq!(seeds_to_dial("node-1:4369", &seeds, &connected, false), ["node-3:4369"]);
    }
}
