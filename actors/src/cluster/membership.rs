//! `Membership`: runs the ractor_cluster `NodeServer` and keeps the node connected to
//! its seeds.
//!
//! ```text
//! RootSupervisor
//!  └── Membership
//!        └── NodeServer (ractor_cluster: cookie challenge, transitive mesh)
//!        every second: connect to each seed that has no session, with at most one
//!        attempt in flight per seed (ractor_cluster has no seed list and no reconnect)
//! ```
//!
//! Liveness is not judged here: a frozen or partitioned peer keeps its TCP session open,
//! so the `NodeRouter`'s heartbeats decide who is alive.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage, RactorMessage};

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
        let server = NodeServer::new(
            arguments.listen.port(),
            arguments.cookie.clone(),
            arguments.cluster_name.clone(),
            arguments.advertise_host.clone(),
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(arguments.listen.ip());
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        tracing::info!(name = %arguments.cluster_name, listen = %arguments.listen, seeds = ?arguments.seeds, "cluster node server started");
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
    let own_address = state.arguments.listen.to_string();
    let seeds: Vec<String> = state
        .arguments
        .seeds
        .iter()
        .filter(|seed| **seed != own_address)
        .cloned()
        .collect();
    if seeds.is_empty() {
        return;
    }
    let sessions = match state
        .server
        .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(1)))
        .await
    {
        Ok(CallResult::Success(sessions)) => sessions,
        _ => return,
    };
    // Every seed reached (directly or through the transitive mesh): nothing to do.
    if sessions.len() >= seeds.len() {
        state.isolated_since = None;
        return;
    }
    // Two nodes dialling each other at once leave one session torn down by ractor_cluster,
    // and the remote actors announced over it vanish with it. So only the node with the
    // lower address dials; the other dials too only after waiting alone for a while (its
    // seed list may not be the mirror image of the other's).
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
    let dial_everyone = isolated_for >= DIAL_EVERYONE_AFTER;
    let connected: HashSet<String> = sessions.values().map(|session| session.peer_addr.clone()).collect();
    for seed in seeds {
        if !dial_everyone && seed.as_str() < own_address.as_str() {
            continue;
        }
        if connected.contains(&seed) || !state.in_flight.insert(seed.clone()) {
            continue;
        }
        let (server, reporter) = (state.server.clone(), myself.clone());
        tokio::spawn(async move {
            let outcome =
                tokio::time::timeout(CONNECT_TIMEOUT, ractor_cluster::client_connect(&server, seed.as_str())).await;
            match outcome {
                Ok(Ok(())) => tracing::debug!(%seed, "connected to seed"),
                Ok(Err(error)) => tracing::debug!(%seed, %error, "seed unreachable"),
                Err(_) => tracing::debug!(%seed, "seed connection timed out"),
            }
            let _ = reporter.cast(MembershipMessage::ConnectFinished(seed));
        });
    }
}
