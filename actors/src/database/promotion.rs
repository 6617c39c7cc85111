//! Carrying out a [`TopologyAction`]: under a lock on a majority of all database
//! servers, read every server again, decide again, and only then promote, repoint or
//! demote. The lock (`GET_LOCK`, held by a session of its own on each server) is what
//! makes exactly one node act: two nodes cannot both hold a majority, and a node that
//! reaches only a minority of servers never acts.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::failover_lock::lock_majority;
use super::promotion_decision::{assess, ServerView, TopologyAction};
use super::server_topology::{GtidPosition, ServerReading, WatchedServer};
use super::DbError;

/// How long the promoted server may take to apply what it received.
const RELAY_LOG_APPLY_BOUND_SECONDS: u64 = 10;

/// Why an action was not (fully) carried out.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// Another node holds the lock, or too few servers answered.
    #[error("the failover lock is held on {locked} of {total} servers, not a majority")]
    NoMajority {
        /// Servers whose lock this node holds.
        locked: usize,
        /// Servers configured.
        total: usize,
    },
    /// A statement failed on a server.
    #[error("{step} on {server}: {source}")]
    Statement {
        /// The server's name.
        server: String,
        /// What was being done.
        step: &'static str,
        /// The driver's error, classified.
        #[source]
        source: Box<DbError>,
    },
    /// The whole action took longer than its bound (held).
    #[error("the action did not finish within {0:?}")]
    Timeout(Duration),
    /// The candidate did not apply its relay log within the bound.
    #[error("{server} did not apply its relay log up to {position} within {RELAY_LOG_APPLY_BOUND_SECONDS} s")]
    RelayLogNotApplied {
        /// The candidate.
        server: String,
        /// The position it received.
        position: String,
    },
    /// A server named by the action is not configured.
    #[error("no database server is called {0}")]
    UnknownServer(String),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The action was carried out (the one decided under the lock, which may differ).
    Done(TopologyAction),
    /// Under the lock the topology needed nothing any more (another node acted).
    NothingToDo,
}

/// Reads every server, within `timeout` each.
pub async fn read_all(servers: &[Arc<WatchedServer>], timeout: Duration) -> Vec<ServerView> {
    let readings = futures::future::join_all(servers.iter().map(|server| server.read(timeout))).await;
    servers
        .iter()
        .zip(readings)
        .map(|(server, reading)| ServerView {
            name: server.name.clone(),
            host: server.host.clone(),
            port: server.port,
            reading: reading.ok(),
        })
        .collect()
}

/// Takes the lock on a majority (sessions connected within `lock_timeout`, servers the
/// last round could read first, see [`lock_majority`]), reads every server again (within
/// `read_timeout`, as the regular readings), decides again, and carries out what that
/// decision says.
pub async fn carry_out(
    servers: &[Arc<WatchedServer>],
    last_views: &[ServerView],
    lock_timeout: Duration,
    read_timeout: Duration,
    failover_after: Duration,
) -> Result<ActionOutcome, FailoverError> {
    let locks = lock_majority(servers, last_views, lock_timeout).await?;
    // Under the lock: what the earlier round saw may be stale (another node acted).
    let views = read_all(servers, read_timeout).await;
    let outcome = match assess(&views, failover_after, failover_after).action {
        None => Ok(ActionOutcome::NothingToDo),
        Some(action) => execute(servers, &views, &action)
            .await
            .map(|()| ActionOutcome::Done(action)),
    };
    for conn in locks {
        // Ending the session releases its lock.
        let _ = conn.disconnect().await;
    }
    outcome
}

async fn execute(
    servers: &[Arc<WatchedServer>],
    views: &[ServerView],
    action: &TopologyAction,
) -> Result<(), FailoverError> {
    let find = |name: &str| {
        servers
            .iter()
            .find(|server| server.name == name)
            .ok_or_else(|| FailoverError::UnknownServer(name.to_owned()))
    };
    let reading_of = |name: &str| {
        views
            .iter()
            .find(|view| view.name == name)
            .and_then(|view| view.reading.clone())
    };
    match action {
        TopologyAction::Promote { candidate } => {
            let new_master = find(candidate)?;
            let others = views
                .iter()
                .filter(|view| view.name != *candidate && view.reading.is_some())
                .map(|view| find(&view.name))
                .collect::<Result<Vec<_>, _>>()?;
            // `STOP SLAVE` waits for an IO thread stuck connecting to a master that does
            // not answer (a partition) for up to `slave_net_timeout`: the other replicas
            // stop while the candidate does, not after it.
            let stopping_the_others = futures::future::join_all(others.iter().map(|server| stop_replication(server)));
            let (promoted, _) = tokio::join!(promote(new_master), stopping_the_others);
            promoted?;
            for server in others {
                point_at(server, reading_of(&server.name).as_ref(), new_master).await?;
            }
            Ok(())
        }
        TopologyAction::Repoint { servers: lost, master } => {
            let master = find(master)?;
            for name in lost {
                point_at(find(name)?, reading_of(name).as_ref(), master).await?;
            }
            Ok(())
        }
        TopologyAction::Demote { server, master } => {
            point_at(find(server)?, reading_of(server).as_ref(), find(master)?).await
        }
    }
}

fn statement_failed(server: &WatchedServer, step: &'static str) -> impl FnOnce(mysql_async::Error) -> FailoverError {
    let name = server.name.clone();
    move |error| FailoverError::Statement {
        source: Box::new(DbError::from_driver(&name, error)),
        server: name,
        step,
    }
}

async fn connect(server: &WatchedServer) -> Result<Conn, FailoverError> {
    server
        .dedicated_connection(Duration::from_secs(2))
        .await
        .map_err(|source| FailoverError::Statement {
            server: server.name.clone(),
            step: "connecting",
            source: Box::new(source),
        })
}

/// Lets the candidate apply everything it received, stops its replication, and makes
/// it a semi-synchronous master that takes writes.
async fn promote(candidate: &WatchedServer) -> Result<(), FailoverError> {
    let mut conn = connect(candidate).await?;
    let status: Option<mysql_async::Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(statement_failed(candidate, "reading replication status"))?;
    if status.is_some() {
        conn.query_drop("STOP SLAVE IO_THREAD")
            .await
            .map_err(statement_failed(candidate, "stopping the IO thread"))?;
        let received: Option<String> = conn
            .query_first("SELECT @@gtid_slave_pos")
            .await
            .map_err(statement_failed(candidate, "reading the applied position"))?;
        let io_position: Option<mysql_async::Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(statement_failed(candidate, "reading the received position"))?;
        let received = io_position
            .and_then(|row| {
                row.get_opt::<Option<String>, _>("Gtid_IO_Pos")
                    .and_then(Result::ok)
                    .flatten()
            })
            .filter(|position| !position.is_empty())
            .or(received)
            .unwrap_or_default();
        if !received.is_empty() {
            wait_until_applied(&mut conn, candidate, &received).await?;
        }
        conn.query_drop("STOP SLAVE")
            .await
            .map_err(statement_failed(candidate, "stopping replication"))?;
        conn.query_drop("RESET SLAVE ALL")
            .await
            .map_err(statement_failed(candidate, "forgetting the old master"))?;
    }
    conn.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = ON")
        .await
        .map_err(statement_failed(candidate, "turning semi-synchronous replication on"))?;
    conn.query_drop("SET GLOBAL read_only = OFF")
        .await
        .map_err(statement_failed(candidate, "making it writable"))?;
    let _ = conn.disconnect().await;
    tracing::warn!(server = %candidate.name, "database server promoted to master");
    Ok(())
}

/// Waits until the candidate's `gtid_current_pos` includes `received`. Not
/// `MASTER_GTID_WAIT`: that follows only what a server applied as a replica, and an old
/// master back as a replica holds its own writes without having applied them.
async fn wait_until_applied(conn: &mut Conn, candidate: &WatchedServer, received: &str) -> Result<(), FailoverError> {
    let wanted = GtidPosition::parse(received);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(RELAY_LOG_APPLY_BOUND_SECONDS);
    loop {
        let current: Option<String> = conn
            .query_first("SELECT @@gtid_current_pos")
            .await
            .map_err(statement_failed(candidate, "reading the applied position"))?;
        if GtidPosition::parse(&current.unwrap_or_default()).includes(&wanted) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(FailoverError::RelayLogNotApplied {
                server: candidate.name.clone(),
                position: received.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a replica's replication ahead of pointing it elsewhere; a failure here is left
/// to `point_at`, which stops it again.
async fn stop_replication(server: &WatchedServer) {
    let Ok(mut conn) = connect(server).await else {
        return;
    };
    if let Err(error) = conn.query_drop("STOP SLAVE").await {
        tracing::debug!(server = %server.name, %error, "could not stop replication ahead of the promotion");
    }
    let _ = conn.disconnect().await;
}

/// Makes `server` a read-only replica of `master`, from its own current position (an
/// old master's own writes included; a server with transactions the master never had
/// fails to connect with error 1236, and stays read-only until restarted with
/// `--init-rpl-role=SLAVE`, which drops them).
async fn point_at(
    server: &WatchedServer,
    reading: Option<&ServerReading>,
    master: &WatchedServer,
) -> Result<(), FailoverError> {
    let mut conn = connect(server).await?;
    if reading.is_none_or(|reading| !reading.read_only) {
        // Fence first: nothing may commit here any more.
        conn.query_drop("SET GLOBAL read_only = ON")
            .await
            .map_err(statement_failed(server, "making it read-only"))?;
    }
    conn.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        .await
        .map_err(statement_failed(server, "turning its master side of semi-sync off"))?;
    conn.query_drop("STOP SLAVE")
        .await
        .map_err(statement_failed(server, "stopping replication"))?;
    let credentials = match reading.and_then(|reading| reading.replication.as_ref()) {
        // Replicating already: keep its replication user.
        Some(_) => String::new(),
        // Never a replica: the administrative user (it holds REPLICATION SLAVE).
        None => format!(
            ", MASTER_USER = {}, MASTER_PASSWORD = {}",
            quoted(master.admin_opts.user().unwrap_or_default()),
            quoted(master.admin_opts.pass().unwrap_or_default())
        ),
    };
    let change_master = format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_CONNECT_RETRY = 1, \
         MASTER_USE_GTID = current_pos{credentials}",
        quoted(&master.host),
        master.port
    );
    conn.query_drop(change_master)
        .await
        .map_err(statement_failed(server, "pointing it at the master"))?;
    conn.query_drop("START SLAVE")
        .await
        .map_err(statement_failed(server, "starting replication"))?;
    let _ = conn.disconnect().await;
    tracing::info!(server = %server.name, master = %master.name, "database server now replicates from the master");
    Ok(())
}

/// A string literal for a statement that takes no placeholders (`CHANGE MASTER`).
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn literals_cannot_break_out_of_their_quotes() {
        assert_eq!(quoted("repl"), "'repl'");
        assert_eq!(quoted("a'b\\"), "'a\\'b\\\\'");
    }
}
