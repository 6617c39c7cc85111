//! `parley-sim backup DIR`: a consistent physical copy of a replica, taken with
//! Debian's `mariadb-backup` while the cluster serves.
//!
//! ```text
//! DIR/data/               the prepared copy: a datadir a server can start from
//! DIR/backup.json         BackupManifest: where it came from and its GTID position
//! DIR/mariadb-backup.log  what mariadb-backup said
//! ```
//!
//! Before copying, the replica is made to apply everything the master had written when
//! the command started (`MASTER_GTID_WAIT`), so every message acknowledged before then
//! is in the copy, whichever replica acknowledged it. `--safe-slave-backup` pauses the
//! replica's SQL thread while the copy is made consistent; its IO thread keeps
//! acknowledging, and the other replica is untouched, so writes go on.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::mariadb_launch::{MASTER_NAME, REPLICA_NAMES};
use super::DatabaseServers;
use crate::mariadb_admin;
use crate::process_control::find_program;

/// The prepared datadir inside a backup directory.
pub const BACKUP_DATA_DIR_NAME: &str = "data";
/// The manifest inside a backup directory.
pub const BACKUP_MANIFEST_NAME: &str = "backup.json";
const BACKUP_LOG_NAME: &str = "mariadb-backup.log";
const MANIFEST_FORMAT: u32 = 1;
/// How long the replica may take to apply what the master had when the backup began.
const REPLICA_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// What `DIR/backup.json` records of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Version of this file's layout.
    pub format: u32,
    /// The replica the copy was taken from (`replica-1`, `replica-2`).
    pub source: String,
    /// `VERSION()` of that server; a restore needs the same MariaDB release.
    pub server_version: String,
    /// The application database (schema) in the copy.
    pub database: String,
    /// Seconds since the Unix epoch when the backup started.
    pub started_at_unix_seconds: u64,
    /// Seconds since the Unix epoch when the copy was prepared.
    pub finished_at_unix_seconds: u64,
    /// The master's `@@gtid_binlog_pos` when the backup started; the copy holds at least
    /// this. None when the master was down (then the copy holds what the replica had).
    pub master_position_at_start: Option<String>,
    /// The GTID position of the copy: every transaction up to it is in the copy, none
    /// after it (`gtid_slave_pos` from mariadb-backup's slave info). A server restored
    /// from the copy continues from here; point-in-time recovery replays the master's
    /// binlogs from here.
    pub gtid_position: String,
}

/// Reads `DIR/backup.json` and checks that `DIR/data` is there.
pub fn read_backup_manifest(backup_dir: &Path) -> anyhow::Result<BackupManifest> {
    let path = backup_dir.join(BACKUP_MANIFEST_NAME);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is {} a parley-sim backup?)",
            path.display(),
            backup_dir.display()
        )
    })?;
    let manifest: BackupManifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if manifest.format != MANIFEST_FORMAT {
        bail!(
            "{} has format {}, expected {MANIFEST_FORMAT}",
            path.display(),
            manifest.format
        );
    }
    let data = backup_dir.join(BACKUP_DATA_DIR_NAME);
    if !data.is_dir() {
        bail!("{} is missing: the backup is incomplete", data.display());
    }
    Ok(manifest)
}

impl DatabaseServers {
    /// Copies `source` (a replica) into `backup_dir` with `mariadb-backup --backup
    /// --slave-info --safe-slave-backup`, prepares the copy, and writes the manifest.
    /// `backup_dir` must be new or empty. `database` is recorded for the restore.
    pub async fn take_backup(&self, source: &str, backup_dir: &Path, database: &str) -> anyhow::Result<BackupManifest> {
        if !REPLICA_NAMES.contains(&source) {
            bail!(
                "backups are taken from a replica ({}), not {source:?}",
                REPLICA_NAMES.join(", ")
            );
        }
        self.components.get(source)?.ensure_still_running()?;
        prepare_backup_dir(backup_dir)?;
        let started_at_unix_seconds = unix_seconds_now();
        let master_position_at_start = self.wait_until_replica_has_masters_position(source).await?;

        let layout = self.server_layout(source);
        let mut replica = self.connect_root(source).await?;
        let server_version: Option<String> = replica
            .query_first("SELECT VERSION()")
            .await
            .context("reading VERSION()")?;
        mariadb_admin::close(replica).await;

        let data = backup_dir.join(BACKUP_DATA_DIR_NAME);
        let log_path = backup_dir.join(BACKUP_LOG_NAME);
        run_mariadb_backup(
            &log_path,
            vec![
                // --defaults-file must come first: the datadir and InnoDB settings of the
                // server being copied; --user overrides its `user` (the OS user).
                format!("--defaults-file={}", layout.config_path.display()),
                "--backup".into(),
                "--slave-info".into(),
                "--safe-slave-backup".into(),
                "--user=root".into(),
                format!("--socket={}", layout.socket.display()),
                format!("--target-dir={}", data.display()),
            ],
        )
        .await
        .with_context(|| format!("copying {source}"))?;
        run_mariadb_backup(
            &log_path,
            vec!["--prepare".into(), format!("--target-dir={}", data.display())],
        )
        .await
        .context("preparing the copy")?;

        let manifest = BackupManifest {
            format: MANIFEST_FORMAT,
            source: source.to_owned(),
            server_version: server_version.unwrap_or_default(),
            database: database.to_owned(),
            started_at_unix_seconds,
            finished_at_unix_seconds: unix_seconds_now(),
            master_position_at_start,
            gtid_position: read_copy_position(&data)?,
        };
        let path = backup_dir.join(BACKUP_MANIFEST_NAME);
        let text = serde_json::to_string_pretty(&manifest).context("serialising the backup manifest")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(backup_dir = %backup_dir.display(), position = %manifest.gtid_position, "backup taken");
        Ok(manifest)
    }

    /// The master's position now, once `replica` has applied it; None (with a warning)
    /// when the master is down: the copy then holds what the replica has.
    async fn wait_until_replica_has_masters_position(&self, replica: &str) -> anyhow::Result<Option<String>> {
        if !self.components.get(MASTER_NAME)?.is_alive() {
            tracing::warn!("the master is down: the backup holds what {replica} has applied");
            return Ok(None);
        }
        let mut master = self.connect_root(MASTER_NAME).await?;
        let position = mariadb_admin::gtid_binlog_position(&mut master).await;
        mariadb_admin::close(master).await;
        let position = position?;
        self.wait_replica_reached(replica, &position, REPLICA_CATCH_UP_TIMEOUT)
            .await
            .with_context(|| format!("{replica} must apply what the master has before it is copied"))?;
        Ok(Some(position))
    }
}

/// A backup goes into a new or empty directory, never over another one.
fn prepare_backup_dir(backup_dir: &Path) -> anyhow::Result<()> {
    if backup_dir.exists() {
        let mut entries = std::fs::read_dir(backup_dir).with_context(|| format!("reading {}", backup_dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; a backup goes into a new directory",
                backup_dir.display()
            );
        }
    }
    std::fs::create_dir_all(backup_dir).with_context(|| format!("creating {}", backup_dir.display()))
}

/// Runs `mariadb-backup ARGS`, its output appended to `log_path`.
pub(super) async fn run_mariadb_backup(log_path: &Path, args: Vec<String>) -> anyhow::Result<()> {
    let program = find_program("mariadb-backup").context("install Debian's mariadb-backup (deploy/install.sh)")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = std::process::Command::new(&program);
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .context("waiting for mariadb-backup")?
        .with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        bail!(
            "mariadb-backup {} failed ({status}); last lines of {}:\n{}",
            args.first().map(String::as_str).unwrap_or_default(),
            log_path.display(),
            crate::readiness::log_tail(log_path, 15)
        );
    }
    Ok(())
}

/// The copy's GTID position from mariadb-backup's slave info (`SET GLOBAL gtid_slave_pos
/// = '0-1-42';`), named `xtrabackup_slave_info` in 10.11 and `mariadb_backup_slave_info`
/// in later releases.
fn read_copy_position(data: &Path) -> anyhow::Result<String> {
    let candidates: Vec<PathBuf> = ["mariadb_backup_slave_info", "xtrabackup_slave_info"]
        .iter()
        .map(|name| data.join(name))
        .collect();
    let Some(path) = candidates.iter().find(|path| path.is_file()) else {
        bail!("mariadb-backup wrote no slave info in {}", data.display());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_gtid_slave_pos(&text).with_context(|| format!("no gtid_slave_pos in {}: {text:?}", path.display()))
}

fn parse_gtid_slave_pos(slave_info: &str) -> Option<String> {
    let after_name = &slave_info[slave_info.find("gtid_slave_pos")?..];
    let start = after_name.find('\'')? + 1;
    let length = after_name[start..].find('\'')?;
    let position = &after_name[start..start + length];
    // Anything but a GTID list is refused rather than passed on to a SET GLOBAL statement.
    mariadb_admin::is_gtid_list(position).then(|| position.to_owned())
}

fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gtid_position_of_mariadb_backups_slave_info() {
        let info = "SET GLOBAL gtid_slave_pos = '0-1-1234';\nCHANGE MASTER TO master_use_gtid = slave_pos;\n";
        assert_eq!(parse_gtid_slave_pos(info).as_deref(), Some("0-1-1234"));
        assert_eq!(
            parse_gtid_slave_pos("SET GLOBAL gtid_slave_pos = '0-1-5,1-2-7';").as_deref(),
            Some("0-1-5,1-2-7")
        );
        assert_eq!(
            parse_gtid_slave_pos("CHANGE MASTER TO MASTER_LOG_FILE='x', MASTER_LOG_POS=4"),
            None
        );
        assert_eq!(parse_gtid_slave_pos("SET GLOBAL gtid_slave_pos = '';"), None);
        assert_eq!(
            parse_gtid_slave_pos("SET GLOBAL gtid_slave_pos = '0-1-1'; DROP'"),
            Some("0-1-1".into())
        );
        assert_eq!(parse_gtid_slave_pos("SET GLOBAL gtid_slave_pos = '0-1-1; DROP';"), None);
    }

    #[test]
    fn a_backup_never_goes_over_another_one() {
        let directory = tempfile::tempdir().unwrap();
        prepare_backup_dir(&directory.path().join("new")).unwrap();
        std::fs::write(directory.path().join("new").join("x"), "").unwrap();
        assert!(prepare_backup_dir(&directory.path().join("new")).is_err());
    }
}
