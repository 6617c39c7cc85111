//! One `parley` node: finding the binary, its command line, its readiness.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::component::Component;
use crate::network_partition::ProcessCgroup;
use crate::process_control::LaunchCommand;
use crate::readiness::{http_get_status, poll_until_ready, Probe};

/// Nodes apply schema migrations before they report ready.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `parley` binary: the explicit path, else `PARLEY_BIN`, else next to the running
/// executable (or one level up: test binaries live in `target/debug/deps/`).
pub fn resolve_parley_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return ensure_is_file(path.to_path_buf(), "the given parley binary");
    }
    if let Some(path) = std::env::var_os("PARLEY_BIN") {
        return ensure_is_file(PathBuf::from(path), "PARLEY_BIN");
    }
    let current_executable = std::env::current_exe().context("locating the current executable")?;
    let beside_us = current_executable.parent().map(|directory| directory.join("parley"));
    let one_level_up = current_executable
        .parent()
        .and_then(Path::parent)
        .map(|directory| directory.join("parley"));
    [beside_us, one_level_up]
        .into_iter()
        .flatten()
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "parley binary not found next to {}; build it (cargo build -p parley-node) or set PARLEY_BIN",
                current_executable.display()
            )
        })
}

fn ensure_is_file(path: PathBuf, origin: &str) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!("{origin} {} is not a file", path.display());
    }
    Ok(path)
}

pub struct NodeLaunchSettings<'settings> {
    pub parley_binary: &'settings Path,
    pub node_name: &'settings str,
    pub node_index: usize,
    pub port: u16,
    pub master_url: &'settings str,
    pub read_url: &'settings str,
    pub jwt_secret: &'settings str,
    pub cluster_port: u16,
    pub cluster_seeds: &'settings [String],
    pub cluster_cookie: &'settings str,
    pub extra_args: &'settings [String],
    pub directory: &'settings Path,
}

pub fn node_launch_command(settings: &NodeLaunchSettings<'_>) -> LaunchCommand {
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{}", settings.port),
        "--node-name",
        settings.node_name,
        "--master-url",
        settings.master_url,
        "--read-url",
        &format!("haproxy-read={}", settings.read_url),
        "--jwt-secret",
        settings.jwt_secret,
        "--cluster-listen",
        &format!("127.0.0.1:{}", settings.cluster_port),
        "--cluster-cookie",
        settings.cluster_cookie,
        "--dev",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if !settings.cluster_seeds.is_empty() {
        args.push("--cluster-seed".to_owned());
        args.push(settings.cluster_seeds.join(","));
    }
    // Per-node values for flags the launcher does not know about (cluster ports, seeds).
    args.extend(settings.extra_args.iter().map(|argument| {
        argument
            .replace("{{node_name}}", settings.node_name)
            .replace("{{node_index}}", &settings.node_index.to_string())
            .replace("{{node_port}}", &settings.port.to_string())
    }));
    LaunchCommand {
        program: settings.parley_binary.to_path_buf(),
        args,
        env: node_environment_to_keep(),
        working_dir: Some(settings.directory.to_path_buf()),
        log_path: settings.directory.join("log"),
        cgroup: ProcessCgroup::for_process(settings.node_name, settings.port).map(|cgroup| cgroup.directory),
    }
}

/// The launcher's settings for the nodes (log level, tracing export, PARLEY_* options),
/// recorded so that a restart from another shell behaves like the first start.
fn node_environment_to_keep() -> Vec<(String, String)> {
    const LAUNCHER_OWN_VARIABLES: [&str; 3] = ["PARLEY_BIN", "PARLEY_SIM_DIR", "PARLEY_DEPLOY_DIR"];
    let mut kept: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| {
            let relevant =
                key == "RUST_LOG" || key == "RUST_BACKTRACE" || key.starts_with("OTEL_") || key.starts_with("PARLEY_");
            relevant && !LAUNCHER_OWN_VARIABLES.contains(&key.as_str())
        })
        .collect();
    kept.sort();
    kept
}

/// Whether the node at `node_url` answers its readiness check with 200 right now.
pub async fn is_ready(node_url: &str) -> bool {
    matches!(
        http_get_status(&format!("{node_url}/health/ready"), false).await,
        Ok(200)
    )
}

/// Waits until `component`'s process has exited (a stopping node), at most `timeout`.
pub async fn wait_until_exited(component: &Component, timeout: Duration) -> anyhow::Result<()> {
    poll_until_ready(&format!("{} to finish stopping", component.name), timeout, || async {
        Ok(if component.is_alive() {
            Probe::NotYet(anyhow::anyhow!("{} is still running and not ready", component.name))
        } else {
            Probe::Ready(())
        })
    })
    .await
}

/// Waits until the node answers its readiness check (`GET /health/ready` 200), failing
/// early if it died.
pub async fn wait_until_ready(component: &Component, node_url: &str) -> anyhow::Result<()> {
    let ready_url = format!("{node_url}/health/ready");
    poll_until_ready(
        &format!("{} to be ready", component.name),
        NODE_READY_TIMEOUT,
        || async {
            component.ensure_still_running()?;
            Ok(match http_get_status(&ready_url, false).await {
                Ok(200) => Probe::Ready(()),
                Ok(status) => Probe::NotYet(anyhow::anyhow!("{ready_url} answered {status}")),
                Err(error) => Probe::NotYet(error),
            })
        },
    )
    .await
}
