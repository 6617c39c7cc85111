//! The whole cluster `parley-sim up` runs, persisted in `<state_dir>/cluster.json` so
//! later CLI invocations can inspect, kill and restart its components.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};

use crate::app_tier::{AppTier, AppTierRecord, AppTierSpec, EdgeTlsFiles};
use crate::cluster_certificates::{cluster_tls_node_args, write_cluster_certificates};
use crate::component::{ComponentStatus, SHUTDOWN_GRACE};
use crate::database_servers::{
    BackupManifest, DatabaseServers, DatabaseServersRecord, DatabaseServersSpec, DEFAULT_DATABASE_BASE_PORT,
};
use crate::ports::PortChoice;
use crate::process_control::{process_is_alive, terminate_process_groups, ProcessIdentity};

/// The file in the state dir that describes a running cluster (for `status`, `kill`, `down`).
pub const STATE_FILE_NAME: &str = "cluster.json";
/// Present in every state dir parley-sim created; nothing else is ever deleted.
pub const STATE_DIR_MARKER: &str = ".parley-sim-state";
const JWT_SECRET_FILE_NAME: &str = "jwt-secret";
const STATE_FILE_FORMAT: u32 = 1;
/// nginx's port in the CLI's layout: the seed's `http://localhost:10000`.
pub const DEFAULT_PUBLIC_PORT: u16 = 10000;

/// What [`LocalCluster::start`] starts.
pub struct ClusterSpec {
    /// Where everything of the cluster lives; must be new or made by parley-sim before.
    pub state_dir: PathBuf,
    /// How many parley nodes.
    pub nodes: usize,
    /// nginx's port; None picks a free one.
    pub public_port: Option<u16>,
    /// Ports of the database tier.
    pub database_ports: PortChoice,
    /// HTTP ports of the nodes (their cluster ports are chosen next to them).
    pub node_ports: PortChoice,
    /// The MariaDB database (schema) name.
    pub database: String,
    /// The `parley` binary; None: `PARLEY_BIN`, else next to the current executable.
    pub parley_bin: Option<PathBuf>,
    /// Appended to every node's command line (placeholders as in [`AppTierSpec::node_extra_args`]).
    pub node_extra_args: Vec<String>,
    /// TLS between the nodes, with a CA and certificates made in `<state_dir>/cluster-tls`.
    pub cluster_tls: bool,
    /// Keep the processes running after this process exits.
    pub detach: bool,
    /// HTTPS and WSS on nginx's port with these files; None: plain HTTP.
    pub edge_tls: Option<EdgeTlsFiles>,
    /// Start the database servers from this `parley-sim backup` directory instead of
    /// empty ones; the nodes then use the backup's database, whatever `database` says.
    pub restore_from: Option<PathBuf>,
    /// The nodes watch every database server and promote a replica when the master
    /// dies (`--database-server`); false: the master is fixed.
    pub automatic_failover: bool,
}

impl ClusterSpec {
    /// The CLI's layout: nginx on `public_port`, nodes right after it, MariaDB from 13306,
    /// HAProxy from 13316.
    pub fn with_fixed_ports(state_dir: PathBuf, nodes: usize, public_port: u16) -> Self {
        Self {
            state_dir,
            nodes,
            public_port: Some(public_port),
            database_ports: PortChoice::Fixed {
                base: DEFAULT_DATABASE_BASE_PORT,
            },
            node_ports: PortChoice::Fixed {
                base: public_port.saturating_add(1),
            },
            database: "parley".into(),
            parley_bin: None,
            node_extra_args: Vec::new(),
            cluster_tls: false,
            detach: false,
            edge_tls: None,
            restore_from: None,
            automatic_failover: true,
        }
    }

    /// Every port picked free: clusters can run side by side (tests).
    pub fn with_free_ports(state_dir: PathBuf, nodes: usize) -> Self {
        Self {
            public_port: None,
            database_ports: PortChoice::Free,
            node_ports: PortChoice::Free,
            ..Self::with_fixed_ports(state_dir, nodes, DEFAULT_PUBLIC_PORT)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ClusterStateFile {
    format: u32,
    detached: bool,
    /// The foreground `parley-sim up` that owns the processes, if any.
    launcher: Option<ProcessIdentity>,
    servers: DatabaseServersRecord,
    app: AppTierRecord,
}

/// master, replica-1, replica-2, haproxy, node-1 … node-N, nginx.
pub struct LocalCluster {
    /// The database tier.
    pub servers: DatabaseServers,
    /// The nodes and nginx.
    pub app: AppTier,
    state_dir: PathBuf,
    detached: bool,
    launcher: Option<ProcessIdentity>,
}

impl LocalCluster {
    /// Starts the database tier, then the app tier on it, and writes `cluster.json`. The JWT
    /// secret is kept in the state dir, so a restarted cluster accepts old tokens.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        prepare_state_dir(&spec.state_dir)?;
        let state_dir = spec.state_dir.canonicalize().context("resolving the state dir")?;
        let jwt_secret = load_or_create_jwt_secret(&state_dir)?;
        let mut node_extra_args = spec.node_extra_args;
        if spec.cluster_tls {
            let directory = state_dir.join("cluster-tls");
            let node_names: Vec<String> = (1..=spec.nodes).map(crate::app_tier::node_name).collect();
            write_cluster_certificates(&directory, &node_names).context("making the cluster's certificates")?;
            node_extra_args.extend(cluster_tls_node_args(&directory));
        }
        let servers_spec = DatabaseServersSpec {
            state_dir: state_dir.clone(),
            ports: spec.database_ports,
            detach: spec.detach,
        };
        let (mut servers, database) = match &spec.restore_from {
            None => (DatabaseServers::start(servers_spec).await?, spec.database.clone()),
            Some(backup_dir) => {
                let (servers, manifest) = DatabaseServers::restore(servers_spec, backup_dir)
                    .await
                    .with_context(|| format!("restoring the backup in {}", backup_dir.display()))?;
                (servers, manifest.database)
            }
        };
        if spec.automatic_failover {
            node_extra_args.extend(servers.failover_node_args());
        }
        let app_spec = AppTierSpec {
            state_dir: state_dir.clone(),
            database,
            nodes: spec.nodes,
            public_port: spec.public_port,
            node_ports: spec.node_ports,
            parley_bin: spec.parley_bin,
            // One secret per cluster state dir serves as both; nodes get --dev anyway.
            cluster_cookie: format!("cookie-{jwt_secret}"),
            jwt_secret,
            node_extra_args,
            detach: spec.detach,
            edge_tls: spec.edge_tls,
        };
        let app = match AppTier::start(&servers, app_spec).await {
            Ok(app) => app,
            Err(error) => {
                // Detached servers are not killed by Drop; a failed start must not leave them.
                servers.components().kill_all_blocking();
                servers.disown_processes();
                return Err(error);
            }
        };
        let launcher = if spec.detach {
            None
        } else {
            Some(ProcessIdentity {
                pid: std::process::id(),
                start_time_ticks: crate::process_control::read_process_stat(std::process::id())
                    .map(|stat| stat.start_time_ticks),
            })
        };
        let cluster = Self {
            servers,
            app,
            state_dir,
            detached: spec.detach,
            launcher,
        };
        cluster.save()?;
        Ok(cluster)
    }

    /// The cluster recorded in `<state_dir>/cluster.json`. The handle owns nothing:
    /// dropping it leaves the processes alone, and restarts through it are detached.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(STATE_FILE_NAME);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let file: ClusterStateFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if file.format != STATE_FILE_FORMAT {
            bail!(
                "{} has format {}, expected {STATE_FILE_FORMAT}",
                path.display(),
                file.format
            );
        }
        Ok(Self {
            servers: DatabaseServers::from_record(file.servers),
            app: AppTier::from_record(file.app),
            state_dir: state_dir.to_path_buf(),
            detached: file.detached,
            launcher: file.launcher,
        })
    }

    /// Rewrites `cluster.json` (after a restart changed a pid). Written to a temporary
    /// file and renamed, so a concurrent reader never sees half a file.
    pub fn save(&self) -> anyhow::Result<()> {
        let file = ClusterStateFile {
            format: STATE_FILE_FORMAT,
            detached: self.detached,
            launcher: self.launcher,
            servers: self.servers.record(),
            app: self.app.record(),
        };
        let path = self.state_dir.join(STATE_FILE_NAME);
        let temporary = self.state_dir.join(format!("{STATE_FILE_NAME}.tmp"));
        let text = serde_json::to_string_pretty(&file).context("serialising the cluster state")?;
        std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// The cluster's state directory (absolute).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Whether the processes outlive the process that started them.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// The foreground `parley-sim up` process, if it is still running.
    pub fn live_launcher(&self) -> Option<ProcessIdentity> {
        self.launcher
            .filter(|launcher| launcher.pid != std::process::id() && process_is_alive(*launcher))
    }

    /// Every component's status: servers first, then nodes and nginx.
    pub fn status(&self) -> Vec<ComponentStatus> {
        let mut statuses = self.servers.status();
        statuses.extend(self.app.status());
        statuses
    }

    /// True while a component's process or the foreground launcher still runs.
    /// (Leftover members of a dead component's group do not count: see `shutdown`.)
    pub fn any_alive(&self) -> bool {
        self.servers.components().any_alive() || self.app.components().any_alive() || self.live_launcher().is_some()
    }

    /// The database tier (servers and HAProxy).
    pub fn database_servers(&self) -> &DatabaseServers {
        &self.servers
    }

    /// Sends `signal` to the component called `name` (a server, HAProxy, a node or nginx).
    pub fn kill(&self, name: &str, signal: Signal) -> anyhow::Result<()> {
        if self.servers.component_names().iter().any(|known| known == name) {
            self.servers.kill(name, signal)
        } else {
            self.app.kill(name, signal)
        }
    }

    /// Cuts a node off from its peers, the database and nginx, or a database server off
    /// from the nodes, HAProxy and the other servers (see `network_partition`).
    pub fn partition(&self, name: &str) -> anyhow::Result<()> {
        if self.is_database_server(name) {
            self.servers.partition_server(name)
        } else {
            self.app.partition_node(name)
        }
    }

    /// Removes a partition; false if there was none. A healed database server that still
    /// takes writes while another server was promoted is fenced and rejoins as a replica.
    pub async fn heal(&self, name: &str) -> anyhow::Result<bool> {
        if self.is_database_server(name) {
            let had_partition = self.servers.heal_server(name).await?;
            // A fenced server runs as a new process.
            self.save()?;
            Ok(had_partition)
        } else {
            self.app.heal_node(name)
        }
    }

    /// Whether `name` is a MariaDB server (not HAProxy, not an app component).
    pub fn is_database_server(&self, name: &str) -> bool {
        self.servers.ports().of_server(name).is_some()
    }

    /// Restarts one component and waits until it is back in service, then records its
    /// new pid.
    pub async fn start_component(&self, name: &str) -> anyhow::Result<()> {
        if self.servers.component_names().iter().any(|known| known == name) {
            self.servers.start_component(name).await?;
        } else {
            self.app.start_component(name).await?;
        }
        self.save()
    }

    /// Stops everything: SIGTERM, then SIGKILL after a grace period. Processes another
    /// CLI invocation restarted (recorded only in `cluster.json`) are stopped too.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut identities: Vec<ProcessIdentity> = self
            .status_identities()
            .into_iter()
            .chain(self.identities_recorded_on_disk())
            .collect();
        identities.sort_by_key(|identity| identity.pid);
        identities.dedup();
        terminate_process_groups(&identities, SHUTDOWN_GRACE).await;
        self.app.heal_all_and_release_cgroups();
        self.servers.heal_all_and_release_cgroups();
        self.servers.disown_processes();
        self.app.disown_processes();
        tracing::info!(state_dir = %self.state_dir.display(), "cluster stopped");
        Ok(())
    }

    /// Asks a foreground `parley-sim up` to stop (it then stops its components itself).
    pub fn signal_launcher(&self, signal: Signal) -> anyhow::Result<bool> {
        match self.live_launcher() {
            Some(launcher) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(launcher.pid as i32), signal)
                    .with_context(|| format!("signalling parley-sim up (pid {})", launcher.pid))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn status_identities(&self) -> Vec<ProcessIdentity> {
        self.servers
            .components()
            .identities()
            .into_iter()
            .chain(self.app.components().identities())
            .collect()
    }

    fn identities_recorded_on_disk(&self) -> Vec<ProcessIdentity> {
        match Self::load(&self.state_dir) {
            Ok(on_disk) => {
                let identities = on_disk.status_identities();
                drop(on_disk);
                identities
            }
            Err(_) => Vec::new(),
        }
    }

    /// Takes a consistent backup of `source` (a replica) into `backup_dir` while the
    /// cluster serves (see `DatabaseServers::take_backup`).
    pub async fn take_backup(&self, source: &str, backup_dir: &Path) -> anyhow::Result<BackupManifest> {
        self.servers.take_backup(source, backup_dir, self.app.database()).await
    }

    /// Every address worth printing, as (label, address) pairs.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let database = self.app.database();
        let ports = self.servers.ports();
        let mut endpoints = vec![("public (nginx)".to_owned(), self.app.public_url())];
        for node in self.app.node_names() {
            let url = self.app.node_url(&node);
            endpoints.push((node, url));
        }
        endpoints.push(("master".into(), self.servers.master_url(database)));
        for replica in ["replica-1", "replica-2"] {
            endpoints.push((format!("{replica} (admin)"), self.servers.root_url(replica)));
        }
        endpoints.push(("haproxy write".into(), self.servers.write_via_haproxy_url(database)));
        endpoints.push(("haproxy read".into(), self.servers.read_url(database)));
        endpoints.push(("haproxy stats".into(), self.servers.haproxy_stats_url()));
        endpoints.push((
            "mariadb ports".into(),
            format!("{}, {}, {}", ports.master, ports.replica_1, ports.replica_2),
        ));
        endpoints.push(("state dir".into(), self.state_dir.display().to_string()));
        endpoints
    }
}

/// Creates the state dir with its marker; refuses a non-empty directory that is not ours.
pub fn prepare_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    if state_dir.exists() && !is_parley_sim_state_dir(state_dir) && !is_empty_dir(state_dir) {
        bail!(
            "{} exists and is not a parley-sim state dir (no {STATE_DIR_MARKER}); refusing to use it",
            state_dir.display()
        );
    }
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    std::fs::write(state_dir.join(STATE_DIR_MARKER), "created by parley-sim\n").context("writing the state dir marker")
}

/// Deletes a state dir, but only one parley-sim created (or an empty one).
pub fn remove_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    if !state_dir.exists() {
        return Ok(());
    }
    if !is_parley_sim_state_dir(state_dir) && !is_empty_dir(state_dir) {
        bail!(
            "{} is not a parley-sim state dir (no {STATE_DIR_MARKER}); not deleting it",
            state_dir.display()
        );
    }
    std::fs::remove_dir_all(state_dir).with_context(|| format!("removing {}", state_dir.display()))
}

fn is_parley_sim_state_dir(state_dir: &Path) -> bool {
    state_dir.join(STATE_DIR_MARKER).is_file()
}

fn is_empty_dir(directory: &Path) -> bool {
    std::fs::read_dir(directory).is_ok_and(|mut entries| entries.next().is_none())
}

/// Nodes of one cluster must share the secret; it stays in the state dir so restarted
/// nodes accept tokens issued before.
fn load_or_create_jwt_secret(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join(JWT_SECRET_FILE_NAME);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.trim().is_empty() {
            return Ok(existing.trim().to_owned());
        }
    }
    let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 48);
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(secret)
}
