//! Sends queued for one chat while a commit runs go out together in the next
//! transaction: fewer master transactions than frames, every frame acked, seqs gap-free.
//! Chats that commit at the same time share a transaction too, each with its own seqs.

#[path = "support/data_snapshot.rs"]
mod data_snapshot;
#[path = "support/test_app.rs"]
mod test_app;

use std::collections::HashMap;
use std::time::Duration;

use data_snapshot::count_on_master;
use mysql_async::prelude::Queryable;
use parley_client::MessengerSocket;
use protocol::websocket::{actions, AckPayload, DeliveryPayload, OutgoingMessage};
use test_app::{connect_live, node_metric, shared_servers, Pair, TestApp};

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

/// Chat rows of `chat_ids` locked on the master by a transaction of the test's own,
/// until it is dropped: the node's commits into those chats wait for it.
async fn lock_chat_rows(
    servers: &parley_launcher::DatabaseServers,
    database: &str,
    chat_ids: &[&str],
) -> mysql_async::Conn {
    let mut conn = parley_launcher::mariadb_admin::connect_url(&servers.root_url("master"))
        .await
        .unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    for chat_id in chat_ids {
        let locked: Option<u64> = conn
            .exec_first(
                format!("SELECT last_seq FROM `{database}`.chats WHERE id = ? FOR UPDATE"),
                (chat_id,),
            )
            .await
            .unwrap();
        assert!(locked.is_some(), "no chat {chat_id}");
    }
    conn
}

/// Polls `metric` of the node until it reaches `value`.
async fn until_metric(node_url: &str, metric: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = node_metric(node_url, metric).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{metric} stayed at {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bob and Alice with their one-to-one chat and `CHATS - 1` groups of the two, on a
/// node whose writes wait as long as the test holds a chat's row.
struct ManyChats {
    pair: Pair,
    chat_ids: Vec<String>,
    node_url: String,
}

const CHATS: usize = 12;

async fn many_chats(tag: &str) -> ManyChats {
    let servers = shared_servers(BINARY).await;
    // The locked chats' commits wait for the test: not for the write timeout.
    let app = TestApp::spawn_with_args(servers, 1, &["--db-write-timeout-ms", "60000"]).await;
    let pair = Pair::in_app(app, tag).await;
    let node_url = pair.app.app.node_url("node-1");
    let mut chat_ids = vec![pair.chat_id.clone()];
    for number in 1..CHATS {
        let title = format!("group commit {number}");
        let members = [pair.alice_id.clone()];
        chat_ids.push(pair.app.http.create_group(&pair.bob, &title, &members).await.unwrap());
    }
    ManyChats {
        pair,
        chat_ids,
        node_url,
    }
}

impl ManyChats {
    /// Each chat's last seq before the test sends (a group's creation is its seq 1).
    fn created_seq(&self, chat_id: &str) -> u64 {
        if *chat_id == self.pair.chat_id {
            0
        } else {
            1
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        node_metric(&self.node_url, name).await
    }
}

/// What the test does in every chat.
enum Step {
    /// Send one message.
    Send,
    /// Report a cursor (`received` or `read`) past the chat's last seq.
    Report(&'static str),
}

async fn take_step(socket: &mut MessengerSocket, chat_id: &str, step: &Step) {
    match step {
        Step::Send => {
            let message = OutgoingMessage {
                text: format!("into {chat_id}"),
                status: None,
                client_id: Some(format!("group-commit-{chat_id}")),
            };
            socket.send_messages(chat_id, vec![message], None).await.unwrap();
        }
        Step::Report(action) => socket.report(action, chat_id, 99).await.unwrap(),
    }
}

/// Takes `step` in every chat while both of the node's commit slots wait on the first
/// two chats, whose rows the test holds locked: the other chats' steps queue up and go
/// out together once the locks are gone. Returns the transactions and items counted
/// before.
async fn step_with_both_slots_held(chats: &ManyChats, socket: &mut MessengerSocket, step: Step) -> (f64, f64) {
    let servers = shared_servers(BINARY).await;
    let transactions_before = chats.metric("parley_message_commit_transactions_total").await;
    let items_before = chats.metric("parley_message_commit_items_total").await;
    let first_two = [chats.chat_ids[0].as_str(), chats.chat_ids[1].as_str()];
    let mut held = lock_chat_rows(servers, &chats.pair.app.database, &first_two).await;
    // One after the other, so that each takes a slot of its own.
    for (started, chat_id) in first_two.iter().enumerate() {
        take_step(socket, chat_id, &step).await;
        let transactions = transactions_before + started as f64 + 1.0;
        until_metric(
            &chats.node_url,
            "parley_message_commit_transactions_total",
            transactions,
        )
        .await;
    }
    for chat_id in &chats.chat_ids[2..] {
        take_step(socket, chat_id, &step).await;
    }
    until_metric(&chats.node_url, "parley_message_commits_waiting", (CHATS - 2) as f64).await;
    held.query_drop("ROLLBACK").await.unwrap();
    parley_launcher::mariadb_admin::close(held).await;
    (transactions_before, items_before)
}

/// Two transactions for the locked chats, and one for the ten that waited for them.
async fn assert_three_transactions_for_twelve_chats(chats: &ManyChats, before: (f64, f64)) {
    let transactions = chats.metric("parley_message_commit_transactions_total").await - before.0;
    let items = chats.metric("parley_message_commit_items_total").await - before.1;
    assert_eq!((transactions, items), (3.0, CHATS as f64));
    assert_eq!(chats.metric("parley_message_commits_waiting").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_that_commit_at_the_same_time_share_one_transaction_each_with_its_own_seqs() {
    let chats = many_chats("groups").await;
    let pair = &chats.pair;
    let (mut bob, _, _) = connect_live(pair.app.http.base_url(), &pair.bob).await;
    let (mut alice, _, _) = connect_live(pair.app.http.base_url(), &pair.alice).await;
    let before = step_with_both_slots_held(&chats, &mut bob, Step::Send).await;

    let mut acked = HashMap::new();
    while acked.len() < CHATS {
        let (_, ack) = bob.until_action(actions::ACK, Duration::from_secs(30)).await.unwrap();
        let ack: AckPayload = ack.decode_payload().unwrap();
        let client_id = ack.acks[0].client_id.clone().unwrap();
        acked.insert(client_id, ack.acks[0].seq);
    }
    for chat_id in &chats.chat_ids {
        assert_eq!(
            acked[&format!("group-commit-{chat_id}")],
            chats.created_seq(chat_id) + 1,
            "each chat's message takes that chat's next seq"
        );
    }
    let mut delivered = HashMap::new();
    while delivered.len() < CHATS {
        let (_, delivery) = alice
            .until_action(actions::SEND_MESSAGE, Duration::from_secs(30))
            .await
            .unwrap();
        let delivery: DeliveryPayload = delivery.decode_payload().unwrap();
        for message in delivery.messages {
            assert_eq!(message.chat_id, delivery.chat_id);
            assert!(
                delivered.insert(message.chat_id.clone(), message.seq).is_none(),
                "delivered twice"
            );
        }
    }
    for chat_id in &chats.chat_ids {
        assert_eq!(delivered[chat_id], chats.created_seq(chat_id) + 1);
        let stored = pair.app.http.messages(&pair.alice, chat_id, 0, 100).await.unwrap();
        assert_eq!(stored.total, chats.created_seq(chat_id) + 1, "chat {chat_id}");
    }
    assert_three_transactions_for_twelve_chats(&chats, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_reports_of_many_chats_share_one_transaction_each_clamped_to_its_chat() {
    let chats = many_chats("cursors").await;
    let pair = &chats.pair;
    let (mut bob, _, _) = connect_live(pair.app.http.base_url(), &pair.bob).await;
    for chat_id in &chats.chat_ids {
        take_step(&mut bob, chat_id, &Step::Send).await;
        bob.until_action(actions::ACK, Duration::from_secs(30)).await.unwrap();
    }
    let (mut alice, _, _) = connect_live(pair.app.http.base_url(), &pair.alice).await;
    let before = step_with_both_slots_held(&chats, &mut alice, Step::Report(actions::READ)).await;

    // Read up to 99 in every chat: each cursor stops at its own chat's last seq, and
    // reading implies receiving.
    let servers = shared_servers(BINARY).await;
    let database = &pair.app.database;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for chat_id in &chats.chat_ids {
        let last_seq = chats.created_seq(chat_id) + 1;
        let query = "SELECT COUNT(*) FROM chat_members WHERE chat_id = ? AND user_id = ? \
                     AND received_seq = ? AND read_seq = ?";
        let parameters = || {
            vec![
                chat_id.clone(),
                pair.alice_id.clone(),
                last_seq.to_string(),
                last_seq.to_string(),
            ]
        };
        while count_on_master(servers, database, query, parameters()).await != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "alice's cursors in {chat_id} did not move to {last_seq}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_three_transactions_for_twelve_chats(&chats, before).await;
    // No report was refused: nothing but the ack of a message sent after them.
    take_step(&mut alice, &chats.chat_ids[0], &Step::Send).await;
    let (before_ack, _) = alice.until_action(actions::ACK, Duration::from_secs(30)).await.unwrap();
    assert!(
        before_ack.iter().all(|envelope| envelope.action != actions::ERROR),
        "{before_ack:?}"
    );
}
