//! Starting a database server again after the nodes promoted another: it comes back
//! with the replica configuration (read-only, un-acknowledged commits dropped at
//! recovery, `init_rpl_role = SLAVE`) and replicates from the server that takes writes
//! now, from its own current position. The nodes' `MasterFailover` does the same to a
//! server it finds replicating from nobody; whichever comes first, the result is one.

use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;

use super::mariadb_launch::{self, MASTER_NAME, REPLICA_NAMES};
use super::{DatabaseServers, CATCH_UP_TIMEOUT, REPLICATION_START_TIMEOUT};
use crate::deploy_templates::locate_deploy_dir;
use crate::mariadb_admin;
use crate::readiness::{poll_until_ready, Probe};

/// The last sequence number per replication domain of a GTID list (`0-1-22,1-2-5`).
fn sequences_by_domain(position: &str) -> std::collections::BTreeMap<u32, u64> {
    let mut sequences = std::collections::BTreeMap::new();
    for gtid in position.split(',').map(str::trim).filter(|gtid| !gtid.is_empty()) {
        let parts: Vec<&str> = gtid.split('-').collect();
        if let [domain, _server, sequence] = parts.as_slice() {
            if let (Ok(domain), Ok(sequence)) = (domain.parse::<u32>(), sequence.parse::<u64>()) {
                let entry = sequences.entry(domain).or_insert(0);
                *entry = sequence.max(*entry);
            }
        }
    }
    sequences
}

/// How long a server may take to say whether it is writable.
const ROLE_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

impl DatabaseServers {
    /// The server other than `except` that takes writes now (`read_only = 0`), if one does.
    pub async fn writable_server_other_than(&self, except: &str) -> Option<&'static str> {
        self.writable_servers().await.into_iter().find(|name| *name != except)
    }

    /// Every running server that answers and takes writes (`read_only = 0`), in the
    /// configured order; all are asked at once, so one that does not answer (cut off by
    /// a partition) costs one timeout, not one per server.
    pub async fn writable_servers(&self) -> Vec<&'static str> {
        let running: Vec<&'static str> = std::iter::once(MASTER_NAME)
            .chain(REPLICA_NAMES)
            .filter(|name| self.components.get(name).is_ok_and(|component| component.is_alive()))
            .collect();
        let read_only = futures::future::join_all(running.iter().map(|name| self.read_only_of(name))).await;
        running
            .into_iter()
            .zip(read_only)
            .filter(|(_, read_only)| *read_only == Some(false))
            .map(|(name, _)| name)
            .collect()
    }

    /// `@@read_only` of the server `name` over TCP; `None` when it does not answer in time.
    pub(super) async fn read_only_of(&self, name: &str) -> Option<bool> {
        let read_only = async {
            let mut connection = mariadb_admin::connect_url(&self.root_url(name)).await.ok()?;
            let read_only: Option<i64> = connection.query_first("SELECT @@read_only").await.ok()?;
            mariadb_admin::close(connection).await;
            read_only
        };
        tokio::time::timeout(ROLE_QUERY_TIMEOUT, read_only)
            .await
            .ok()
            .flatten()
            .map(|read_only| read_only != 0)
    }

    /// Starts the stopped server `name` as a read-only replica of `master` and waits
    /// until it has caught up with it.
    pub(super) async fn start_as_replica_of(&self, name: &str, master: &str) -> anyhow::Result<()> {
        let layout = self.server_layout(name);
        mariadb_launch::write_server_config_as(&locate_deploy_dir()?, &layout, false)?;
        let component = self.components.get(name)?;
        component.respawn_unless_running(self.spawn_mode).await?;
        mariadb_launch::wait_until_accepting(component, &layout.socket).await?;
        self.point_at(name, master).await?;
        mariadb_launch::ensure_replication_running(component, &layout.socket, REPLICATION_START_TIMEOUT).await?;
        let mut master_connection = self.connect_root(master).await?;
        let position = mariadb_admin::gtid_binlog_position(&mut master_connection).await;
        mariadb_admin::close(master_connection).await;
        self.wait_until_server_holds(name, &position?, CATCH_UP_TIMEOUT).await?;
        tracing::info!(server = name, master, "database server rejoined as a replica");
        Ok(())
    }

    /// Points `name` at `master` unless it already replicates from it.
    pub(super) async fn point_at(&self, name: &str, master: &str) -> anyhow::Result<()> {
        let master_port = self.ports.of_server(master).context("unknown master")?;
        let mut connection = self.connect_root(name).await?;
        let status: Option<mysql_async::Row> = connection.query_first("SHOW SLAVE STATUS").await?;
        let follows_master = status.and_then(|row| {
            row.get_opt::<Option<u16>, _>("Master_Port")
                .and_then(Result::ok)
                .flatten()
        }) == Some(master_port);
        let outcome = if follows_master {
            Ok(())
        } else {
            let script = format!(
                "SET GLOBAL rpl_semi_sync_master_enabled = OFF;\n\
                 STOP SLAVE;\n\
                 CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {master_port}, \
                 MASTER_USER = 'repl', MASTER_PASSWORD = '{}', MASTER_CONNECT_RETRY = 1, \
                 MASTER_USE_GTID = current_pos;\n\
                 START SLAVE",
                self.credentials.replication_password.replace('\'', "''")
            );
            mariadb_admin::execute_sql_script(&mut connection, &script)
                .await
                .with_context(|| format!("pointing {name} at {master}"))
        };
        mariadb_admin::close(connection).await;
        outcome
    }

    /// `name`'s `gtid_current_pos` includes `position`, domain by domain. Unlike
    /// `MASTER_GTID_WAIT`, which follows only what a server applied as a replica, this
    /// counts an old master's own writes too: after a switchover on an idle cluster it
    /// has applied nothing, and holds everything.
    pub(super) async fn wait_until_server_holds(
        &self,
        name: &str,
        position: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let wanted = sequences_by_domain(position);
        poll_until_ready(&format!("{name} to hold {position}"), timeout, || async {
            let mut connection = self.connect_root(name).await?;
            let current: Option<String> = connection.query_first("SELECT @@gtid_current_pos").await?;
            mariadb_admin::close(connection).await;
            let current = current.unwrap_or_default();
            let held = sequences_by_domain(&current);
            let holds = wanted
                .iter()
                .all(|(domain, sequence)| held.get(domain).is_some_and(|own| own >= sequence));
            Ok(if holds {
                Probe::Ready(())
            } else {
                Probe::NotYet(anyhow::anyhow!("at {current:?}"))
            })
        })
        .await
    }

    /// Every server reports the same `gtid_current_pos` (after a failover and a rejoin:
    /// nothing diverged). Fails naming each server's position otherwise.
    pub async fn wait_all_servers_converge(&self, timeout: Duration) -> anyhow::Result<String> {
        poll_until_ready("every server at the same gtid_current_pos", timeout, || async {
            let mut positions = Vec::new();
            for name in std::iter::once(MASTER_NAME).chain(REPLICA_NAMES) {
                let mut connection = self.connect_root(name).await?;
                let position: Option<String> = connection.query_first("SELECT @@gtid_current_pos").await?;
                mariadb_admin::close(connection).await;
                positions.push((name, position.unwrap_or_default()));
            }
            Ok(if positions.iter().all(|(_, position)| *position == positions[0].1) {
                Probe::Ready(positions[0].1.clone())
            } else {
                Probe::NotYet(anyhow::anyhow!("positions differ: {positions:?}"))
            })
        })
        .await
    }

    /// `--database-server` arguments naming every server with its admin URL: the nodes
    /// then watch them and promote a replica when the master dies.
    pub fn failover_node_args(&self) -> Vec<String> {
        let servers: Vec<String> = std::iter::once(MASTER_NAME)
            .chain(REPLICA_NAMES)
            .map(|name| format!("{name}={}", self.root_url(name)))
            .collect();
        vec!["--database-server".to_owned(), servers.join(",")]
    }
}
