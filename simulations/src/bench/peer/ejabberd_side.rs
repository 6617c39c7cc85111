//! `peer` on ejabberd: the same phases as Parley's, with [`RunningXmppLoad`] for the
//! chat load and [`xmpp_idle`](super::xmpp_idle) for the memory figure. Every phase has
//! accounts of its own, created up front in ejabberd's `users` table.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::phase_cost::CostMeter;
use super::xmpp_idle;
use super::xmpp_pairs::{RunningXmppLoad, SendPace, XmppEndpoints, XmppPair};
use super::{side_figures, LostInArchives, PeerSettings, PeerSideFigures, PhaseOutcome};
use crate::load::load_users::fresh_run_tag;
use parley_launcher::ejabberd_peer::EjabberdPeer;

/// ejabberd's second node, as Parley's node-2.
const KILLED_NODE_INDEX: usize = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn measure(
    peer: &EjabberdPeer,
    master_root_url: &str,
    settings: &PeerSettings,
) -> anyhow::Result<PeerSideFigures> {
    let tag = fresh_run_tag();
    let phase_pairs = |phase: &str| XmppPair::many(&format!("{tag}-{phase}"), settings.pairs);
    let (fixed_pairs, max_pairs, kill_pairs) = (phase_pairs("fixed"), phase_pairs("max"), phase_pairs("kill"));
    let idle_accounts = xmpp_idle::accounts(&format!("{tag}-idle"), settings.idle_connections);
    let mut accounts: Vec<(String, String)> = idle_accounts.clone();
    for pair in fixed_pairs.iter().chain(&max_pairs).chain(&kill_pairs) {
        accounts.push((pair.sender.clone(), pair.password.clone()));
        accounts.push((pair.recipient.clone(), pair.password.clone()));
    }
    peer.register_users(&accounts).await?;

    let run_phase =
        |pairs, rate_per_s, kill_halfway| run_phase(peer, master_root_url, pairs, settings, rate_per_s, kill_halfway);
    let (fixed, _) = run_phase(fixed_pairs, settings.fixed_rate_per_s, false)
        .await
        .context("ejabberd, fixed rate")?;
    let (max, _) = run_phase(max_pairs, settings.max_offered_per_s, false)
        .await
        .context("ejabberd, max rate")?;
    let bytes_per_conn = xmpp_idle::bytes_per_connection(peer, &idle_accounts)
        .await
        .context("ejabberd, idle connections")?;
    let (kill, lost_messages) = run_phase(kill_pairs, settings.fixed_rate_per_s, true)
        .await
        .context("ejabberd, node killed")?;
    let mut figures = side_figures("ejabberd", fixed, max, kill, bytes_per_conn, idle_accounts.len())?;
    figures.lost_in_kill_archived = Some(where_the_lost_are(peer, &lost_messages).await?);
    Ok(figures)
}

/// Of the messages acked and never delivered, how many each side's archive holds.
async fn where_the_lost_are(
    peer: &EjabberdPeer,
    lost_messages: &[(String, String, String)],
) -> anyhow::Result<LostInArchives> {
    let mut archives: HashMap<String, HashSet<String>> = HashMap::new();
    let mut found = LostInArchives::default();
    for (sender, recipient, body) in lost_messages {
        for (username, count) in [(sender, &mut found.senders), (recipient, &mut found.recipients)] {
            if !archives.contains_key(username) {
                archives.insert(username.clone(), peer.archived_bodies(username).await?);
            }
            if archives[username].contains(body) {
                *count += 1;
            }
        }
    }
    Ok(found)
}

async fn run_phase(
    peer: &EjabberdPeer,
    master_root_url: &str,
    pairs: Vec<XmppPair>,
    settings: &PeerSettings,
    rate_per_s: f64,
    kill_halfway: bool,
) -> anyhow::Result<(PhaseOutcome, Vec<(String, String, String)>)> {
    let endpoints = XmppEndpoints {
        node_urls: [peer.node_websocket_url(0), peer.node_websocket_url(KILLED_NODE_INDEX)],
        public_url: peer.public_websocket_url(),
    };
    let pace = SendPace {
        message_rate_per_pair: rate_per_s / settings.pairs as f64,
        max_in_flight: settings.max_in_flight,
    };
    let mut load = RunningXmppLoad::connect(pairs, endpoints, pace);
    load.wait_all_live(CONNECT_TIMEOUT).await?;
    let node_pids = vec![peer.node_pid(0)?, peer.node_pid(KILLED_NODE_INDEX)?];
    let meter = CostMeter::start(node_pids, master_root_url.to_owned()).await?;
    let started = Instant::now();
    let delivered_before = load.delivered_so_far();
    let ends_at = started + settings.duration;
    if kill_halfway {
        load.send_at_steady_rate(started + settings.duration / 2).await;
        peer.signal_node(KILLED_NODE_INDEX, Signal::SIGKILL)?;
        tracing::info!("peer: ejabberd node 2 killed");
    }
    load.send_at_steady_rate(ends_at).await;
    let delivered = load.delivered_so_far() - delivered_before;
    let delivered_per_s = delivered as f64 / started.elapsed().as_secs_f64();
    let cost = meter.stop(delivered).await?;
    load.settle(SETTLE_TIMEOUT).await;
    let outcome = load.finish().await?;
    let phase = PhaseOutcome {
        delivered_per_s,
        cost,
        delivery_times: outcome.delivery_times,
        acked: outcome.acked,
        lost: outcome.lost,
        resume_times: outcome.resume_times,
        reconnects: outcome.reconnects,
    };
    Ok((phase, outcome.lost_messages))
}
