//! `DbRouter`: keeps the health of every database endpoint the node routes by.
//!
//! ```text
//! RootSupervisor
//!  └── DbRouter   (one per node, local)
//!        ├─ every probe_interval: probe master and each read endpoint in its own task
//!        └─ FailureReported from request tasks: probe again at once
//! ```
//!
//! Health lives in the endpoints themselves (atomics), so request tasks route by it
//! without ever waiting on this actor's mailbox.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;

use super::{Database, Endpoint, EndpointRole};

/// The `DbRouter` actor.
pub struct DbRouter;

/// What one successful probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReading {
    /// The server's `@@server_id`: tells which server answered behind a proxy or a moved address.
    pub server_id: u64,
    /// The server's `@@read_only`; a master that reports it (demoted) counts as down.
    pub read_only: bool,
    /// Time from the probe's start to its answer, connecting included.
    pub latency: Duration,
    /// The master's side of semi-synchronous replication (probed on the master only).
    pub semi_sync: Option<SemiSyncReading>,
}

/// How the master stands with semi-synchronous replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemiSyncReading {
    /// `rpl_semi_sync_master_enabled`: commits wait for a replica's acknowledgement.
    pub enabled: bool,
    /// `Rpl_semi_sync_master_status`: the master is waiting for acknowledgements now
    /// (off while it has fallen back to asynchronous replication).
    pub active: bool,
    /// `Rpl_semi_sync_master_clients`: replicas connected that acknowledge.
    pub acknowledging_replicas: u64,
    /// `Rpl_semi_sync_master_no_tx`: commits that returned without any acknowledgement
    /// since the master started (a fall-back to asynchronous replication).
    pub unacknowledged_commits: u64,
}

impl SemiSyncReading {
    /// Whether a commit made now would reach a replica before it returns.
    pub fn commits_are_acknowledged(&self) -> bool {
        self.enabled && self.acknowledging_replicas > 0
    }
}

/// The router's view of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    /// The endpoint's configured name (`master`, `replica-1`, ...).
    pub name: String,
    /// Master or read endpoint.
    pub role: EndpointRole,
    /// Whether queries are routed to it now (request failures mark it down at once).
    pub healthy: bool,
    /// Failures (probes and requests) since its last success.
    pub consecutive_failures: u64,
    /// What the latest probe saw, when it succeeded.
    pub last_reading: Option<ProbeReading>,
    /// Why the latest probe failed, when it did.
    pub last_error: Option<String>,
}

/// Messages of the `DbRouter`.
#[derive(RactorMessage)]
pub enum DbRouterMessage {
    /// Probe every endpoint that has no probe in flight (the interval timer sends this).
    ProbeAll,
    /// One endpoint's probe finished.
    ProbeFinished {
        /// The probed endpoint's configured name.
        endpoint_name: String,
        /// What the probe saw, or why it failed.
        outcome: Result<ProbeReading, ProbeFailure>,
    },
    /// A request task saw this endpoint fail and has already marked it down.
    FailureReported {
        /// The failed endpoint's configured name.
        endpoint_name: String,
        /// What the request saw (for the log).
        reason: String,
    },
    /// The health of every endpoint, master first.
    Health(RpcReplyPort<Vec<EndpointHealth>>),
}

/// The router's state.
pub struct DbRouterState {
    database: Database,
    probes_in_flight: HashSet<String>,
    last_outcomes: Vec<(String, Result<ProbeReading, ProbeFailure>)>,
}

impl Actor for DbRouter {
    type Msg = DbRouterMessage;
    type State = DbRouterState;
    type Arguments = Database;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        database: Database,
    ) -> Result<Self::State, ActorProcessingErr> {
        database.attach_router(Some(myself.clone()));
        let interval = database.timeouts().probe_interval;
        myself.send_interval(interval, || DbRouterMessage::ProbeAll);
        myself.cast(DbRouterMessage::ProbeAll)?;
        Ok(DbRouterState {
            database,
            probes_in_flight: HashSet::new(),
            last_outcomes: Vec::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.database.attach_router(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DbRouterMessage::ProbeAll => {
                let endpoints: Vec<Arc<Endpoint>> = state.database.endpoints();
                for endpoint in endpoints {
                    start_probe(&myself, state, endpoint);
                }
            }
            DbRouterMessage::ProbeFinished { endpoint_name, outcome } => {
                state.probes_in_flight.remove(&endpoint_name);
                apply_probe_outcome(state, &endpoint_name, outcome);
            }
            DbRouterMessage::FailureReported { endpoint_name, reason } => {
                tracing::debug!(endpoint = %endpoint_name, %reason, "database failure reported");
                let endpoint = state
                    .database
                    .endpoints()
                    .into_iter()
                    .find(|endpoint| endpoint.name == endpoint_name);
                if let Some(endpoint) = endpoint {
                    start_probe(&myself, state, endpoint);
                }
            }
            DbRouterMessage::Health(reply) => {
                let _ = reply.send(health_of(state));
            }
        }
        Ok(())
    }
}

fn start_probe(myself: &ActorRef<DbRouterMessage>, state: &mut DbRouterState, endpoint: Arc<Endpoint>) {
    if !state.probes_in_flight.insert(endpoint.name.clone()) {
        return;
    }
    let timeout = state.database.timeouts().probe_timeout;
    let router = myself.clone();
    tokio::spawn(async move {
        let outcome = probe(&endpoint, timeout).await;
        // The router may have stopped meanwhile; nothing to report to then.
        let _ = router.cast(DbRouterMessage::ProbeFinished {
            endpoint_name: endpoint.name.clone(),
            outcome,
        });
    });
}

/// Why a probe found an endpoint unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// No connection could be opened; holds the driver's message.
    #[error("could not connect: {0}")]
    Connect(String),
    /// `SELECT @@server_id, @@read_only` failed; holds the driver's message.
    #[error("the probe query failed: {0}")]
    Query(String),
    /// The probe query returned no row (should not happen on MariaDB or MySQL).
    #[error("the probe returned no row")]
    NoRow,
    /// No answer within the probe timeout (held): the server may be frozen or unreachable.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The master's role and its semi-synchronous replication in one round trip.
const MASTER_PROBE: &str = "SELECT @@server_id, @@read_only, @@rpl_semi_sync_master_enabled, \
     (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'), \
     (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'), \
     (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_NO_TX')";

type MasterProbeRow = (u64, i64, i64, Option<String>, Option<String>, Option<String>);

async fn probe(endpoint: &Endpoint, timeout: Duration) -> Result<ProbeReading, ProbeFailure> {
    let started = Instant::now();
    let reading = async {
        // A pool too busy to lend a connection in time is a slow endpoint, not a dead one.
        let mut conn = endpoint.connection(timeout).await.map_err(|error| match error {
            super::DbError::Timeout { timeout, .. } => ProbeFailure::Timeout(timeout),
            other => ProbeFailure::Connect(other.to_string()),
        })?;
        let query_failed = |error: mysql_async::Error| ProbeFailure::Query(error.to_string());
        if endpoint.role == EndpointRole::Master {
            let row: Option<MasterProbeRow> = conn.query_first(MASTER_PROBE).await.map_err(query_failed)?;
            let (server_id, read_only, enabled, status, clients, no_tx) = row.ok_or(ProbeFailure::NoRow)?;
            let number = |value: Option<String>| value.and_then(|value| value.parse().ok()).unwrap_or(0);
            Ok(ProbeReading {
                server_id,
                read_only: read_only != 0,
                latency: started.elapsed(),
                semi_sync: Some(SemiSyncReading {
                    enabled: enabled != 0,
                    active: status.is_some_and(|status| status.eq_ignore_ascii_case("ON")),
                    acknowledging_replicas: number(clients),
                    unacknowledged_commits: number(no_tx),
                }),
            })
        } else {
            let row: Option<(u64, i64)> = conn
                .query_first("SELECT @@server_id, @@read_only")
                .await
                .map_err(query_failed)?;
            let (server_id, read_only) = row.ok_or(ProbeFailure::NoRow)?;
            Ok(ProbeReading {
                server_id,
                read_only: read_only != 0,
                latency: started.elapsed(),
                semi_sync: None,
            })
        }
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeFailure::Timeout(timeout)),
    }
}

fn apply_probe_outcome(state: &mut DbRouterState, endpoint_name: &str, outcome: Result<ProbeReading, ProbeFailure>) {
    let Some(endpoint) = state
        .database
        .endpoints()
        .into_iter()
        .find(|endpoint| endpoint.name == endpoint_name)
    else {
        return;
    };
    // A master that turned read-only (demoted) cannot take writes: treat it as down.
    let usable = match &outcome {
        Ok(reading) => !(endpoint.role == EndpointRole::Master && reading.read_only),
        Err(_) => false,
    };
    if usable {
        if endpoint.record_success() {
            tracing::info!(endpoint = %endpoint.name, "database endpoint up");
        }
    } else if endpoint.record_failure() {
        let reason = match &outcome {
            Ok(_) => "master is read-only".to_owned(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(endpoint = %endpoint.name, %reason, "database endpoint down");
    }
    match &outcome {
        Ok(ProbeReading {
            semi_sync: Some(semi_sync),
            ..
        }) => state.database.note_semi_sync(semi_sync),
        // A refused or failed connection, not a slow answer: a busy master keeps its writes.
        Err(ProbeFailure::Connect(_)) if endpoint.role == EndpointRole::Master => {
            state.database.note_master_unreachable();
        }
        _ if endpoint.role == EndpointRole::Master => state.database.note_master_probe_inconclusive(),
        _ => {}
    }
    match state.last_outcomes.iter_mut().find(|(name, _)| name == endpoint_name) {
        Some(entry) => entry.1 = outcome,
        None => state.last_outcomes.push((endpoint_name.to_owned(), outcome)),
    }
}

fn health_of(state: &DbRouterState) -> Vec<EndpointHealth> {
    state
        .database
        .endpoints()
        .into_iter()
        .map(|endpoint| {
            let last = state
                .last_outcomes
                .iter()
                .find(|(name, _)| *name == endpoint.name)
                .map(|(_, outcome)| outcome);
            EndpointHealth {
                name: endpoint.name.clone(),
                role: endpoint.role,
                healthy: endpoint.is_healthy(),
                consecutive_failures: endpoint.consecutive_failures(),
                last_reading: last.and_then(|outcome| outcome.as_ref().ok().cloned()),
                last_error: last.and_then(|outcome| outcome.as_ref().err().map(ToString::to_string)),
            }
        })
        .collect()
}
