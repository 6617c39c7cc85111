//! Traces over OTLP: a real gRPC collector in the test receives what two nodes export,
//! and one message's trace must run from Bob's frame on node-2 to Alice's socket on
//! node-1, through the commit on the master.

#[path = "support/test_app.rs"]
mod test_app;

use std::collections::BTreeSet;
use std::time::Duration;

use parley_launcher::trace_collector::{CollectedSpan, TraceCollector};
use protocol::websocket::{actions, Envelope, OutgoingMessage, SendMessagePayload};
use test_app::{connect_live, shared_servers, Pair, TestApp};
use tokio::time::Instant;

const BINARY: &str = "tracing";
const WAIT: Duration = Duration::from_secs(20);

/// The spans of the trace holding a `socket.deliver` span on `recipient_node`, once that
/// trace also holds the sender's frame on `sender_node`.
fn cross_node_trace(spans: &[CollectedSpan], sender_node: &str, recipient_node: &str) -> Option<Vec<CollectedSpan>> {
    let delivered_traces: BTreeSet<&Vec<u8>> = spans
        .iter()
        .filter(|span| span.name == "socket.deliver" && span.instance == recipient_node)
        .map(|span| &span.trace_id)
        .collect();
    delivered_traces.into_iter().find_map(|trace_id| {
        let trace: Vec<CollectedSpan> = spans
            .iter()
            .filter(|span| &span.trace_id == trace_id)
            .cloned()
            .collect();
        let has_frame = trace
            .iter()
            .any(|span| span.name == "ws.frame" && span.instance == sender_node);
        has_frame.then_some(trace)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_from_the_senders_frame_to_the_recipients_socket_on_another_node() {
    let collector = TraceCollector::start().await.unwrap();
    let endpoint = collector.endpoint().to_owned();
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 2, &["--otlp-endpoint", &endpoint]).await;
    app.wait_cluster_formed().await;
    let pair = Pair::in_app(app, "traced").await;
    let (mut alice, _, _) = connect_live(&pair.app.app.node_url("node-1"), &pair.alice).await;
    let (mut bob, _, _) = connect_live(&pair.app.app.node_url("node-2"), &pair.bob).await;

    let payload = SendMessagePayload {
        chat_id: pair.chat_id.clone(),
        messages: vec![OutgoingMessage {
            text: "traced hello".to_owned(),
            status: None,
            client_id: Some("trace-1".to_owned()),
        }],
    };
    bob.send_text(Envelope::messenger(actions::SEND_MESSAGE, &payload, None).to_text())
        .await
        .unwrap();
    bob.until_action(actions::ACK, WAIT).await.unwrap();
    alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();

    let deadline = Instant::now() + WAIT;
    let trace = loop {
        if let Some(trace) = cross_node_trace(&collector.spans(), "node-2", "node-1") {
            break trace;
        }
        assert!(
            Instant::now() < deadline,
            "no trace from node-2's frame to node-1's socket among {:#?}",
            collector
                .spans()
                .iter()
                .map(|span| (&span.instance, &span.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let names_on = |instance: &str| -> BTreeSet<String> {
        trace
            .iter()
            .filter(|span| span.instance == instance)
            .map(|span| span.name.clone())
            .collect()
    };
    let on_sender = names_on("node-2");
    let on_recipient = names_on("node-1");
    for expected in ["ws.frame", "chat.commit", "db.insert", "db.write", "chat.deliver"] {
        assert!(
            on_sender.contains(expected),
            "{expected} missing on node-2: {on_sender:?}"
        );
    }
    for expected in ["cluster.deliver", "socket.deliver"] {
        assert!(
            on_recipient.contains(expected),
            "{expected} missing on node-1: {on_recipient:?}"
        );
    }
    assert!(trace.iter().all(|span| span.service == "parley"), "{trace:#?}");
    let write = trace.iter().find(|span| span.name == "db.write").unwrap();
    assert_eq!(write.attributes.get("db.endpoint").map(String::as_str), Some("master"));

    // The tree holds together: every parent named in the trace is a span of it, and the
    // hop's span on node-1 hangs under node-2's delivery span.
    let ids: BTreeSet<&Vec<u8>> = trace.iter().map(|span| &span.span_id).collect();
    let roots: Vec<&str> = trace
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .map(|span| span.name.as_str())
        .collect();
    assert_eq!(roots, ["ws.frame"], "one root, the sender's frame");
    for span in &trace {
        assert!(
            span.parent_span_id.is_empty() || ids.contains(&span.parent_span_id),
            "{} has a parent outside the trace",
            span.name
        );
    }
    let hop = trace.iter().find(|span| span.name == "cluster.deliver").unwrap();
    let hop_parent = trace.iter().find(|span| span.span_id == hop.parent_span_id).unwrap();
    assert_eq!(
        (hop_parent.name.as_str(), hop_parent.instance.as_str()),
        ("chat.deliver", "node-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_continues_the_callers_trace() {
    let collector = TraceCollector::start().await.unwrap();
    let endpoint = collector.endpoint().to_owned();
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--otlp-endpoint", &endpoint]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("{}/health/ready", app.app.node_url("node-1")))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let deadline = Instant::now() + WAIT;
    loop {
        let spans = collector.spans();
        let request = spans.iter().find(|span| {
            span.name == "http.request"
                && span.trace_id == hex_bytes(trace_id)
                && span.attributes.get("http.route").map(String::as_str) == Some("/health/ready")
        });
        if let Some(request) = request {
            assert_eq!(request.parent_span_id, hex_bytes("00f067aa0ba902b7"));
            assert_eq!(request.instance, "node-1");
            break;
        }
        assert!(Instant::now() < deadline, "no http.request span in trace {trace_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_collector_is_unreachable_serves_as_usual() {
    // A port nobody listens on: every export fails, requests must not notice.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    drop(silent);
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--otlp-endpoint", &endpoint]).await;
    let pair = Pair::in_app(app, "untraced").await;
    let (mut alice, _, _) = connect_live(pair.app.http.base_url(), &pair.alice).await;
    let (mut bob, _, _) = connect_live(pair.app.http.base_url(), &pair.bob).await;
    for index in 0..20 {
        let payload = SendMessagePayload {
            chat_id: pair.chat_id.clone(),
            messages: vec![OutgoingMessage {
                text: format!("message {index}"),
                status: None,
                client_id: Some(format!("untraced-{index}")),
            }],
        };
        let started = Instant::now();
        bob.send_text(Envelope::messenger(actions::SEND_MESSAGE, &payload, None).to_text())
            .await
            .unwrap();
        bob.until_action(actions::ACK, WAIT).await.unwrap();
        alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "message {index} took {:?} with the collector gone",
            started.elapsed()
        );
    }
    // The spans had nowhere to go, and the node says so.
    let metrics_url = format!("{}/metrics", pair.app.app.node_url("node-1"));
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        let failed = metrics
            .lines()
            .find_map(|line| line.strip_prefix("parley_trace_exports_failed_total "))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no parley_trace_exports_failed_total in\n{metrics}"));
        if failed >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no failed export counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).unwrap())
        .collect()
}
