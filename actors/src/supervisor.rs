//! `RootSupervisor`: the top of each node's actor tree.
//!
//! ```text
//! RootSupervisor           restarts a failed child with a capped backoff
//!  └── DbRouter            database endpoint health (see database::db_router)
//! ```
//!
//! ractor has no restart strategies of its own: children are spawned linked, and a
//! child's failure reaches [`Actor::handle_supervisor_evt`] here, which respawns it.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::database::db_router::{DbRouter, DbRouterMessage};
use crate::database::Database;

/// The root supervisor actor.
pub struct RootSupervisor;

/// Messages of the root supervisor.
pub enum RootSupervisorMessage {
    /// Respawn the `DbRouter` (sent to itself after the restart backoff).
    RestartDbRouter,
    /// The current `DbRouter`, if one is running.
    DbRouter(RpcReplyPort<Option<ActorRef<DbRouterMessage>>>),
    /// How many times children were restarted since the node started.
    RestartCount(RpcReplyPort<u64>),
}

/// The supervisor's state.
pub struct RootSupervisorState {
    database: Database,
    db_router: Option<ActorRef<DbRouterMessage>>,
    restarts: u64,
}

/// Backoff before a restart: doubles per restart, capped, so a child that keeps failing
/// does not spin.
fn restart_backoff(restarts: u64) -> Duration {
    let exponent = restarts.min(6) as u32;
    Duration::from_millis(50 * 2u64.pow(exponent)).min(Duration::from_secs(3))
}

impl Actor for RootSupervisor {
    type Msg = RootSupervisorMessage;
    type State = RootSupervisorState;
    type Arguments = Database;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        database: Database,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (db_router, _) = Actor::spawn_linked(None, DbRouter, database.clone(), myself.get_cell()).await?;
        Ok(RootSupervisorState {
            database,
            db_router: Some(db_router),
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
            RootSupervisorMessage::RestartDbRouter => {
                if state.db_router.is_none() {
                    let (db_router, _) =
                        Actor::spawn_linked(None, DbRouter, state.database.clone(), myself.get_cell()).await?;
                    tracing::info!("db router restarted");
                    state.db_router = Some(db_router);
                }
            }
            RootSupervisorMessage::DbRouter(reply) => {
                let _ = reply.send(state.db_router.clone());
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
        let failed = match &event {
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
        let router_failed = match (&state.db_router, failed) {
            (Some(router), Some(id)) => router.get_id() == id,
            _ => false,
        };
        if router_failed {
            state.db_router = None;
            let backoff = restart_backoff(state.restarts);
            state.restarts += 1;
            myself.send_after(backoff, || RootSupervisorMessage::RestartDbRouter);
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(router) = state.db_router.take() {
            router.stop(Some("node stopping".to_owned()));
        }
        Ok(())
    }
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
