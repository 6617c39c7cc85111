//! A big backlog replayed to many sockets at once: the node reads it a page at a time and
//! sends each page at the pace its socket takes it, so sockets that never read hold a
//! page each, not the backlog, and a socket that reads gets every message once, in order.

#[path = "support/data_snapshot.rs"]
mod data_snapshot;
#[path = "support/resident_memory.rs"]
mod resident_memory;
#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use protocol::websocket::{actions, DeliveryPayload};
use resident_memory::PeakMemory;
use test_app::{shared_servers, Pair, TestApp};

const BINARY: &str = "replay_backlog";
/// Alice's backlog: 20,000 messages of 3 KB (60 MB).
const PENDING: u64 = 20_000;
const TEXT_BYTES: u64 = 3_000;
/// Sockets of Alice's that never read (the per-user limit is 8: the eighth reads).
const STALLED_SOCKETS: usize = 7;
/// What the node may grow by meanwhile: a page (500 messages) and four frames of 100 per
/// socket, and the database driver's buffers, with room to spare. Holding the backlog
/// once per socket would be 8 × 60 MB.
const RSS_GROWTH_BOUND_MIB: u64 = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_replayed_to_eight_sockets_is_held_a_page_at_a_time() {
    let servers = shared_servers(BINARY).await;
    let pair = Pair::in_app(TestApp::spawn(servers, 1).await, "backlog").await;
    // The backlog goes straight into the master: its making is not the subject.
    data_snapshot::execute_on_master(
        servers,
        &pair.app.database,
        // Seqs 1..=PENDING from five tables of digits (recursion is capped at 1,000).
        "INSERT INTO messages (id, chat_id, seq, user_id, client_id, text, create_time) \
         WITH digit(i) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
           UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
           UNION ALL SELECT 8 UNION ALL SELECT 9) \
         SELECT UUID(), ?, n, ?, NULL, REPEAT('x', ?), UTC_TIMESTAMP(6) FROM \
           (SELECT a.i + 10 * b.i + 100 * c.i + 1000 * d.i + 10000 * e.i + 1 AS n \
            FROM digit a, digit b, digit c, digit d, digit e) numbers WHERE n <= ?",
        vec![
            pair.chat_id.clone(),
            pair.bob_id.clone(),
            TEXT_BYTES.to_string(),
            PENDING.to_string(),
        ],
    )
    .await;
    data_snapshot::execute_on_master(
        servers,
        &pair.app.database,
        "UPDATE chats SET last_seq = ? WHERE id = ?",
        vec![PENDING.to_string(), pair.chat_id.clone()],
    )
    .await;
    let node_url = pair.app.app.node_url("node-1");
    let pid = pair.app.node_pid("node-1");
    let rss_before = resident_memory::resident_mib(pid).unwrap();
    let peak_memory = PeakMemory::watch(pid);

    // Seven sockets that complete the handshake and then read nothing.
    let url = format!(
        "{}/messenger/ws?token={}",
        node_url.replacen("http", "ws", 1),
        pair.alice
    );
    let mut stalled = Vec::new();
    for _ in 0..STALLED_SOCKETS {
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        stalled.push(socket);
    }
    // The eighth reads its whole replay.
    let mut reader = parley_client::MessengerSocket::connect(&node_url, &pair.alice)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    loop {
        let envelope = reader.next_envelope(Duration::from_secs(60)).await.unwrap();
        match envelope.action.as_str() {
            actions::SEND_MESSAGE => {
                let delivery: DeliveryPayload = envelope.decode_payload().unwrap();
                seqs.extend(delivery.messages.iter().map(|message| message.seq));
            }
            actions::REPLAY_COMPLETE => break,
            _ => {}
        }
    }
    let peak = peak_memory.stop().await;
    let growth = peak.saturating_sub(rss_before);
    println!(
        "replayed {} to the reading socket; rss {rss_before} -> peak {peak} MiB",
        seqs.len()
    );
    assert_eq!(seqs, (1..=PENDING).collect::<Vec<_>>(), "every message once, in order");
    assert!(
        growth < RSS_GROWTH_BOUND_MIB,
        "the node grew by {growth} MiB replaying to {} sockets",
        STALLED_SOCKETS + 1
    );
    drop(stalled);
}
