//! A planned switchover: another server becomes master while everything runs, and no
//! write fails. The master stops taking writes (`read_only = 1`, which waits for the
//! commits under way), the target applies everything the master wrote, takes writes, and
//! the old master and the other replica replicate from it. The nodes' `MasterFailover`
//! finds the new writable server within a probe and their writes, which wait for a master
//! meanwhile, go there; nothing is promoted by them (the replicas never lose a master
//! for long enough).

use std::time::Duration;

use anyhow::{bail, Context};

use super::mariadb_launch::{MASTER_NAME, REPLICA_NAMES};
use super::DatabaseServers;
use crate::mariadb_admin;

/// How long the target may take to apply what the old master wrote.
const CATCH_UP_BOUND: Duration = Duration::from_secs(10);

impl DatabaseServers {
    /// Makes `target` the master; returns the name of the server that was master.
    pub async fn switchover(&self, target: &str) -> anyhow::Result<&'static str> {
        let names: Vec<&'static str> = std::iter::once(MASTER_NAME).chain(REPLICA_NAMES).collect();
        let Some(&target) = names.iter().find(|name| **name == target) else {
            bail!("{target} is not a database server (master, replica-1, replica-2)");
        };
        let old_master = self
            .writable_server_other_than(target)
            .await
            .with_context(|| format!("no server other than {target} takes writes: nothing to switch from"))?;
        for name in &names {
            if !self.components.get(name)?.is_alive() {
                bail!("{name} is not running: a switchover needs every server");
            }
        }
        // 1. The old master stops taking writes; its last position is final.
        let mut old = self.connect_root(old_master).await?;
        mariadb_admin::execute_sql_script(&mut old, "SET GLOBAL read_only = ON")
            .await
            .with_context(|| format!("making {old_master} read-only"))?;
        let final_position = mariadb_admin::gtid_binlog_position(&mut old).await?;
        // 2. The target applies all of it, then takes writes.
        if let Err(error) = self
            .wait_until_server_holds(target, &final_position, CATCH_UP_BOUND)
            .await
        {
            // Give the writes back rather than leave no master.
            let _ = mariadb_admin::execute_sql_script(&mut old, "SET GLOBAL read_only = OFF").await;
            return Err(error.context(format!("{target} did not catch up; {old_master} takes writes again")));
        }
        let mut new = self.connect_root(target).await?;
        mariadb_admin::execute_sql_script(
            &mut new,
            "STOP SLAVE;\nRESET SLAVE ALL;\nSET GLOBAL rpl_semi_sync_master_enabled = ON;\nSET GLOBAL read_only = OFF",
        )
        .await
        .with_context(|| format!("making {target} the master"))?;
        mariadb_admin::close(new).await;
        // 3. The old master replicates from it: with the master side of semi-sync off
        // (its own SQL thread would otherwise wait for acknowledgements).
        mariadb_admin::close(old).await;
        for name in names.iter().filter(|name| **name != target) {
            self.point_at_retrying(name, target).await?;
        }
        let mut new = self.connect_root(target).await?;
        let position = mariadb_admin::gtid_binlog_position(&mut new).await;
        let clients = mariadb_admin::global_status_number(&mut new, "Rpl_semi_sync_master_clients").await;
        mariadb_admin::close(new).await;
        let position = position?;
        for name in names.iter().filter(|name| **name != target) {
            self.wait_until_server_holds(name, &position, CATCH_UP_BOUND).await?;
        }
        tracing::info!(old_master, target, ?clients, "switchover done");
        Ok(old_master)
    }

    /// The nodes repoint a server they find replicating from nobody at the same moment
    /// (the old master, just read-only): whichever statement comes second may meet the
    /// other's running replication, so a failed attempt is looked at again.
    async fn point_at_retrying(&self, name: &str, master: &str) -> anyhow::Result<()> {
        let mut attempts_left = 3;
        loop {
            match self.point_at(name, master).await {
                Ok(()) => return Ok(()),
                Err(error) if attempts_left > 1 => {
                    attempts_left -= 1;
                    tracing::info!(server = name, "pointing at the new master failed, again: {error:#}");
                }
                Err(error) => return Err(error),
            }
        }
    }
}
