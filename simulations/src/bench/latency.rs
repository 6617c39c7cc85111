//! `latency`: from the sender's `send` to the recipient's application, across the
//! cluster, at half the throughput `messages` measured in the same run (or a fixed rate
//! when it did not run): p50, p99, max. Next to it the floor: one single-row INSERT
//! committed on the master by one connection.

use std::time::Duration;

use mysql_async::Params;
use serde::Serialize;
use tokio::time::Instant;

use super::{db_baseline, messages, CHAT_SENDERS};
use crate::failover::chat_load::{ChatLoadSettings, RunningChatLoad};
use crate::failover::experiment_users::{create_chat_pairs, fresh_run_tag};
use crate::failover::latency_statistics::round_ms;
use crate::http_client::ParleyHttp;
use crate::LocalCluster;

/// The target for the p99.
const TARGET_P99_MS: f64 = 10.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyFigures {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Messages per second offered while measuring.
    pub offered_per_s: f64,
    /// One connection's single-row INSERT with autocommit on the master.
    pub baseline_commit_p50_ms: f64,
    pub baseline_commit_p99_ms: f64,
    pub target_p99_ms: f64,
    /// (percentile, ms) from p1 to p100, for the plot.
    #[serde(skip)]
    pub percentiles_ms: Vec<(f64, f64)>,
}

impl LatencyFigures {
    pub fn meets_target(&self) -> bool {
        self.p99_ms <= self.target_p99_ms
    }
}

pub async fn measure(cluster: &LocalCluster, duration: Duration, offered_per_s: f64) -> anyhow::Result<LatencyFigures> {
    let public_url = cluster.app.public_url();
    let pairs = create_chat_pairs(&ParleyHttp::new(&public_url), &fresh_run_tag(), CHAT_SENDERS).await?;
    let load = RunningChatLoad::connect(
        pairs,
        ChatLoadSettings {
            base_url: public_url,
            message_rate_per_pair: offered_per_s / CHAT_SENDERS as f64,
        },
    );
    load.wait_all_live(Duration::from_secs(30)).await?;
    let started = Instant::now();
    load.send_at_steady_rate(started + duration).await?;
    let settled = load.settle(Duration::from_secs(30)).await;
    let mut outcome = load.finish(started, settled).await?;
    anyhow::ensure!(
        outcome.lost_count == 0 && outcome.duplicate_count == 0,
        "{} lost and {} duplicated during the latency benchmark",
        outcome.lost_count,
        outcome.duplicate_count
    );

    let master_url = cluster.servers.master_url(cluster.app.database());
    messages::prepare_baseline_table(&master_url).await?;
    let mut commits =
        db_baseline::statement_latencies(&master_url, 1, duration, messages::BASELINE_INSERT, |_, done| {
            Params::from(("bench-latency", done, "bench-user", "x".repeat(32)))
        })
        .await?;
    Ok(LatencyFigures {
        p50_ms: round_ms(outcome.delivery_times.percentile_ms(0.50)),
        p99_ms: round_ms(outcome.delivery_times.percentile_ms(0.99)),
        max_ms: round_ms(outcome.delivery_times.max_ms()),
        offered_per_s: (offered_per_s * 100.0).round() / 100.0,
        baseline_commit_p50_ms: round_ms(commits.percentile_ms(0.50)),
        baseline_commit_p99_ms: round_ms(commits.percentile_ms(0.99)),
        target_p99_ms: TARGET_P99_MS,
        percentiles_ms: (1..=100)
            .map(|percentile| {
                let fraction = f64::from(percentile) / 100.0;
                (f64::from(percentile), outcome.delivery_times.percentile_ms(fraction))
            })
            .collect(),
    })
}
