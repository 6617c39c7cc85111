//! The cluster an experiment runs on: the one already running in the state dir, or a
//! fresh one started for the run (and stopped after it).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use protocol::cluster::ClusterView;

use parley_client::http::ParleyHttp;
use parley_launcher::local_cluster::{remove_state_dir, STATE_FILE_NAME};
use parley_launcher::readiness::{poll_until_ready, Probe};
use parley_launcher::{ClusterSpec, LocalCluster};

/// Where the experiment's cluster came from, which decides who stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterOrigin {
    /// Found running in the state dir: left running afterwards.
    AlreadyRunning,
    /// Started for this run: stopped afterwards.
    StartedForThisRun,
}

/// Uses the cluster running in `state_dir` if there is one (every component must be
/// alive, or the experiment would measure an already broken system), else starts
/// `spec_for_new_cluster()` there.
pub async fn attach_or_start_cluster(
    state_dir: &Path,
    spec_for_new_cluster: impl FnOnce() -> ClusterSpec,
) -> anyhow::Result<(LocalCluster, ClusterOrigin)> {
    if state_dir.join(STATE_FILE_NAME).exists() {
        let existing = LocalCluster::load(state_dir)?;
        if existing.any_alive() {
            let dead: Vec<String> = existing
                .status()
                .into_iter()
                .filter(|status| !status.alive)
                .map(|status| status.name)
                .collect();
            if !dead.is_empty() {
                bail!(
                    "the cluster in {} is not whole: {} not running (bring it back with parley-sim start NAME)",
                    state_dir.display(),
                    dead.join(", ")
                );
            }
            tracing::info!(state_dir = %state_dir.display(), "using the running cluster");
            return Ok((existing, ClusterOrigin::AlreadyRunning));
        }
        // Leftovers of a dead cluster (nginx workers) would still hold its ports.
        existing.shutdown().await?;
    }
    remove_state_dir(state_dir)?;
    let cluster = LocalCluster::start(spec_for_new_cluster())
        .await
        .context("starting a cluster for the experiment")?;
    Ok((cluster, ClusterOrigin::StartedForThisRun))
}

/// Waits until every node sees every node alive: cross-node delivery needs the mesh, and
/// a run that starts before it formed would measure the start-up, not the fault.
pub async fn wait_until_mesh_formed(cluster: &LocalCluster, timeout: Duration) -> anyhow::Result<()> {
    let node_names = cluster.app.node_names();
    for node_name in &node_names {
        let node = ParleyHttp::new(cluster.app.node_url(node_name));
        poll_until_ready(
            &format!("{node_name} to see all {} nodes", node_names.len()),
            timeout,
            || async {
                let view = match node.request(reqwest::Method::GET, "/cluster", None, None).await {
                    Ok(view) => view,
                    Err(error) => return Ok(Probe::NotYet(error.into())),
                };
                let alive = serde_json::from_value::<ClusterView>(view.body.clone()).map_or(0, |cluster_view| {
                    cluster_view.members.iter().filter(|member| member.alive).count()
                });
                Ok(if alive >= node_names.len() {
                    Probe::Ready(())
                } else {
                    Probe::NotYet(anyhow::anyhow!("{alive} alive in {}", view.body))
                })
            },
        )
        .await?;
    }
    Ok(())
}

/// Starts again every component the experiment left dead (an already running cluster
/// should be whole again for the next run). Returns the names it started.
pub async fn restart_dead_components(cluster: &LocalCluster) -> anyhow::Result<Vec<String>> {
    let dead: Vec<String> = cluster
        .status()
        .into_iter()
        .filter(|status| !status.alive)
        .map(|status| status.name)
        .collect();
    for name in &dead {
        cluster
            .start_component(name)
            .await
            .with_context(|| format!("starting {name} again after the experiment"))?;
    }
    Ok(dead)
}
