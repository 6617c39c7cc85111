//! Prometheus metrics of one node, in a registry of its own (no process-global state:
//! several nodes or tests in one process never mix their numbers).
//!
//! Counters are bumped where things happen; gauges that mirror state kept elsewhere
//! (sessions, endpoint health, cluster members) are set when `/metrics` is scraped.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route pattern.
    pub http_request_seconds: HistogramVec,
    /// Open websocket sessions (set at scrape time).
    pub websocket_sessions: IntGauge,
    /// Websocket frames received from clients.
    pub websocket_frames_in: IntCounter,
    /// Websocket text frames written to clients (pings not counted).
    pub websocket_frames_out: IntCounter,
    /// Websockets closed because nothing arrived from the client within the idle timeout.
    pub websocket_silent_closes: IntCounter,
    /// Messages newly stored by this node's commits.
    pub messages_committed: IntCounter,
    /// Messages refused because their sender passed its send rate.
    pub messages_rate_limited: IntCounter,
    /// Deliveries handed to sessions here (`local`) or sent to a peer (`remote`, one per hop).
    pub messages_delivered: IntCounterVec,
    /// Connections that replayed pending messages, and how many messages they replayed.
    pub resume_replays: IntCounter,
    /// Messages those connections replayed.
    pub resume_replayed_messages: IntCounter,
    /// Messages a live session found missing below ones it had sent (a node died between
    /// its commit and its delivery) and sent from the database.
    pub delivery_gaps_repaired: IntCounter,
    /// Master transactions that committed chats' messages and cursor moves (a group each).
    pub message_commit_transactions: IntCounter,
    /// Chats' commits and cursor moves those transactions carried: divided by the
    /// transactions, the mean group size.
    pub message_commit_items: IntCounter,
    /// Chats' commits and cursor moves waiting for a free commit slot.
    pub message_commits_waiting: IntGauge,
    /// Database queries by endpoint, kind (read, write) and outcome (ok, unavailable, error).
    pub database_queries: IntCounterVec,
    /// 1 when the endpoint is considered healthy (set at scrape time).
    pub database_endpoint_healthy: IntGaugeVec,
    /// Replicas the master reports as acknowledging commits (semi-synchronous
    /// replication), as of the last probe.
    pub database_semi_sync_replicas: IntGauge,
    /// Commits the master returned without any replica's acknowledgement since it
    /// started; stays 0 unless semi-synchronous replication was turned off or fell back.
    pub database_semi_sync_unacknowledged_commits: IntGauge,
    /// 1 while this node refuses writes at once: the master is unreachable, or no
    /// replica would acknowledge them.
    pub database_writes_blocked: IntGauge,
    /// Promotions, repoints and demotions this node carried out (`kind`), and actions
    /// that failed (`outcome`).
    pub database_failover_actions: IntCounterVec,
    /// Times this node's writes moved to another database server.
    pub database_master_changes: IntCounter,
    /// Live cluster members, this node included (set at scrape time).
    pub cluster_members: IntGauge,
    /// Children restarted by the root supervisor.
    pub actor_restarts: IntCounter,
    /// Sessions and chats that failed (panicked or returned an error), by kind.
    pub actor_failures: IntCounterVec,
    /// Spans dropped because the export queue was full (the collector absent or slow).
    pub trace_spans_dropped: IntCounter,
    /// Span batches the collector did not take (refused, unreachable, timed out).
    pub trace_exports_failed: IntCounter,
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are fixed and distinct, so registering can only fail on a programming error.
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    /// Every metric at zero, in a registry of its own (so two nodes in one test process do
    /// not collide).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str| registered(&registry, IntCounter::new(name, help).expect("valid metric"));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help).expect("valid metric"));
        Metrics {
            http_requests: counter_vec(
                "parley_http_requests_total",
                "HTTP requests by route, method and status",
                &["route", "method", "status"],
            ),
            http_request_seconds: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("parley_http_request_duration_seconds", "HTTP request latency by route")
                        .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            websocket_sessions: gauge("parley_websocket_sessions", "open websocket sessions"),
            websocket_frames_in: counter("parley_websocket_frames_in_total", "websocket frames received"),
            websocket_frames_out: counter("parley_websocket_frames_out_total", "websocket frames sent"),
            websocket_silent_closes: counter(
                "parley_websocket_silent_closes_total",
                "websockets closed because the client sent nothing within the idle timeout",
            ),
            messages_committed: counter("parley_messages_committed_total", "messages newly stored by this node"),
            messages_rate_limited: counter(
                "parley_messages_rate_limited_total",
                "messages refused because their sender passed its send rate",
            ),
            messages_delivered: counter_vec(
                "parley_messages_delivered_total",
                "deliveries to local sessions, and hops to peers",
                &["scope"],
            ),
            resume_replays: counter(
                "parley_resume_replays_total",
                "connections that replayed pending messages",
            ),
            resume_replayed_messages: counter(
                "parley_resume_replayed_messages_total",
                "messages replayed to reconnecting users",
            ),
            delivery_gaps_repaired: counter(
                "parley_delivery_gaps_repaired_total",
                "messages a live session missed and read from the database",
            ),
            message_commit_transactions: counter(
                "parley_message_commit_transactions_total",
                "master transactions committing messages and cursor moves, one group each",
            ),
            message_commit_items: counter(
                "parley_message_commit_items_total",
                "chats' commits and cursor moves carried by those transactions",
            ),
            message_commits_waiting: gauge(
                "parley_message_commits_waiting",
                "chats' commits and cursor moves waiting for a free commit slot",
            ),
            database_queries: counter_vec(
                "parley_database_queries_total",
                "database queries by endpoint, kind and outcome",
                &["endpoint", "kind", "outcome"],
            ),
            database_endpoint_healthy: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new("parley_database_endpoint_healthy", "1 when the endpoint is healthy"),
                    &["endpoint"],
                )
                .expect("valid metric"),
            ),
            database_semi_sync_replicas: gauge(
                "parley_database_semi_sync_replicas",
                "replicas acknowledging the master's commits (semi-synchronous replication)",
            ),
            database_semi_sync_unacknowledged_commits: gauge(
                "parley_database_semi_sync_unacknowledged_commits",
                "commits the master returned without a replica's acknowledgement since it started",
            ),
            database_writes_blocked: gauge(
                "parley_database_writes_blocked",
                "1 while writes are refused at once: the master is unreachable or no replica would acknowledge them",
            ),
            database_failover_actions: counter_vec(
                "parley_database_failover_actions_total",
                "promotions, repoints and demotions of database servers this node carried out, by kind and outcome",
                &["kind", "outcome"],
            ),
            database_master_changes: counter(
                "parley_database_master_changes_total",
                "times this node's writes moved to another database server",
            ),
            cluster_members: gauge("parley_cluster_members", "live cluster members, this node included"),
            actor_restarts: counter(
                "parley_actor_restarts_total",
                "children restarted by the root supervisor",
            ),
            actor_failures: counter_vec(
                "parley_actor_failures_total",
                "sessions and chats that failed, by kind (session, chat)",
                &["kind"],
            ),
            trace_spans_dropped: counter(
                "parley_trace_spans_dropped_total",
                "spans dropped because the export queue was full",
            ),
            trace_exports_failed: counter(
                "parley_trace_exports_failed_total",
                "span batches the collector did not take",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Counts one database query.
    pub fn count_query(&self, endpoint: &str, kind: &str, outcome: &str) {
        self.database_queries
            .with_label_values(&[endpoint, kind, outcome])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_the_parley_prefix() {
        let metrics = Metrics::new();
        metrics.count_query("master", "write", "ok");
        metrics
            .http_requests
            .with_label_values(&["/auth/sign-up", "POST", "201"])
            .inc();
        metrics.database_endpoint_healthy.with_label_values(&["master"]).set(1);
        let text = metrics.render();
        assert!(
            text.contains(r#"parley_database_queries_total{endpoint="master",kind="write",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"parley_http_requests_total{method="POST",route="/auth/sign-up",status="201"} 1"#),
            "{text}"
        );
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert!(line.starts_with("parley_"), "{line}");
        }
    }

    #[test]
    fn two_nodes_in_one_process_keep_their_own_numbers() {
        let (first, second) = (Metrics::new(), Metrics::new());
        first.messages_committed.inc_by(3);
        assert!(first.render().contains("parley_messages_committed_total 3"));
        assert!(second.render().contains("parley_messages_committed_total 0"));
    }
}
