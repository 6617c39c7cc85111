//! `peer` on Parley: the chat load is the failover experiment's
//! ([`RunningChatLoad`]: Parley's own client, acks after the commit, resume by replay),
//! with each pair's first connections split over node-1 and node-2 and reconnects through
//! nginx; the memory figure is `memory`'s, with the same number of connections as
//! ejabberd gets. node-2, killed in the last phase, is started again before returning.

use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::phase_cost::CostMeter;
use super::{side_figures, PeerSettings, PeerSideFigures, PhaseOutcome};
use crate::bench::idle_connections;
use crate::bench::process_figures::component_pid;
use crate::load::chat_load::{ChatLoadSettings, RunningChatLoad};
use crate::load::load_users::{create_chat_pairs, fresh_run_tag};
use parley_client::http::ParleyHttp;
use parley_launcher::LocalCluster;

/// The node the kill phase kills (the second, as on ejabberd's side).
const KILLED_NODE: &str = "node-2";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Long enough for a max-rate backlog to drain.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn measure(cluster: &LocalCluster, settings: &PeerSettings) -> anyhow::Result<PeerSideFigures> {
    let fixed = run_phase(cluster, settings, settings.fixed_rate_per_s, false)
        .await
        .context("parley, fixed rate")?;
    let max = run_phase(cluster, settings, settings.max_offered_per_s, false)
        .await
        .context("parley, max rate")?;
    let memory = idle_connections::measure(cluster, settings.idle_connections)
        .await
        .context("parley, idle connections")?;
    let kill = run_phase(cluster, settings, settings.fixed_rate_per_s, true).await;
    // Whether or not the phase got as far as the kill: the cluster must be whole again.
    cluster
        .start_component(KILLED_NODE)
        .await
        .with_context(|| format!("starting {KILLED_NODE} again"))?;
    let kill = kill.context("parley, node killed")?;
    side_figures("parley", fixed, max, kill, memory.bytes_per_conn, memory.connections)
}

async fn run_phase(
    cluster: &LocalCluster,
    settings: &PeerSettings,
    rate_per_s: f64,
    kill_halfway: bool,
) -> anyhow::Result<PhaseOutcome> {
    let public_url = cluster.app.public_url();
    let pairs = create_chat_pairs(&ParleyHttp::new(&public_url), &fresh_run_tag(), settings.pairs).await?;
    let load = RunningChatLoad::connect(
        pairs,
        ChatLoadSettings {
            base_url: public_url,
            message_rate_per_pair: rate_per_s / settings.pairs as f64,
            first_connect_node_urls: vec![cluster.app.node_url("node-1"), cluster.app.node_url(KILLED_NODE)],
            max_in_flight: Some(settings.max_in_flight),
        },
    );
    let placement = load.wait_all_live(CONNECT_TIMEOUT).await?;
    anyhow::ensure!(
        placement.cross_node_pairs == settings.pairs as u64,
        "only {} of {} pairs are split over the nodes",
        placement.cross_node_pairs,
        settings.pairs
    );
    let statuses = cluster.status();
    let node_pids = vec![
        component_pid(&statuses, "node-1")?,
        component_pid(&statuses, KILLED_NODE)?,
    ];
    let meter = CostMeter::start(node_pids, cluster.servers.root_url("master")).await?;
    let started = Instant::now();
    let delivered_before = load.delivered_so_far();
    let ends_at = started + settings.duration;
    if kill_halfway {
        load.send_at_steady_rate(started + settings.duration / 2).await?;
        cluster.kill(KILLED_NODE, Signal::SIGKILL)?;
        tracing::info!(node = KILLED_NODE, "peer: parley node killed");
    }
    load.send_at_steady_rate(ends_at).await?;
    let delivered = load.delivered_so_far() - delivered_before;
    let delivered_per_s = delivered as f64 / started.elapsed().as_secs_f64();
    let cost = meter.stop(delivered).await?;
    let settled = load.settle(SETTLE_TIMEOUT).await;
    let outcome = load.finish(started, settled).await?;
    // A message counts as lost when the id its sender was acked under never arrived; a
    // resend acked under a second id would show here too, with a duplicate beside it.
    if outcome.lost_count > 0 || outcome.duplicate_count > 0 || outcome.sequence_conflicts > 0 {
        tracing::warn!(
            lost = ?outcome.lost,
            duplicates = ?outcome.duplicates,
            sequence_conflicts = outcome.sequence_conflicts,
            "peer: parley acked messages that never arrived, or arrived twice"
        );
    }
    Ok(PhaseOutcome {
        delivered_per_s,
        cost,
        delivery_times: outcome.delivery_times,
        acked: outcome.acked,
        lost: outcome.lost_count,
        resume_times: outcome.resume_times,
        reconnects: outcome.reconnects,
    })
}
