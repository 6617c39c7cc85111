//! What each database server says about its own role: writable or not, whom it
//! replicates from and how far it got. The `MasterFailover` actor reads every server
//! this way, as the administrative user, to know which one is the master and to decide
//! a promotion ([`super::promotion_decision`]).

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};

use super::endpoint::connect_within;
use super::DbError;

/// One database server the failover actor watches and may promote, as configured
/// (`--database-server NAME=mysql://admin:password@host:port/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseServerSpec {
    /// The server's name in logs, metrics and `/cluster` (`master`, `replica-1`, ...).
    pub name: String,
    /// An administrative user's URL: it reads replication state, takes the failover
    /// lock, promotes and repoints. Its host and port are also how the other servers
    /// reach this one (they replicate from it after a promotion).
    pub admin_url: String,
}

/// A GTID position (`0-1-120,1-3-7`): the last sequence number seen per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPosition {
    sequence_by_domain: BTreeMap<u32, u64>,
    text: String,
}

impl GtidPosition {
    /// Parses MariaDB's text form; malformed parts are ignored (an empty position).
    pub fn parse(text: &str) -> GtidPosition {
        let mut sequence_by_domain = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let mut fields = part.split('-');
            let (Some(domain), Some(_server), Some(sequence)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if let (Ok(domain), Ok(sequence)) = (domain.parse::<u32>(), sequence.parse::<u64>()) {
                let entry = sequence_by_domain.entry(domain).or_insert(0);
                *entry = (*entry).max(sequence);
            }
        }
        GtidPosition {
            sequence_by_domain,
            text: text.trim().to_owned(),
        }
    }

    /// The position as MariaDB writes it.
    pub fn as_text(&self) -> &str {
        &self.text
    }

    /// Every domain at least as far as in `other`.
    pub fn includes(&self, other: &GtidPosition) -> bool {
        other
            .sequence_by_domain
            .iter()
            .all(|(domain, sequence)| self.sequence_by_domain.get(domain).is_some_and(|own| own >= sequence))
    }

    /// A total order for picking the most advanced server: the sum over domains (Parley
    /// writes in one domain, where this is simply the last sequence number).
    pub fn progress(&self) -> u64 {
        self.sequence_by_domain.values().sum()
    }

    /// The further of two positions, domain by domain.
    pub fn furthest(&self, other: &GtidPosition) -> GtidPosition {
        if self.includes(other) {
            self.clone()
        } else if other.includes(self) {
            other.clone()
        } else if self.progress() >= other.progress() {
            self.clone()
        } else {
            other.clone()
        }
    }
}

/// A server's replication, from `SHOW SLAVE STATUS` (absent when it replicates from nobody).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// `Master_Host`: where it replicates from.
    pub master_host: String,
    /// `Master_Port`.
    pub master_port: u16,
    /// `Slave_IO_Running` is `Yes`: connected to its master now. `Connecting` (the master
    /// is gone or unreachable) and `No` are both false.
    pub io_connected: bool,
    /// `Slave_SQL_Running` is `Yes`.
    pub sql_running: bool,
    /// `Gtid_IO_Pos`: the last transaction received into the relay log.
    pub received: GtidPosition,
    /// `Last_IO_Errno`, 0 when none.
    pub last_io_errno: u64,
}

/// What one server said in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReading {
    /// `@@read_only`.
    pub read_only: bool,
    /// `@@gtid_current_pos`: everything it has applied or written.
    pub applied: GtidPosition,
    /// `Rpl_semi_sync_master_clients`: replicas acknowledging its commits now.
    pub acknowledging_replicas: u64,
    /// Its own replication, when it is a replica.
    pub replication: Option<ReplicaStatus>,
}

impl ServerReading {
    /// How far this server could serve from once promoted: what it applied, or what it
    /// received into its relay log and will apply first.
    pub fn furthest_position(&self) -> GtidPosition {
        match &self.replication {
            Some(replication) => self.applied.furthest(&replication.received),
            None => self.applied.clone(),
        }
    }
}

/// A watched server: its administrative pool and where it listens.
pub struct WatchedServer {
    /// The configured name.
    pub name: String,
    /// The host the other servers (and the nodes) reach it at.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The administrative user's options (user and password reused for repointing).
    pub admin_opts: Opts,
    pool: Pool,
}

impl WatchedServer {
    /// Opens a small lazy pool for `spec`.
    pub fn open(spec: &DatabaseServerSpec) -> Result<WatchedServer, DbError> {
        let opts = Opts::from_url(&spec.admin_url)
            .map_err(|error| DbError::Config(format!("database server {}: {error}", spec.name)))?;
        let constraints = PoolConstraints::new(0, 4).expect("0..4 is a valid pool size");
        let builder = OptsBuilder::from_opts(opts.clone()).prefer_socket(false).pool_opts(
            PoolOpts::default()
                .with_constraints(constraints)
                .with_reset_connection(false),
        );
        Ok(WatchedServer {
            name: spec.name.clone(),
            host: opts.ip_or_hostname().to_owned(),
            port: opts.tcp_port(),
            admin_opts: opts,
            pool: Pool::new(builder),
        })
    }

    /// A pooled administrative connection within `timeout`.
    pub async fn connection(&self, timeout: Duration) -> Result<Conn, DbError> {
        connect_within(&self.name, timeout, self.pool.get_conn()).await
    }

    /// A connection of its own, outside the pool: the failover lock lives as long as
    /// its session, which must end when the promotion does.
    pub async fn dedicated_connection(&self, timeout: Duration) -> Result<Conn, DbError> {
        let opts = OptsBuilder::from_opts(self.admin_opts.clone()).prefer_socket(false);
        connect_within(&self.name, timeout, Conn::new(opts)).await
    }

    /// Whether a replica's `Master_Host`/`Master_Port` name this server.
    pub fn is_addressed_by(&self, replication: &ReplicaStatus) -> bool {
        replication.master_port == self.port && replication.master_host.eq_ignore_ascii_case(&self.host)
    }

    /// Reads the server's role and positions, within `timeout`.
    pub async fn read(&self, timeout: Duration) -> Result<ServerReading, DbError> {
        let reading = async {
            let mut conn = self.connection(timeout).await?;
            read_server(&mut conn)
                .await
                .map_err(|error| DbError::from_driver(&self.name, error))
        };
        match tokio::time::timeout(timeout, reading).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DbError::Timeout {
                endpoint: self.name.clone(),
                timeout,
            }),
        }
    }

    /// Closes the pool (at shutdown).
    pub async fn close(&self) {
        let _ = self.pool.clone().disconnect().await;
    }
}

const ROLE_QUERY: &str = "SELECT @@read_only, @@gtid_current_pos, \
     (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS')";

async fn read_server(conn: &mut Conn) -> Result<ServerReading, mysql_async::Error> {
    let row: Option<(i64, String, Option<String>)> = conn.query_first(ROLE_QUERY).await?;
    let (read_only, applied, clients) = row.unwrap_or((1, String::new(), None));
    let status: Option<Row> = conn.query_first("SHOW SLAVE STATUS").await?;
    Ok(ServerReading {
        read_only: read_only != 0,
        applied: GtidPosition::parse(&applied),
        acknowledging_replicas: clients.and_then(|clients| clients.parse().ok()).unwrap_or(0),
        replication: status.map(|row| replica_status_of(&row)),
    })
}

fn replica_status_of(row: &Row) -> ReplicaStatus {
    let text = |column: &str| -> String {
        row.get_opt::<Option<String>, _>(column)
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_default()
    };
    ReplicaStatus {
        master_host: text("Master_Host"),
        master_port: text("Master_Port").parse().unwrap_or(0),
        io_connected: text("Slave_IO_Running").eq_ignore_ascii_case("Yes"),
        sql_running: text("Slave_SQL_Running").eq_ignore_ascii_case("Yes"),
        received: GtidPosition::parse(&text("Gtid_IO_Pos")),
        last_io_errno: text("Last_IO_Errno").parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_domain_by_domain() {
        let behind = GtidPosition::parse("0-1-100");
        let ahead = GtidPosition::parse("0-3-101");
        assert!(ahead.includes(&behind));
        assert!(!behind.includes(&ahead));
        assert!(ahead.includes(&GtidPosition::parse("")));
        assert_eq!(behind.furthest(&ahead).as_text(), "0-3-101");
        let two_domains = GtidPosition::parse("0-1-5,1-2-9");
        assert_eq!(two_domains.progress(), 14);
        assert!(!two_domains.includes(&GtidPosition::parse("2-1-1")));
        assert_eq!(GtidPosition::parse("garbage,0-1-x").progress(), 0);
    }
}
