//! One user floods a node with messages; the others do not notice. Against a real node
//! with the default send limit (20 messages a second, 100 at once): what is stored stays
//! within the limit, every refusal names its messages and when to send again, the node's
//! memory stays bounded, and another user's message on the same node is delivered within
//! a second meanwhile.
//!
//! Alone in its binary: the flood fills both cores.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parley_client::http::seed_person;
use protocol::websocket::{actions, AckPayload, Envelope, ErrorPayload, OutgoingMessage, SendMessagePayload};
use resident_memory::{resident_mib, PeakMemory};
use test_app::{connect_live, shared_servers, TestApp};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/data_snapshot.rs"]
mod data_snapshot;
#[path = "support/resident_memory.rs"]
mod resident_memory;

const BINARY: &str = "send_flood";
/// The floods share two cores; one at a time.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// The flood: 4,000 frames of five 3 KB messages.
const FRAMES: usize = 4_000;
const MESSAGES_PER_FRAME: usize = 5;
const TEXT_BYTES: usize = 3_000;
/// The node's defaults.
const SENDS_PER_SECOND: f64 = 20.0;
const SEND_BURST: f64 = 100.0;
/// What the node may grow by while it is flooded.
const RSS_GROWTH_BOUND_MIB: u64 = 200;
/// What the node may grow by while 60 MB of messages go through it unlimited: the
/// frames in hand (16 of 16 KB), the chat's batch (up to 500 messages) and the database
/// driver's buffers, with room to spare.
const BACKPRESSURE_GROWTH_BOUND_MIB: u64 = 64;
/// How long another user's message may take to arrive during the flood.
const DELIVERY_BOUND: Duration = Duration::from_secs(1);

fn flood_frame(chat_id: &str, frame: usize) -> String {
    let messages = (0..MESSAGES_PER_FRAME)
        .map(|index| OutgoingMessage {
            text: "x".repeat(TEXT_BYTES),
            status: None,
            client_id: Some(format!("flood-{frame}-{index}")),
        })
        .collect();
    let payload = SendMessagePayload {
        chat_id: chat_id.to_owned(),
        messages,
    };
    Envelope::messenger(actions::SEND_MESSAGE, &payload, None).to_text()
}

/// What one flood did.
struct FloodOutcome {
    frames_written: usize,
    acked: usize,
    refused: Vec<ErrorPayload>,
    stored: u64,
    elapsed_s: f64,
    rss_growth_mib: u64,
    quiet_delivered: usize,
    slowest_quiet: Duration,
}

/// Floods one node started with `node_args` from Mallory's socket while Bob writes to
/// Alice on the same node.
async fn flood(node_args: &[&str]) -> FloodOutcome {
    let _serial = ONE_FLOOD_AT_A_TIME.lock().await;
    let servers = shared_servers(BINARY).await;
    let app = TestApp::spawn_with_only_args(servers, 1, node_args).await;
    let node = app.node("node-1");
    let node_url = app.app.node_url("node-1");
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for name in ["Mallory", "Bob", "Alice"] {
        ids.push(node.sign_up_ok(&seed_person(name, "flood")).await.unwrap());
        let email = format!("{}.flood@email.com", name.to_lowercase());
        tokens.push(node.sign_in(&email, "1234567890").await.unwrap().access_token);
    }
    let (mallory, bob, alice) = (&tokens[0], &tokens[1], &tokens[2]);
    let flooded_chat = node.create_chat(mallory, &ids[1]).await.unwrap();
    let quiet_chat = node.create_chat(bob, &ids[2]).await.unwrap();
    let pid = app.node_pid("node-1");
    let rss_before = resident_mib(pid).unwrap();

    let peak_memory = PeakMemory::watch(pid);

    // Mallory writes as fast as the node reads, and reads every answer.
    let url = format!("{}/messenger/ws?token={mallory}", node_url.replacen("http", "ws", 1));
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let (mut sink, mut stream) = socket.split();
    let started = Instant::now();
    let writer = tokio::spawn({
        let chat_id = flooded_chat.clone();
        async move {
            for frame in 0..FRAMES {
                if sink.send(Message::text(flood_frame(&chat_id, frame))).await.is_err() {
                    return frame;
                }
            }
            FRAMES
        }
    });
    let reader = tokio::spawn(async move {
        let (mut acked, mut refused) = (0_usize, Vec::<ErrorPayload>::new());
        while acked + refused.iter().map(|error| error.client_ids.len()).sum::<usize>() < FRAMES * MESSAGES_PER_FRAME {
            let text = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                // Ended, failed or silent for 30 s: the counts so far tell what happened.
                _ => break,
            };
            let envelope: Envelope = serde_json::from_str(text.as_str()).unwrap();
            match envelope.action.as_str() {
                actions::ACK => acked += envelope.decode_payload::<AckPayload>().unwrap().acks.len(),
                actions::ERROR => refused.push(envelope.decode_payload().unwrap()),
                _ => {}
            }
        }
        (acked, refused)
    });

    // Meanwhile Bob writes to Alice on the same node, a message every 200 ms.
    let (mut alice_socket, _, _) = connect_live(&node_url, alice).await;
    let (mut bob_socket, _, _) = connect_live(&node_url, bob).await;
    let mut slowest = Duration::ZERO;
    let mut delivered = 0;
    while !writer.is_finished() && started.elapsed() < Duration::from_secs(120) {
        let sent_at = Instant::now();
        let message = OutgoingMessage {
            text: format!("still here {delivered}"),
            status: None,
            client_id: Some(format!("quiet-{delivered}")),
        };
        bob_socket
            .send_messages(&quiet_chat, vec![message], None)
            .await
            .unwrap();
        alice_socket
            .until_action(actions::SEND_MESSAGE, Duration::from_secs(10))
            .await
            .unwrap();
        slowest = slowest.max(sent_at.elapsed());
        delivered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frames_written = writer.await.unwrap();
    let (acked, refused) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let peak = peak_memory.stop().await;

    let stored = data_snapshot::count_on_master(
        servers,
        &app.database,
        "SELECT COUNT(*) FROM messages WHERE chat_id = ?",
        vec![flooded_chat.clone()],
    )
    .await;
    let outcome = FloodOutcome {
        frames_written,
        acked,
        refused,
        stored,
        elapsed_s: elapsed,
        rss_growth_mib: peak.saturating_sub(rss_before),
        quiet_delivered: delivered,
        slowest_quiet: slowest,
    };
    println!(
        "{} frames in {:.1} s: {} acked, {} stored, {} refusals; rss grew {} MiB; {} quiet messages, slowest {:?}",
        outcome.frames_written,
        outcome.elapsed_s,
        outcome.acked,
        outcome.stored,
        outcome.refused.len(),
        outcome.rss_growth_mib,
        outcome.quiet_delivered,
        outcome.slowest_quiet
    );
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_sender_stores_only_what_its_limit_allows_and_others_are_served_meanwhile() {
    // The default send limit: only the tests' cheap hashing.
    let outcome = flood(&["--scrypt-log-n", "10"]).await;
    let allowed = SEND_BURST + SENDS_PER_SECOND * outcome.elapsed_s + MESSAGES_PER_FRAME as f64;
    assert_eq!(outcome.frames_written, FRAMES, "the flood was read to its end");
    assert_eq!(
        outcome.stored as usize, outcome.acked,
        "every stored message acked, no more"
    );
    assert!(
        (outcome.stored as f64) <= allowed,
        "{} stored, {allowed:.0} allowed",
        outcome.stored
    );
    assert!(
        outcome.acked >= SEND_BURST as usize,
        "the burst itself was taken: {}",
        outcome.acked
    );
    assert_eq!(
        outcome.acked + outcome.refused.len() * MESSAGES_PER_FRAME,
        FRAMES * MESSAGES_PER_FRAME,
        "every message acked or refused"
    );
    assert!(outcome.refused.iter().all(|error| error.code == "rate_limited"
        && error.client_ids.len() == MESSAGES_PER_FRAME
        && error.retry_after_ms.is_some_and(|ms| ms > 0)));
    assert!(
        outcome.rss_growth_mib < RSS_GROWTH_BOUND_MIB,
        "the node grew by {} MiB",
        outcome.rss_growth_mib
    );
    assert!(
        outcome.quiet_delivered >= 3,
        "the quiet pair barely ran: {}",
        outcome.quiet_delivered
    );
    assert!(
        outcome.slowest_quiet < DELIVERY_BOUND,
        "a quiet message took {:?}",
        outcome.slowest_quiet
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_send_limit_the_socket_is_read_only_as_fast_as_frames_are_committed() {
    // No rate limit: every message is stored, at the pace of the commits. The node reads
    // the socket no faster (16 frames in hand at most), so the 60 MB the client writes
    // wait in TCP's buffers and the client's, not in the node.
    let outcome = flood(&["--scrypt-log-n", "10", "--send-messages-per-second", "0"]).await;
    assert_eq!(outcome.frames_written, FRAMES, "the flood was read to its end");
    assert_eq!(outcome.acked, FRAMES * MESSAGES_PER_FRAME, "every message acked");
    assert_eq!(outcome.stored as usize, outcome.acked, "and stored once");
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused.first());
    assert!(
        outcome.rss_growth_mib < BACKPRESSURE_GROWTH_BOUND_MIB,
        "the node grew by {} MiB while {} MB went through it",
        outcome.rss_growth_mib,
        FRAMES * MESSAGES_PER_FRAME * TEXT_BYTES / 1_000_000
    );
}
