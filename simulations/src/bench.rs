//! `parley-sim bench`: Parley's figures next to what the database itself sustains, in the
//! same run on the same machine, as ratios (machines here are noisy; ratios travel).
//!
//! ```text
//! http_read   get-by-email through nginx   vs  the same point query on HAProxy's read port
//! messages    messages delivered across nodes  vs  single-row INSERTs on the master
//! latency     send → recipient at half of that  vs  one INSERT's commit
//! memory      node RSS per idle websocket      vs  the anchors' published figures
//! fanout      one sender to groups of 10, 100, 1,000 over both nodes: deliveries/s, p99
//! storm       node-1 killed under U users with pending messages: time until all resumed
//! peer        Parley and ejabberd side by side under the same load (only when named)
//! ```
//!
//! The throughput pairs run at the same concurrency for the same time. `memory` and
//! `storm` have no same-run baseline: they print the issue's target and, for memory, the
//! anchors' figures for reference. `--plot-dir` draws each benchmark that ran
//! ([`write_plots`]).
//!
//! A cluster `bench` starts itself gets [`BENCH_NODE_ARGS`]: thousands of accounts need
//! cheap password hashes and no per-address sign-in or sign-up limit or hashing share
//! (they all come from 127.0.0.1), the message benchmarks no send rate limit, and the
//! memory benchmark puts 20 sockets on each user.

mod bench_accounts;
mod database_load;
mod db_baseline;
mod fanout;
mod http_read;
mod idle_connections;
mod latency;
mod latency_hops;
mod lean_socket;
mod messages;
mod peer;
mod plots;
mod process_figures;
mod reconnect_storm;
mod storm_recipient;
mod storm_senders;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use parley_launcher::trace_collector::TraceCollector;
use parley_launcher::LocalCluster;

pub use fanout::{FanoutFigures, FanoutReport};
pub use http_read::HttpReadFigures;
pub use idle_connections::{MemoryFigures, RssSample};
pub use latency::{FixedRateFigures, LatencyFigures};
pub use latency_hops::{HopBreakdown, HopFigures};
pub use messages::MessageFigures;
pub use peer::{LostInArchives, PeerFigures, PeerSettings, PeerSideFigures};
pub use plots::write_plots;
pub use reconnect_storm::StormFigures;

/// The benchmarks `bench` knows, in the order they run (`storm` kills and restarts
/// node-1, `peer` node-2, so they go last). `peer` runs only when named: it starts
/// ejabberd beside the cluster.
pub const BENCHMARKS: &[&str] = &["http_read", "messages", "latency", "memory", "fanout", "storm", "peer"];

/// Node flags of a cluster `bench` starts (and of the bench tests' clusters): scrypt at
/// 2^10 instead of OWASP's 2^17 (sign-ups are setup here, not what is measured), no
/// per-address sign-in limit, and room for the memory benchmark's sockets per user.
pub const BENCH_NODE_ARGS: &[&str] = &[
    "--scrypt-log-n",
    "10",
    "--sign-in-per-address-per-minute",
    "0",
    "--sign-up-per-address-per-minute",
    "0",
    "--send-messages-per-second",
    "0",
    "--max-queued-hashes-per-address",
    "16",
    "--max-sockets-per-user",
    "64",
];

/// Chats, each with one steady sender, in the message benchmarks: the concurrency of
/// Parley's side and of the baseline's.
const CHAT_SENDERS: usize = 20;

/// What `latency` offers when `messages` did not run first to say what half of the
/// maximum is.
const LATENCY_DEFAULT_OFFERED_PER_S: f64 = 200.0;

/// What `parley-sim bench` runs and for how long.
#[derive(Clone)]
pub struct BenchConfig {
    /// Which to run; empty: all.
    pub names: Vec<String>,
    /// How long each side of each measurement runs.
    pub duration: Duration,
    /// Idle websockets of `memory`.
    pub memory_connections: usize,
    /// Users of `storm`.
    pub storm_users: usize,
    /// Messages per second of `latency`'s fixed-rate point (0: none).
    pub latency_fixed_rate_per_s: f64,
    /// Pairs of `peer`'s chat load.
    pub peer_pairs: usize,
    /// Idle connections of `peer`'s memory phase, on each system.
    pub peer_idle_connections: usize,
    /// Messages per second `peer` offers in its max phase.
    pub peer_max_offered_per_s: f64,
    /// Where the cluster's nodes export their spans, if they do: `latency` then breaks
    /// its figure down hop by hop.
    pub hop_traces: Option<Arc<TraceCollector>>,
}

impl Default for BenchConfig {
    /// The issue's figures: 10 s per side, 20,000 idle sockets, 5,000 storm users,
    /// latency also at 1,000 messages a second.
    fn default() -> BenchConfig {
        BenchConfig {
            names: Vec::new(),
            duration: Duration::from_secs(10),
            memory_connections: 20_000,
            storm_users: 5_000,
            latency_fixed_rate_per_s: 1000.0,
            peer_pairs: 20,
            peer_idle_connections: 5000,
            peer_max_offered_per_s: 10_000.0,
            hop_traces: None,
        }
    }
}

/// One measurement: Parley's figure, the baseline's, their ratio and the target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// Parley's figure (unit as the measurement says: per second, ms, bytes), rounded to 2 decimals.
    pub parley: f64,
    /// The database's own figure in the same run and unit, rounded to 2 decimals.
    pub baseline: f64,
    /// `parley / baseline` (0 when the baseline is 0), rounded to 2 decimals.
    pub ratio: f64,
    /// The ratio the issue asks for at least.
    pub target_ratio: f64,
}

impl Comparison {
    /// Compares `parley` with `baseline` against `target_ratio`.
    pub fn new(parley: f64, baseline: f64, target_ratio: f64) -> Comparison {
        let ratio = if baseline > 0.0 { parley / baseline } else { 0.0 };
        Comparison {
            parley: round2(parley),
            baseline: round2(baseline),
            ratio: round2(ratio),
            target_ratio,
        }
    }

    /// Whether the ratio reaches the target.
    pub fn meets_target(&self) -> bool {
        self.ratio >= self.target_ratio
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Everything one `bench` run measured, keyed as `--json` writes it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    /// `http_read`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_read: Option<HttpReadFigures>,
    /// `messages`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageFigures>,
    /// `latency`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
    /// `memory`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFigures>,
    /// `fanout`, when it ran: `n10`, `n100`, `n1000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutReport>,
    /// `storm`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormFigures>,
    /// `peer`, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerFigures>,
    /// CPU cores of the machine that ran everything (figures scale with it).
    pub cpu_cores: usize,
    /// How long each side of each measurement ran, in seconds.
    pub duration_s: f64,
}

impl BenchReport {
    /// One line per measurement: figure, baseline, ratio, target.
    pub fn render_table(&self) -> String {
        let mut lines = vec![format!(
            "parley-sim bench: {} s per side, {} cores, everything on this machine",
            self.duration_s, self.cpu_cores
        )];
        let mut row = |name: &str, unit: &str, comparison: &Comparison| {
            lines.push(format!(
                "  {name:<16} parley {:>10.1} {unit}   baseline {:>10.1} {unit}   ratio {:>5.2}   target >= {:.2}  {}",
                comparison.parley,
                comparison.baseline,
                comparison.ratio,
                comparison.target_ratio,
                if comparison.meets_target() { "met" } else { "MISSED" }
            ));
        };
        if let Some(http_read) = &self.http_read {
            for (concurrency, comparison) in &http_read.by_concurrency {
                row(&format!("http_read {concurrency}"), "/s", comparison);
            }
        }
        if let Some(messages) = &self.messages {
            row("messages", "/s", &messages.comparison);
        }
        if let Some(latency) = &self.latency {
            lines.push(format!(
                "  latency          p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms at {:.0} msg/s   baseline commit p50 {:.2} ms, p99 {:.2} ms   target p99 <= {:.0} ms  {}",
                latency.p50_ms,
                latency.p99_ms,
                latency.max_ms,
                latency.offered_per_s,
                latency.baseline_commit_p50_ms,
                latency.baseline_commit_p99_ms,
                latency.target_p99_ms,
                if latency.meets_target() { "met" } else { "MISSED" }
            ));
            if let Some(fixed) = &latency.fixed_rate {
                lines.push(format!(
                    "  latency fixed    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms at {:.0} msg/s   target p99 <= {:.0} ms  {}",
                    fixed.p50_ms,
                    fixed.p99_ms,
                    fixed.max_ms,
                    fixed.rate,
                    fixed.target_p99_ms,
                    if fixed.meets_target() { "met" } else { "MISSED" }
                ));
            }
            if let Some(breakdown) = &latency.hops {
                lines.push(format!(
                    "                   hop by hop, over the {} of {} messages whose trace arrived whole:",
                    breakdown.traced, breakdown.delivered
                ));
                for hop in &breakdown.hops {
                    lines.push(format!(
                        "                   {:<18} p50 {:>7.2} ms  p99 {:>7.2} ms  mean {:>7.2} ms   {}",
                        hop.hop, hop.p50_ms, hop.p99_ms, hop.mean_ms, hop.covers
                    ));
                }
                lines.push("                   the transaction taken apart:".to_owned());
                for part in &breakdown.transaction_parts {
                    lines.push(format!(
                        "                     {:<16} p50 {:>7.2} ms  p99 {:>7.2} ms  mean {:>7.2} ms   {}",
                        part.hop, part.p50_ms, part.p99_ms, part.mean_ms, part.covers
                    ));
                }
            }
        }
        if let Some(memory) = &self.memory {
            lines.push(format!(
                "  memory           {:.0} bytes per idle websocket ({} sockets, {} users, node-1 RSS {:.1} → {:.1} MiB)   reference Centrifugo ~{:.0}, Phoenix ~{:.0} bytes   ratio to Centrifugo {:.2}   target <= {:.0} bytes  {}",
                memory.bytes_per_conn,
                memory.connections,
                memory.users,
                memory.rss_before_bytes as f64 / MIB,
                memory.rss_after_bytes as f64 / MIB,
                memory.reference_centrifugo_bytes_per_conn,
                memory.reference_phoenix_bytes_per_conn,
                memory.bytes_per_conn / memory.reference_centrifugo_bytes_per_conn,
                memory.target_bytes_per_conn,
                if memory.meets_target() { "met" } else { "MISSED" }
            ));
            if memory.connections < memory.connections_requested {
                lines.push(format!(
                    "                   (asked for {} sockets; the open files limits allowed {})",
                    memory.connections_requested, memory.connections
                ));
            }
        }
        for (size, fanout) in self.fanout.iter().flatten() {
            lines.push(format!(
                "  fanout {size:<9} {:>5} members, {} messages: {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms",
                fanout.members, fanout.messages, fanout.deliveries_per_s, fanout.p50_ms, fanout.p99_ms
            ));
        }
        if let Some(storm) = &self.storm {
            lines.push(format!(
                "  storm            {} of {} users resumed, {} (median {:.2} s), {} lost, {} duplicated, {} extra reconnects, peak database {:.0} statements/s   target all <= {:.0} s, 0 lost, 0 duplicated  {}",
                storm.resumed_users,
                storm.users,
                storm
                    .all_resumed_s
                    .map_or("not all".to_owned(), |seconds| format!("all within {seconds:.2} s")),
                storm.median_resumed_s,
                storm.lost,
                storm.duplicates,
                storm.extra_reconnects,
                storm.peak_db_queries_per_s,
                storm.target_all_resumed_s,
                if storm.meets_target() { "met" } else { "MISSED" }
            ));
        }
        if let Some(peer) = &self.peer {
            lines.extend(peer.render());
        }
        lines.join("\n") + "\n"
    }

    /// The report as pretty-printed JSON (what `--json` writes).
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

/// Runs the chosen benchmarks against `cluster`.
pub async fn run_benchmarks(cluster: &LocalCluster, config: &BenchConfig) -> anyhow::Result<BenchReport> {
    for name in &config.names {
        if !BENCHMARKS.contains(&name.as_str()) {
            bail!("unknown benchmark {name:?} (known: {})", BENCHMARKS.join(", "));
        }
    }
    let wanted = |name: &str| config.names.is_empty() || config.names.iter().any(|wanted| wanted == name);
    let mut report = BenchReport {
        cpu_cores: std::thread::available_parallelism().map_or(0, usize::from),
        duration_s: config.duration.as_secs_f64(),
        ..BenchReport::default()
    };
    if wanted("http_read") {
        report.http_read = Some(http_read::measure(cluster, config.duration).await?);
    }
    if wanted("messages") {
        report.messages = Some(messages::measure(cluster, config.duration).await?);
    }
    if wanted("latency") {
        let offered = report
            .messages
            .as_ref()
            .map_or(LATENCY_DEFAULT_OFFERED_PER_S, |messages| messages.parley_per_s / 2.0);
        let traces = config.hop_traces.as_deref();
        let fixed_rate = config.latency_fixed_rate_per_s;
        report.latency = Some(latency::measure(cluster, config.duration, offered, fixed_rate, traces).await?);
    }
    if wanted("memory") {
        report.memory = Some(idle_connections::measure(cluster, config.memory_connections).await?);
    }
    if wanted("fanout") {
        report.fanout = Some(fanout::measure(cluster).await?);
    }
    if wanted("storm") {
        report.storm = Some(reconnect_storm::measure(cluster, config.storm_users).await?);
    }
    if config.names.iter().any(|name| name == "peer") {
        let mut settings = PeerSettings::new(config.duration);
        settings.pairs = config.peer_pairs;
        settings.idle_connections = config.peer_idle_connections;
        settings.max_offered_per_s = config.peer_max_offered_per_s;
        if config.latency_fixed_rate_per_s > 0.0 {
            settings.fixed_rate_per_s = config.latency_fixed_rate_per_s;
        }
        report.peer = Some(peer::measure(cluster, &settings).await?);
    }
    Ok(report)
}

/// `c10`, `c64`: the JSON key of a concurrency.
fn concurrency_key(concurrency: usize) -> String {
    format!("c{concurrency}")
}

type ByConcurrency = BTreeMap<String, Comparison>;
