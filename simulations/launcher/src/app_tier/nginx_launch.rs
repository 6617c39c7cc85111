//! nginx in front of the nodes: config, command, readiness.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::EdgeTlsFiles;
use crate::component::Component;
use crate::deploy_templates::{render_deploy_template, write_rendered};
use crate::ports::local_addr;
use crate::process_control::{find_program, LaunchCommand};
use crate::readiness::wait_until_component_listens;

pub const NGINX_NAME: &str = "nginx";
const NGINX_START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct NginxLayout {
    pub directory: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl NginxLayout {
    pub fn new(state_dir: &Path) -> Self {
        let directory = state_dir.join(NGINX_NAME);
        Self {
            config_path: directory.join("nginx.conf"),
            log_path: directory.join("log"),
            directory,
        }
    }
}

/// Plain requests: a node that fails one is skipped for 2 s (see deploy/nginx/nginx.conf).
pub const HTTP_FAILURE_MARKING: &str = "max_fails=0";
/// Websocket upgrades: never marked failed (see deploy/nginx/nginx.conf).
pub const WEBSOCKET_FAILURE_MARKING: &str = "max_fails=0";

/// `# ` comments a template line out, nothing leaves it in (see deploy/nginx/nginx.conf).
const LINE_OFF: &str = "# ";
const LINE_ON: &str = "";

pub fn write_nginx_config(
    deploy_dir: &Path,
    layout: &NginxLayout,
    public_port: u16,
    node_ports: &[u16],
    edge_tls: Option<&EdgeTlsFiles>,
) -> anyhow::Result<()> {
    // The same servers in both upstreams, with the failure marking each needs (the
    // template says why they differ; compose's nginx entrypoint renders the same).
    let upstream_servers = |failure_marking: &str| {
        node_ports
            .iter()
            .map(|port| format!("server 127.0.0.1:{port} {failure_marking};"))
            .collect::<Vec<_>>()
            .join("\n        ")
    };
    // As root the workers would otherwise switch to nobody, who cannot write the temp
    // dirs in our state dir; as anyone else the directive is only a warning.
    let user_directive = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    let path_value = |path: PathBuf| path.display().to_string();
    // Without TLS the certificate lines are commented out; their values only have to be
    // something nginx would not mistake for a path in use.
    let (when_edge_tls, when_plain_http, certificate, key) = match edge_tls {
        Some(files) => (
            LINE_ON,
            LINE_OFF,
            path_value(files.certificate.clone()),
            path_value(files.key.clone()),
        ),
        None => (LINE_OFF, LINE_ON, "none".to_owned(), "none".to_owned()),
    };
    let config = render_deploy_template(
        deploy_dir,
        "nginx/nginx.conf",
        &[
            ("user_directive", user_directive.into()),
            ("pid_file", path_value(layout.directory.join("nginx.pid"))),
            ("error_log", path_value(layout.log_path.clone())),
            ("access_log", path_value(layout.directory.join("access.log"))),
            ("temp_dir", path_value(layout.directory.join("temp"))),
            ("http_upstream_servers", upstream_servers(HTTP_FAILURE_MARKING)),
            (
                "websocket_upstream_servers",
                upstream_servers(WEBSOCKET_FAILURE_MARKING),
            ),
            ("listen", local_addr(public_port)),
            ("when_edge_tls", when_edge_tls.into()),
            ("when_plain_http", when_plain_http.into()),
            ("edge_tls_certificate", certificate),
            ("edge_tls_key", key),
        ],
    )?;
    // nginx creates the temp directories themselves but not their parent.
    let temp_dir = layout.directory.join("temp");
    std::fs::create_dir_all(&temp_dir).with_context(|| format!("creating {}", temp_dir.display()))?;
    write_rendered(&layout.config_path, &config)
}

pub fn nginx_launch_command(layout: &NginxLayout) -> anyhow::Result<LaunchCommand> {
    let prefix = format!("{}/", layout.directory.display());
    Ok(LaunchCommand {
        program: find_program("nginx")?,
        args: vec![
            "-p".into(),
            prefix,
            "-c".into(),
            layout.config_path.display().to_string(),
            // Errors before the config is read would otherwise go to the compiled-in path.
            "-e".into(),
            layout.log_path.display().to_string(),
        ],
        env: Vec::new(),
        working_dir: Some(layout.directory.clone()),
        log_path: layout.log_path.clone(),
        cgroup: None,
    })
}

pub async fn wait_until_listening(component: &Component, public_port: u16) -> anyhow::Result<()> {
    wait_until_component_listens(
        "nginx to listen",
        component,
        &local_addr(public_port),
        NGINX_START_TIMEOUT,
    )
    .await
}
