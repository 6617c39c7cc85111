//! The database layer: endpoints, routing of reads and writes, read-your-writes,
//! migrations, and the `DbRouter` actor that keeps endpoint health.
//!
//! ```text
//! request task ── Database::write ──> master (one transaction, bounded by a timeout)
//!              └─ Database::read ──> healthy read endpoints ─> master ─> endpoints marked down
//!                                    (each attempt bounded; a failed endpoint is marked down
//!                                     at once and the DbRouter's probes bring it back)
//! ```

mod applied_positions;
pub mod db_router;
pub mod endpoint;
pub mod errors;
mod failover_lock;
pub mod master_failover;
mod master_position;
pub mod migrations;
pub mod promotion;
pub mod promotion_decision;
mod recent_writes;
pub mod replication_gate;
pub mod server_topology;
pub mod statement_sizes;
mod writes;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use ractor::ActorRef;

use db_router::SemiSyncReading;
pub use endpoint::{Endpoint, EndpointRole, EndpointSpec, PoolLimits};
pub use errors::DbError;
use replication_gate::ReplicationGate;
pub use server_topology::DatabaseServerSpec;
use server_topology::GtidPosition;

use crate::metrics::Metrics;
use db_router::DbRouterMessage;
use master_position::MasterPositionFetches;
use recent_writes::RecentWrites;

/// Every bound the database layer keeps.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseTimeouts {
    /// One read attempt on one endpoint, connecting included.
    pub read_attempt: Duration,
    /// How long a read may wait for its turn at a busy endpoint before trying the next.
    pub read_queue: Duration,
    /// A whole write transaction, connecting and committing included.
    pub write: Duration,
    /// How long a replica may take to catch up with the caller's own last write
    /// before the read goes to the next endpoint.
    pub gtid_wait: Duration,
    /// How often the `DbRouter` probes every endpoint.
    pub probe_interval: Duration,
    /// One probe.
    pub probe_timeout: Duration,
    /// How long a user's last write position is remembered for read-your-writes.
    pub read_your_writes_horizon: Duration,
}

impl Default for DatabaseTimeouts {
    fn default() -> Self {
        DatabaseTimeouts {
            read_attempt: Duration::from_millis(800),
            read_queue: Duration::from_secs(3),
            write: Duration::from_millis(1500),
            gtid_wait: Duration::from_millis(100),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(400),
            read_your_writes_horizon: Duration::from_secs(30),
        }
    }
}

/// What the node is told about its databases.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Where writes go (and reads of last resort).
    pub master: EndpointSpec,
    /// Read endpoints (replicas or HAProxy), tried in turn; may be empty (reads go to the master).
    pub reads: Vec<EndpointSpec>,
    /// Connect, query and queueing bounds.
    pub timeouts: DatabaseTimeouts,
    /// Pool size of each endpoint (the same for all).
    pub pool_limits: PoolLimits,
    /// Refuse writes while the master reports no replica that acknowledges commits
    /// (semi-synchronous replication), instead of acking what only the master holds.
    pub require_semi_sync: bool,
    /// The servers watched for automatic failover (none: the master is fixed).
    pub failover: FailoverSettings,
}

/// Automatic failover: which servers may become master, and when.
#[derive(Debug, Clone)]
pub struct FailoverSettings {
    /// Every database server, with an administrative URL. Empty: no failover, writes
    /// always go to the configured master.
    pub servers: Vec<DatabaseServerSpec>,
    /// How long no server may be writable (and the replicas have lost the master too)
    /// before a replica is promoted.
    pub failover_after: Duration,
    /// How long a write that finds no master waits for one (a promotion) before it is
    /// refused; below the proxy's timeout, so the answer is slow rather than lost.
    pub write_wait: Duration,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings {
            servers: Vec::new(),
            failover_after: Duration::from_secs(1),
            write_wait: Duration::from_secs(4),
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy)]
pub enum Freshness<'a> {
    /// Any replica will do.
    Any,
    /// The reader must see its own writes, whichever node took them: a replica is used
    /// only once it has applied the master's binlog position as of the read's start
    /// (which covers every write answered before it, on any node); otherwise the master
    /// answers. When the master cannot tell its position (it is down), the reader's last
    /// write through this node is what a replica must have applied.
    ReadYourWrites(&'a str),
    /// The master first (used to confirm "not found" answers that replica lag may cause);
    /// replicas only when the master is down.
    MasterFirst,
}

/// Cheap-to-clone handle to the node's databases. Queries run in the caller's task.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where writes go now: one of `write_endpoints`, moved by the `MasterFailover`.
    master: ArcSwap<Endpoint>,
    /// The configured master, or with failover one endpoint per database server (the
    /// application's credentials and database, the server's address).
    write_endpoints: Vec<Arc<Endpoint>>,
    failover: FailoverSettings,
    reads: Vec<Arc<Endpoint>>,
    timeouts: DatabaseTimeouts,
    recent_writes: RecentWrites,
    master_positions: MasterPositionFetches,
    next_read: AtomicUsize,
    router: ArcSwapOption<ActorRef<DbRouterMessage>>,
    metrics: Arc<Metrics>,
    replication_gate: ReplicationGate,
    /// Every database server as the `MasterFailover` last read it (empty without
    /// failover), for `/cluster`.
    servers_seen: ArcSwap<Vec<protocol::cluster::DatabaseServerView>>,
}

/// One read attempt's failure, by what it means for the next attempt.
enum AttemptError {
    /// The endpoint failed: mark it down, try the next.
    Endpoint(DbError),
    /// The replica has not applied the reader's last write yet: try the next.
    Stale,
    /// The query failed in a way another endpoint would repeat.
    Query(DbError),
}

/// A write transaction's body: runs on the master and says whether to commit
/// (`Ok(Ok(value))`) or roll back with a domain error (`Ok(Err(domain))`).
pub type WriteResult<'t, T, D> = BoxFuture<'t, Result<Result<T, D>, mysql_async::Error>>;

impl Database {
    /// Opens the pools (lazily: nothing connects yet).
    pub fn open(config: &DatabaseConfig, metrics: Arc<Metrics>) -> Result<Database, DbError> {
        let (write_endpoints, master) = endpoint::write_endpoints_of(config)?;
        let reads = config
            .reads
            .iter()
            .map(|spec| Endpoint::open(spec, config.pool_limits).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Database {
            shared: Arc::new(Shared {
                master: ArcSwap::new(master),
                write_endpoints,
                failover: config.failover.clone(),
                reads,
                timeouts: config.timeouts,
                recent_writes: RecentWrites::new(config.timeouts.read_your_writes_horizon),
                master_positions: MasterPositionFetches::default(),
                next_read: AtomicUsize::new(0),
                router: ArcSwapOption::empty(),
                metrics,
                replication_gate: ReplicationGate::new(config.require_semi_sync),
                servers_seen: ArcSwap::from_pointee(Vec::new()),
            }),
        })
    }

    /// Takes in what the `DbRouter` saw of the master's semi-synchronous replication.
    pub fn note_semi_sync(&self, reading: &SemiSyncReading) {
        self.shared
            .replication_gate
            .note(reading, &self.shared.master.load().name, &self.shared.metrics);
    }

    /// What `GET /cluster` shows of the database tier.
    pub fn view(&self) -> protocol::cluster::DatabaseView {
        let gate = &self.shared.replication_gate;
        protocol::cluster::DatabaseView {
            writes_accepted: gate.accepts_writes(),
            endpoints: self
                .endpoints()
                .into_iter()
                .map(|endpoint| protocol::cluster::DatabaseEndpointView {
                    name: endpoint.name.clone(),
                    role: match endpoint.role {
                        EndpointRole::Master => "master",
                        EndpointRole::Read => "read",
                    }
                    .to_owned(),
                    healthy: endpoint.is_healthy(),
                })
                .collect(),
            semi_sync: gate.last_reading().map(|reading| protocol::cluster::SemiSyncView {
                enabled: reading.enabled,
                active: reading.active,
                acknowledging_replicas: reading.acknowledging_replicas,
                unacknowledged_commits: reading.unacknowledged_commits,
            }),
            servers: self.shared.servers_seen.load_full().as_ref().clone(),
        }
    }

    /// What the `MasterFailover` read of every server in its last round.
    pub(crate) fn record_servers_seen(&self, servers: Vec<protocol::cluster::DatabaseServerView>) {
        self.shared.servers_seen.store(Arc::new(servers));
    }

    /// A probe of the master that could not read its replication state.
    pub fn note_master_probe_inconclusive(&self) {
        self.shared.replication_gate.note_inconclusive();
    }

    /// The `DbRouter` could not connect to the master.
    pub fn note_master_unreachable(&self) {
        self.shared
            .replication_gate
            .note_unreachable(&self.shared.master.load().name, &self.shared.metrics);
    }

    /// The master endpoint now (writes, and reads of last resort).
    pub fn master(&self) -> Arc<Endpoint> {
        self.shared.master.load_full()
    }

    /// Sends writes to the server called `name` from now on; returns whether it was
    /// another server before. Unknown names change nothing.
    pub fn use_master(&self, name: &str) -> bool {
        if self.shared.master.load().name == name {
            return false;
        }
        let Some(endpoint) = self
            .shared
            .write_endpoints
            .iter()
            .find(|endpoint| endpoint.name == name)
        else {
            return false;
        };
        self.shared.master.store(Arc::clone(endpoint));
        self.shared.metrics.database_master_changes.inc();
        // Writes wait for the replication gate, which only a probe of the new master opens.
        if let Some(router) = self.shared.router.load_full() {
            let _ = router.cast(DbRouterMessage::ProbeAll);
        }
        true
    }

    /// Which servers the `MasterFailover` watches, and its delay.
    pub fn failover_settings(&self) -> &FailoverSettings {
        &self.shared.failover
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The master first, then every read endpoint.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        std::iter::once(self.master())
            .chain(self.shared.reads.iter().cloned())
            .collect()
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &DatabaseTimeouts {
        &self.shared.timeouts
    }

    /// Runs `work` on a read endpoint, moving on to the next endpoint whenever one fails,
    /// so the death of a replica or of HAProxy costs no failed request.
    pub async fn read<T, F>(&self, freshness: Freshness<'_>, work: F) -> Result<T, DbError>
    where
        T: Send,
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T, mysql_async::Error>> + Send + Sync,
    {
        let wait_for_gtid = match freshness {
            Freshness::ReadYourWrites(key) => self.position_to_read_at(key).await,
            Freshness::Any | Freshness::MasterFirst => None,
        };
        let mut last_error = String::from("no database endpoint is configured");
        let mut candidates: std::collections::VecDeque<(Arc<Endpoint>, bool)> = self
            .read_candidates(freshness)
            .into_iter()
            .map(|endpoint| (endpoint, false))
            .collect();
        while let Some((endpoint, second_try)) = candidates.pop_front() {
            let wait = match endpoint.role {
                EndpointRole::Read => wait_for_gtid.as_deref(),
                EndpointRole::Master => None,
            };
            let read_span = tracing::info_span!("db.read", db.endpoint = %endpoint.name);
            let Some(_turn) = endpoint.admit_read(self.shared.timeouts.read_queue).await else {
                self.shared.metrics.count_query(&endpoint.name, "read", "busy");
                last_error = format!(
                    "{} stayed busy for {:?}",
                    endpoint.name, self.shared.timeouts.read_queue
                );
                continue;
            };
            let outcome = self.read_attempt(&endpoint, wait, &work).instrument(read_span).await;
            let label = match &outcome {
                Ok(_) => "ok",
                Err(AttemptError::Stale) => "stale",
                Err(AttemptError::Endpoint(_)) => "unavailable",
                Err(AttemptError::Query(_)) => "error",
            };
            self.shared.metrics.count_query(&endpoint.name, "read", label);
            match outcome {
                Ok(value) => return Ok(value),
                Err(AttemptError::Stale) => {
                    last_error = format!("{} has not applied the reader's last write", endpoint.name);
                }
                Err(AttemptError::Endpoint(error)) => {
                    self.report_failure(&endpoint, &error);
                    last_error = error.to_string();
                    // A proxy in front of replicas (HAProxy) sends a new connection to a
                    // live server: when the server behind a pooled connection died (the
                    // master just killed, say), the proxy deserves one more try, last.
                    if endpoint.role == EndpointRole::Read && !second_try {
                        candidates.push_back((Arc::clone(&endpoint), true));
                    }
                }
                Err(AttemptError::Query(error)) => return Err(error),
            }
        }
        Err(DbError::NoReadEndpoint { last_error })
    }

    /// What a replica must have applied before it answers `reader` (`None`: anything).
    /// The master's position now, shared with the other reads of this moment, covers
    /// the reader's writes through every node; the position of the reader's last write
    /// through this node is the fallback when the master cannot be asked.
    async fn position_to_read_at(&self, reader: &str) -> Option<String> {
        let master = &self.master();
        // A master marked down is not asked: cut off by a partition it would hold every
        // read for the whole timeout (a dead one refuses at once, a silent one does not).
        let now = if master.is_healthy() {
            self.shared
                .master_positions
                .position_after_now(master, self.shared.timeouts.read_attempt)
                .instrument(tracing::info_span!("db.master_position", db.endpoint = %master.name))
                .await
        } else {
            None
        };
        let outcome = if now.is_some() { "ok" } else { "unavailable" };
        self.shared.metrics.count_query(&master.name, "position", outcome);
        match now {
            // Nothing was ever written: nothing to wait for.
            Some(position) if position.is_empty() => None,
            Some(position) => Some(position),
            None => self.shared.recent_writes.last_write_of(reader),
        }
    }

    async fn read_attempt<T, F>(
        &self,
        endpoint: &Endpoint,
        wait_for_gtid: Option<&str>,
        work: &F,
    ) -> Result<T, AttemptError>
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T, mysql_async::Error>> + Send + Sync,
    {
        let timeout = self.shared.timeouts.read_attempt;
        let gtid_wait_seconds = self.shared.timeouts.gtid_wait.as_secs_f64();
        let wanted = wait_for_gtid.map(GtidPosition::parse);
        let attempt = async {
            let mut connection = endpoint
                .read_connection(timeout, wanted.as_ref())
                .await
                .map_err(AttemptError::Endpoint)?;
            if let (Some(gtid), Some(wanted)) = (wait_for_gtid, &wanted) {
                if connection.holds(wanted) {
                    self.shared
                        .metrics
                        .count_query(&endpoint.name, "position_wait", "known");
                } else {
                    // `MASTER_GTID_WAIT` follows only what a server applied as a replica:
                    // on the master (a replica promoted, which a read proxy may still send
                    // reads to) its own commits never show there, and every read would
                    // wait out the timeout. A writable server is asked what it holds.
                    let answer: Option<Option<String>> = connection
                        .conn
                        .exec_first(
                            "SELECT IF(@@read_only = 0, @@gtid_current_pos, CAST(MASTER_GTID_WAIT(?, ?) AS CHAR))",
                            (gtid, gtid_wait_seconds),
                        )
                        .await
                        .map_err(|error| classify_read_error(endpoint, error))?;
                    let applied = holds_position(answer.flatten().as_deref(), gtid);
                    let outcome = if applied { "waited" } else { "stale" };
                    self.shared
                        .metrics
                        .count_query(&endpoint.name, "position_wait", outcome);
                    if !applied {
                        // The connection is fine and what it held is still true.
                        endpoint.finish_read(connection);
                        return Err(AttemptError::Stale);
                    }
                    connection.note_applied(wanted.clone());
                }
            }
            let value = work(&mut connection.conn)
                .await
                .map_err(|error| classify_read_error(endpoint, error))?;
            endpoint.finish_read(connection);
            Ok(value)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Endpoint(DbError::Timeout {
                endpoint: endpoint.name.clone(),
                timeout,
            })),
        }
    }

    /// The order in which a read tries endpoints.
    fn read_candidates(&self, freshness: Freshness<'_>) -> Vec<Arc<Endpoint>> {
        let reads = &self.shared.reads;
        // Rotate the starting read endpoint so several of them share the load.
        let start = match reads.len() {
            0 => 0,
            count => self.shared.next_read.fetch_add(1, Ordering::Relaxed) % count,
        };
        let rotated = reads.iter().cycle().skip(start).take(reads.len());
        let (healthy, down): (Vec<_>, Vec<_>) = rotated.cloned().partition(|endpoint| endpoint.is_healthy());
        let master = self.master();
        let mut order = Vec::with_capacity(reads.len() + 1);
        match freshness {
            Freshness::MasterFirst => {
                order.push(master);
                order.extend(healthy);
            }
            Freshness::Any | Freshness::ReadYourWrites(_) => {
                order.extend(healthy);
                order.push(master);
            }
        }
        // Endpoints marked down are the last resort: better a slow try than a failure.
        order.extend(down);
        order
    }

    fn report_failure(&self, endpoint: &Endpoint, error: &DbError) {
        let was_healthy = endpoint.record_failure();
        if was_healthy {
            tracing::warn!(endpoint = %endpoint.name, %error, "database endpoint marked down");
            if let Some(router) = self.shared.router.load_full() {
                let report = DbRouterMessage::FailureReported {
                    endpoint_name: endpoint.name.clone(),
                    reason: error.to_string(),
                };
                // The router may be restarting; its next probe finds the same thing.
                let _ = router.cast(report);
            }
        }
    }

    pub(crate) fn attach_router(&self, router: Option<ActorRef<DbRouterMessage>>) {
        self.shared.router.store(router.map(Arc::new));
    }

    /// Closes every pool.
    pub async fn close(&self) {
        for endpoint in self.shared.write_endpoints.iter().chain(self.shared.reads.iter()) {
            endpoint.close().await;
        }
    }
}

/// Whether a read endpoint's answer to the position check says it holds `wanted`: `0`
/// from `MASTER_GTID_WAIT` (a replica applied it), or a writable server's
/// `gtid_current_pos` that includes it. `-1` (the wait timed out) and NULL do not.
fn holds_position(answer: Option<&str>, wanted: &str) -> bool {
    match answer {
        Some("0") => true,
        Some("-1") | None => false,
        Some(current) => GtidPosition::parse(current).includes(&GtidPosition::parse(wanted)),
    }
}

fn classify_read_error(endpoint: &Endpoint, error: mysql_async::Error) -> AttemptError {
    let error = DbError::from_driver(&endpoint.name, error);
    if error.is_unavailable() {
        AttemptError::Endpoint(error)
    } else {
        AttemptError::Query(error)
    }
}

#[cfg(test)]
mod tests {
    use super::holds_position;

    #[test]
    fn a_replica_that_applied_the_position_or_a_writable_server_holding_it_may_answer() {
        // A replica's MASTER_GTID_WAIT: 0 applied, -1 timed out.
        assert!(holds_position(Some("0"), "0-1-5"));
        assert!(!holds_position(Some("-1"), "0-1-5"));
        assert!(!holds_position(None, "0-1-5"));
        // A writable server's gtid_current_pos: a promoted replica further in the domain
        // holds what the old master wrote; one behind does not.
        assert!(holds_position(Some("0-2-9"), "0-1-5"));
        assert!(holds_position(Some("0-1-5"), "0-1-5"));
        assert!(!holds_position(Some("0-1-4"), "0-1-5"));
        assert!(!holds_position(Some(""), "0-1-5"));
    }
}
