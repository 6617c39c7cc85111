//! The app tier: N `parley` nodes for one database, and nginx in front of them.

mod edge_tls;
pub(crate) mod nginx_launch;
mod node_isolation;
mod node_launch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::component::{Component, ComponentRecord, ComponentSet, ComponentStatus};
use crate::database_servers::DatabaseServers;
use crate::deploy_templates::locate_deploy_dir;
use crate::ports::{local_addr, pick_free_ports, ports_for, PortChoice};
use crate::process_control::SpawnMode;
use crate::readiness::{http_get_status, poll_until_ready, Probe};
use nginx_launch::{NginxLayout, NGINX_NAME};
use node_launch::NodeLaunchSettings;

pub use edge_tls::EdgeTlsFiles;
pub use node_launch::resolve_parley_binary;

/// What [`AppTier::start`] starts: N parley nodes on one database, and nginx in front.
pub struct AppTierSpec {
    /// Where logs, configs and the nodes' state go (created if missing).
    pub state_dir: PathBuf,
    /// The MariaDB database (schema) name the nodes use; created on the master if missing.
    pub database: String,
    /// How many parley nodes (at least 1).
    pub nodes: usize,
    /// nginx's port; None picks a free one.
    pub public_port: Option<u16>,
    /// `Fixed { base }`: node-1 on base, node-2 on base + 1, …
    pub node_ports: PortChoice,
    /// None: `PARLEY_BIN`, else next to the current executable.
    pub parley_bin: Option<PathBuf>,
    /// The JWT secret every node shares, so a token from one node works on all.
    pub jwt_secret: String,
    /// The cluster cookie every node gets.
    pub cluster_cookie: String,
    /// Appended to every node's command line; `{{node_name}}`, `{{node_index}}` and
    /// `{{node_port}}` are replaced per node.
    pub node_extra_args: Vec<String>,
    /// Keep the processes running after this process exits (`parley-sim up --detach`).
    pub detach: bool,
    /// HTTPS and WSS on nginx's port with these files; None: plain HTTP (the default).
    pub edge_tls: Option<EdgeTlsFiles>,
}

/// What `cluster.json` keeps of the app tier.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppTierRecord {
    /// The tier's state directory (absolute).
    pub state_dir: PathBuf,
    /// The database (schema) name the nodes use.
    pub database: String,
    /// nginx's port on 127.0.0.1: the cluster's public address.
    pub public_port: u16,
    /// Each node's HTTP port on 127.0.0.1, in node order.
    pub node_ports: Vec<u16>,
    /// Each node's cluster (ractor_cluster) port, in node order.
    #[serde(default)]
    pub cluster_ports: Vec<u16>,
    /// The JWT secret the nodes share (so `parley-sim` can mint test tokens later).
    pub jwt_secret: String,
    /// The nodes and nginx, enough to signal and restart them.
    pub components: Vec<ComponentRecord>,
    /// The files nginx serves HTTPS with; None (and absent in older files): plain HTTP.
    #[serde(default)]
    pub edge_tls: Option<EdgeTlsFiles>,
}

/// N parley nodes + nginx for one database. Dropping it SIGKILLs what it started
/// (unless started detached or loaded from a state file).
pub struct AppTier {
    state_dir: PathBuf,
    database: String,
    public_port: u16,
    node_ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    jwt_secret: String,
    components: ComponentSet,
    spawn_mode: SpawnMode,
    owns_processes: bool,
    edge_tls: Option<EdgeTlsFiles>,
}

/// The name of the node at 1-based `index` (`node-1`), as its component and
/// `PARLEY_NODE_NAME` carry it.
pub fn node_name(index: usize) -> String {
    format!("node-{index}")
}

impl AppTier {
    /// Creates the database if needed, starts the nodes, waits until each is ready, then
    /// puts nginx in front of them.
    pub async fn start(servers: &DatabaseServers, spec: AppTierSpec) -> anyhow::Result<Self> {
        if spec.nodes == 0 {
            bail!("an app tier needs at least one node");
        }
        let deploy_dir = locate_deploy_dir()?;
        let parley_binary = resolve_parley_binary(spec.parley_bin.as_deref())?;
        std::fs::create_dir_all(&spec.state_dir)
            .with_context(|| format!("creating state dir {}", spec.state_dir.display()))?;
        let state_dir = spec
            .state_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", spec.state_dir.display()))?;
        let (public_port, node_ports) = choose_ports(spec.public_port, spec.node_ports, spec.nodes)?;
        let cluster_ports = choose_cluster_ports(spec.node_ports, spec.nodes, &node_ports, public_port)?;
        let mut app = Self {
            state_dir,
            database: spec.database.clone(),
            public_port,
            node_ports,
            cluster_ports,
            jwt_secret: spec.jwt_secret.clone(),
            components: ComponentSet::default(),
            spawn_mode: if spec.detach {
                SpawnMode::Detached
            } else {
                SpawnMode::TiedToThisProcess
            },
            // Owned from the first spawn: if start fails half way, Drop cleans up.
            owns_processes: true,
            edge_tls: spec.edge_tls.clone(),
        };

        // Idempotent; also waits until both replicas have the database, so a node's
        // first read through HAProxy cannot miss it.
        servers.create_database(&spec.database).await?;
        let master_url = servers.master_url(&spec.database);
        let read_url = servers.read_url(&spec.database);
        for (index, &port) in app.node_ports.iter().enumerate() {
            let name = node_name(index + 1);
            let directory = app.state_dir.join(&name);
            std::fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
            let command = node_launch::node_launch_command(&NodeLaunchSettings {
                parley_binary: &parley_binary,
                node_name: &name,
                node_index: index + 1,
                port,
                master_url: &master_url,
                read_url: &read_url,
                jwt_secret: &spec.jwt_secret,
                cluster_port: app.cluster_ports[index],
                cluster_seeds: &app
                    .cluster_ports
                    .iter()
                    .filter(|&&other| other != app.cluster_ports[index])
                    .map(|&other| local_addr(other))
                    .collect::<Vec<_>>(),
                cluster_cookie: &spec.cluster_cookie,
                extra_args: &spec.node_extra_args,
                directory: &directory,
            });
            app.components
                .push(Component::spawn(&name, local_addr(port), command, app.spawn_mode)?);
        }
        let node_waits = app.node_names().into_iter().map(|name| {
            let app = &app;
            async move {
                let component = app.components.get(&name)?;
                node_launch::wait_until_ready(component, &app.node_url(&name)).await
            }
        });
        futures::future::try_join_all(node_waits).await?;

        let layout = NginxLayout::new(&app.state_dir);
        nginx_launch::write_nginx_config(
            &deploy_dir,
            &layout,
            app.public_port,
            &app.node_ports,
            app.edge_tls.as_ref(),
        )?;
        let command = nginx_launch::nginx_launch_command(&layout)?;
        app.components.push(Component::spawn(
            NGINX_NAME,
            local_addr(app.public_port),
            command,
            app.spawn_mode,
        )?);
        nginx_launch::wait_until_listening(app.components.get(NGINX_NAME)?, app.public_port).await?;
        app.wait_until_ready_through_nginx().await?;
        app.owns_processes = !spec.detach;
        tracing::info!(public_url = %app.public_url(), nodes = spec.nodes, "app tier ready");
        Ok(app)
    }

    async fn wait_until_ready_through_nginx(&self) -> anyhow::Result<()> {
        let ready_url = format!("{}/health/ready", self.public_url());
        poll_until_ready("nodes to answer through nginx", Duration::from_secs(15), || async {
            self.components.get(NGINX_NAME)?.ensure_still_running()?;
            Ok(match http_get_status(&ready_url, self.edge_tls.is_some()).await {
                Ok(200) => Probe::Ready(()),
                Ok(status) => Probe::NotYet(anyhow::anyhow!("{ready_url} answered {status}")),
                Err(error) => Probe::NotYet(error),
            })
        })
        .await
    }

    /// `http://127.0.0.1:PORT` through nginx, or `https://…` with edge TLS.
    pub fn public_url(&self) -> String {
        let scheme = if self.edge_tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.public_port)
    }

    /// nginx's port on 127.0.0.1.
    pub fn public_port(&self) -> u16 {
        self.public_port
    }

    /// The files nginx serves HTTPS and WSS with, if any.
    pub fn edge_tls(&self) -> Option<&EdgeTlsFiles> {
        self.edge_tls.as_ref()
    }

    /// `http://127.0.0.1:PORT` of one node, bypassing nginx. Panics on an unknown name.
    pub fn node_url(&self, name: &str) -> String {
        let port = self
            .node_port(name)
            .unwrap_or_else(|| panic!("node_url: unknown node {name:?}"));
        format!("http://127.0.0.1:{port}")
    }

    fn node_port(&self, name: &str) -> Option<u16> {
        let index: usize = name.strip_prefix("node-")?.parse().ok()?;
        self.node_ports.get(index.checked_sub(1)?).copied()
    }

    /// Every node's name, in order (`node-1` …).
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.node_ports.len()).map(node_name).collect()
    }

    /// The database (schema) name the nodes use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The JWT secret the nodes share.
    pub fn jwt_secret(&self) -> &str {
        &self.jwt_secret
    }

    /// The tier's state directory (absolute).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Pid, address and liveness of every node and of nginx.
    pub fn status(&self) -> Vec<ComponentStatus> {
        self.components.statuses()
    }

    /// The names of every node and of nginx.
    pub fn component_names(&self) -> Vec<String> {
        self.components.names().map(str::to_owned).collect()
    }

    /// Signals the component's whole process group (nginx: master and workers).
    pub fn kill(&self, name: &str, signal: Signal) -> anyhow::Result<()> {
        self.components.get(name)?.signal(signal)
    }

    /// Starts a stopped node or nginx again and waits until it serves: a node's
    /// `/health/ready` answers 200, nginx's port accepts.
    pub async fn start_component(&self, name: &str) -> anyhow::Result<()> {
        let component = self.components.get(name)?;
        if name != NGINX_NAME && component.is_alive() && !node_launch::is_ready(&self.node_url(name)).await {
            // Still draining after a SIGTERM (`kill node-1 --signal TERM` then `start
            // node-1` at once): it would hold its ports a moment longer, so let it finish
            // stopping and start a new one, instead of calling the old one running.
            node_launch::wait_until_exited(component, crate::component::SHUTDOWN_GRACE * 2).await?;
        }
        component.respawn_unless_running(self.spawn_mode).await?;
        if name == NGINX_NAME {
            nginx_launch::wait_until_listening(component, self.public_port).await
        } else {
            node_launch::wait_until_ready(component, &self.node_url(name)).await
        }
    }

    /// SIGTERM everything, SIGKILL what is still there after a grace period.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.components.terminate_all(crate::component::SHUTDOWN_GRACE).await;
        self.owns_processes = false;
        self.heal_all_and_release_cgroups();
        Ok(())
    }

    /// What `cluster.json` keeps of the tier.
    pub fn record(&self) -> AppTierRecord {
        AppTierRecord {
            state_dir: self.state_dir.clone(),
            database: self.database.clone(),
            public_port: self.public_port,
            node_ports: self.node_ports.clone(),
            cluster_ports: self.cluster_ports.clone(),
            jwt_secret: self.jwt_secret.clone(),
            components: self.components.records(),
            edge_tls: self.edge_tls.clone(),
        }
    }

    /// Rebuilds the handle of an app tier another process started; it owns nothing.
    pub fn from_record(record: AppTierRecord) -> Self {
        Self {
            state_dir: record.state_dir,
            database: record.database,
            public_port: record.public_port,
            node_ports: record.node_ports,
            cluster_ports: record.cluster_ports,
            jwt_secret: record.jwt_secret,
            components: ComponentSet::from_records(record.components),
            spawn_mode: SpawnMode::Detached,
            owns_processes: false,
            edge_tls: record.edge_tls,
        }
    }

    pub(crate) fn components(&self) -> &ComponentSet {
        &self.components
    }

    pub(crate) fn disown_processes(&mut self) {
        self.owns_processes = false;
    }
}

impl Drop for AppTier {
    fn drop(&mut self) {
        if self.owns_processes {
            self.components.kill_all_blocking();
            self.heal_all_and_release_cgroups();
        }
    }
}

/// Cluster ports: 100 above the node ports in a fixed layout (10101, 10102, ...), free
/// ones otherwise.
fn choose_cluster_ports(
    node_choice: PortChoice,
    nodes: usize,
    node_ports: &[u16],
    public_port: u16,
) -> anyhow::Result<Vec<u16>> {
    let ports = match node_choice {
        PortChoice::Fixed { base } => ports_for(PortChoice::Fixed { base: base + 100 }, nodes)?,
        PortChoice::Free => loop {
            let picked = pick_free_ports(nodes)?;
            if picked
                .iter()
                .all(|port| !node_ports.contains(port) && *port != public_port)
            {
                break picked;
            }
        },
    };
    Ok(ports)
}

fn choose_ports(public_port: Option<u16>, node_ports: PortChoice, nodes: usize) -> anyhow::Result<(u16, Vec<u16>)> {
    match (public_port, node_ports) {
        (None, PortChoice::Free) => {
            let mut picked = pick_free_ports(nodes + 1)?;
            let public = picked.remove(0);
            Ok((public, picked))
        }
        (public, node_choice) => {
            let node_ports = ports_for(node_choice, nodes)?;
            let public = match public {
                Some(port) => {
                    crate::ports::ensure_ports_are_free(&[port])?;
                    port
                }
                None => pick_free_ports(1)?[0],
            };
            if node_ports.contains(&public) {
                bail!("public port {public} collides with a node port {node_ports:?}");
            }
            Ok((public, node_ports))
        }
    }
}
