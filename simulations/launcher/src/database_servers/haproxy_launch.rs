//! HAProxy in front of the MariaDB servers: config, command, readiness.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use super::DatabaseServerPorts;
use crate::component::Component;
use crate::deploy_templates::{render_deploy_template, write_rendered};
use crate::ports::local_addr;
use crate::process_control::{find_program, LaunchCommand};
use crate::readiness::{poll_until_ready, tcp_port_accepts, Probe};

pub const HAPROXY_NAME: &str = "haproxy";
const HAPROXY_START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct HaproxyLayout {
    pub directory: PathBuf,
    pub config_path: PathBuf,
    pub stats_socket: PathBuf,
    pub log_path: PathBuf,
}

impl HaproxyLayout {
    pub fn new(state_dir: &Path) -> Self {
        let directory = state_dir.join(HAPROXY_NAME);
        Self {
            config_path: directory.join("haproxy.cfg"),
            stats_socket: directory.join("admin.sock"),
            log_path: directory.join("log"),
            directory,
        }
    }
}

pub fn write_haproxy_config(
    deploy_dir: &Path,
    layout: &HaproxyLayout,
    ports: &DatabaseServerPorts,
) -> anyhow::Result<()> {
    if layout.stats_socket.as_os_str().len() > 107 {
        bail!(
            "haproxy socket path {} is too long; use a shorter state dir",
            layout.stats_socket.display()
        );
    }
    let config = render_deploy_template(
        deploy_dir,
        "haproxy/haproxy.cfg",
        &[
            ("stats_socket", layout.stats_socket.display().to_string()),
            ("write_bind", local_addr(ports.haproxy_write)),
            ("read_bind", local_addr(ports.haproxy_read)),
            ("stats_bind", local_addr(ports.haproxy_stats)),
            ("master_addr", local_addr(ports.master)),
            ("replica_1_addr", local_addr(ports.replica_1)),
            ("replica_2_addr", local_addr(ports.replica_2)),
            (
                "writable_check",
                deploy_dir.join("haproxy/writable-check.sh").display().to_string(),
            ),
        ],
    )?;
    write_rendered(&layout.config_path, &config)
}

pub fn haproxy_launch_command(layout: &HaproxyLayout) -> anyhow::Result<LaunchCommand> {
    Ok(LaunchCommand {
        program: find_program("haproxy")?,
        // -db: stay in the foreground as one process, so its pid is the one we supervise.
        args: vec!["-db".into(), "-f".into(), layout.config_path.display().to_string()],
        env: Vec::new(),
        working_dir: Some(layout.directory.clone()),
        log_path: layout.log_path.clone(),
        cgroup: None,
    })
}

/// Ready when all three frontends accept connections.
pub async fn wait_until_listening(component: &Component, ports: &DatabaseServerPorts) -> anyhow::Result<()> {
    let addresses = [ports.haproxy_write, ports.haproxy_read, ports.haproxy_stats].map(local_addr);
    poll_until_ready("haproxy to listen", HAPROXY_START_TIMEOUT, || async {
        component.ensure_still_running()?;
        for address in &addresses {
            if !tcp_port_accepts(address).await {
                return Ok(Probe::NotYet(anyhow::anyhow!("{address} does not accept connections")));
            }
        }
        Ok(Probe::Ready(()))
    })
    .await
}
