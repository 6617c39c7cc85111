//! `memory`: what an idle, authenticated websocket costs a node. N sockets straight to
//! node-1 (not through nginx, whose own memory is not Parley's), each open until it got
//! its `replay-complete` (its session is registered, announced and replayed), spread
//! over eight loopback source addresses. The figure is node-1's resident memory growth
//! divided by N.
//!
//! Users hold several sockets each (the bench cluster raises the per-user limit): a
//! socket costs the same whoever owns it, and 20,000 accounts would mean 40,000 password
//! hashes before the first byte is measured. Where the open files limits of this
//! process or of the node (unprivileged, neither may go past its hard limit) cannot hold
//! N sockets, N is lowered to what fits and both counts are reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::bench_accounts::sign_up_many;
use super::lean_socket::{connect_lean, next_frame, node_socket_address, read_until_replay_complete, source_address};
use super::lean_socket::{LeanFrame, LeanSocket};
use super::process_figures::{component_pid, raise_own_open_files_limit, resident_bytes, sockets_that_fit};
use crate::load::load_users::fresh_run_tag;
use parley_client::http::ParleyHttp;
use parley_launcher::LocalCluster;

/// The node whose memory is measured.
const MEASURED_NODE: &str = "node-1";
/// Sockets per user; the bench cluster allows 64 (see [`super::BENCH_NODE_ARGS`]).
const SOCKETS_PER_USER: usize = 20;
/// Handshakes (and the session starts behind them) in flight at once.
const CONNECT_CONCURRENCY: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Files either process keeps for itself: database pools, the cluster mesh, logs.
pub(super) const OPEN_FILES_HEADROOM: u64 = 512;
/// Issue 19's target (issue 9's was 16 KiB).
const TARGET_BYTES_PER_CONN: f64 = 8.0 * 1024.0;
/// The anchors' published figures for an idle websocket (Centrifugo's million-connection
/// benchmark, Phoenix's two million), for reference only: other machines, other clients.
const CENTRIFUGO_BYTES_PER_CONN: f64 = 30_000.0;
const PHOENIX_BYTES_PER_CONN: f64 = 42_000.0;
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Resident memory is read again until it moves less than this between two reads, so
/// frees and page faults still in flight do not skew the figure.
const RSS_SETTLED_FRACTION: f64 = 0.005;
const RSS_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `memory`: node-1's resident memory per idle websocket.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryFigures {
    /// Idle sockets measured.
    pub connections: usize,
    /// Asked for; more than `connections` when the open files limits did not allow it.
    pub connections_requested: usize,
    /// Users the sockets belong to (20 sockets each).
    pub users: usize,
    /// node-1's resident memory before the sockets opened, once settled.
    pub rss_before_bytes: u64,
    /// node-1's resident memory with every socket open and idle, once settled.
    pub rss_after_bytes: u64,
    /// `(rss_after_bytes - rss_before_bytes) / connections`, rounded (0 if memory fell).
    pub bytes_per_conn: f64,
    /// Issue 19's target: 8 KiB.
    pub target_bytes_per_conn: f64,
    /// Centrifugo's published figure (other machine, other clients): for reference only.
    pub reference_centrifugo_bytes_per_conn: f64,
    /// Phoenix's published figure (other machine, other clients): for reference only.
    pub reference_phoenix_bytes_per_conn: f64,
    /// Resident memory while the sockets opened, for the plot.
    #[serde(skip)]
    pub rss_by_connections: Vec<RssSample>,
}

impl MemoryFigures {
    /// Whether the bytes per connection are within the target.
    pub fn meets_target(&self) -> bool {
        self.bytes_per_conn <= self.target_bytes_per_conn
    }
}

/// node-1's resident memory with so many sockets open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSample {
    /// Sockets open when sampled.
    pub connections: usize,
    /// Resident memory then, in bytes.
    pub rss_bytes: u64,
}

pub async fn measure(cluster: &LocalCluster, requested: usize) -> anyhow::Result<MemoryFigures> {
    ensure!(requested > 0, "the memory benchmark needs at least one connection");
    let node_pid = component_pid(&cluster.status(), MEASURED_NODE)?;
    let node_address = node_socket_address(&cluster.app.node_url(MEASURED_NODE))?;
    raise_own_open_files_limit()?;
    let connections = sockets_that_fit(&[node_pid], OPEN_FILES_HEADROOM, requested)?;
    let users = connections.div_ceil(SOCKETS_PER_USER);
    let accounts = sign_up_many(
        &ParleyHttp::new(cluster.app.public_url()),
        &fresh_run_tag(),
        "Idle",
        users,
    )
    .await?;
    let tokens: Vec<String> = accounts.into_iter().map(|user| user.access_token).collect();

    let rss_before = settled_resident_bytes(node_pid).await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss_while_opening(node_pid, Arc::clone(&ready), stopped.clone()));
    let opened = stream::iter(0..connections)
        .map(|index| {
            let (token, ready, stopped) = (tokens[index % users].clone(), Arc::clone(&ready), stopped.clone());
            async move {
                let mut socket = connect_lean(source_address(index), node_address, &token, CONNECT_TIMEOUT)
                    .await
                    .with_context(|| format!("idle socket {index}"))?;
                read_until_replay_complete(&mut socket, CONNECT_TIMEOUT)
                    .await
                    .with_context(|| format!("idle socket {index}"))?;
                ready.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(tokio::spawn(hold_idle(socket, stopped)))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect::<Vec<JoinHandle<bool>>>()
        .await;
    let outcome = resident_bytes_while_held(node_pid, opened, &stop, "sockets").await;
    let mut rss_by_connections = sampler.await.context("the memory sampler panicked")?;
    let rss_after = outcome?;
    rss_by_connections.insert(
        0,
        RssSample {
            connections: 0,
            rss_bytes: rss_before,
        },
    );
    rss_by_connections.push(RssSample {
        connections,
        rss_bytes: rss_after,
    });
    let bytes_per_conn = rss_after.saturating_sub(rss_before) as f64 / connections as f64;
    Ok(MemoryFigures {
        connections,
        connections_requested: requested,
        users,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_conn: bytes_per_conn.round(),
        target_bytes_per_conn: TARGET_BYTES_PER_CONN,
        reference_centrifugo_bytes_per_conn: CENTRIFUGO_BYTES_PER_CONN,
        reference_phoenix_bytes_per_conn: PHOENIX_BYTES_PER_CONN,
        rss_by_connections,
    })
}

/// Reads whatever comes (nothing should) until told to stop; false if the socket ended
/// first. Dropping the socket afterwards closes it.
async fn hold_idle(mut socket: LeanSocket, mut stopped: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return true,
            frame = next_frame(&mut socket) => match frame {
                Ok(LeanFrame::Ended) | Err(_) => return false,
                Ok(_) => {}
            },
        }
    }
}

async fn sample_rss_while_opening(
    node_pid: u32,
    ready: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) -> Vec<RssSample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return samples,
            _ = ticks.tick() => {
                if let Ok(rss_bytes) = resident_bytes(node_pid) {
                    samples.push(RssSample { connections: ready.load(Ordering::Relaxed), rss_bytes });
                }
            }
        }
    }
}

/// The node's settled resident memory while every holder (a task holding one idle
/// connection, true if it held it until told to stop) of `opened` is open; then the
/// holders are stopped. An error when opening failed or a connection ended early.
pub(super) async fn resident_bytes_while_held(
    node_pid: u32,
    opened: anyhow::Result<Vec<JoinHandle<bool>>>,
    stop: &watch::Sender<bool>,
    held: &str,
) -> anyhow::Result<u64> {
    let holders = match opened {
        Ok(holders) => holders,
        Err(error) => {
            let _ = stop.send(true);
            return Err(error);
        }
    };
    let rss_after = settled_resident_bytes(node_pid).await;
    let _ = stop.send(true);
    let mut ended_early = 0;
    for holder in holders {
        if !holder.await.unwrap_or(false) {
            ended_early += 1;
        }
    }
    let rss_after = rss_after?;
    ensure!(
        ended_early == 0,
        "{ended_early} idle {held} ended before the measurement did"
    );
    Ok(rss_after)
}

/// Resident memory once two reads a sample interval apart agree within
/// [`RSS_SETTLED_FRACTION`] (or the last read after [`RSS_SETTLE_TIMEOUT`]).
pub(super) async fn settled_resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + RSS_SETTLE_TIMEOUT;
    let mut previous = resident_bytes(pid)?;
    loop {
        tokio::time::sleep(RSS_SAMPLE_INTERVAL).await;
        let current = resident_bytes(pid)?;
        let moved = current.abs_diff(previous) as f64 / previous.max(1) as f64;
        if moved <= RSS_SETTLED_FRACTION || Instant::now() >= deadline {
            return Ok(current);
        }
        previous = current;
    }
}
