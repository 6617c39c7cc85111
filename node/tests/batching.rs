//! Sends queued for one chat while a commit runs go out together in the next
//! transaction: fewer master transactions than frames, every frame acked, seqs gap-free.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use protocol::websocket::{actions, AckPayload, OutgoingMessage};
use test_app::{connect_live, shared_servers, Pair, TestApp};

const BINARY: &str = "batching";

/// The sequence number of the master's last transaction (`0-1-N` → N).
async fn master_transactions(root_url: &str) -> u64 {
    let pool = mysql_async::Pool::new(root_url);
    let mut conn = pool.get_conn().await.unwrap();
    let position: String = conn.query_first("SELECT @@gtid_binlog_pos").await.unwrap().unwrap();
    drop(conn);
    pool.disconnect().await.unwrap();
    position.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_behind_a_commit_share_the_next_transaction() {
    const FRAMES: usize = 200;
    let servers = shared_servers(BINARY).await;
    let pair = Pair::in_app(TestApp::spawn(servers, 1).await, "batch").await;
    let (mut bob, _, _) = connect_live(pair.app.http.base_url(), &pair.bob).await;

    let before = master_transactions(&servers.root_url("master")).await;
    for index in 0..FRAMES {
        let message = OutgoingMessage {
            text: format!("burst {index}"),
            status: None,
            client_id: Some(format!("burst-{index}")),
        };
        bob.send_messages(&pair.chat_id, vec![message], None).await.unwrap();
    }
    let mut seqs_by_frame = vec![0; FRAMES];
    let mut acked_frames = Vec::with_capacity(FRAMES);
    for _ in 0..FRAMES {
        let (_, ack) = bob.until_action(actions::ACK, Duration::from_secs(30)).await.unwrap();
        let ack: AckPayload = ack.decode_payload().unwrap();
        let entry = &ack.acks[0];
        let index: usize = entry
            .client_id
            .as_deref()
            .unwrap()
            .trim_start_matches("burst-")
            .parse()
            .unwrap();
        seqs_by_frame[index] = entry.seq;
        acked_frames.push(index);
    }
    let after = master_transactions(&servers.root_url("master")).await;

    let expected: Vec<u64> = (1..=FRAMES as u64).collect();
    assert_eq!(seqs_by_frame, expected, "frames commit in the order sent, gap-free");
    assert_eq!(
        acked_frames,
        (0..FRAMES).collect::<Vec<_>>(),
        "acks arrive in the order the frames were sent"
    );
    let transactions = after - before;
    println!("{FRAMES} frames in {transactions} master transactions");
    assert!(
        transactions < FRAMES as u64,
        "{FRAMES} frames took {transactions} transactions: no batching"
    );
    assert_eq!(
        pair.app
            .http
            .messages(&pair.bob, &pair.chat_id, 0, 1000)
            .await
            .unwrap()
            .total,
        FRAMES as u64
    );
}
