//! `MasterFailover`: knows which database server is the master, moves the node's writes
//! to it, and replaces a dead one.
//!
//! ```text
//! RootSupervisor
//!  └── MasterFailover   (one per node, local; only with --database-server)
//!        ├─ every probe interval: read every server as the admin user (own task)
//!        ├─ the writable server becomes the node's write endpoint
//!        └─ a promotion, repoint or demotion (promotion_decision) runs in its own
//!           task under a lock on a majority of servers (promotion); one at a time
//! ```
//!
//! Every node runs one; the lock makes exactly one of them act, and the others follow
//! by their next reading.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::time::Instant;

use super::promotion::{carry_out, read_all, ActionOutcome, FailoverError};
use super::promotion_decision::{assess, ServerView, TopologyAction};
use super::server_topology::WatchedServer;
use super::Database;

/// Bounds a promotion, repoint or demotion as a whole (a fenced server's
/// `read_only = ON` may wait for commits that never complete).
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The `MasterFailover` actor.
pub struct MasterFailover;

/// Messages of the `MasterFailover`.
#[derive(RactorMessage)]
pub enum MasterFailoverMessage {
    /// Read every server, unless a round is in flight (the interval timer sends this).
    ReadServers,
    /// A round of readings finished.
    ServersRead(Vec<ServerView>),
    /// A promotion, repoint or demotion finished.
    ActionFinished(Result<ActionOutcome, FailoverError>),
    /// The last round's readings, in configured order.
    Topology(RpcReplyPort<Vec<ServerView>>),
}

/// The actor's state.
pub struct MasterFailoverState {
    database: Database,
    servers: Vec<Arc<WatchedServer>>,
    round_in_flight: bool,
    action_in_flight: bool,
    /// Since when no round found a master.
    without_master_since: Option<Instant>,
    last_views: Vec<ServerView>,
}

impl Actor for MasterFailover {
    type Msg = MasterFailoverMessage;
    type State = MasterFailoverState;
    type Arguments = Database;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        database: Database,
    ) -> Result<Self::State, ActorProcessingErr> {
        let servers = database
            .failover_settings()
            .servers
            .iter()
            .map(|spec| WatchedServer::open(spec).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        myself.send_interval(database.timeouts().probe_interval, || {
            MasterFailoverMessage::ReadServers
        });
        myself.cast(MasterFailoverMessage::ReadServers)?;
        Ok(MasterFailoverState {
            database,
            servers,
            round_in_flight: false,
            action_in_flight: false,
            without_master_since: None,
            last_views: Vec::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        for server in &state.servers {
            server.close().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MasterFailoverMessage::ReadServers => {
                if !state.round_in_flight {
                    state.round_in_flight = true;
                    let servers = state.servers.clone();
                    let timeout = state.database.timeouts().probe_timeout;
                    let actor = myself.clone();
                    tokio::spawn(async move {
                        let views = read_all(&servers, timeout).await;
                        let _ = actor.cast(MasterFailoverMessage::ServersRead(views));
                    });
                }
            }
            MasterFailoverMessage::ServersRead(views) => {
                state.round_in_flight = false;
                take_in_round(&myself, state, views);
            }
            MasterFailoverMessage::ActionFinished(outcome) => {
                state.action_in_flight = false;
                let metrics = state.database.metrics();
                match outcome {
                    Ok(ActionOutcome::Done(action)) => {
                        metrics
                            .database_failover_actions
                            .with_label_values(&[action_kind(&action), "done"])
                            .inc();
                        tracing::warn!(?action, "database topology changed");
                        // This node made it the master: its writes go there now, not
                        // after the next round (which waits for a server cut off by a
                        // partition to time out).
                        if let TopologyAction::Promote { candidate } = &action {
                            if state.database.use_master(candidate) {
                                tracing::warn!(master = %candidate, "writes now go to a new master");
                            }
                            state.without_master_since = None;
                        }
                        // See the result at once rather than at the next tick.
                        myself.cast(MasterFailoverMessage::ReadServers)?;
                    }
                    Ok(ActionOutcome::NothingToDo) => {}
                    Err(FailoverError::NoMajority { locked, total }) => {
                        tracing::info!(locked, total, "database failover lock not held by a majority; another node acts or too few servers answer");
                    }
                    Err(error) => {
                        metrics
                            .database_failover_actions
                            .with_label_values(&["any", "failed"])
                            .inc();
                        tracing::error!(%error, "database failover action failed; retried at the next reading");
                    }
                }
            }
            MasterFailoverMessage::Topology(reply) => {
                let _ = reply.send(state.last_views.clone());
            }
        }
        Ok(())
    }
}

fn take_in_round(myself: &ActorRef<MasterFailoverMessage>, state: &mut MasterFailoverState, views: Vec<ServerView>) {
    let now = Instant::now();
    let settings = state.database.failover_settings();
    let without_master_for = state
        .without_master_since
        .map_or(Duration::ZERO, |since| now.duration_since(since));
    let assessment = assess(&views, without_master_for, settings.failover_after);
    match &assessment.master {
        Some(master) => {
            state.without_master_since = None;
            if state.database.use_master(master) {
                tracing::warn!(master = %master, "writes now go to a new master");
            }
        }
        None => {
            state.without_master_since.get_or_insert(now);
        }
    }
    state.database.record_servers_seen(
        views
            .iter()
            .map(|view| operator_view(view, assessment.master.as_deref()))
            .collect(),
    );
    state.last_views = views;
    if let Some(action) = assessment.action {
        if !state.action_in_flight {
            state.action_in_flight = true;
            tracing::warn!(?action, "database topology needs a change; taking the failover lock");
            let servers = state.servers.clone();
            let last_views = state.last_views.clone();
            let read_timeout = state.database.timeouts().probe_timeout;
            let lock_timeout = read_timeout.max(Duration::from_secs(1));
            let failover_after = settings.failover_after;
            let actor = myself.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(
                    ACTION_TIMEOUT,
                    carry_out(&servers, &last_views, lock_timeout, read_timeout, failover_after),
                )
                .await
                .unwrap_or(Err(FailoverError::Timeout(ACTION_TIMEOUT)));
                let _ = actor.cast(MasterFailoverMessage::ActionFinished(outcome));
            });
        }
    }
}

/// One server as `/cluster` shows it (see `protocol::cluster::DatabaseServerView`).
fn operator_view(view: &ServerView, master: Option<&str>) -> protocol::cluster::DatabaseServerView {
    let Some(reading) = &view.reading else {
        return protocol::cluster::DatabaseServerView {
            name: view.name.clone(),
            role: "unreachable".to_owned(),
            gtid_current_pos: None,
            replicates_from: None,
            replication_connected: None,
        };
    };
    let role = match (reading.read_only, master == Some(view.name.as_str())) {
        (_, true) => "master",
        (true, false) => "replica",
        (false, false) => "writable",
    };
    protocol::cluster::DatabaseServerView {
        name: view.name.clone(),
        role: role.to_owned(),
        gtid_current_pos: Some(reading.applied.as_text().to_owned()),
        replicates_from: reading
            .replication
            .as_ref()
            .map(|replication| format!("{}:{}", replication.master_host, replication.master_port)),
        replication_connected: reading.replication.as_ref().map(|replication| replication.io_connected),
    }
}

fn action_kind(action: &TopologyAction) -> &'static str {
    match action {
        TopologyAction::Promote { .. } => "promote",
        TopologyAction::Repoint { .. } => "repoint",
        TopologyAction::Demote { .. } => "demote",
    }
}
