//! `latency`: from the sender's `send` to the recipient's application, across the
//! cluster, at half the throughput `messages` measured in the same run (or a fixed rate
//! when it did not run): p50, p99, max. Next to it the floor: one single-row INSERT
//! committed on the master by one connection. With the nodes' traces at hand
//! (`bench --trace-hops`), also where the time goes, hop by hop ([`latency_hops`]).
//! Then the same at a fixed rate (`latency.fixed_rate`, 1,000 messages a second by
//! default): a figure that does not move with the machine's maximum.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mysql_async::Params;
use serde::Serialize;
use tokio::time::Instant;

use super::latency_hops::{self, ClientTiming, HopBreakdown};
use super::{db_baseline, messages, CHAT_SENDERS};
use crate::load::chat_load::{ChatLoadOutcome, ChatLoadSettings, DeliveredTiming, RunningChatLoad};
use crate::load::latency_samples::round_ms;
use crate::load::load_users::{create_chat_pairs, fresh_run_tag};
use parley_client::http::ParleyHttp;
use parley_launcher::trace_collector::TraceCollector;
use parley_launcher::LocalCluster;

/// The target for the p99.
const TARGET_P99_MS: f64 = 10.0;

/// `latency`: from the sender's `send` to the recipient's application, across nodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyFigures {
    /// Median delivery latency, ms.
    pub p50_ms: f64,
    /// 99th percentile delivery latency, ms (the target is on this one).
    pub p99_ms: f64,
    /// Slowest delivery, ms.
    pub max_ms: f64,
    /// Messages per second offered while measuring.
    pub offered_per_s: f64,
    /// One connection's single-row INSERT with autocommit on the master.
    pub baseline_commit_p50_ms: f64,
    /// 99th percentile of the single-row INSERT commit, ms.
    pub baseline_commit_p99_ms: f64,
    /// The target for `p99_ms`: 10 ms.
    pub target_p99_ms: f64,
    /// Hop by hop, when the nodes exported their traces to the benchmark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<HopBreakdown>,
    /// The same measurement at a fixed offered rate (none when asked for 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_rate: Option<FixedRateFigures>,
    /// (percentile, ms) from p1 to p100, for the plot.
    #[serde(skip)]
    pub percentiles_ms: Vec<(f64, f64)>,
}

/// `latency.fixed_rate`: delivery latency at a rate that does not depend on the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FixedRateFigures {
    /// Messages per second offered, across all the chats.
    pub rate: f64,
    /// Median delivery latency, ms.
    pub p50_ms: f64,
    /// 99th percentile delivery latency, ms.
    pub p99_ms: f64,
    /// Slowest delivery, ms.
    pub max_ms: f64,
    /// The target for `p99_ms`: 10 ms.
    pub target_p99_ms: f64,
}

impl FixedRateFigures {
    /// Whether the p99 is within the target.
    pub fn meets_target(&self) -> bool {
        self.p99_ms <= self.target_p99_ms
    }
}

impl LatencyFigures {
    /// Whether the p99 is within the target.
    pub fn meets_target(&self) -> bool {
        self.p99_ms <= self.target_p99_ms
    }
}

/// Messages at `offered_per_s` across [`CHAT_SENDERS`] fresh chats for `duration`,
/// every one delivered once or an error.
async fn deliver_at_rate(
    cluster: &LocalCluster,
    duration: Duration,
    offered_per_s: f64,
    traces: Option<&TraceCollector>,
) -> anyhow::Result<ChatLoadOutcome> {
    let public_url = cluster.app.public_url();
    let pairs = create_chat_pairs(&ParleyHttp::new(&public_url), &fresh_run_tag(), CHAT_SENDERS).await?;
    let load = RunningChatLoad::connect(
        pairs,
        ChatLoadSettings {
            base_url: public_url,
            message_rate_per_pair: offered_per_s / CHAT_SENDERS as f64,
            first_connect_node_urls: Vec::new(),
            max_in_flight: None,
        },
    );
    load.wait_all_live(Duration::from_secs(30)).await?;
    messages::replicas_caught_up(cluster).await?;
    if let Some(traces) = traces {
        traces.clear();
    }
    let started = Instant::now();
    load.send_at_steady_rate(started + duration).await?;
    let settled = load.settle(Duration::from_secs(30)).await;
    let outcome = load.finish(started, settled).await?;
    anyhow::ensure!(
        outcome.lost_count == 0 && outcome.duplicate_count == 0,
        "{} lost and {} duplicated during the latency benchmark at {offered_per_s} msg/s",
        outcome.lost_count,
        outcome.duplicate_count
    );
    Ok(outcome)
}

pub async fn measure(
    cluster: &LocalCluster,
    duration: Duration,
    offered_per_s: f64,
    fixed_rate_per_s: f64,
    traces: Option<&TraceCollector>,
) -> anyhow::Result<LatencyFigures> {
    let mut outcome = deliver_at_rate(cluster, duration, offered_per_s, traces).await?;
    let hops = match traces {
        Some(traces) => Some(hop_breakdown(traces, &outcome.delivered_messages).await),
        None => None,
    };
    let fixed_rate = match fixed_rate_per_s > 0.0 {
        true => {
            let mut at_fixed_rate = deliver_at_rate(cluster, duration, fixed_rate_per_s, None).await?;
            let times = &mut at_fixed_rate.delivery_times;
            Some(FixedRateFigures {
                rate: fixed_rate_per_s,
                p50_ms: round_ms(times.percentile_ms(0.50)),
                p99_ms: round_ms(times.percentile_ms(0.99)),
                max_ms: round_ms(times.max_ms()),
                target_p99_ms: TARGET_P99_MS,
            })
        }
        false => None,
    };

    let master_url = cluster.servers.master_url(cluster.app.database());
    messages::prepare_baseline_table(&master_url).await?;
    messages::replicas_caught_up(cluster).await?;
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
        hops,
        fixed_rate,
        percentiles_ms: (1..=100)
            .map(|percentile| {
                let fraction = f64::from(percentile) / 100.0;
                (f64::from(percentile), outcome.delivery_times.percentile_ms(fraction))
            })
            .collect(),
    })
}

/// How long the nodes' export queues get to hand over the measurement's spans (they
/// export every half second) before the breakdown uses what arrived.
const SPANS_ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);
const SPANS_POLL: Duration = Duration::from_millis(500);

async fn hop_breakdown(traces: &TraceCollector, delivered: &[DeliveredTiming]) -> HopBreakdown {
    // Instants are monotonic, span times are wall clock: one reading of both converts.
    let (now_instant, now_wall) = (Instant::now(), SystemTime::now());
    let wall_ns = |at: Instant| -> u64 {
        let wall = now_wall - now_instant.saturating_duration_since(at);
        wall.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64)
    };
    let timings: Vec<ClientTiming> = delivered
        .iter()
        .map(|message| ClientTiming {
            message_id: message.id.clone(),
            sent_unix_ns: wall_ns(message.sent_at),
            received_unix_ns: wall_ns(message.delivered_at),
        })
        .collect();
    // Polled until every message is traced or two polls in a row bring nothing new.
    let deadline = Instant::now() + SPANS_ARRIVAL_TIMEOUT;
    let (mut spans_seen, mut quiet_polls) = (usize::MAX, 0);
    loop {
        let spans = traces.spans();
        let breakdown = latency_hops::break_down(&spans, &timings);
        quiet_polls = if spans.len() == spans_seen { quiet_polls + 1 } else { 0 };
        spans_seen = spans.len();
        if breakdown.traced == breakdown.delivered || quiet_polls >= 2 || Instant::now() >= deadline {
            return breakdown;
        }
        tokio::time::sleep(SPANS_POLL).await;
    }
}
