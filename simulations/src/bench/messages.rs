//! `messages`: messages committed and delivered per second, senders on `ChatClient`s
//! through nginx (many chats, users on both nodes), against single-row INSERTs of the
//! same shape with the same durability on the master, at the same concurrency.

use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::Params;
use serde::Serialize;
use tokio::time::Instant;

use super::{db_baseline, Comparison, CHAT_SENDERS};
use crate::load::chat_load::{ChatLoadSettings, RunningChatLoad};
use crate::load::load_users::{create_chat_pairs, fresh_run_tag};
use parley_client::http::ParleyHttp;
use parley_launcher::LocalCluster;

/// Offered per sender: more than the system sustains, so what arrives is its limit.
const OFFERED_PER_SENDER: f64 = 250.0;
/// Issue 19: batching and group commit must make Parley three times the naive loop of
/// one transaction per message.
const TARGET_RATIO: f64 = 3.0;

/// `messages`: messages committed and delivered per second against single-row INSERTs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessageFigures {
    /// Messages delivered per second through Parley.
    pub parley_per_s: f64,
    /// Single-row INSERTs committed per second on the master, same concurrency.
    pub baseline_per_s: f64,
    /// `parley_per_s / baseline_per_s`; the target is 3.0.
    pub ratio: f64,
    /// The same figures as a [`Comparison`], for the table.
    #[serde(skip)]
    pub comparison: Comparison,
    /// Every acked message reached its recipient, once.
    pub lost: u64,
    /// Messages handed to a recipient's application twice (must be 0).
    pub duplicates: u64,
}

pub async fn measure(cluster: &LocalCluster, duration: Duration) -> anyhow::Result<MessageFigures> {
    let public_url = cluster.app.public_url();
    let pairs = create_chat_pairs(&ParleyHttp::new(&public_url), &fresh_run_tag(), CHAT_SENDERS).await?;
    let load = RunningChatLoad::connect(
        pairs,
        ChatLoadSettings {
            base_url: public_url,
            message_rate_per_pair: OFFERED_PER_SENDER,
            first_connect_node_urls: Vec::new(),
            max_in_flight: None,
        },
    );
    load.wait_all_live(Duration::from_secs(30)).await?;
    // Each side starts on a cluster at rest: the replicas apply every commit of what ran
    // before (the set-up, the other side, an earlier benchmark) with an fsync each, on
    // the same two cores.
    replicas_caught_up(cluster).await?;
    let started = Instant::now();
    let delivered_before = load.delivered_so_far();
    load.send_at_steady_rate(started + duration).await?;
    let delivered = load.delivered_so_far() - delivered_before;
    let parley = delivered as f64 / started.elapsed().as_secs_f64();
    let settled = load.settle(Duration::from_secs(60)).await;
    let outcome = load.finish(started, settled).await?;

    let master_url = cluster.servers.master_url(cluster.app.database());
    prepare_baseline_table(&master_url).await?;
    replicas_caught_up(cluster).await?;
    let text = "x".repeat(32);
    let baseline = db_baseline::statements_per_second(
        &master_url,
        CHAT_SENDERS,
        duration,
        BASELINE_INSERT,
        move |loop_index, done| Params::from((format!("bench-chat-{loop_index}"), done, "bench-user", text.clone())),
    )
    .await?;
    let comparison = Comparison::new(parley, baseline, TARGET_RATIO);
    Ok(MessageFigures {
        parley_per_s: comparison.parley,
        baseline_per_s: comparison.baseline,
        ratio: comparison.ratio,
        comparison,
        lost: outcome.lost_count,
        duplicates: outcome.duplicate_count,
    })
}

/// Waits until both replicas have applied everything the master committed.
pub(super) async fn replicas_caught_up(cluster: &LocalCluster) -> anyhow::Result<()> {
    cluster
        .servers
        .wait_replicas_caught_up(Duration::from_secs(120))
        .await
        .context("the replicas catching up before a measurement")
}

/// One message, the naive way: a transaction of its own.
pub(super) const BASELINE_INSERT: &str = "INSERT INTO bench_messages (chat_id, seq, user_id, text, create_time) \
                                          VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6))";

/// A table shaped like `messages` (same engine, same durability), emptied.
pub(super) async fn prepare_baseline_table(master_url: &str) -> anyhow::Result<()> {
    let pool = mysql_async::Pool::new(master_url);
    let mut conn = pool.get_conn().await?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS bench_messages (\
           id BIGINT AUTO_INCREMENT PRIMARY KEY, chat_id VARCHAR(64) NOT NULL, seq BIGINT NOT NULL, \
           user_id VARCHAR(64) NOT NULL, text TEXT NOT NULL, create_time DATETIME(6) NOT NULL, \
           KEY bench_chat_seq (chat_id, seq)) ENGINE=InnoDB",
    )
    .await?;
    conn.query_drop("TRUNCATE TABLE bench_messages").await?;
    drop(conn);
    pool.disconnect().await?;
    Ok(())
}
