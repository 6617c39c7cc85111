//! `parley-sim restore DIR`: a database tier started from a `parley-sim backup`.
//!
//! All three servers start from the same copy (`mariadb-backup --copy-back`), so they
//! hold the same data at the same GTID position and no replica has anything to replay.
//! The copy holds no binlog, so each server's GTID state is set to the copy's position
//! (`RESET MASTER; SET GLOBAL gtid_binlog_state`, `gtid_slave_pos`): the restored master
//! then numbers its next transaction right after it, and the replicas, in
//! `gtid_strict_mode`, ask it for exactly what follows. Semi-synchronous replication is
//! on at the end, as after `DatabaseServers::start`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::backup::{read_backup_manifest, BackupManifest, BACKUP_DATA_DIR_NAME};
use super::mariadb_launch::{MariadbServerLayout, MASTER_NAME};
use super::{DatabaseServers, DatabaseServersSpec};
use crate::mariadb_admin;
use crate::readiness::{poll_until_ready, Probe};

const SEMI_SYNC_ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

impl DatabaseServers {
    /// Starts master, replicas and HAProxy from the backup in `backup_dir`, replicating
    /// with GTID from the copy's position, semi-synchronous replication on. Returns the
    /// backup's manifest with the servers.
    pub async fn restore(spec: DatabaseServersSpec, backup_dir: &Path) -> anyhow::Result<(Self, BackupManifest)> {
        let manifest = read_backup_manifest(backup_dir)?;
        let (mut servers, deploy_dir) = Self::not_started(spec)?;
        servers
            .start_mariadb_servers(&deploy_dir, Some(&backup_dir.join(BACKUP_DATA_DIR_NAME)))
            .await?;
        servers.adopt_position(&manifest.gtid_position).await?;
        servers.attach_replicas(&deploy_dir).await?;
        servers.start_haproxy(&deploy_dir).await?;
        servers.wait_until_reads_pass_through_haproxy().await?;
        servers.owns_processes = servers.spawn_mode == crate::process_control::SpawnMode::TiedToThisProcess;
        tracing::info!(
            state_dir = %servers.state_dir.display(),
            position = %manifest.gtid_position,
            "database servers restored"
        );
        Ok((servers, manifest))
    }

    /// Every server forgets the replication setup the copy came with and takes the
    /// copy's position as its own history.
    async fn adopt_position(&self, position: &str) -> anyhow::Result<()> {
        // The manifest is a file anyone may have edited; the position goes into SQL.
        if !mariadb_admin::is_gtid_list(position) {
            bail!("the backup's gtid_position {position:?} is not a GTID list");
        }
        for server in self.server_names() {
            let mut connection = self.connect_root(server).await?;
            // The copy was of a replica: whatever it replicated from is not ours.
            let script = format!(
                "STOP ALL SLAVES;\nRESET SLAVE ALL;\nRESET MASTER;\nSET GLOBAL gtid_binlog_state = '{position}';\nSET GLOBAL gtid_slave_pos = '{position}';\n"
            );
            let adopted = mariadb_admin::execute_sql_script(&mut connection, &script)
                .await
                .with_context(|| format!("setting {server}'s GTID position to the backup's {position}"));
            mariadb_admin::close(connection).await;
            adopted?;
        }
        Ok(())
    }

    /// Points the replicas at the master from the adopted position, waits until both
    /// replicate, and turns the master's semi-synchronous replication on once a replica
    /// acknowledges.
    async fn attach_replicas(&self, deploy_dir: &Path) -> anyhow::Result<()> {
        self.point_replicas_at_master(deploy_dir).await?;
        self.turn_semi_sync_on().await?;
        self.wait_until_a_replica_acknowledges().await
    }

    /// The nodes refuse writes while no replica acknowledges commits: a restored tier is
    /// ready only once one does.
    async fn wait_until_a_replica_acknowledges(&self) -> anyhow::Result<()> {
        poll_until_ready(
            "a replica acknowledging the restored master",
            SEMI_SYNC_ATTACH_TIMEOUT,
            || async {
                self.components.get(MASTER_NAME)?.ensure_still_running()?;
                let mut master = self.connect_root(MASTER_NAME).await?;
                let clients = mariadb_admin::global_status_number(&mut master, "RPL_SEMI_SYNC_MASTER_CLIENTS").await;
                mariadb_admin::close(master).await;
                Ok(match clients? {
                    Some(clients) if clients > 0 => Probe::Ready(()),
                    other => Probe::NotYet(anyhow::anyhow!("Rpl_semi_sync_master_clients is {other:?}")),
                })
            },
        )
        .await
    }
}

/// Fills `layout`'s (absent or empty) data directory with the prepared copy in
/// `backup_data`, with `mariadb-backup --copy-back`: the copy stays, so one backup can
/// be restored again.
pub(super) async fn copy_back(layout: &MariadbServerLayout, backup_data: &Path) -> anyhow::Result<()> {
    if layout.datadir.exists() {
        bail!(
            "{} already exists; a restore needs a fresh state dir",
            layout.datadir.display()
        );
    }
    super::backup::run_mariadb_backup(
        &layout.log_path,
        vec![
            // The server's own configuration: its datadir and InnoDB settings.
            format!("--defaults-file={}", layout.config_path.display()),
            "--copy-back".into(),
            format!("--target-dir={}", backup_data.display()),
        ],
    )
    .await
    .with_context(|| format!("copying the backup into {}'s data directory", layout.name))
}
