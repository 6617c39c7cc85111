//! `MessagingSupervisor`: the parent of every session and chat actor of the node.
//!
//! ```text
//! RootSupervisor
//!  └── MessagingSupervisor   (restarted by the root like its other children)
//!        ├── Session per websocket   failed: not restarted; its socket is closed with
//!        │                           1011 and it leaves the registry (offline when it
//!        │                           was the user's last), so the client reconnects
//!        │                           and resumes from its received cursor
//!        └── Chat per active chat    failed: not restarted; it leaves the directory and
//!                                    the next send starts a fresh one from the database;
//!                                    the frames it held are answered with an error and
//!                                    resent by their clients (stored once by client id)
//! ```
//!
//! Neither is restarted in place: a session's state is its socket, which a restart
//! cannot give back, and a chat's state is in the database, which a fresh actor reads
//! anyway. A failed actor's `post_stop` does not run (ractor skips it), so the clean-up
//! that normally happens there happens here. A failure of one never reaches another.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use super::MessagingServices;

/// The messaging supervisor actor.
pub struct MessagingSupervisor;

/// Messages of the messaging supervisor.
#[derive(RactorMessage)]
pub enum MessagingSupervisorMessage {
    /// How many sessions and chats failed since it started.
    Failures(RpcReplyPort<u64>),
}

/// The supervisor's state.
pub struct MessagingSupervisorState {
    services: Arc<MessagingServices>,
    failures: u64,
}

impl Actor for MessagingSupervisor {
    type Msg = MessagingSupervisorMessage;
    type State = MessagingSupervisorState;
    type Arguments = Arc<MessagingServices>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        services: Arc<MessagingServices>,
    ) -> Result<Self::State, ActorProcessingErr> {
        services.adopt_actors_under(Some(myself.get_cell()));
        Ok(MessagingSupervisorState { services, failures: 0 })
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.services.disown_actors_of(&myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MessagingSupervisorMessage::Failures(reply) => {
                let _ = reply.send(state.failures);
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
        // Stopped children cleaned up after themselves; only failures need us.
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            state.failures += 1;
            state.services.actor_failed(cell.get_id(), &error.to_string()).await;
        }
        Ok(())
    }
}
