//! Where a message's delivery latency goes, hop by hop: the nodes' spans (collected over
//! OTLP by [`TraceCollector`](parley_launcher::trace_collector::TraceCollector)) joined with the
//! benchmark clients' own send and receive times.
//!
//! A message is found in the traces by its id, which the recipient's `socket.deliver`
//! span carries; the rest of its trace (the sender's `ws.frame`, the chat's
//! `chat.commit` and `chat.deliver`, the recipient node's `cluster.deliver`) hangs off
//! the same trace id. Every process runs on this machine, so the clients' wall clock and
//! the nodes' span timestamps are one clock.
//!
//! ```text
//! client send ─► ws.frame ─► chat.commit start ─► chat.deliver ─► cluster.deliver ─► socket.deliver ─► client receive
//!   inbound        chat queue      transaction        cluster hop       recipient session     outbound
//! ```

use std::collections::HashMap;

use serde::Serialize;

use crate::load::latency_samples::round_ms;
use parley_launcher::trace_collector::CollectedSpan;

/// One message as the benchmark's clients saw it, on the wall clock.
#[derive(Debug, Clone)]
pub struct ClientTiming {
    pub message_id: String,
    pub sent_unix_ns: u64,
    pub received_unix_ns: u64,
}

/// One hop's share of the delivery latency over the messages traced through it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HopFigures {
    /// The hop's name (between two marks on a message's path).
    pub hop: &'static str,
    /// What the time between the hop's two marks is spent on.
    pub covers: &'static str,
    /// Messages measured through this hop.
    pub messages: u64,
    /// Median time in the hop, ms.
    pub p50_ms: f64,
    /// 99th percentile time in the hop, ms.
    pub p99_ms: f64,
    /// Mean time in the hop, ms.
    pub mean_ms: f64,
}

/// The hops of the messages whose whole trace arrived, in the order a message takes them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HopBreakdown {
    /// Messages delivered in the measurement.
    pub delivered: u64,
    /// Of those, messages whose trace arrived complete (the nodes drop spans when their
    /// export queue is full).
    pub traced: u64,
    /// One entry per hop, in path order.
    pub hops: Vec<HopFigures>,
    /// The `transaction` hop taken apart, over the same messages.
    pub transaction_parts: Vec<HopFigures>,
}

/// The hops, each from one mark of a message's journey to the next.
const HOPS: [(&str, &str); 7] = [
    (
        "inbound",
        "client library → nginx → node → reader task → session actor (send to ws.frame)",
    ),
    (
        "chat queue",
        "waiting in the chat actor's queue for the transaction (ws.frame to chat.commit)",
    ),
    (
        "transaction",
        "the batch's transaction on the master, commit and fsync included (chat.commit)",
    ),
    (
        "after commit",
        "members lookup and fan-out after the commit (chat.commit end to chat.deliver)",
    ),
    (
        "cluster hop",
        "to the recipient's node over the actor cluster (chat.deliver to cluster.deliver)",
    ),
    (
        "recipient session",
        "to the recipient's session actor (cluster.deliver to socket.deliver)",
    ),
    (
        "outbound",
        "outbound queue → writer task → nginx → client library (socket.deliver to receive)",
    ),
];

/// The parts of the `transaction` hop, each a span of the database layer.
const TRANSACTION_PARTS: [(&str, &str); 4] = [
    ("connection", "waiting for a pooled master connection (db.acquire)"),
    (
        "statements",
        "START TRANSACTION, the chat's row lock, members, INSERT, UPDATE (db.acquire end to db.commit)",
    ),
    ("commit", "COMMIT: binlog and redo log fsyncs (db.commit)"),
    (
        "binlog position",
        "reading the master's position for read-your-writes (db.commit_position)",
    ),
];

/// One traced cross-node message: the moments (nanoseconds since the epoch) it passed
/// each mark, in order, so that each hop is the gap between two neighbours.
struct TracedMessage {
    /// Sent, ws.frame, chat.commit start and end, chat.deliver, cluster.deliver,
    /// socket.deliver, received: the gaps are [`HOPS`].
    moments: [u64; HOPS.len() + 1],
    /// db.acquire start and end, db.commit start and end, db.commit_position end: the
    /// gaps are [`TRANSACTION_PARTS`].
    transaction_moments: [u64; TRANSACTION_PARTS.len() + 1],
}

/// The time between each moment and the next.
fn gaps_ns(moments: &[u64]) -> Vec<u64> {
    moments.windows(2).map(|pair| pair[1].saturating_sub(pair[0])).collect()
}

/// Joins `timings` with `spans`; only messages that crossed nodes and whose frame was
/// the first of its chat's transaction (the transaction's spans belong to that frame's
/// trace; the others only link to it) have every mark, and of those only the ones none
/// of whose spans the nodes dropped count.
pub fn break_down(spans: &[CollectedSpan], timings: &[ClientTiming]) -> HopBreakdown {
    let mut spans_by_trace: HashMap<&[u8], Vec<&CollectedSpan>> = HashMap::new();
    let mut trace_by_message: HashMap<&str, &[u8]> = HashMap::new();
    for span in spans {
        spans_by_trace.entry(&span.trace_id).or_default().push(span);
        if span.name == "socket.deliver" {
            if let Some(message_id) = span.attributes.get("message.id") {
                trace_by_message.insert(message_id, &span.trace_id);
            }
        }
    }
    let traced: Vec<TracedMessage> = timings
        .iter()
        .filter_map(|timing| {
            let trace = spans_by_trace.get(trace_by_message.get(timing.message_id.as_str())?)?;
            let named = |name: &str| trace.iter().find(|span| span.name == name);
            let (commit, acquire, db_commit) = (named("chat.commit")?, named("db.acquire")?, named("db.commit")?);
            Some(TracedMessage {
                moments: [
                    timing.sent_unix_ns,
                    named("ws.frame")?.start_unix_ns,
                    commit.start_unix_ns,
                    commit.end_unix_ns,
                    named("chat.deliver")?.start_unix_ns,
                    named("cluster.deliver")?.start_unix_ns,
                    named("socket.deliver")?.start_unix_ns,
                    timing.received_unix_ns,
                ],
                transaction_moments: [
                    acquire.start_unix_ns,
                    acquire.end_unix_ns,
                    db_commit.start_unix_ns,
                    db_commit.end_unix_ns,
                    named("db.commit_position")?.end_unix_ns,
                ],
            })
        })
        .collect();
    let hop_gaps: Vec<Vec<u64>> = traced.iter().map(|message| gaps_ns(&message.moments)).collect();
    let part_gaps: Vec<Vec<u64>> = traced
        .iter()
        .map(|message| gaps_ns(&message.transaction_moments))
        .collect();
    let column = |gaps: &[Vec<u64>], index: usize| gaps.iter().map(|row| row[index]).collect();
    HopBreakdown {
        delivered: timings.len() as u64,
        traced: traced.len() as u64,
        hops: HOPS
            .iter()
            .enumerate()
            .map(|(index, (hop, covers))| figures(hop, covers, column(&hop_gaps, index)))
            .collect(),
        transaction_parts: TRANSACTION_PARTS
            .iter()
            .enumerate()
            .map(|(index, (part, covers))| figures(part, covers, column(&part_gaps, index)))
            .collect(),
    }
}

fn figures(hop: &'static str, covers: &'static str, mut durations_ns: Vec<u64>) -> HopFigures {
    durations_ns.sort_unstable();
    HopFigures {
        hop,
        covers,
        messages: durations_ns.len() as u64,
        p50_ms: percentile_ms(&durations_ns, 0.50),
        p99_ms: percentile_ms(&durations_ns, 0.99),
        mean_ms: mean_ms(&durations_ns),
    }
}

fn percentile_ms(sorted_ns: &[u64], fraction: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_ns.len() as f64 * fraction).ceil() as usize).clamp(1, sorted_ns.len());
    round_ms(sorted_ns[rank - 1] as f64 / 1e6)
}

fn mean_ms(durations_ns: &[u64]) -> f64 {
    if durations_ns.is_empty() {
        return 0.0;
    }
    let total: u128 = durations_ns.iter().map(|&duration| u128::from(duration)).sum();
    round_ms(total as f64 / durations_ns.len() as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const MS: u64 = 1_000_000;

    fn span(trace: u8, name: &str, start_ms: u64, end_ms: u64, message_id: Option<&str>) -> CollectedSpan {
        CollectedSpan {
            trace_id: vec![trace; 16],
            span_id: vec![trace, start_ms as u8],
            parent_span_id: Vec::new(),
            name: name.to_owned(),
            instance: "node-1".to_owned(),
            service: "parley".to_owned(),
            attributes: message_id
                .map(|id| BTreeMap::from([("message.id".to_owned(), id.to_owned())]))
                .unwrap_or_default(),
            start_unix_ns: start_ms * MS,
            end_unix_ns: end_ms * MS,
        }
    }

    fn full_trace(trace: u8, message_id: &str, offset_ms: u64) -> Vec<CollectedSpan> {
        vec![
            span(trace, "ws.frame", offset_ms + 1, offset_ms + 2, None),
            span(trace, "chat.commit", offset_ms + 3, offset_ms + 7, None),
            span(trace, "db.acquire", offset_ms + 3, offset_ms + 4, None),
            span(trace, "db.commit", offset_ms + 5, offset_ms + 6, None),
            span(trace, "db.commit_position", offset_ms + 6, offset_ms + 7, None),
            span(trace, "chat.deliver", offset_ms + 8, offset_ms + 8, None),
            span(trace, "cluster.deliver", offset_ms + 10, offset_ms + 10, None),
            span(
                trace,
                "socket.deliver",
                offset_ms + 11,
                offset_ms + 11,
                Some(message_id),
            ),
        ]
    }

    #[test]
    fn each_hop_is_the_time_between_two_marks_of_the_same_message() {
        let spans = full_trace(1, "m-1", 0);
        let timings = [ClientTiming {
            message_id: "m-1".into(),
            sent_unix_ns: 0,
            received_unix_ns: 15 * MS,
        }];
        let breakdown = break_down(&spans, &timings);
        assert_eq!((breakdown.delivered, breakdown.traced), (1, 1));
        let p50s: Vec<(&str, f64)> = breakdown.hops.iter().map(|hop| (hop.hop, hop.p50_ms)).collect();
        assert_eq!(
            p50s,
            [
                ("inbound", 1.0),
                ("chat queue", 2.0),
                ("transaction", 4.0),
                ("after commit", 1.0),
                ("cluster hop", 2.0),
                ("recipient session", 1.0),
                ("outbound", 4.0),
            ]
        );
        let total: f64 = p50s.iter().map(|(_, ms)| ms).sum();
        assert_eq!(total, 15.0, "one message's hops add up to its latency");
        let parts: Vec<(&str, f64)> = breakdown
            .transaction_parts
            .iter()
            .map(|part| (part.hop, part.p50_ms))
            .collect();
        assert_eq!(
            parts,
            [
                ("connection", 1.0),
                ("statements", 1.0),
                ("commit", 1.0),
                ("binlog position", 1.0)
            ]
        );
    }

    #[test]
    fn messages_without_a_complete_trace_are_left_out() {
        let mut spans = full_trace(1, "complete", 0);
        // The second message's transaction span went to another frame's trace, the
        // third's commit span was dropped by its node, and the fourth's spans never
        // arrived.
        spans.extend(
            full_trace(2, "linked-only", 100)
                .into_iter()
                .filter(|span| span.name != "chat.commit"),
        );
        spans.extend(
            full_trace(3, "commit-dropped", 200)
                .into_iter()
                .filter(|span| span.name != "db.commit"),
        );
        let timings: Vec<ClientTiming> = ["complete", "linked-only", "commit-dropped", "never-exported"]
            .iter()
            .map(|id| ClientTiming {
                message_id: (*id).into(),
                sent_unix_ns: 0,
                received_unix_ns: 200 * MS,
            })
            .collect();
        let breakdown = break_down(&spans, &timings);
        assert_eq!((breakdown.delivered, breakdown.traced), (4, 1));
        assert!(breakdown.hops.iter().all(|hop| hop.messages == 1));
        assert!(breakdown.transaction_parts.iter().all(|part| part.messages == 1));
    }
}
