//! Files, commands and readiness checks of one MariaDB server (master or replica).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;

use crate::component::Component;
use crate::deploy_templates::{render_deploy_template, write_rendered};
use crate::mariadb_admin::{self, ReplicationStatus};
use crate::network_partition::ProcessCgroup;
use crate::process_control::{find_program, LaunchCommand};
use crate::readiness::{poll_until_ready, Probe};

pub const MASTER_NAME: &str = "master";
pub const REPLICA_NAMES: [&str; 2] = ["replica-1", "replica-2"];

/// A unix socket path longer than this does not fit in `sockaddr_un`.
const MAX_SOCKET_PATH_BYTES: usize = 107;
pub const MARIADB_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one server keeps its files: everything under `<state_dir>/<name>/`.
#[derive(Clone, Debug)]
pub struct MariadbServerLayout {
    pub name: String,
    pub server_id: u32,
    pub port: u16,
    pub directory: PathBuf,
    pub datadir: PathBuf,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub config_path: PathBuf,
    /// stdout and stderr of the server process.
    pub log_path: PathBuf,
    /// MariaDB's own error log. It needs a name with an extension: without one the
    /// server appends `.err` to whatever it is given.
    pub error_log_path: PathBuf,
    pub tmpdir: PathBuf,
}

impl MariadbServerLayout {
    pub fn new(state_dir: &Path, name: &str, port: u16) -> Self {
        let directory = state_dir.join(name);
        Self {
            name: name.to_owned(),
            server_id: server_id_of(name),
            port,
            datadir: directory.join("data"),
            socket: directory.join("mariadb.sock"),
            pid_file: directory.join("mariadb.pid"),
            config_path: directory.join("my.cnf"),
            log_path: directory.join("log"),
            error_log_path: directory.join(crate::readiness::MARIADB_ERROR_LOG_NAME),
            tmpdir: directory.join("tmp"),
            directory,
        }
    }

    pub fn is_master(&self) -> bool {
        self.name == MASTER_NAME
    }
}

/// master = 1, replica-N = N + 1: stable, so `@@server_id` tells which server answered.
pub fn server_id_of(name: &str) -> u32 {
    match name
        .strip_prefix("replica-")
        .and_then(|number| number.parse::<u32>().ok())
    {
        Some(number) => number + 1,
        None => 1,
    }
}

/// Renders `my.cnf` into the server's directory: master.cnf for the server called
/// master, replica.cnf for the others.
pub fn write_server_config(deploy_dir: &Path, layout: &MariadbServerLayout) -> anyhow::Result<()> {
    write_server_config_as(deploy_dir, layout, layout.is_master())
}

/// Renders `my.cnf` for a master (`as_master`) or a replica, whatever the server's name:
/// an old master restarting after a promotion comes back as a replica.
pub fn write_server_config_as(deploy_dir: &Path, layout: &MariadbServerLayout, as_master: bool) -> anyhow::Result<()> {
    if layout.socket.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
        bail!(
            "socket path {} is longer than {MAX_SOCKET_PATH_BYTES} bytes; use a shorter state dir",
            layout.socket.display()
        );
    }
    let template = if as_master {
        "mariadb/master.cnf"
    } else {
        "mariadb/replica.cnf"
    };
    let path_value = |path: &Path| path.display().to_string();
    let config = render_deploy_template(
        deploy_dir,
        template,
        &[
            ("user", current_user_name()),
            ("port", layout.port.to_string()),
            ("bind_address", "127.0.0.1".into()),
            ("socket", path_value(&layout.socket)),
            ("pid_file", path_value(&layout.pid_file)),
            ("datadir", path_value(&layout.datadir)),
            ("log_error", path_value(&layout.error_log_path)),
            ("tmpdir", path_value(&layout.tmpdir)),
            ("server_id", layout.server_id.to_string()),
        ],
    )?;
    std::fs::create_dir_all(&layout.tmpdir).with_context(|| format!("creating {}", layout.tmpdir.display()))?;
    write_rendered(&layout.config_path, &config)
}

/// mariadbd refuses to run as root unless told `user=root`; as anyone else, it runs as itself.
fn current_user_name() -> String {
    if nix::unistd::geteuid().is_root() {
        return "root".into();
    }
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}

/// Creates the system tables in an empty datadir. Without a binlog, so that every
/// server starts with an empty GTID history and the replicas can replay the master's.
pub async fn initialise_datadir(layout: &MariadbServerLayout) -> anyhow::Result<()> {
    if layout.datadir.exists() {
        bail!(
            "{} already exists; the database servers need a fresh state dir",
            layout.datadir.display()
        );
    }
    let program = find_program("mariadb-install-db")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&layout.log_path)
        .with_context(|| format!("opening {}", layout.log_path.display()))?;
    let mut command = std::process::Command::new(&program);
    command
        .arg(format!("--defaults-file={}", layout.config_path.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-log-bin",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let name = layout.name.clone();
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .context("waiting for mariadb-install-db")?
        .with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        return Err(crate::readiness::died_while_starting(
            &format!("mariadb-install-db for {name} ({status})"),
            &layout.log_path,
        ));
    }
    Ok(())
}

pub fn server_launch_command(layout: &MariadbServerLayout) -> anyhow::Result<LaunchCommand> {
    Ok(LaunchCommand {
        program: find_program("mariadbd")?,
        // --defaults-file must be the first argument.
        args: vec![format!("--defaults-file={}", layout.config_path.display())],
        env: Vec::new(),
        working_dir: Some(layout.directory.clone()),
        log_path: layout.log_path.clone(),
        // A cgroup of its own, so that `partition_server` can cut it off.
        cgroup: ProcessCgroup::for_process(&layout.name, layout.port).map(|cgroup| cgroup.directory),
    })
}

/// Waits until root can log in over the socket.
pub async fn wait_until_accepting(component: &Component, socket: &Path) -> anyhow::Result<()> {
    poll_until_ready(
        &format!("{} to accept connections", component.name),
        MARIADB_START_TIMEOUT,
        || async {
            component.ensure_still_running()?;
            Ok(match mariadb_admin::connect_as_root_over_socket(socket).await {
                Ok(connection) => {
                    mariadb_admin::close(connection).await;
                    Probe::Ready(())
                }
                Err(error) => Probe::NotYet(error),
            })
        },
    )
    .await
}

/// Starts the replication threads if they are not running, then waits until both run.
pub async fn ensure_replication_running(
    component: &Component,
    socket: &Path,
    timeout: Duration,
) -> anyhow::Result<ReplicationStatus> {
    let mut connection = mariadb_admin::connect_as_root_over_socket(socket).await?;
    let status = mariadb_admin::replication_status(&mut connection).await?;
    let needs_start = status.as_ref().is_none_or(|status| !status.both_threads_running());
    if needs_start {
        // A note, not an error, if one thread is already running.
        if let Err(error) = connection.query_drop("START SLAVE").await {
            tracing::warn!(component = %component.name, "start slave failed: {error:#}");
        }
    }
    mariadb_admin::close(connection).await;
    poll_until_ready(
        &format!("replication threads of {}", component.name),
        timeout,
        || async {
            component.ensure_still_running()?;
            let mut connection = match mariadb_admin::connect_as_root_over_socket(socket).await {
                Ok(connection) => connection,
                Err(error) => return Ok(Probe::NotYet(error)),
            };
            let status = mariadb_admin::replication_status(&mut connection).await;
            mariadb_admin::close(connection).await;
            Ok(match status? {
                Some(status) if status.both_threads_running() => Probe::Ready(status),
                Some(status) => Probe::NotYet(anyhow::anyhow!(
                    "io thread {}, sql thread {}, last io error {:?}, last sql error {:?}",
                    status.io_running,
                    status.sql_running,
                    status.last_io_error,
                    status.last_sql_error
                )),
                None => Probe::NotYet(anyhow::anyhow!("not configured as a replica")),
            })
        },
    )
    .await
}
