//! The database tier: MariaDB master, two GTID replicas, and HAProxy in front of them.

mod backup;
mod haproxy_launch;
mod mariadb_launch;
mod rejoin;
mod restore;
mod server_isolation;
mod switchover;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::component::{Component, ComponentRecord, ComponentSet, ComponentStatus};
use crate::deploy_templates::{locate_deploy_dir, render_deploy_template};
use crate::mariadb_admin;
use crate::ports::{local_addr, ports_for, PortChoice};
use crate::process_control::SpawnMode;
use haproxy_launch::{HaproxyLayout, HAPROXY_NAME};
use mariadb_launch::{MariadbServerLayout, MASTER_NAME, REPLICA_NAMES};

pub use backup::{read_backup_manifest, BackupManifest, BACKUP_DATA_DIR_NAME, BACKUP_MANIFEST_NAME};
pub use mariadb_launch::server_id_of;

/// The master's port in the CLI's fixed layout (replicas follow it).
pub const DEFAULT_DATABASE_BASE_PORT: u16 = 13306;
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const REPLICATION_START_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`DatabaseServers::start`] starts.
pub struct DatabaseServersSpec {
    /// Where data directories, configs and logs go (created if missing).
    pub state_dir: PathBuf,
    /// A fixed layout (see [`DatabaseServerPorts`]) or free ports.
    pub ports: PortChoice,
    /// Keep running after this process exits (`parley-sim up --detach`).
    pub detach: bool,
}

/// Every port of the database tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseServerPorts {
    /// The master MariaDB's port.
    pub master: u16,
    /// The first replica's port.
    pub replica_1: u16,
    /// The second replica's port.
    pub replica_2: u16,
    /// HAProxy's write frontend (to the master).
    pub haproxy_write: u16,
    /// HAProxy's read frontend (to the replicas, the master as a backup).
    pub haproxy_read: u16,
    /// HAProxy's stats page (HTTP, `/stats`).
    pub haproxy_stats: u16,
}

impl DatabaseServerPorts {
    /// Fixed layout from base B: servers B, B+1, B+2; HAProxy write B+10, read B+11, stats B+12.
    fn choose(choice: PortChoice) -> anyhow::Result<Self> {
        let picked = match choice {
            PortChoice::Free => ports_for(PortChoice::Free, 6)?,
            PortChoice::Fixed { base } => {
                let mut servers = ports_for(PortChoice::Fixed { base }, 3)?;
                let haproxy_base = base.checked_add(10).context("database port base is too high")?;
                servers.extend(ports_for(PortChoice::Fixed { base: haproxy_base }, 3)?);
                servers
            }
        };
        Ok(Self {
            master: picked[0],
            replica_1: picked[1],
            replica_2: picked[2],
            haproxy_write: picked[3],
            haproxy_read: picked[4],
            haproxy_stats: picked[5],
        })
    }

    /// The port of the MariaDB server called `name` (`master`, `replica-1`, `replica-2`).
    pub fn of_server(&self, name: &str) -> Option<u16> {
        match name {
            MASTER_NAME => Some(self.master),
            "replica-1" => Some(self.replica_1),
            "replica-2" => Some(self.replica_2),
            _ => None,
        }
    }
}

/// Users the bootstrap script creates. Fixed, well-known values: the cluster listens on
/// 127.0.0.1 only and is meant to be poked at by hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseCredentials {
    /// The user the nodes connect as (DML on the app database).
    pub app_user: String,
    /// The app user's password.
    pub app_password: String,
    /// The administrative user (creating databases, promoting, inspecting replication).
    pub admin_user: String,
    /// The admin user's password.
    pub admin_password: String,
    /// The password the replicas connect to the master with.
    pub replication_password: String,
}

impl Default for DatabaseCredentials {
    fn default() -> Self {
        Self {
            app_user: "parley".into(),
            app_password: "parley".into(),
            admin_user: "parley_admin".into(),
            admin_password: "parley-admin".into(),
            replication_password: "repl".into(),
        }
    }
}

/// What `cluster.json` keeps of the database tier.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseServersRecord {
    /// The tier's state directory (absolute).
    pub state_dir: PathBuf,
    /// The tier's ports.
    pub ports: DatabaseServerPorts,
    /// The users the servers were set up with.
    pub credentials: DatabaseCredentials,
    /// The three servers and HAProxy, enough to signal and restart them.
    pub components: Vec<ComponentRecord>,
}

/// master + replica-1 + replica-2 + haproxy, replicated and caught up.
///
/// Dropping it SIGKILLs every process it started (unless started detached or loaded
/// from a state file).
pub struct DatabaseServers {
    state_dir: PathBuf,
    ports: DatabaseServerPorts,
    credentials: DatabaseCredentials,
    components: ComponentSet,
    spawn_mode: SpawnMode,
    owns_processes: bool,
}

impl DatabaseServers {
    /// Initialises and starts the master and both replicas, sets up GTID replication and
    /// HAProxy, and returns once both replicas run and have caught up. Fails when a server
    /// does not come up in time.
    pub async fn start(spec: DatabaseServersSpec) -> anyhow::Result<Self> {
        let (mut servers, deploy_dir) = Self::not_started(spec)?;
        servers.start_mariadb_servers(&deploy_dir, None).await?;
        servers.bootstrap_replication(&deploy_dir).await?;
        servers.start_haproxy(&deploy_dir).await?;
        servers.wait_until_reads_pass_through_haproxy().await?;
        servers.owns_processes = servers.spawn_mode == SpawnMode::TiedToThisProcess;
        tracing::info!(state_dir = %servers.state_dir.display(), "database servers ready");
        Ok(servers)
    }

    /// The tier's handle with nothing started yet, and the `deploy/` directory.
    fn not_started(spec: DatabaseServersSpec) -> anyhow::Result<(Self, PathBuf)> {
        let deploy_dir = locate_deploy_dir()?;
        std::fs::create_dir_all(&spec.state_dir)
            .with_context(|| format!("creating state dir {}", spec.state_dir.display()))?;
        let state_dir = spec
            .state_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", spec.state_dir.display()))?;
        let ports = DatabaseServerPorts::choose(spec.ports)?;
        // Owned from the first spawn: if start fails half way, Drop cleans up.
        let servers = Self {
            state_dir,
            ports,
            credentials: DatabaseCredentials::default(),
            components: ComponentSet::default(),
            spawn_mode: if spec.detach {
                SpawnMode::Detached
            } else {
                SpawnMode::TiedToThisProcess
            },
            owns_processes: true,
        };
        Ok((servers, deploy_dir))
    }

    /// Writes each server's configuration, fills its data directory (empty system
    /// tables, or a copy of `backup_data`, a prepared `parley-sim backup`), starts it and
    /// waits until it accepts connections.
    async fn start_mariadb_servers(&mut self, deploy_dir: &Path, backup_data: Option<&Path>) -> anyhow::Result<()> {
        let layouts: Vec<MariadbServerLayout> = self.server_names().map(|name| self.server_layout(name)).collect();
        for layout in &layouts {
            mariadb_launch::write_server_config(deploy_dir, layout)?;
        }
        match backup_data {
            None => futures::future::try_join_all(layouts.iter().map(mariadb_launch::initialise_datadir)).await?,
            Some(data) => {
                futures::future::try_join_all(layouts.iter().map(|layout| restore::copy_back(layout, data))).await?
            }
        };
        for layout in &layouts {
            let command = mariadb_launch::server_launch_command(layout)?;
            let component = Component::spawn(&layout.name, local_addr(layout.port), command, self.spawn_mode)?;
            self.components.push(component);
        }
        let components = &self.components;
        let waits = layouts.iter().map(|layout| async move {
            let component = components.get(&layout.name)?;
            mariadb_launch::wait_until_accepting(component, &layout.socket).await
        });
        futures::future::try_join_all(waits).await?;
        Ok(())
    }

    /// Users go to the master only (replication carries them); each replica then
    /// streams the master's whole binlog from an empty GTID position.
    async fn bootstrap_replication(&self, deploy_dir: &Path) -> anyhow::Result<()> {
        let bootstrap = render_deploy_template(
            deploy_dir,
            "mariadb/bootstrap-master.sql",
            &[
                ("replication_host", "127.0.0.1".into()),
                ("replication_password", self.credentials.replication_password.clone()),
                ("app_host", "127.0.0.1".into()),
                ("app_password", self.credentials.app_password.clone()),
                ("admin_host", "127.0.0.1".into()),
                ("admin_password", self.credentials.admin_password.clone()),
            ],
        )?;
        let mut master = self.connect_root(MASTER_NAME).await?;
        mariadb_admin::execute_sql_script(&mut master, &bootstrap)
            .await
            .context("bootstrapping the master")?;
        mariadb_admin::close(master).await;

        self.point_replicas_at_master(deploy_dir).await?;
        self.wait_replicas_caught_up(CATCH_UP_TIMEOUT).await?;
        // The bootstrap turned semi-synchronous replication off (nothing could
        // acknowledge it); with the replicas attached, every commit from now on waits
        // for one of them, as after every restart of the master.
        self.turn_semi_sync_on().await
    }

    /// Runs `replica-setup.sql` on each replica (replicating from the master with GTID,
    /// from its `gtid_slave_pos`) and waits until both replication threads run.
    pub(super) async fn point_replicas_at_master(&self, deploy_dir: &Path) -> anyhow::Result<()> {
        let replica_setup = render_deploy_template(
            deploy_dir,
            "mariadb/replica-setup.sql",
            &[
                ("master_host", "127.0.0.1".into()),
                ("master_port", self.ports.master.to_string()),
                ("replication_password", self.credentials.replication_password.clone()),
            ],
        )?;
        for replica in REPLICA_NAMES {
            let mut connection = self.connect_root(replica).await?;
            let attached = mariadb_admin::execute_sql_script(&mut connection, &replica_setup)
                .await
                .with_context(|| format!("setting up replication on {replica}"));
            mariadb_admin::close(connection).await;
            attached?;
        }
        for replica in REPLICA_NAMES {
            let layout = self.server_layout(replica);
            mariadb_launch::ensure_replication_running(
                self.components.get(replica)?,
                &layout.socket,
                REPLICATION_START_TIMEOUT,
            )
            .await?;
        }
        Ok(())
    }

    /// `rpl_semi_sync_master_enabled = ON` on the master (its configuration turns it on
    /// at every restart; a bootstrap turns it off while nothing can acknowledge).
    pub(super) async fn turn_semi_sync_on(&self) -> anyhow::Result<()> {
        let mut master = self.connect_root(MASTER_NAME).await?;
        let enabled = mariadb_admin::execute_sql_script(&mut master, "SET GLOBAL rpl_semi_sync_master_enabled = ON")
            .await
            .context("turning semi-synchronous replication on");
        mariadb_admin::close(master).await;
        enabled
    }

    async fn start_haproxy(&mut self, deploy_dir: &Path) -> anyhow::Result<()> {
        let layout = HaproxyLayout::new(&self.state_dir);
        haproxy_launch::write_haproxy_config(deploy_dir, &layout, &self.ports)?;
        let command = haproxy_launch::haproxy_launch_command(&layout)?;
        let component = Component::spawn(
            HAPROXY_NAME,
            local_addr(self.ports.haproxy_read),
            command,
            self.spawn_mode,
        )?;
        self.components.push(component);
        haproxy_launch::wait_until_listening(self.components.get(HAPROXY_NAME)?, &self.ports).await
    }

    /// HAProxy listening is not enough: a query must reach a server through it.
    async fn wait_until_reads_pass_through_haproxy(&self) -> anyhow::Result<()> {
        let url = self.app_url(self.ports.haproxy_read, "");
        crate::readiness::poll_until_ready("a read through haproxy", Duration::from_secs(15), || async {
            self.components.get(HAPROXY_NAME)?.ensure_still_running()?;
            let attempt = async {
                let mut connection = mariadb_admin::connect_url(&url).await?;
                let id = mariadb_admin::server_id(&mut connection).await;
                mariadb_admin::close(connection).await;
                id
            };
            Ok(match attempt.await {
                Ok(_) => crate::readiness::Probe::Ready(()),
                Err(error) => crate::readiness::Probe::NotYet(error),
            })
        })
        .await
    }

    /// Creates `name` on the master (as root) and waits until both replicas have it.
    /// Names must start with `parley`: the app user's grant is on `parley%`.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        mariadb_admin::validate_database_name(name)?;
        if !name.starts_with("parley") {
            bail!("database {name:?} must start with \"parley\": the app user is granted `parley%`.*");
        }
        let mut master = self.connect_root(MASTER_NAME).await?;
        let created = master
            .query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            ))
            .await
            .with_context(|| format!("creating database {name}"));
        mariadb_admin::close(master).await;
        created?;
        self.wait_replicas_caught_up(CATCH_UP_TIMEOUT).await
    }

    /// Both replicas have applied everything the master has written so far.
    pub async fn wait_replicas_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut master = self.connect_root(MASTER_NAME).await?;
        let position = mariadb_admin::gtid_binlog_position(&mut master).await;
        mariadb_admin::close(master).await;
        let position = position?;
        let waits = REPLICA_NAMES.map(|replica| {
            let position = position.clone();
            async move { self.wait_replica_reached(replica, &position, timeout).await }
        });
        futures::future::try_join_all(waits).await?;
        Ok(())
    }

    async fn wait_replica_reached(&self, replica: &str, position: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut connection = self.connect_root(replica).await?;
        let reached = mariadb_admin::wait_for_gtid_position(&mut connection, position, timeout).await;
        let status = mariadb_admin::replication_status(&mut connection).await;
        mariadb_admin::close(connection).await;
        if reached? {
            return Ok(());
        }
        bail!(
            "{replica} did not reach master position {position:?} within {timeout:?}; replication: {:?}",
            status?
        )
    }

    fn app_url(&self, port: u16, database: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{port}/{database}?prefer_socket=false",
            self.credentials.app_user, self.credentials.app_password
        )
    }

    /// App user, straight to the master.
    pub fn master_url(&self, database: &str) -> String {
        self.app_url(self.ports.master, database)
    }

    /// App user, through HAProxy's read frontend (replicas, master as the last resort).
    pub fn read_url(&self, database: &str) -> String {
        self.app_url(self.ports.haproxy_read, database)
    }

    /// App user, through HAProxy's write frontend (the master).
    pub fn write_via_haproxy_url(&self, database: &str) -> String {
        self.app_url(self.ports.haproxy_write, database)
    }

    /// `statuses` with each database server's role filled in: which one takes writes
    /// now (after a promotion that need not be the one named `master`).
    pub async fn with_roles(&self, mut statuses: Vec<ComponentStatus>) -> Vec<ComponentStatus> {
        for status in &mut statuses {
            if self.ports.of_server(&status.name).is_none() {
                continue;
            }
            let role = match self.read_only_of(&status.name).await {
                Some(false) => "master",
                Some(true) => "replica",
                None => "unreachable",
            };
            status.role = Some(role.to_owned());
        }
        statuses
    }

    /// A user with every privilege (including `READ ONLY ADMIN`), over TCP to one server:
    /// `master`, `replica-1` or `replica-2`. Panics on any other name.
    pub fn root_url(&self, server: &str) -> String {
        let port = self
            .ports
            .of_server(server)
            .unwrap_or_else(|| panic!("root_url: unknown server {server:?} (master, replica-1, replica-2)"));
        format!(
            "mysql://{}:{}@127.0.0.1:{port}/?prefer_socket=false",
            self.credentials.admin_user, self.credentials.admin_password
        )
    }

    /// The URL of HAProxy's stats page.
    pub fn haproxy_stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/stats", self.ports.haproxy_stats)
    }

    /// The app user's name and password (what the nodes, and ejabberd beside them in
    /// `bench peer`, log in with).
    pub fn app_credentials(&self) -> (String, String) {
        (self.credentials.app_user.clone(), self.credentials.app_password.clone())
    }

    /// The tier's ports.
    pub fn ports(&self) -> DatabaseServerPorts {
        self.ports
    }

    /// The tier's state directory (absolute).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Pid, address and liveness of every server and of HAProxy.
    pub fn status(&self) -> Vec<ComponentStatus> {
        self.components.statuses()
    }

    /// The names of every server and of HAProxy.
    pub fn component_names(&self) -> Vec<String> {
        self.components.names().map(str::to_owned).collect()
    }

    /// Signals the component's whole process group.
    pub fn kill(&self, name: &str, signal: Signal) -> anyhow::Result<()> {
        self.components.get(name)?.signal(signal)
    }

    /// Starts a stopped component again and waits until it is back in service: the
    /// master accepting, a replica replicating and caught up, HAProxy listening.
    pub async fn start_component(&self, name: &str) -> anyhow::Result<()> {
        let component = self.components.get(name)?;
        if name != HAPROXY_NAME && !component.is_alive() {
            // The nodes promoted another server while this one was down.
            if let Some(master) = self.writable_server_other_than(name).await {
                return self.start_as_replica_of(name, master).await;
            }
        }
        component.respawn_unless_running(self.spawn_mode).await?;
        if name == HAPROXY_NAME {
            return haproxy_launch::wait_until_listening(component, &self.ports).await;
        }
        let layout = self.server_layout(name);
        mariadb_launch::wait_until_accepting(component, &layout.socket).await?;
        // The master, or a server promoted since (it replicates from nobody).
        if layout.is_master()
            || self
                .writable_server_other_than("")
                .await
                .is_some_and(|writable| writable == name)
        {
            return Ok(());
        }
        mariadb_launch::ensure_replication_running(component, &layout.socket, REPLICATION_START_TIMEOUT).await?;
        if !self.components.get(MASTER_NAME)?.is_alive() {
            tracing::warn!("master is down: {name} replicates again once it is back");
            return Ok(());
        }
        let mut master = self.connect_root(MASTER_NAME).await?;
        let position = mariadb_admin::gtid_binlog_position(&mut master).await;
        mariadb_admin::close(master).await;
        self.wait_replica_reached(name, &position?, CATCH_UP_TIMEOUT).await
    }

    /// SIGTERM everything, SIGKILL what is still there after a grace period.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.components.terminate_all(crate::component::SHUTDOWN_GRACE).await;
        self.owns_processes = false;
        self.heal_all_and_release_cgroups();
        Ok(())
    }

    /// A root session over the server's unix socket: local, so it works while the
    /// server is cut off by a partition (`partition_server`).
    pub async fn connect_root_over_socket(&self, server: &str) -> anyhow::Result<mysql_async::Conn> {
        self.connect_root(server).await
    }

    async fn connect_root(&self, server: &str) -> anyhow::Result<mysql_async::Conn> {
        mariadb_admin::connect_as_root_over_socket(&self.server_layout(server).socket)
            .await
            .with_context(|| format!("connecting to {server} as root"))
    }

    fn server_names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(MASTER_NAME).chain(REPLICA_NAMES)
    }

    fn server_layout(&self, name: &str) -> MariadbServerLayout {
        let port = self.ports.of_server(name).unwrap_or(self.ports.master);
        MariadbServerLayout::new(&self.state_dir, name, port)
    }

    /// What `cluster.json` keeps of the tier.
    pub fn record(&self) -> DatabaseServersRecord {
        DatabaseServersRecord {
            state_dir: self.state_dir.clone(),
            ports: self.ports,
            credentials: self.credentials.clone(),
            components: self.components.records(),
        }
    }

    /// Rebuilds the handle of a cluster another process started. It owns nothing: dropping
    /// it leaves the processes running, and restarts are detached.
    pub fn from_record(record: DatabaseServersRecord) -> Self {
        Self {
            state_dir: record.state_dir,
            ports: record.ports,
            credentials: record.credentials,
            components: ComponentSet::from_records(record.components),
            spawn_mode: SpawnMode::Detached,
            owns_processes: false,
        }
    }

    pub(crate) fn components(&self) -> &ComponentSet {
        &self.components
    }

    pub(crate) fn disown_processes(&mut self) {
        self.owns_processes = false;
    }
}

impl Drop for DatabaseServers {
    fn drop(&mut self) {
        if self.owns_processes {
            self.components.kill_all_blocking();
            self.heal_all_and_release_cgroups();
        }
    }
}
