//! Administrative SQL against the cluster's MariaDB servers.
//!
//! Every call opens its own connection and closes it: the launcher structs are shared
//! across tokio runtimes (one per `#[tokio::test]`), so no pool may outlive a call.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row};

/// mysql_async has no connect timeout of its own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Root over the server's unix socket: root has no TCP login.
pub async fn connect_as_root_over_socket(socket: &Path) -> anyhow::Result<Conn> {
    let options = OptsBuilder::default()
        .socket(Some(socket.to_string_lossy().into_owned()))
        .user(Some("root"));
    let connect = Conn::new(options);
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("connecting as root over {} timed out", socket.display()))?
        .with_context(|| format!("connecting as root over {}", socket.display()))
}

/// Any `mysql://` URL (the launcher's URLs carry `prefer_socket=false`).
pub async fn connect_url(url: &str) -> anyhow::Result<Conn> {
    let options = Opts::from_url(url).with_context(|| format!("parsing database url {}", redact_password(url)))?;
    tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(options))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", redact_password(url)))?
        .with_context(|| format!("connecting to {}", redact_password(url)))
}

/// Closes the connection politely; a failure here changes nothing for the caller.
pub async fn close(connection: Conn) {
    let _ = tokio::time::timeout(Duration::from_secs(1), connection.disconnect()).await;
}

/// Runs each statement of a script (statements end with `;` at the end of a line).
pub async fn execute_sql_script(connection: &mut Conn, script: &str) -> anyhow::Result<()> {
    for statement in checks::sql_script::statements(script) {
        tokio::time::timeout(STATEMENT_TIMEOUT, connection.query_drop(&statement))
            .await
            .map_err(|_| anyhow!("statement timed out: {statement}"))?
            .with_context(|| format!("executing: {}", redact_sql_password(&statement)))?;
    }
    Ok(())
}

/// The replica's view of its replication threads, from `SHOW SLAVE STATUS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// `Slave_IO_Running`: `Yes`, `No` or `Connecting`.
    pub io_running: String,
    /// `Slave_SQL_Running`: `Yes` or `No`.
    pub sql_running: String,
    /// `Using_Gtid`: `No`, `Current_Pos` or `Slave_Pos`.
    pub using_gtid: String,
    /// `Last_IO_Error`, empty when none.
    pub last_io_error: String,
    /// `Last_SQL_Error`, empty when none.
    pub last_sql_error: String,
    /// `Gtid_IO_Pos`: the GTIDs received from the master.
    pub gtid_io_pos: String,
}

impl ReplicationStatus {
    /// Both the IO and the SQL thread run (replication is up).
    pub fn both_threads_running(&self) -> bool {
        self.io_running == "Yes" && self.sql_running == "Yes"
    }
}

/// None when the server is not configured as a replica.
pub async fn replication_status(connection: &mut Conn) -> anyhow::Result<Option<ReplicationStatus>> {
    let row: Option<Row> = connection
        .query_first("SHOW SLAVE STATUS")
        .await
        .context("reading SHOW SLAVE STATUS")?;
    Ok(row.map(|row| {
        let column = |name: &str| row.get::<Option<String>, _>(name).flatten().unwrap_or_default();
        ReplicationStatus {
            io_running: column("Slave_IO_Running"),
            sql_running: column("Slave_SQL_Running"),
            using_gtid: column("Using_Gtid"),
            last_io_error: column("Last_IO_Error"),
            last_sql_error: column("Last_SQL_Error"),
            gtid_io_pos: column("Gtid_IO_Pos"),
        }
    }))
}

/// The master's `@@gtid_binlog_pos`: every transaction it has written so far.
pub async fn gtid_binlog_position(connection: &mut Conn) -> anyhow::Result<String> {
    let position: Option<String> = connection
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .context("reading @@gtid_binlog_pos")?;
    Ok(position.unwrap_or_default())
}

/// Waits on a replica until it has applied `position`. False on timeout.
pub async fn wait_for_gtid_position(connection: &mut Conn, position: &str, timeout: Duration) -> anyhow::Result<bool> {
    if position.is_empty() {
        return Ok(true);
    }
    let outcome: Option<Option<i64>> = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        connection.exec_first("SELECT MASTER_GTID_WAIT(?, ?)", (position, timeout.as_secs_f64())),
    )
    .await
    .map_err(|_| anyhow!("MASTER_GTID_WAIT did not return"))?
    .context("running MASTER_GTID_WAIT")?;
    Ok(outcome.flatten() == Some(0))
}

/// A numeric row of `information_schema.GLOBAL_STATUS` (`name` upper-case, e.g.
/// `RPL_SEMI_SYNC_MASTER_CLIENTS`); None when the server has no such status. (`SHOW
/// GLOBAL STATUS LIKE ?` cannot be a prepared statement.)
pub async fn global_status_number(connection: &mut Conn, name: &str) -> anyhow::Result<Option<u64>> {
    let value: Option<String> = connection
        .exec_first(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
            (name,),
        )
        .await
        .with_context(|| format!("reading status {name}"))?;
    Ok(value.and_then(|value| value.trim().parse().ok()))
}

/// True for a GTID list as MariaDB prints one (`0-1-42`, `0-1-42,1-2-7`): the only
/// shape a position may have before it goes into a `SET GLOBAL` statement.
pub fn is_gtid_list(position: &str) -> bool {
    !position.is_empty()
        && position.split(',').all(|gtid| {
            let parts: Vec<&str> = gtid.split('-').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|part| !part.is_empty() && part.chars().all(|character| character.is_ascii_digit()))
        })
}

/// The server's `@@server_id`.
pub async fn server_id(connection: &mut Conn) -> anyhow::Result<u32> {
    let id: Option<u32> = connection
        .query_first("SELECT @@server_id")
        .await
        .context("reading @@server_id")?;
    id.context("@@server_id returned no row")
}

/// Database names go into SQL unquoted-by-driver; allow only what our names use.
pub fn validate_database_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_');
    if valid {
        Ok(())
    } else {
        Err(anyhow!(
            "invalid database name {name:?}: use ASCII letters, digits and _"
        ))
    }
}

fn redact_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn redact_sql_password(statement: &str) -> String {
    match statement.to_ascii_uppercase().find("IDENTIFIED BY") {
        Some(start) => format!("{} IDENTIFIED BY '***'", &statement[..start].trim_end()),
        None => statement.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_gtid_lists_only() {
        assert!(is_gtid_list("0-1-42"));
        assert!(is_gtid_list("0-1-42,1-2-7"));
        for bad in ["", "0-1", "0-1-", "0-1-2;", "0-1-2' OR '1", "0-1-2,,1-2-3"] {
            assert!(!is_gtid_list(bad), "{bad:?}");
        }
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact_password("mysql://parley:secret@127.0.0.1:1/db"),
            "mysql://parley:***@127.0.0.1:1/db"
        );
        assert_eq!(
            redact_sql_password("CREATE USER 'a'@'h' IDENTIFIED BY 'x'"),
            "CREATE USER 'a'@'h' IDENTIFIED BY '***'"
        );
    }
}
