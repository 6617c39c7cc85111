//! `fanout`: one sender writing to a group of 10, 100 and 1,000 members whose sockets
//! are spread over both nodes. Each size reports deliveries per second (messages times
//! the members who got them, over the time from the first send to the last arrival) and
//! the delivery latency from the sender's `send` to each member's socket: p50, p99.
//!
//! The sender keeps a window of frames in flight (one message each, acked after the
//! commit), so the cluster sets the pace: a bigger group is slower to fan out, and the
//! window's queueing is in the latency. Every member must get every message exactly
//! once, or the benchmark fails instead of reporting a figure.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures::{stream, StreamExt, TryStreamExt};
use protocol::websocket::{actions, AckPayload, OutgoingMessage};
use serde::Serialize;
use tokio::time::Instant;

use super::bench_accounts::sign_up_many;
use super::lean_socket::{
    connect_lean, next_frame, node_socket_address, read_until_replay_complete, source_address, LeanFrame,
};
use super::process_figures::raise_own_open_files_limit;
use crate::load::latency_samples::{round_ms, LatencySamples};
use crate::load::load_users::{fresh_run_tag, SignedInUser};
use parley_client::http::ParleyHttp;
use parley_client::socket::MessengerSocket;
use parley_launcher::LocalCluster;

/// The group sizes, the sender included.
pub const GROUP_SIZES: [usize; 3] = [10, 100, 1000];
/// Frames the sender has sent and not yet seen acked (the node reads 16 per socket).
const SEND_WINDOW: usize = 8;
/// Sockets opened at once while connecting the members.
const CONNECT_CONCURRENCY: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Far past any expected figure: a slow fan-out is measured, not cut off.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(120);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// One group size's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FanoutFigures {
    /// Members of the group, the sender included.
    pub members: usize,
    /// Messages the sender wrote.
    pub messages: usize,
    /// Messages times the members who got them, per second, from the first send to the
    /// last arrival.
    pub deliveries_per_s: f64,
    /// Median delivery latency, send to a member's socket, ms.
    pub p50_ms: f64,
    /// 99th percentile delivery latency, ms.
    pub p99_ms: f64,
}

/// `fanout.n10`, `fanout.n100`, `fanout.n1000`.
pub type FanoutReport = std::collections::BTreeMap<String, FanoutFigures>;

/// How many messages a group of `members` gets: about 20,000 to 100,000 deliveries a
/// size, a few seconds each on two cores.
fn messages_for(members: usize) -> usize {
    match members {
        0..=10 => 2000,
        11..=100 => 500,
        _ => 100,
    }
}

pub async fn measure(cluster: &LocalCluster) -> anyhow::Result<FanoutReport> {
    raise_own_open_files_limit()?;
    let http = ParleyHttp::new(cluster.app.public_url());
    let largest = GROUP_SIZES[GROUP_SIZES.len() - 1];
    let users = sign_up_many(&http, &fresh_run_tag(), "Fanout", largest).await?;
    let nodes = [
        node_socket_address(&cluster.app.node_url("node-1"))?,
        node_socket_address(&cluster.app.node_url("node-2"))?,
    ];
    let mut report = FanoutReport::new();
    for size in GROUP_SIZES {
        // The creator (sender) of each size is another user: its member additions per
        // minute count once, and its socket sees no other group.
        let members = &users[largest - size..];
        let figures = measure_size(cluster, &http, members, nodes, messages_for(size))
            .await
            .with_context(|| format!("fan-out to a group of {size}"))?;
        report.insert(format!("n{size}"), figures);
    }
    Ok(report)
}

async fn measure_size(
    cluster: &LocalCluster,
    http: &ParleyHttp,
    members: &[SignedInUser],
    nodes: [std::net::SocketAddr; 2],
    messages: usize,
) -> anyhow::Result<FanoutFigures> {
    let (sender, recipients) = members.split_first().context("an empty group")?;
    let member_ids: Vec<String> = recipients.iter().map(|member| member.user_id.clone()).collect();
    let chat_id = http
        .create_group(&sender.access_token, "fan-out benchmark", &member_ids)
        .await?;

    // Each member on node-1 or node-2 in turn, read until its replay (the `created` event) is done.
    let sockets = stream::iter(recipients.iter().enumerate())
        .map(|(index, member)| async move {
            let mut socket = connect_lean(
                source_address(index),
                nodes[index % 2],
                &member.access_token,
                CONNECT_TIMEOUT,
            )
            .await
            .with_context(|| format!("member {index}"))?;
            read_until_replay_complete(&mut socket, CONNECT_TIMEOUT).await?;
            anyhow::Ok(socket)
        })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut arrivals: Vec<(String, Instant)> = Vec::with_capacity(messages);
                while arrivals.len() < messages {
                    match tokio::time::timeout(ARRIVAL_TIMEOUT, next_frame(&mut socket)).await {
                        Ok(Ok(LeanFrame::Delivery(ids))) => {
                            let now = Instant::now();
                            arrivals.extend(ids.into_iter().map(|id| (id, now)));
                        }
                        Ok(Ok(LeanFrame::Other | LeanFrame::ReplayComplete)) => {}
                        Ok(Ok(LeanFrame::Ended)) => bail!("a member's socket ended"),
                        Ok(Err(error)) => return Err(error),
                        Err(_) => bail!("a member got {} of {messages} messages", arrivals.len()),
                    }
                }
                Ok(arrivals)
            })
        })
        .collect();

    let sender_url = cluster.app.node_url("node-1");
    let sent_at = send_with_window(&sender_url, &sender.access_token, &chat_id, messages).await?;
    let first_send = sent_at.values().copied().min().context("nothing was sent")?;

    let mut latencies = LatencySamples::default();
    let mut last_arrival = first_send;
    for reader in readers {
        let arrivals = reader.await.context("a member's reader")??;
        let distinct: HashSet<&String> = arrivals.iter().map(|(id, _)| id).collect();
        ensure!(
            distinct.len() == messages,
            "a member got {} distinct of {messages} messages ({} arrivals)",
            distinct.len(),
            arrivals.len()
        );
        for (id, at) in &arrivals {
            let sent = sent_at
                .get(id)
                .with_context(|| format!("a delivery of an unsent id {id}"))?;
            latencies.record(at.saturating_duration_since(*sent));
            last_arrival = last_arrival.max(*at);
        }
    }
    let deliveries = messages * recipients.len();
    let elapsed = last_arrival.duration_since(first_send).as_secs_f64().max(f64::EPSILON);
    Ok(FanoutFigures {
        members: members.len(),
        messages,
        deliveries_per_s: (deliveries as f64 / elapsed).round(),
        p50_ms: round_ms(latencies.percentile_ms(0.50)),
        p99_ms: round_ms(latencies.percentile_ms(0.99)),
    })
}

/// Sends `messages` one per frame with at most [`SEND_WINDOW`] unacked; when each
/// message id was sent.
async fn send_with_window(
    node_url: &str,
    token: &str,
    chat_id: &str,
    messages: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut socket = MessengerSocket::connect(node_url, token).await?;
    socket.until_action(actions::REPLAY_COMPLETE, CONNECT_TIMEOUT).await?;
    let mut sent_by_client_id: HashMap<String, Instant> = HashMap::with_capacity(messages);
    let mut sent_by_id: HashMap<String, Instant> = HashMap::with_capacity(messages);
    let mut next = 0;
    while sent_by_id.len() < messages {
        while next < messages && sent_by_client_id.len() - sent_by_id.len() < SEND_WINDOW {
            let client_id = format!("fanout-{next}");
            let message = OutgoingMessage {
                text: format!("fan-out message {next}"),
                status: None,
                client_id: Some(client_id.clone()),
            };
            sent_by_client_id.insert(client_id, Instant::now());
            socket.send_messages(chat_id, vec![message], None).await?;
            next += 1;
        }
        let (_, ack) = socket.until_action(actions::ACK, ACK_TIMEOUT).await?;
        let ack: AckPayload = ack.decode_payload()?;
        for entry in ack.acks {
            let client_id = entry.client_id.context("an ack without the client id")?;
            let sent = sent_by_client_id
                .get(&client_id)
                .copied()
                .context("an ack of an unsent message")?;
            sent_by_id.insert(entry.id, sent);
        }
    }
    socket.close().await?;
    Ok(sent_by_id)
}
