//! The messenger websocket on one node through nginx: the seed's frames verbatim, acks,
//! idempotent resends, resume from the database, receipts, and every kind of bad frame.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use parley_client::http::seed_person;
use parley_client::MessengerSocket;
use protocol::websocket::{
    actions, AckPayload, DeliveryPayload, Envelope, ErrorPayload, OutgoingMessage, ReplayCompletePayload, StatusPayload,
};
use test_app::{connect_live, node_metrics_text, shared_servers, Pair, TestApp};

const BINARY: &str = "websocket";
const WAIT: Duration = Duration::from_secs(10);

/// Bob and Alice with a chat, signed in.
async fn pair(tag: &str) -> Pair {
    Pair::in_app(TestApp::spawn(shared_servers(BINARY).await, 1).await, tag).await
}

async fn connect(pair: &Pair, token: &str) -> (MessengerSocket, ReplayCompletePayload, Vec<Envelope>) {
    connect_live(pair.app.http.base_url(), token).await
}

/// node-1's Prometheus text.
async fn node_1_metrics(pair: &Pair) -> String {
    node_metrics_text(&pair.app.app.node_url("node-1")).await
}

fn texts(deliveries: &[Envelope]) -> Vec<(u64, String)> {
    deliveries
        .iter()
        .filter(|envelope| envelope.action == actions::SEND_MESSAGE)
        .flat_map(|envelope| envelope.decode_payload::<DeliveryPayload>().unwrap().messages)
        .map(|message| (message.seq, message.text))
        .collect()
}

fn text_message(text: &str, client_id: Option<&str>) -> OutgoingMessage {
    OutgoingMessage {
        text: text.to_owned(),
        status: Some("created".to_owned()),
        client_id: client_id.map(str::to_owned),
    }
}

#[tokio::test]
async fn the_seeds_websocat_frames_reach_alice_and_the_history() {
    let pair = pair("seed").await;
    let (mut alice, replay, _) = connect(&pair, &pair.alice).await;
    assert_eq!(replay.replayed, 0);
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    for text in ["Hello, Alice!", "What is up?", "I miss you!"] {
        // The seed's frame, verbatim but for the chat id.
        let frame = format!(
            r#"{{"topic":"messenger", "action": "send-message", "payload":"{{\"chat_id\":\"{}\", \"messages\":[{{\"text\": \"{text}\", \"status\": \"created\"}}]}}"}}"#,
            pair.chat_id
        );
        bob.send_text(frame).await.unwrap();
        let (_, ack) = bob.until_action(actions::ACK, WAIT).await.unwrap();
        let ack: AckPayload = ack.decode_payload().unwrap();
        assert_eq!(ack.chat_id, pair.chat_id);
        assert_eq!(ack.acks.len(), 1);
    }
    let mut received = Vec::new();
    while received.len() < 3 {
        // Alice may also see Bob come online (presence); deliveries are what count here.
        let (_, envelope) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
        assert_eq!(envelope.topic, "messenger");
        let delivery: DeliveryPayload = envelope.decode_payload().unwrap();
        for message in delivery.messages {
            assert_eq!(message.user_id, pair.bob_id);
            assert_eq!(message.chat_id, pair.chat_id);
            assert_eq!(message.status, "created");
            received.push((message.seq, message.text));
        }
    }
    assert_eq!(
        received,
        [
            (1, "Hello, Alice!".to_owned()),
            (2, "What is up?".to_owned()),
            (3, "I miss you!".to_owned())
        ]
    );
    let history = pair
        .app
        .http
        .messages(&pair.alice, &pair.chat_id, 0, 100)
        .await
        .unwrap();
    assert_eq!(history.total, 3);
    let stored: Vec<_> = history.messages.iter().map(|m| (m.seq, m.text.clone())).collect();
    assert_eq!(stored, received);

    let metrics = node_1_metrics(&pair).await;
    let value = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert_eq!(value("parley_messages_committed_total"), 3.0);
    assert_eq!(value(r#"parley_messages_delivered_total{scope="local"}"#), 3.0);
    assert!(value("parley_websocket_frames_in_total") >= 3.0);
    assert!(
        value("parley_websocket_frames_out_total") >= 6.0,
        "3 acks and 3 deliveries at least"
    );
    assert_eq!(value("parley_websocket_sessions"), 2.0);
}

#[tokio::test]
async fn a_resent_client_id_gets_the_original_ack_and_stores_nothing_new() {
    let pair = pair("resend").await;
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    let mut acks = Vec::new();
    for _ in 0..2 {
        bob.send_messages(&pair.chat_id, vec![text_message("once", Some("c-1"))], Some("r"))
            .await
            .unwrap();
        let (_, ack) = bob.until_action(actions::ACK, WAIT).await.unwrap();
        assert_eq!(ack.reference.as_deref(), Some("r"));
        acks.push(ack.decode_payload::<AckPayload>().unwrap().acks.remove(0));
    }
    assert_eq!(acks[0], acks[1]);
    assert_eq!(acks[0].client_id.as_deref(), Some("c-1"));
    assert_eq!(acks[0].seq, 1);
    let history = pair.app.http.messages(&pair.bob, &pair.chat_id, 0, 100).await.unwrap();
    assert_eq!(history.total, 1);
}

#[tokio::test]
async fn the_same_client_id_in_two_chats_is_two_messages_each_acked_in_its_own_chat() {
    // Alice numbers her messages per conversation: "k1" to Bob, then "k1" to Carol.
    let pair = pair("per-chat-ids").await;
    let carol_id = pair
        .app
        .http
        .sign_up_ok(&seed_person("Carol", "per-chat-ids"))
        .await
        .unwrap();
    let carol = pair
        .app
        .http
        .sign_in("carol.per-chat-ids@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let carol_chat = pair.app.http.create_chat(&pair.alice, &carol_id).await.unwrap();
    let (mut alice, _, _) = connect(&pair, &pair.alice).await;
    let mut acks = Vec::new();
    for (chat_id, text) in [(&pair.chat_id, "for bob"), (&carol_chat, "for carol")] {
        alice
            .send_messages(chat_id, vec![text_message(text, Some("k1"))], Some(text))
            .await
            .unwrap();
        let (_, ack) = alice.until_action(actions::ACK, WAIT).await.unwrap();
        let ack: AckPayload = ack.decode_payload().unwrap();
        assert_eq!(&ack.chat_id, chat_id, "an ack names its own chat");
        acks.push(ack.acks[0].clone());
    }
    assert_ne!(acks[0].id, acks[1].id, "two chats, two messages");
    assert_eq!((acks[0].seq, acks[1].seq), (1, 1));
    // A resend in Carol's chat is still stored once, acked with the first id.
    alice
        .send_messages(&carol_chat, vec![text_message("for carol", Some("k1"))], None)
        .await
        .unwrap();
    let (_, again) = alice.until_action(actions::ACK, WAIT).await.unwrap();
    assert_eq!(again.decode_payload::<AckPayload>().unwrap().acks[0], acks[1]);

    let carols = pair.app.http.messages(&carol, &carol_chat, 0, 100).await.unwrap();
    let stored: Vec<_> = carols.messages.iter().map(|m| (m.id.clone(), m.text.clone())).collect();
    assert_eq!(stored, [(acks[1].id.clone(), "for carol".to_owned())]);
    let bobs = pair.app.http.messages(&pair.bob, &pair.chat_id, 0, 100).await.unwrap();
    let stored: Vec<_> = bobs.messages.iter().map(|m| (m.id.clone(), m.text.clone())).collect();
    assert_eq!(stored, [(acks[0].id.clone(), "for bob".to_owned())]);
    // Carol gets her message live, too.
    let (mut carol_socket, _, replayed) = connect(&pair, &carol).await;
    let mut delivered = texts(&replayed);
    if delivered.is_empty() {
        let (_, delivery) = carol_socket.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
        delivered = texts(&[delivery]);
    }
    assert_eq!(delivered, [(1, "for carol".to_owned())]);
}

#[tokio::test]
async fn a_reconnecting_user_gets_everything_above_the_received_cursor_in_order() {
    let pair = pair("resume").await;
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    let sent: Vec<String> = (1..=5).map(|i| format!("offline {i}")).collect();
    let batch = sent
        .iter()
        .enumerate()
        .map(|(i, text)| text_message(text, Some(&format!("m{i}"))))
        .collect();
    bob.send_messages(&pair.chat_id, batch, None).await.unwrap();
    bob.until_action(actions::ACK, WAIT).await.unwrap();

    // A plain client that never reports `received` gets everything, every time.
    for _ in 0..2 {
        let (alice, replay, before) = connect(&pair, &pair.alice).await;
        assert_eq!(replay.replayed, 5);
        let expected: Vec<(u64, String)> = (1..=5).zip(sent.iter().cloned()).collect();
        assert_eq!(texts(&before), expected);
        alice.close().await.unwrap();
    }

    let (mut alice, _, _) = connect(&pair, &pair.alice).await;
    alice.report(actions::RECEIVED, &pair.chat_id, 3).await.unwrap();
    // Bob sees Alice's cursor move.
    let (_, status) = bob.until_action(actions::STATUS, WAIT).await.unwrap();
    let status: StatusPayload = status.decode_payload().unwrap();
    assert_eq!(
        (status.user_id.as_str(), status.status.as_str(), status.seq),
        (pair.alice_id.as_str(), "received", 3)
    );
    alice.close().await.unwrap();

    let (_, replay, before) = connect(&pair, &pair.alice).await;
    assert_eq!(replay.replayed, 2);
    assert_eq!(texts(&before), [(4, sent[3].clone()), (5, sent[4].clone())]);

    // Four resumes replayed something: 5, 5, 5 and 2 messages.
    let metrics = node_1_metrics(&pair).await;
    assert!(
        metrics.lines().any(|line| line == "parley_resume_replays_total 4"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line == "parley_resume_replayed_messages_total 17"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_user_who_missed_more_than_one_replay_query_reads_gets_every_message_in_order() {
    // The replay reads up to 1,000 pending messages with one query; past that it pages
    // through each chat. 1,150 takes the second way.
    let pair = pair("long-resume").await;
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    let sent: Vec<String> = (1..=1150).map(|i| format!("while away {i}")).collect();
    for (frame, chunk) in sent.chunks(100).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, text)| text_message(text, Some(&format!("f{frame}-m{i}"))))
            .collect();
        bob.send_messages(&pair.chat_id, batch, None).await.unwrap();
        bob.until_action(actions::ACK, WAIT).await.unwrap();
    }

    let (_, replay, before) = connect(&pair, &pair.alice).await;
    assert_eq!(replay.replayed, 1150);
    let expected: Vec<(u64, String)> = (1..=1150).zip(sent.iter().cloned()).collect();
    assert_eq!(texts(&before), expected);
}

#[tokio::test]
async fn read_receipts_reach_the_sender_and_the_history() {
    let pair = pair("receipts").await;
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    let (mut alice, _, _) = connect(&pair, &pair.alice).await;
    let batch = (1..=3).map(|i| text_message(&format!("m{i}"), None)).collect();
    bob.send_messages(&pair.chat_id, batch, None).await.unwrap();
    bob.until_action(actions::ACK, WAIT).await.unwrap();
    alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    alice.report(actions::READ, &pair.chat_id, 2).await.unwrap();
    let (_, status) = bob.until_action(actions::STATUS, WAIT).await.unwrap();
    let status: StatusPayload = status.decode_payload().unwrap();
    assert_eq!((status.status.as_str(), status.seq), ("read", 2));

    let history = pair.app.http.messages(&pair.bob, &pair.chat_id, 0, 100).await.unwrap();
    let statuses: Vec<_> = history.messages.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(statuses, ["read", "read", "created"]);
    let chats = pair.app.http.chats(&pair.alice).await.unwrap().chats;
    assert_eq!(chats[0].unread, 1, "one message above Alice's read cursor");
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_usable() {
    let pair = pair("badframes").await;
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    let chat = &pair.chat_id;
    let send = |payload: String| {
        serde_json::json!({"topic": "messenger", "action": "send-message", "payload": payload, "ref": "x1"}).to_string()
    };
    let stranger_chat = uuid::Uuid::new_v4().to_string();
    let cases = [
        ("not json".to_owned(), "not_json"),
        (
            r#"{"topic":"weather","action":"send-message","payload":"{}"}"#.to_owned(),
            "unknown_topic",
        ),
        (
            r#"{"topic":"messenger","action":"dance","payload":"{}"}"#.to_owned(),
            "unknown_action",
        ),
        (
            r#"{"topic":"messenger","action":"send-message","payload":{"chat_id":"x"}}"#.to_owned(),
            "invalid_envelope",
        ),
        (send("{\"chat_id\": 5}".to_owned()), "invalid_payload"),
        (send(format!(r#"{{"chat_id":"{chat}"}}"#)), "invalid_payload"),
        (
            send(format!(r#"{{"chat_id":"{chat}","messages":[{{"text":""}}]}}"#)),
            "empty_text",
        ),
        (
            send(format!(
                r#"{{"chat_id":"{chat}","messages":[{{"text":"{}"}}]}}"#,
                "x".repeat(5000)
            )),
            "text_too_long",
        ),
        (
            send(format!(
                r#"{{"chat_id":"{stranger_chat}","messages":[{{"text":"hi","client_id":"k1"}}]}}"#
            )),
            "chat_not_found",
        ),
    ];
    for (frame, code) in cases {
        bob.send_text(frame.clone()).await.unwrap();
        let envelope = bob.next_envelope(WAIT).await.unwrap();
        assert_eq!(envelope.action, actions::ERROR, "{frame:.60}");
        let error: ErrorPayload = envelope.decode_payload().unwrap();
        assert_eq!(error.code, code, "{frame:.60}: {}", error.message);
        assert!(!error.message.is_empty());
        if code == "chat_not_found" {
            assert_eq!(envelope.reference.as_deref(), Some("x1"));
            assert_eq!(error.client_ids, ["k1"]);
        }
    }
    bob.send_binary(vec![1, 2, 3]).await.unwrap();
    let binary: ErrorPayload = bob.next_envelope(WAIT).await.unwrap().decode_payload().unwrap();
    assert_eq!(binary.code, "binary_not_supported");

    // A chat Bob is not in: Alice and Carol's.
    let carol_id = pair
        .app
        .http
        .sign_up_ok(&seed_person("Carol", "badframes"))
        .await
        .unwrap();
    let others_chat = pair.app.http.create_chat(&pair.alice, &carol_id).await.unwrap();
    bob.send_messages(&others_chat, vec![text_message("intrude", None)], None)
        .await
        .unwrap();
    let refused: ErrorPayload = bob.next_envelope(WAIT).await.unwrap().decode_payload().unwrap();
    assert_eq!(refused.code, "chat_not_found");
    assert_eq!(
        pair.app
            .http
            .messages(&pair.alice, &others_chat, 0, 10)
            .await
            .unwrap()
            .total,
        0
    );

    // Still usable.
    bob.send_messages(chat, vec![text_message("still here", None)], None)
        .await
        .unwrap();
    let (_, ack) = bob.until_action(actions::ACK, WAIT).await.unwrap();
    assert_eq!(ack.decode_payload::<AckPayload>().unwrap().acks[0].seq, 1);

    // An oversized frame closes with 1009.
    bob.send_text("x".repeat(100 * 1024)).await.unwrap();
    assert_eq!(bob.until_closed(WAIT).await, Some(1009));
}

#[tokio::test]
async fn a_bad_token_is_refused_before_the_upgrade() {
    let pair = pair("token").await;
    assert!(MessengerSocket::connect(pair.app.http.base_url(), "garbage")
        .await
        .is_err());
    let answer = pair
        .app
        .http
        .request(reqwest::Method::GET, "/messenger/ws?token=garbage", None, None)
        .await
        .unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(pair.alice_id.len(), 36);
}

#[tokio::test]
async fn the_senders_other_sessions_get_the_message_and_the_sending_socket_only_the_ack() {
    let pair = pair("devices").await;
    let (mut phone, _, _) = connect(&pair, &pair.bob).await;
    let (mut laptop, _, _) = connect(&pair, &pair.bob).await;
    phone
        .send_messages(&pair.chat_id, vec![text_message("from the phone", Some("p-1"))], None)
        .await
        .unwrap();
    let (before_ack, _) = phone.until_action(actions::ACK, WAIT).await.unwrap();
    assert!(
        before_ack
            .iter()
            .all(|envelope| envelope.action != actions::SEND_MESSAGE),
        "the sending socket gets no copy: {before_ack:?}"
    );
    let (_, copy) = laptop.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    let copy: DeliveryPayload = copy.decode_payload().unwrap();
    assert_eq!(copy.messages[0].text, "from the phone");
    assert_eq!(copy.messages[0].client_id.as_deref(), Some("p-1"));
    // Nothing else arrives on the phone for that message.
    phone
        .send_messages(&pair.chat_id, vec![text_message("second", None)], None)
        .await
        .unwrap();
    let (between, _) = phone.until_action(actions::ACK, WAIT).await.unwrap();
    assert!(between.iter().all(|envelope| envelope.action != actions::SEND_MESSAGE));
}

#[tokio::test]
async fn a_message_committed_but_never_delivered_live_reaches_the_live_socket_from_the_database() {
    // A node that commits a message, acks it and dies before the delivery to the
    // recipient's node leaves its buffers leaves a hole in a live socket's sequence, and
    // the socket's client never reconnects to have it replayed. Here the hole is made by
    // writing the message straight into the database, as that node's commit did.
    let pair = pair("hole").await;
    let (mut bob, _, _) = connect(&pair, &pair.bob).await;
    let (mut alice, _, _) = connect(&pair, &pair.alice).await;
    bob.send_messages(&pair.chat_id, vec![text_message("first", Some("hole-1"))], None)
        .await
        .unwrap();
    let (_, first) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    assert_eq!(texts(&[first]), [(1, "first".to_owned())]);

    commit_without_delivery(&pair, 2, "acked by a node that then died").await;
    bob.send_messages(&pair.chat_id, vec![text_message("third", Some("hole-3"))], None)
        .await
        .unwrap();
    // Seq 3 live, then seq 2 once the hole outlived its grace (a second).
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let (_, delivery) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
        delivered.extend(texts(&[delivery]));
    }
    assert_eq!(
        delivered,
        [
            (3, "third".to_owned()),
            (2, "acked by a node that then died".to_owned())
        ]
    );
    // Bob's own socket lacked seq 2 as well: it was acked to the dead node's socket,
    // not to this one, and his later seqs here are his own, which no delivery brings.
    let (_, repaired_for_bob) = bob.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    assert_eq!(
        texts(&[repaired_for_bob]),
        [(2, "acked by a node that then died".to_owned())]
    );
    let metrics = node_1_metrics(&pair).await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "parley_delivery_gaps_repaired_total 2"),
        "{metrics}"
    );
    // Nothing goes out twice: the next delivery is the next message alone.
    bob.send_messages(&pair.chat_id, vec![text_message("fourth", Some("hole-4"))], None)
        .await
        .unwrap();
    let (before, fourth) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    assert!(before.iter().all(|envelope| envelope.action != actions::SEND_MESSAGE));
    assert_eq!(texts(&[fourth]), [(4, "fourth".to_owned())]);
}

/// Commits Bob's message at `seq` in the pair's chat as a node's commit does (under the
/// chat's row lock, the chat's last seq moved with it) and delivers it to no one.
async fn commit_without_delivery(pair: &Pair, seq: u64, text: &str) {
    use mysql_async::prelude::Queryable;
    let servers = shared_servers(BINARY).await;
    let mut master = parley_launcher::mariadb_admin::connect_url(&servers.root_url("master"))
        .await
        .unwrap();
    let database = &pair.app.database;
    let mut transaction = master.start_transaction(mysql_async::TxOpts::default()).await.unwrap();
    let last_seq: Option<u64> = transaction
        .exec_first(
            format!("SELECT last_seq FROM `{database}`.chats WHERE id = ? FOR UPDATE"),
            (&pair.chat_id,),
        )
        .await
        .unwrap();
    assert_eq!(last_seq, Some(seq - 1), "the chat is not where the test expects it");
    transaction
        .exec_drop(
            format!(
                "INSERT INTO `{database}`.messages (id, chat_id, seq, user_id, text, create_time) \
                 VALUES (UUID(), ?, ?, ?, ?, UTC_TIMESTAMP(6))"
            ),
            (&pair.chat_id, seq, &pair.bob_id, text),
        )
        .await
        .unwrap();
    transaction
        .exec_drop(
            format!("UPDATE `{database}`.chats SET last_seq = ? WHERE id = ?"),
            (seq, &pair.chat_id),
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    parley_launcher::mariadb_admin::close(master).await;
}
