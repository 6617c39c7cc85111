//! The experiment's result: a JSON document (`--json`) and a table next to the seed's
//! own figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::fault_script::FaultRecord;
use super::master_watch::MasterChange;
use crate::load::chat_load::{ChatPlacement, DuplicateDelivery, LostMessage};
use crate::load::http_load::HttpProblem;

/// The seed's wrk run (10 connections, 60 s, one replica and one app instance stopped).
pub const SEED_REQUESTS: u64 = 100_102;
/// The seed's requests per second.
pub const SEED_REQUESTS_PER_SECOND: f64 = 1_666.75;
/// The seed's average latency, ms.
pub const SEED_LATENCY_AVERAGE_MS: f64 = 3.25;
/// The seed's failed (non-2xx) responses.
pub const SEED_NON_2XX: u64 = 3;
/// CPU cores of the seed's machine (a Ryzen 9).
pub const SEED_CPU_CORES: usize = 12;

/// Problems printed in the table; the JSON holds every one kept.
const PROBLEMS_IN_TABLE: usize = 10;

/// What ran: the load's shape and where the users were.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExperimentSettings {
    /// How long the load ran, in seconds.
    pub duration_s: f64,
    /// Concurrent HTTP loops (wrk's connections).
    pub http_connections: usize,
    /// Of which none are get-by-email: `POST /messenger/create-chat` loops.
    pub http_post_connections: usize,
    /// Websocket chat pairs (a sender and a recipient each).
    pub pairs: usize,
    /// Messages per second each pair's sender sends.
    pub message_rate_per_pair: f64,
    /// The nodes of the cluster.
    pub nodes: Vec<String>,
    /// Of the machine that ran everything (the seed's: 12).
    pub cpu_cores: usize,
    /// In every email this run signed up.
    pub run_tag: String,
    /// Which node each user's websocket landed on at the start.
    pub placement: ChatPlacement,
}

/// The HTTP load, wrk-style.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpSummary {
    /// Responses of any status.
    pub requests: u64,
    /// Responses per second over the load.
    pub rps: f64,
    /// Mean latency, ms.
    pub avg_ms: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest response, ms.
    pub max_ms: f64,
    /// Responses with a status other than 2xx (each one is a failure of the run).
    pub non_2xx: u64,
    /// Requests with no response: connection refused or reset, a body cut short, a timeout.
    pub errors: u64,
    /// Responses per serving node (by the `x-parley-node` header; answers without one,
    /// such as nginx's own, are not counted here).
    pub responses_by_node: BTreeMap<String, u64>,
    /// Responses to each kind of request (`get-by-email`, `create-chat`).
    pub responses_by_request: BTreeMap<String, u64>,
    /// Non-2xx responses by method (`GET`, `POST`): reads must never fail, writes may
    /// while the master is away.
    pub non_2xx_by_method: BTreeMap<String, u64>,
    /// The failed requests, grouped by status, node and detail.
    pub problems: Vec<HttpProblem>,
}

/// How long writes were unavailable after a fault on the master.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WritesSummary {
    /// From the first fault on the master (kill, stop, partition) to the first message
    /// acked after it, in seconds; until the end of the load when none was; null
    /// without such a fault.
    pub unavailable_s: Option<f64>,
    /// A message was acked after that fault.
    pub recovered: bool,
    /// Each time another server took writes (a promotion by the nodes), sampled every
    /// 250 ms.
    pub master_changes: Vec<MasterChange>,
}

impl WritesSummary {
    /// Acks within this long after the fault were committed before it (in flight).
    const IN_FLIGHT_S: f64 = 0.2;

    /// From the faults and the sorted ack times of a run that lasted `load_s`.
    pub fn from_acks(faults: &[FaultRecord], ack_times_s: &[f64], load_s: f64) -> WritesSummary {
        let first_master_fault = faults
            .iter()
            .filter(|fault| fault.name == "master" && fault.action != "start" && fault.error.is_none())
            .map(|fault| fault.executed_at_s)
            .min_by(f64::total_cmp);
        let Some(fault_at) = first_master_fault else {
            return WritesSummary {
                unavailable_s: None,
                recovered: true,
                master_changes: Vec::new(),
            };
        };
        let first_ack_after = ack_times_s
            .iter()
            .copied()
            .find(|acked_at| *acked_at > fault_at + Self::IN_FLIGHT_S);
        let round = |seconds: f64| (seconds * 1000.0).round() / 1000.0;
        WritesSummary {
            unavailable_s: Some(round(first_ack_after.unwrap_or(load_s) - fault_at)),
            recovered: first_ack_after.is_some(),
            master_changes: Vec::new(),
        }
    }
}

/// The websocket load: what was sent, acked, delivered, lost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebsocketSummary {
    /// Messages the senders queued.
    pub sent: u64,
    /// Messages the server acked.
    pub acked: u64,
    /// Refused for good by the server (never expected here).
    pub refused: u64,
    /// Neither acked nor refused when the wait for the stragglers ended.
    pub unacked: u64,
    /// Distinct messages the recipients' applications got.
    pub delivered: u64,
    /// Acked but never delivered to the recipient.
    pub lost: u64,
    /// Handed to a recipient's application twice (same id, or one client id stored twice).
    pub duplicates: u64,
    /// Copies the ChatClients dropped by id: at-least-once delivery doing its job.
    pub redeliveries_absorbed: u64,
    /// Two ids at one seq of a chat: a server bug if ever non-zero.
    pub sequence_conflicts: u64,
    /// Connections reopened after one was lost.
    pub reconnects: u64,
    /// Connection attempts that failed (an upgrade refused, by nginx's 503 when it found
    /// no node, or a timeout); each is followed by another attempt.
    pub connect_failures: u64,
    /// Reconnects that reached `replay-complete`.
    pub resumes: u64,
    /// Median time from a lost connection to the first traffic on the new one, ms.
    pub resume_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub resume_p99_ms: f64,
    /// Slowest resume, ms.
    pub resume_max_ms: f64,
    /// Median time from `send` to the recipient's application, ms.
    pub delivery_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub delivery_p99_ms: f64,
    /// Slowest delivery, ms.
    pub delivery_max_ms: f64,
    /// Every ack and every delivery arrived within the wait after the load.
    pub settled: bool,
    /// The lost messages (the first ones, by ack time).
    pub lost_messages: Vec<LostMessage>,
    /// The duplicate deliveries (the first ones, by time).
    pub duplicate_deliveries: Vec<DuplicateDelivery>,
}

/// One second of the run (the load, then the wait for stragglers).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelineSecond {
    /// Seconds from the start of the load.
    pub second: u64,
    /// Responses completed in this second.
    pub http_rps: u64,
    /// Requests without a response that ended in this second.
    pub http_errors: u64,
    /// Non-2xx responses in this second.
    pub http_non_2xx: u64,
    /// 99th percentile latency of this second's responses, ms.
    pub http_p99_ms: f64,
    /// Messages delivered to recipients' applications in this second.
    pub ws_delivered: u64,
}

/// Everything one failover experiment measured, as `--json` writes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailoverReport {
    /// What ran.
    pub experiment: ExperimentSettings,
    /// The HTTP load.
    pub http: HttpSummary,
    /// The websocket load.
    pub ws: WebsocketSummary,
    /// How long writes were unavailable after a fault on the master.
    pub writes: WritesSummary,
    /// The scripted faults and when they were carried out.
    pub faults: Vec<FaultRecord>,
    /// Second by second, for the plot.
    pub timeline: Vec<TimelineSecond>,
    /// non-2xx + errors + lost + duplicates + unacked + refused + sequence conflicts +
    /// faults that could not be carried out.
    pub failures: u64,
}

impl FailoverReport {
    /// Everything that counts as a failure: non-2xx, errors, lost, duplicate, unacked,
    /// refused, sequence conflicts and faults that could not be carried out.
    pub fn count_failures(http: &HttpSummary, ws: &WebsocketSummary, faults: &[FaultRecord]) -> u64 {
        let failed_faults = faults.iter().filter(|fault| fault.error.is_some()).count() as u64;
        http.non_2xx
            + http.errors
            + ws.lost
            + ws.duplicates
            + ws.unacked
            + ws.refused
            + ws.sequence_conflicts
            + failed_faults
    }

    /// Whether the run had no failure at all.
    pub fn passed(&self) -> bool {
        self.failures == 0
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The human-readable report for stdout.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let experiment = &self.experiment;
        let _ = writeln!(
            out,
            "parley-sim failover: {} s, {} http connections ({} posting), {} chat pairs at {} msg/s each, nodes {}",
            experiment.duration_s,
            experiment.http_connections + experiment.http_post_connections,
            experiment.http_post_connections,
            experiment.pairs,
            experiment.message_rate_per_pair,
            experiment.nodes.join(", ")
        );
        let placement: Vec<String> = experiment
            .placement
            .users_by_node
            .iter()
            .map(|(node, users)| format!("{users} on {node}"))
            .collect();
        let _ = writeln!(
            out,
            "chat users at the start: {}; {} of {} pairs span two nodes",
            placement.join(", "),
            experiment.placement.cross_node_pairs,
            experiment.pairs
        );
        self.render_faults(&mut out);
        self.render_http(&mut out);
        self.render_websocket(&mut out);
        self.render_verdict(&mut out);
        out
    }

    fn render_faults(&self, out: &mut String) {
        let _ = writeln!(out, "\nfaults");
        if self.faults.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for fault in &self.faults {
            let outcome = match &fault.error {
                None => format!("done at {:.1} s", fault.completed_at_s),
                Some(error) => format!("FAILED: {error}"),
            };
            let _ = writeln!(
                out,
                "  {:>6.1} s  {:<5} {:<10} {outcome}",
                fault.executed_at_s, fault.action, fault.name
            );
        }
        if let Some(unavailable_s) = self.writes.unavailable_s {
            let back = if self.writes.recovered {
                "until the first ack after the fault"
            } else {
                "and not back by the end of the load"
            };
            let _ = writeln!(out, "  writes unavailable {unavailable_s:.1} s ({back})");
        }
        for change in &self.writes.master_changes {
            let _ = writeln!(out, "  {:>6.1} s  {} takes writes", change.at_s, change.master);
        }
    }

    fn render_http(&self, out: &mut String) {
        let http = &self.http;
        let row = |out: &mut String, label: &str, seed: String, parley: String| {
            let _ = writeln!(out, "  {label:<34} {seed:>14}   {parley:>22}");
        };
        let _ = writeln!(
            out,
            "\nhttp: get-by-email (and create-chat posts, if any) through nginx"
        );
        row(out, "", "seed (wrk)".into(), "parley".into());
        row(
            out,
            "cpu cores (everything on one machine)",
            SEED_CPU_CORES.to_string(),
            self.experiment.cpu_cores.to_string(),
        );
        row(out, "requests", thousands(SEED_REQUESTS), thousands(http.requests));
        row(
            out,
            "requests/s",
            format!("{SEED_REQUESTS_PER_SECOND:.2}"),
            format!("{:.2}", http.rps),
        );
        row(
            out,
            "latency avg",
            format!("{SEED_LATENCY_AVERAGE_MS:.2} ms"),
            format!("{:.2} ms", http.avg_ms),
        );
        row(
            out,
            "latency p50 / p90 / p99",
            "-".into(),
            format!("{:.2} / {:.2} / {:.2} ms", http.p50_ms, http.p90_ms, http.p99_ms),
        );
        row(out, "latency max", "-".into(), format!("{:.2} ms", http.max_ms));
        row(
            out,
            "non-2xx responses",
            SEED_NON_2XX.to_string(),
            http.non_2xx.to_string(),
        );
        row(out, "connection errors", "-".into(), http.errors.to_string());
        let by_node: Vec<String> = http
            .responses_by_node
            .iter()
            .map(|(node, count)| format!("{node} {}", thousands(*count)))
            .collect();
        let _ = writeln!(out, "  answered by: {}", by_node.join(", "));
        if http.responses_by_request.len() > 1 {
            let by_request: Vec<String> = http
                .responses_by_request
                .iter()
                .map(|(request, count)| format!("{request} {}", thousands(*count)))
                .collect();
            let _ = writeln!(out, "  answers by request: {}", by_request.join(", "));
        }
        for problem in http.problems.iter().take(PROBLEMS_IN_TABLE) {
            let status = problem
                .status
                .map_or("no response".to_owned(), |status| status.to_string());
            let node = problem.node.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "  ! {} x {status} from {node} between {:.2} s and {:.2} s: {}",
                thousands(problem.count),
                problem.first_at_s,
                problem.last_at_s,
                problem.detail.trim()
            );
        }
    }

    fn render_websocket(&self, out: &mut String) {
        let ws = &self.ws;
        let row = |out: &mut String, label: &str, value: String| {
            let _ = writeln!(out, "  {label:<34} {value:>14}");
        };
        let _ = writeln!(out, "\nwebsocket chat (the seed measured none)");
        row(out, "sent", thousands(ws.sent));
        row(out, "acked", thousands(ws.acked));
        row(out, "refused / unacked", format!("{} / {}", ws.refused, ws.unacked));
        row(out, "delivered to recipients", thousands(ws.delivered));
        row(out, "lost (acked, never delivered)", ws.lost.to_string());
        row(out, "duplicates (handed over twice)", ws.duplicates.to_string());
        row(out, "redeliveries absorbed by id", ws.redeliveries_absorbed.to_string());
        row(out, "sequence conflicts", ws.sequence_conflicts.to_string());
        row(out, "reconnects", ws.reconnects.to_string());
        row(out, "failed connection attempts", ws.connect_failures.to_string());
        row(
            out,
            "resume p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                ws.resume_p50_ms, ws.resume_p99_ms, ws.resume_max_ms
            ),
        );
        row(
            out,
            "send to delivery p50 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                ws.delivery_p50_ms, ws.delivery_p99_ms, ws.delivery_max_ms
            ),
        );
        if !ws.settled {
            let _ = writeln!(
                out,
                "  ! the wait after the load ended with acks or deliveries still missing"
            );
        }
        for lost in ws.lost_messages.iter().take(PROBLEMS_IN_TABLE) {
            let _ = writeln!(
                out,
                "  ! lost: pair {} chat {} seq {} id {} client id {} (acked at {:.2} s)",
                lost.pair, lost.chat_id, lost.seq, lost.id, lost.client_id, lost.acked_at_s
            );
        }
        for duplicate in ws.duplicate_deliveries.iter().take(PROBLEMS_IN_TABLE) {
            let _ = writeln!(
                out,
                "  ! duplicate: pair {} seq {} id {} (first delivered as {}) client id {} at {:.2} s",
                duplicate.pair,
                duplicate.seq,
                duplicate.id,
                duplicate.first_id,
                duplicate.client_id.as_deref().unwrap_or("-"),
                duplicate.at_s
            );
        }
    }

    fn render_verdict(&self, out: &mut String) {
        if self.passed() {
            let _ = writeln!(out, "\nresult: pass (no failed request, nothing lost, nothing twice)");
        } else {
            let _ = writeln!(
                out,
                "\nresult: FAIL, {} failures (non-2xx {}, errors {}, lost {}, duplicates {}, unacked {}, refused {}, sequence conflicts {}, failed faults {})",
                self.failures,
                self.http.non_2xx,
                self.http.errors,
                self.ws.lost,
                self.ws.duplicates,
                self.ws.unacked,
                self.ws.refused,
                self.ws.sequence_conflicts,
                self.faults.iter().filter(|fault| fault.error.is_some()).count()
            );
        }
    }
}

/// 100102 → "100,102".
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).expect("decimal digits are ascii"))
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(100_102), "100,102");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}

#[cfg(test)]
mod writes_tests {
    use super::*;

    fn fault(action: &str, name: &str, at_s: f64) -> FaultRecord {
        FaultRecord {
            at_s,
            action: action.into(),
            name: name.into(),
            executed_at_s: at_s,
            completed_at_s: at_s,
            error: None,
        }
    }

    #[test]
    fn writes_are_unavailable_from_the_master_fault_to_the_first_ack_committed_after_it() {
        // Acks every 0.1 s until the kill at 4 s (one still in flight at 4.05 s), then
        // none until the master is back at 9.5 s.
        let mut acks: Vec<f64> = (1..=40).map(|tenth| f64::from(tenth) / 10.0).collect();
        acks.extend([4.05, 9.5, 9.6]);
        let faults = [
            fault("kill", "replica-1", 2.0),
            fault("kill", "master", 4.0),
            fault("start", "master", 9.0),
        ];
        let writes = WritesSummary::from_acks(&faults, &acks, 20.0);
        assert_eq!(
            writes,
            WritesSummary {
                unavailable_s: Some(5.5),
                recovered: true,
                master_changes: Vec::new(),
            }
        );
    }

    #[test]
    fn writes_never_back_count_until_the_end_and_no_master_fault_counts_nothing() {
        let acks = [1.0, 2.0];
        let kill = [fault("kill", "master", 3.0)];
        assert_eq!(
            WritesSummary::from_acks(&kill, &acks, 20.0),
            WritesSummary {
                unavailable_s: Some(17.0),
                recovered: false,
                master_changes: Vec::new(),
            }
        );
        let other = [fault("kill", "node-1", 3.0)];
        assert_eq!(WritesSummary::from_acks(&other, &acks, 20.0).unavailable_s, None);
    }
}
