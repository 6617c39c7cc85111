//! `RootSupervisor`: the top of each node's actor tree.
//!
//! ```text
//! RootSupervisor           restarts a failed child with a capped backoff
//!  ├── DbRouter            database endpoint health (database::db_router)
//!  ├── MasterFailover      which server is master, and promotions (database::master_failover;
//!  │                       only with --database-server)
//!  ├── Membership          NodeServer, seeds, reconnects (cluster::membership)
//!  ├── NodeRouter          the node's remote-capable router (cluster::node_router)
//!  └── MessagingSupervisor the parent of every Session and Chat, started on demand and
//!                          not restarted: a failed session's socket is closed and its
//!                          client resumes; a failed chat starts again on the next send
//!                          (messaging::messaging_supervisor)
//! ```
//!
//! This is the node's one supervision tree; the other modules' drawings show their part.
//!
//! ractor has no restart strategies of its own: children are spawned linked, and a
//! child's failure reaches [`Actor::handle_supervisor_evt`] here, which respawns it.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::cluster::membership::{Membership, MembershipArguments};
use crate::cluster::node_router::{NodeRouter, NodeRouterArguments};
use crate::database::db_router::DbRouter;
use crate::database::master_failover::MasterFailover;
use crate::database::Database;
use crate::messaging::messaging_supervisor::MessagingSupervisor;
use crate::messaging::MessagingServices;
use crate::metrics::Metrics;

/// The root supervisor actor.
pub struct RootSupervisor;

/// The supervised children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// The database health prober.
    DbRouter,
    /// The master's watcher and promoter (only with failover configured).
    MasterFailover,
    /// The cluster membership (only with a cluster).
    Membership,
    /// The node router (cluster delivery and presence).
    NodeRouter,
    /// The parent of the sessions and chats.
    MessagingSupervisor,
}

/// What the children need.
pub struct RootSupervisorArguments {
    /// The database the `DbRouter` probes.
    pub database: Database,
    /// The node's messaging services, for the `NodeRouter` and the messaging supervisor.
    pub messaging: Arc<MessagingServices>,
    /// None: a node without a cluster (single node).
    pub membership: Option<MembershipArguments>,
    /// How often the `NodeRouter` heartbeats its peers.
    pub heartbeat_interval: Duration,
    /// Where restarts are counted.
    pub metrics: Arc<Metrics>,
}

/// Messages of the root supervisor.
#[derive(RactorMessage)]
pub enum RootSupervisorMessage {
    /// Respawn this child (sent to itself after the restart backoff).
    Restart(Child),
    /// How many times children were restarted since the node started.
    RestartCount(RpcReplyPort<u64>),
}

/// The supervisor's state.
pub struct RootSupervisorState {
    arguments: RootSupervisorArguments,
    children: Vec<(Child, ActorCell)>,
    restarts: u64,
}

/// Backoff before a restart: doubles per restart, capped, so a child that keeps failing
/// does not spin.
fn restart_backoff(restarts: u64) -> Duration {
    let exponent = restarts.min(6) as u32;
    Duration::from_millis(50 * 2u64.pow(exponent)).min(Duration::from_secs(3))
}

async fn spawn_child(
    child: Child,
    arguments: &RootSupervisorArguments,
    supervisor: ActorCell,
) -> Result<Option<ActorCell>, ActorProcessingErr> {
    let cell = match child {
        Child::DbRouter => Actor::spawn_linked(None, DbRouter, arguments.database.clone(), supervisor)
            .await?
            .0
            .get_cell(),
        Child::MasterFailover => {
            if arguments.database.failover_settings().servers.is_empty() {
                return Ok(None);
            }
            Actor::spawn_linked(None, MasterFailover, arguments.database.clone(), supervisor)
                .await?
                .0
                .get_cell()
        }
        Child::Membership => match &arguments.membership {
            Some(membership) => Actor::spawn_linked(None, Membership, membership.clone(), supervisor)
                .await?
                .0
                .get_cell(),
            None => return Ok(None),
        },
        Child::NodeRouter => {
            let router_arguments = NodeRouterArguments {
                services: Arc::clone(&arguments.messaging),
                heartbeat_interval: arguments.heartbeat_interval,
            };
            Actor::spawn_linked(None, NodeRouter, router_arguments, supervisor)
                .await?
                .0
                .get_cell()
        }
        Child::MessagingSupervisor => {
            Actor::spawn_linked(None, MessagingSupervisor, Arc::clone(&arguments.messaging), supervisor)
                .await?
                .0
                .get_cell()
        }
    };
    Ok(Some(cell))
}

impl Actor for RootSupervisor {
    type Msg = RootSupervisorMessage;
    type State = RootSupervisorState;
    type Arguments = RootSupervisorArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: RootSupervisorArguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        for child in [
            Child::DbRouter,
            Child::MasterFailover,
            Child::MessagingSupervisor,
            Child::NodeRouter,
            Child::Membership,
        ] {
            if let Some(cell) = spawn_child(child, &arguments, myself.get_cell()).await? {
                children.push((child, cell));
            }
        }
        Ok(RootSupervisorState {
            arguments,
            children,
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootSupervisorMessage::Restart(child) => {
                if !state.children.iter().any(|(running, _)| *running == child) {
                    match spawn_child(child, &state.arguments, myself.get_cell()).await {
                        Ok(Some(cell)) => {
                            tracing::info!(?child, "child actor restarted");
                            state.children.push((child, cell));
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::error!(?child, %error, "child actor restart failed; retrying");
                            schedule_restart(&myself, state, child);
                        }
                    }
                }
            }
            RootSupervisorMessage::RestartCount(reply) => {
                let _ = reply.send(state.restarts);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let stopped = match &event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = %cell.get_id(), %error, "child actor failed");
                Some(cell.get_id())
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::warn!(actor = %cell.get_id(), ?reason, "child actor stopped");
                Some(cell.get_id())
            }
            _ => None,
        };
        let Some(stopped) = stopped else {
            return Ok(());
        };
        let position = state.children.iter().position(|(_, cell)| cell.get_id() == stopped);
        if let Some(position) = position {
            let (child, _) = state.children.remove(position);
            schedule_restart(&myself, state, child);
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        for (_, cell) in state.children.drain(..) {
            cell.stop(Some("node stopping".to_owned()));
        }
        Ok(())
    }
}

fn schedule_restart(myself: &ActorRef<RootSupervisorMessage>, state: &mut RootSupervisorState, child: Child) {
    let backoff = restart_backoff(state.restarts);
    state.restarts += 1;
    state.arguments.metrics.actor_restarts.inc();
    myself.send_after(backoff, move || RootSupervisorMessage::Restart(child));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(restart_backoff(0), Duration::from_millis(50));
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(50), Duration::from_secs(3));
    }
}
