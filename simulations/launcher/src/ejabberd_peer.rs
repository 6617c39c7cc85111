//! ejabberd beside Parley, for `parley-sim bench peer`: two clustered ejabberd nodes
//! (Debian's package, Erlang distribution on loopback) whose archive, offline storage
//! and accounts live in a database of their own on the Parley cluster's MariaDB master,
//! and nginx in front of them rendered from Parley's own `deploy/nginx/nginx.conf`, so
//! both systems are reached through the same proxy configuration.
//!
//! Each node is `erl … -s ejabberd` started directly (not through `ejabberdctl`, which
//! switches to the `ejabberd` system user and its fixed directories), in its own process
//! group, with its config, Mnesia spool and log under `<state_dir>/ejabberd/`. The second
//! node joins the first with `ejabberd_admin:join_cluster`, called over the Erlang
//! distribution from a short-lived control node with the same cookie.
//!
//! Dropping an [`EjabberdPeer`] SIGKILLs what it started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;

use crate::app_tier::nginx_launch::{self, NginxLayout, NGINX_NAME};
use crate::component::{Component, ComponentSet};
use crate::database_servers::DatabaseServers;
use crate::deploy_templates::{locate_deploy_dir, render_deploy_template, write_rendered};
use crate::mariadb_admin;
use crate::ports::{local_addr, pick_free_ports};
use crate::process_control::{find_program, LaunchCommand, SpawnMode};
use crate::readiness::wait_until_component_listens;

/// The XMPP domain the benchmark's accounts live on.
pub const EJABBERD_DOMAIN: &str = "bench.local";
/// The database ejabberd writes to: under `parley%`, so the app user's grant covers it.
pub const EJABBERD_DATABASE: &str = "parley_peer_ejabberd";
/// The schema Debian's package ships for `new_sql_schema: true`.
const EJABBERD_SCHEMA: &str = "/usr/share/ejabberd/sql/mysql.new.sql";
/// Where Debian installs ejabberd's Erlang applications.
const EJABBERD_LIBRARIES: &str = "/usr/lib/x86_64-linux-gnu";
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
const JOIN_TIMEOUT: Duration = Duration::from_secs(150);
const NODES: usize = 2;

/// Two clustered ejabberd nodes and nginx in front of them.
pub struct EjabberdPeer {
    components: ComponentSet,
    node_http_ports: Vec<u16>,
    public_port: u16,
    sql_url: String,
}

impl EjabberdPeer {
    /// Creates (afresh) ejabberd's database on `servers`' master, starts both nodes,
    /// joins them into one cluster and puts nginx in front.
    pub async fn start(servers: &DatabaseServers, state_dir: &Path) -> anyhow::Result<EjabberdPeer> {
        let erl = find_program("erl").context("ejabberd needs Erlang: run deploy/install.sh")?;
        if !Path::new(EJABBERD_SCHEMA).is_file() {
            bail!("{EJABBERD_SCHEMA} is missing: ejabberd is not installed (run deploy/install.sh)");
        }
        let directory = state_dir.join("ejabberd");
        if directory.exists() {
            std::fs::remove_dir_all(&directory).with_context(|| format!("clearing {}", directory.display()))?;
        }
        std::fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
        let sql_url = prepare_database(servers).await?;

        let ports = pick_free_ports(NODES + 1)?;
        let (node_http_ports, public_port) = (ports[..NODES].to_vec(), ports[NODES]);
        // One cookie per run: nothing else on this machine can join these nodes.
        let cookie = format!("parley-peer-{}", std::process::id());
        let deploy_dir = locate_deploy_dir()?;
        let (sql_user, sql_password) = servers.app_credentials();
        let mut components = ComponentSet::default();
        let node_names: Vec<String> = (1..=NODES)
            .map(|number| format!("parley-peer-ej{number}-{}@localhost", std::process::id()))
            .collect();
        for (index, http_port) in node_http_ports.iter().enumerate() {
            let node_directory = directory.join(format!("ejabberd-{}", index + 1));
            let config_path = node_directory.join("ejabberd.yml");
            let config = render_deploy_template(
                &deploy_dir,
                "ejabberd/ejabberd.yml",
                &[
                    ("domain", EJABBERD_DOMAIN.into()),
                    ("sql_port", servers.ports().master.to_string()),
                    ("sql_database", EJABBERD_DATABASE.into()),
                    ("sql_user", sql_user.clone()),
                    ("sql_password", sql_password.clone()),
                    ("http_port", http_port.to_string()),
                ],
            )?;
            write_rendered(&config_path, &config)?;
            let command = node_command(&erl, &node_directory, &config_path, &node_names[index], &cookie);
            let name = format!("ejabberd-{}", index + 1);
            components.push(Component::spawn(
                &name,
                local_addr(*http_port),
                command,
                SpawnMode::TiedToThisProcess,
            )?);
        }
        let peer = EjabberdPeer {
            components,
            node_http_ports,
            public_port,
            sql_url,
        };
        for index in 0..NODES {
            peer.wait_until_listening(index).await?;
        }
        join_cluster(&erl, &directory, &node_names[1], &node_names[0], &cookie).await?;
        // Joining restarts ejabberd on the joining node: its listener goes and comes back.
        peer.wait_until_listening(1).await?;

        let layout = NginxLayout::new(&directory);
        nginx_launch::write_nginx_config(&deploy_dir, &layout, public_port, &peer.node_http_ports, None)?;
        let command = nginx_launch::nginx_launch_command(&layout)?;
        let mut peer = peer;
        peer.components.push(Component::spawn(
            NGINX_NAME,
            local_addr(public_port),
            command,
            SpawnMode::TiedToThisProcess,
        )?);
        nginx_launch::wait_until_listening(peer.components.get(NGINX_NAME)?, public_port).await?;
        Ok(peer)
    }

    async fn wait_until_listening(&self, index: usize) -> anyhow::Result<()> {
        let component = self.components.get(&format!("ejabberd-{}", index + 1))?;
        let address = local_addr(self.node_http_ports[index]);
        wait_until_component_listens("an ejabberd node to listen", component, &address, NODE_START_TIMEOUT).await
    }

    /// Creates accounts `(username, password)` on [`EJABBERD_DOMAIN`] (plain passwords, as
    /// the config stores them), straight in ejabberd's `users` table.
    pub async fn register_users(&self, accounts: &[(String, String)]) -> anyhow::Result<()> {
        let mut connection = mariadb_admin::connect_url(&self.sql_url).await?;
        for chunk in accounts.chunks(500) {
            let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let values: Vec<mysql_async::Value> = chunk
                .iter()
                .flat_map(|(username, password)| {
                    [username.as_str(), EJABBERD_DOMAIN, password.as_str()].map(mysql_async::Value::from)
                })
                .collect();
            connection
                .exec_drop(
                    format!("INSERT INTO users (username, server_host, password) VALUES {rows}"),
                    values,
                )
                .await
                .context("registering ejabberd accounts")?;
        }
        mariadb_admin::close(connection).await;
        Ok(())
    }

    /// The bodies of the messages in `username`'s archive (both directions).
    pub async fn archived_bodies(&self, username: &str) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut connection = mariadb_admin::connect_url(&self.sql_url).await?;
        let bodies: anyhow::Result<Vec<Option<String>>> = connection
            .exec("SELECT txt FROM archive WHERE username = ?", (username,))
            .await
            .with_context(|| format!("reading {username}'s archive"));
        mariadb_admin::close(connection).await;
        Ok(bodies?.into_iter().flatten().collect())
    }

    /// `ws://127.0.0.1:PORT/messenger/ws` through nginx.
    pub fn public_websocket_url(&self) -> String {
        format!("ws://127.0.0.1:{}/messenger/ws", self.public_port)
    }

    /// `ws://127.0.0.1:PORT/messenger/ws` of node `index` (0 or 1), without nginx.
    pub fn node_websocket_url(&self, index: usize) -> String {
        format!("ws://127.0.0.1:{}/messenger/ws", self.node_http_ports[index])
    }

    /// The pid of node `index`'s Erlang VM (its resident memory is the node's).
    pub fn node_pid(&self, index: usize) -> anyhow::Result<u32> {
        let component = self.components.get(&format!("ejabberd-{}", index + 1))?;
        Ok(component.process_identity().pid)
    }

    /// Sends `signal` to node `index`'s process group.
    pub fn signal_node(&self, index: usize, signal: Signal) -> anyhow::Result<()> {
        self.components.get(&format!("ejabberd-{}", index + 1))?.signal(signal)
    }

    /// Stops everything (SIGTERM, then SIGKILL after a grace period).
    pub async fn shutdown(self) {
        self.components.terminate_all(Duration::from_secs(5)).await;
    }
}

impl Drop for EjabberdPeer {
    fn drop(&mut self) {
        if self.components.any_alive() {
            self.components.kill_all_blocking();
        }
    }
}

fn node_command(erl: &Path, directory: &Path, config_path: &Path, node_name: &str, cookie: &str) -> LaunchCommand {
    let path_value = |path: PathBuf| path.display().to_string();
    LaunchCommand {
        program: erl.to_owned(),
        args: vec![
            "-sname".into(),
            node_name.into(),
            "-setcookie".into(),
            cookie.into(),
            "-noinput".into(),
            // ejabberdctl's defaults for a server: kernel polling, room for processes.
            "+K".into(),
            "true".into(),
            "+P".into(),
            "250000".into(),
            "-mnesia".into(),
            "dir".into(),
            format!("\"{}\"", directory.join("spool").display()),
            "-s".into(),
            "ejabberd".into(),
        ],
        env: vec![
            ("EJABBERD_CONFIG_PATH".into(), path_value(config_path.to_owned())),
            ("EJABBERD_LOG_PATH".into(), path_value(directory.join("ejabberd.log"))),
            ("ERL_LIBS".into(), EJABBERD_LIBRARIES.into()),
            ("ERL_MAX_PORTS".into(), "65536".into()),
            ("ERL_CRASH_DUMP_BYTES".into(), "0".into()),
        ],
        working_dir: Some(directory.to_owned()),
        log_path: directory.join("log"),
        cgroup: None,
    }
}

/// Drops and recreates [`EJABBERD_DATABASE`] with ejabberd's schema; returns the app
/// user's URL of it on the master.
async fn prepare_database(servers: &DatabaseServers) -> anyhow::Result<String> {
    let mut root = mariadb_admin::connect_url(&servers.root_url("master")).await?;
    let dropped = root
        .query_drop(format!("DROP DATABASE IF EXISTS `{EJABBERD_DATABASE}`"))
        .await
        .context("dropping the previous run's ejabberd database");
    mariadb_admin::close(root).await;
    dropped?;
    servers.create_database(EJABBERD_DATABASE).await?;
    let schema = std::fs::read_to_string(EJABBERD_SCHEMA).with_context(|| format!("reading {EJABBERD_SCHEMA}"))?;
    let sql_url = servers.master_url(EJABBERD_DATABASE);
    let mut connection = mariadb_admin::connect_url(&sql_url).await?;
    let loaded = mariadb_admin::execute_sql_script(&mut connection, &schema)
        .await
        .context("loading ejabberd's schema");
    mariadb_admin::close(connection).await;
    loaded?;
    Ok(sql_url)
}

/// `ejabberd_admin:join_cluster` on `joining`, towards `existing`, from a control node.
async fn join_cluster(erl: &Path, directory: &Path, joining: &str, existing: &str, cookie: &str) -> anyhow::Result<()> {
    let control_node = format!("parley-peer-ctl-{}@localhost", std::process::id());
    // A node listens before ejabberd has finished starting, and joining a node whose
    // start is still under way fails with `already_started`: wait for the application
    // on both (up to 60 s, polled every 200 ms), then join.
    let expression = format!(
        "Started = fun Wait(Node, 0) -> {{not_started, Node}}; \
                       Wait(Node, Left) -> \
                         case rpc:call(Node, application, which_applications, []) of \
                           Apps when is_list(Apps) -> \
                             case lists:keymember(ejabberd, 1, Apps) of \
                               true -> ok; \
                               false -> timer:sleep(200), Wait(Node, Left - 1) \
                             end; \
                           _ -> timer:sleep(200), Wait(Node, Left - 1) \
                         end \
                   end, \
         R = case {{Started('{existing}', 300), Started('{joining}', 300)}} of \
               {{ok, ok}} -> rpc:call('{joining}', ejabberd_admin, join_cluster, [<<\"{existing}\">>]); \
               NotStarted -> NotStarted \
             end, \
         io:format(\"~p~n\", [R]), init:stop()."
    );
    let mut command = tokio::process::Command::new(erl);
    command
        .args([
            "-sname",
            &control_node,
            "-setcookie",
            cookie,
            "-noinput",
            "-eval",
            &expression,
        ])
        .current_dir(directory)
        .kill_on_drop(true);
    let output = tokio::time::timeout(JOIN_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{joining} did not join {existing} within {JOIN_TIMEOUT:?}"))?
        .context("running the control node")?;
    let printed = String::from_utf8_lossy(&output.stdout);
    if printed.trim() != "ok" {
        bail!(
            "{joining} could not join {existing}: {} {}",
            printed.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
