//! `peer`: Parley and ejabberd side by side, in one run, on the same machine, the same
//! MariaDB master and the same nginx configuration, under the same load.
//!
//! For each system, in turn (the other one idle or not yet started):
//!
//! ```text
//! fixed     pairs sending at a fixed rate: delivery latency p50, p99
//! max       the same pairs offered more than either sustains: delivered messages/s
//! memory    idle signed-in connections on one node: its RSS growth per connection
//! kill      the fixed rate again, node 2 SIGKILLed halfway: acked messages that never
//!           reached their recipient, and how long the users it held took to be back
//! ```
//!
//! Each pair's sender starts on one node and its recipient on the other, so every
//! message crosses the cluster; reconnects go through nginx. Why this entry point, what
//! each system promises when it acks, and how each client catches up: BENCHMARKS.md,
//! "Side by side with ejabberd". The ejabberd cluster is [`EjabberdPeer`]; its client is
//! [`xmpp_socket`], its load [`xmpp_pairs`].

mod ejabberd_side;
mod parley_side;
mod phase_cost;
mod xmpp_idle;
mod xmpp_pairs;
mod xmpp_recipient;
mod xmpp_socket;

use std::time::Duration;

use serde::Serialize;

use crate::load::latency_samples::{round_ms, LatencySamples};
use parley_launcher::ejabberd_peer::EjabberdPeer;
use parley_launcher::LocalCluster;
use phase_cost::PhaseCost;

/// How `peer` loads both systems.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Sender–recipient pairs, each split over the two nodes.
    pub pairs: usize,
    /// Messages per second across all pairs in the fixed-rate and kill phases.
    pub fixed_rate_per_s: f64,
    /// Messages per second offered across all pairs in the max phase: more than either
    /// system sustains here, so what arrives is its limit.
    pub max_offered_per_s: f64,
    /// How long each phase sends.
    pub duration: Duration,
    /// Idle connections of the memory phase.
    pub idle_connections: usize,
    /// Messages a sender may have written and not yet acked; the rest wait in its client.
    /// Without a bound, an overloaded server's backlog would be measured, not its rate.
    pub max_in_flight: usize,
}

impl PeerSettings {
    /// 20 pairs (as `messages`), 1,000 messages a second (as `latency.fixed_rate`),
    /// 10,000 a second offered, 5,000 idle connections.
    pub fn new(duration: Duration) -> PeerSettings {
        PeerSettings {
            pairs: 20,
            fixed_rate_per_s: 1000.0,
            max_offered_per_s: 10_000.0,
            duration,
            idle_connections: 5000,
            max_in_flight: 32,
        }
    }
}

/// One system's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerSideFigures {
    /// Messages delivered per second in the max phase (first arrivals at recipients).
    pub msgs_per_s: f64,
    /// Median delivery latency at the fixed rate, send to the recipient's client, ms.
    pub p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub p99_ms: f64,
    /// 99th percentile in the max phase, where queues are full, ms.
    pub p99_ms_at_max: f64,
    /// Resident memory growth of the measured node per idle signed-in connection.
    pub bytes_per_conn: f64,
    /// Idle connections that figure was measured with.
    pub idle_connections: usize,
    /// Messages acked to their sender in the kill phase that never reached the recipient.
    pub lost_in_kill: u64,
    /// Messages acked in the kill phase.
    pub acked_in_kill: u64,
    /// The slowest user's time from losing its connection to being back (signed in again
    /// and, for a recipient, caught up), in seconds.
    pub resume_s: f64,
    /// The median user's time, in seconds.
    pub resume_median_s: f64,
    /// Connections lost in the kill phase.
    pub reconnects_in_kill: u64,
    /// CPU time of the system's two node processes per message delivered in the max
    /// phase, ms (nginx, MariaDB and the load generator not included).
    pub cpu_ms_per_msg: f64,
    /// Statements the master executed per message delivered in the max phase.
    pub db_statements_per_msg: f64,
    /// Transactions the master committed to its binlog per message delivered in the max
    /// phase.
    pub db_transactions_per_msg: f64,
    /// Rows the master wrote per message delivered in the max phase.
    pub db_rows_written_per_msg: f64,
    /// ejabberd only: of the messages counted in `lost_in_kill`, how many its archive
    /// tables hold for the sender and for the recipient (read after the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_in_kill_archived: Option<LostInArchives>,
}

/// Where messages acked and never delivered are, in ejabberd's archive tables.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LostInArchives {
    /// In the sender's own archive.
    pub senders: u64,
    /// In the recipient's archive (a catch-up would have found them).
    pub recipients: u64,
}

/// `peer`: both systems' figures and how they compare.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerFigures {
    /// Parley's figures.
    pub parley: PeerSideFigures,
    /// ejabberd's figures.
    pub ejabberd: PeerSideFigures,
    /// `parley.msgs_per_s / ejabberd.msgs_per_s`.
    pub throughput_ratio: f64,
    /// Pairs in every phase.
    pub pairs: usize,
    /// Messages per second of the fixed-rate and kill phases.
    pub fixed_rate_per_s: f64,
    /// Messages per second offered in the max phase.
    pub max_offered_per_s: f64,
}

impl PeerFigures {
    /// The side-by-side table.
    pub fn render(&self) -> Vec<String> {
        let (parley, ejabberd) = (&self.parley, &self.ejabberd);
        let row =
            |label: String, parley: String, ejabberd: String| format!("    {label:<40} {parley:>14} {ejabberd:>14}");
        vec![
            format!(
                "  peer             {} pairs split over both nodes, through nginx; fixed {:.0} msg/s, max offered {:.0} msg/s",
                self.pairs, self.fixed_rate_per_s, self.max_offered_per_s
            ),
            row("".into(), "parley".into(), "ejabberd".into()),
            row(
                format!("delivered msgs/s at max (ratio {:.2})", self.throughput_ratio),
                format!("{:.0}", parley.msgs_per_s),
                format!("{:.0}", ejabberd.msgs_per_s),
            ),
            row(
                format!("p50 / p99 ms at {:.0} msg/s", self.fixed_rate_per_s),
                format!("{:.1} / {:.1}", parley.p50_ms, parley.p99_ms),
                format!("{:.1} / {:.1}", ejabberd.p50_ms, ejabberd.p99_ms),
            ),
            row(
                "p99 ms at max".into(),
                format!("{:.1}", parley.p99_ms_at_max),
                format!("{:.1}", ejabberd.p99_ms_at_max),
            ),
            row(
                "at max, per message: node CPU ms".into(),
                format!("{:.2}", parley.cpu_ms_per_msg),
                format!("{:.2}", ejabberd.cpu_ms_per_msg),
            ),
            row(
                "  master statements / transactions / rows".into(),
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    parley.db_statements_per_msg, parley.db_transactions_per_msg, parley.db_rows_written_per_msg
                ),
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    ejabberd.db_statements_per_msg, ejabberd.db_transactions_per_msg, ejabberd.db_rows_written_per_msg
                ),
            ),
            row(
                format!("bytes per idle connection ({})", parley.idle_connections),
                format!("{:.0}", parley.bytes_per_conn),
                format!("{:.0}", ejabberd.bytes_per_conn),
            ),
            row(
                "node 2 killed: acked, never delivered".into(),
                format!("{} of {}", parley.lost_in_kill, parley.acked_in_kill),
                format!("{} of {}", ejabberd.lost_in_kill, ejabberd.acked_in_kill),
            ),
            row(
                "  of those, in the sender's / recipient's archive".into(),
                "".into(),
                self.ejabberd
                    .lost_in_kill_archived
                    .as_ref()
                    .map_or(String::new(), |found| format!("{} / {}", found.senders, found.recipients)),
            ),
            row(
                "node 2 killed: users back, slowest / median s".into(),
                format!("{:.2} / {:.2}", parley.resume_s, parley.resume_median_s),
                format!("{:.2} / {:.2}", ejabberd.resume_s, ejabberd.resume_median_s),
            ),
        ]
    }
}

/// Runs the phases on Parley (`cluster`), then starts ejabberd beside it on the same
/// master and runs them again there.
pub async fn measure(cluster: &LocalCluster, settings: &PeerSettings) -> anyhow::Result<PeerFigures> {
    let parley = parley_side::measure(cluster, settings).await?;
    tracing::info!(?parley, "peer: parley measured; starting ejabberd");
    let peer = EjabberdPeer::start(&cluster.servers, cluster.state_dir()).await?;
    let ejabberd = ejabberd_side::measure(&peer, &cluster.servers.root_url("master"), settings).await;
    peer.shutdown().await;
    let ejabberd = ejabberd?;
    Ok(PeerFigures {
        throughput_ratio: round2(parley.msgs_per_s / ejabberd.msgs_per_s.max(f64::EPSILON)),
        parley,
        ejabberd,
        pairs: settings.pairs,
        fixed_rate_per_s: settings.fixed_rate_per_s,
        max_offered_per_s: settings.max_offered_per_s,
    })
}

/// What a load phase measured, whichever system ran it.
#[derive(Debug, Default)]
struct PhaseOutcome {
    delivered_per_s: f64,
    cost: PhaseCost,
    delivery_times: LatencySamples,
    acked: u64,
    lost: u64,
    resume_times: LatencySamples,
    reconnects: u64,
}

/// Puts one system's three load phases and its memory figure together; fails when a
/// phase without faults lost anything (its figures would not be a working system's).
fn side_figures(
    system: &str,
    mut fixed: PhaseOutcome,
    mut max: PhaseOutcome,
    mut kill: PhaseOutcome,
    bytes_per_conn: f64,
    idle_connections: usize,
) -> anyhow::Result<PeerSideFigures> {
    for (phase, outcome) in [("fixed-rate", &fixed), ("max-rate", &max)] {
        anyhow::ensure!(
            outcome.lost == 0 && outcome.acked > 0,
            "{system}'s {phase} phase: {} of {} acked messages never arrived",
            outcome.lost,
            outcome.acked
        );
    }
    anyhow::ensure!(kill.acked > 0, "{system}'s kill phase acked nothing");
    anyhow::ensure!(
        kill.reconnects > 0 && !kill.resume_times.is_empty(),
        "{system}'s kill phase saw no user lose its connection and come back"
    );
    Ok(PeerSideFigures {
        msgs_per_s: max.delivered_per_s.round(),
        p50_ms: round_ms(fixed.delivery_times.percentile_ms(0.50)),
        p99_ms: round_ms(fixed.delivery_times.percentile_ms(0.99)),
        p99_ms_at_max: round_ms(max.delivery_times.percentile_ms(0.99)),
        bytes_per_conn: bytes_per_conn.round(),
        idle_connections,
        lost_in_kill: kill.lost,
        acked_in_kill: kill.acked,
        resume_s: round2(kill.resume_times.max_ms() / 1000.0),
        resume_median_s: round2(kill.resume_times.percentile_ms(0.50) / 1000.0),
        reconnects_in_kill: kill.reconnects,
        cpu_ms_per_msg: round2(max.cost.per_message(max.cost.cpu_s * 1000.0)),
        db_statements_per_msg: round2(max.cost.per_message(max.cost.statements as f64)),
        db_transactions_per_msg: round2(max.cost.per_message(max.cost.transactions as f64)),
        db_rows_written_per_msg: round2(max.cost.per_message(max.cost.rows_written as f64)),
        lost_in_kill_archived: None,
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
