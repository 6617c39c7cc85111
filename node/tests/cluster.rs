//! Two nodes in one ractor_cluster mesh: membership, cross-node delivery, presence, and
//! a recipient whose node is SIGKILLed mid-conversation.

#[path = "support/test_app.rs"]
mod test_app;

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use parley_client::{MessengerSocket, SocketEvent};
use protocol::websocket::{actions, DeliveryPayload, Envelope, OutgoingMessage, PresencePayload};
use test_app::{connect_live, shared_servers, Pair, TestApp};
use tokio::time::Instant;

const BINARY: &str = "cluster";
const WAIT: Duration = Duration::from_secs(10);

async fn pair(tag: &str) -> Pair {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    Pair::in_app(app, tag).await
}

async fn connect_to(pair: &Pair, node: &str, token: &str) -> MessengerSocket {
    connect_live(&pair.app.app.node_url(node), token).await.0
}

#[tokio::test]
async fn the_seeds_frames_cross_from_bobs_node_to_alices() {
    let pair = pair("cross").await;
    let mut alice = connect_to(&pair, "node-1", &pair.alice).await;
    let mut bob = connect_to(&pair, "node-2", &pair.bob).await;
    for text in ["Hello, Alice!", "What is up?", "I miss you!"] {
        let frame = format!(
            r#"{{"topic":"messenger", "action": "send-message", "payload":"{{\"chat_id\":\"{}\", \"messages\":[{{\"text\": \"{text}\", \"status\": \"created\"}}]}}"}}"#,
            pair.chat_id
        );
        bob.send_text(frame).await.unwrap();
        bob.until_action(actions::ACK, WAIT).await.unwrap();
    }
    let mut received = Vec::new();
    while received.len() < 3 {
        let (_, delivery) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
        let delivery: DeliveryPayload = delivery.decode_payload().unwrap();
        received.extend(delivery.messages.into_iter().map(|m| (m.seq, m.text, m.user_id)));
    }
    let texts: Vec<_> = received.iter().map(|(seq, text, _)| (*seq, text.as_str())).collect();
    assert_eq!(texts, [(1, "Hello, Alice!"), (2, "What is up?"), (3, "I miss you!")]);
    assert!(received.iter().all(|(_, _, sender)| *sender == pair.bob_id));
    assert_eq!(
        pair.app
            .http
            .messages(&pair.alice, &pair.chat_id, 0, 10)
            .await
            .unwrap()
            .total,
        3
    );
}

#[tokio::test]
async fn presence_crosses_nodes_within_a_second() {
    let pair = pair("presence").await;
    let mut alice = connect_to(&pair, "node-1", &pair.alice).await;
    let started = Instant::now();
    let bob = connect_to(&pair, "node-2", &pair.bob).await;
    let (_, online) = alice.until_action(actions::PRESENCE, WAIT).await.unwrap();
    let online: PresencePayload = online.decode_payload().unwrap();
    assert_eq!((online.user_id.as_str(), online.online), (pair.bob_id.as_str(), true));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "online took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    bob.close().await.unwrap();
    let (_, offline) = alice.until_action(actions::PRESENCE, WAIT).await.unwrap();
    let offline: PresencePayload = offline.decode_payload().unwrap();
    assert_eq!(
        (offline.user_id.as_str(), offline.online),
        (pair.bob_id.as_str(), false)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "offline took {:?}",
        started.elapsed()
    );
}

/// Whether `user_id` is listed online in `token`'s only chat, as `node` answers.
async fn listed_online(pair: &Pair, node: &str, token: &str, user_id: &str) -> bool {
    let chats = pair.app.node(node).chats(token).await.unwrap().chats;
    let participant = chats[0]
        .participants
        .iter()
        .find(|participant| participant.user_id == user_id)
        .unwrap_or_else(|| panic!("{user_id} is not listed: {chats:?}"));
    participant.online
}

#[tokio::test]
async fn the_chat_list_tells_who_is_online_across_nodes() {
    let pair = pair("listed-online").await;
    // The chat was written through another node: lists read from replicas show it once
    // replication has caught up.
    let deadline = Instant::now() + WAIT;
    for (node, token) in [("node-1", &pair.alice), ("node-2", &pair.alice), ("node-1", &pair.bob)] {
        while pair.app.node(node).chats(token).await.unwrap().chats.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the chat never appeared in the lists of {node}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(!listed_online(&pair, "node-1", &pair.alice, &pair.bob_id).await);
    let bob = connect_to(&pair, "node-2", &pair.bob).await;
    // connect_live returns after replay-complete, and the session announced itself to
    // every peer before its replay: node-1 already knows.
    assert!(listed_online(&pair, "node-1", &pair.alice, &pair.bob_id).await);
    assert!(listed_online(&pair, "node-2", &pair.alice, &pair.bob_id).await);
    assert!(!listed_online(&pair, "node-1", &pair.bob, &pair.alice_id).await);

    bob.close().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while listed_online(&pair, "node-1", &pair.alice, &pair.bob_id).await {
        assert!(
            Instant::now() < deadline,
            "bob still listed online {WAIT:?} after closing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What Alice's application holds: every message once, in seq order.
#[derive(Default)]
struct Inbox {
    seen_ids: HashSet<String>,
    texts_in_order: Vec<(u64, String)>,
    duplicates_on_the_wire: usize,
}

impl Inbox {
    fn take(&mut self, envelope: &Envelope) {
        if envelope.action != actions::SEND_MESSAGE {
            return;
        }
        let delivery: DeliveryPayload = envelope.decode_payload().unwrap();
        for message in delivery.messages {
            if self.seen_ids.insert(message.id.clone()) {
                self.texts_in_order.push((message.seq, message.text));
            } else {
                self.duplicates_on_the_wire += 1;
            }
        }
    }

    /// The highest seq below which nothing is missing.
    fn contiguous_top(&self) -> u64 {
        let seqs: HashSet<u64> = self.texts_in_order.iter().map(|(seq, _)| *seq).collect();
        let mut top = 0;
        while seqs.contains(&(top + 1)) {
            top += 1;
        }
        top
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_whose_node_dies_gets_every_message_once_after_reconnecting_through_nginx() {
    const TOTAL: usize = 300;
    let pair = pair("crash").await;
    let mut alice = connect_to(&pair, "node-1", &pair.alice).await;
    let mut bob = connect_to(&pair, "node-2", &pair.bob).await;

    // Bob sends at a steady rate with client ids and collects his acks.
    let chat_id = pair.chat_id.clone();
    let sender = tokio::spawn(async move {
        let mut acked = HashSet::new();
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for index in 0..TOTAL {
            pace.tick().await;
            let message = OutgoingMessage {
                text: format!("message {index}"),
                status: Some("created".into()),
                client_id: Some(format!("bob-{index}")),
            };
            bob.send_messages(&chat_id, vec![message], None).await.unwrap();
        }
        while acked.len() < TOTAL {
            let (_, ack) = bob.until_action(actions::ACK, WAIT).await.unwrap();
            let ack: protocol::websocket::AckPayload = ack.decode_payload().unwrap();
            acked.extend(ack.acks.into_iter().map(|a| a.client_id.unwrap()));
        }
        acked.len()
    });

    let mut inbox = Inbox::default();
    while inbox.texts_in_order.len() < TOTAL / 2 {
        let envelope = alice.next_envelope(WAIT).await.unwrap();
        inbox.take(&envelope);
    }
    alice
        .report(actions::RECEIVED, &pair.chat_id, inbox.contiguous_top())
        .await
        .unwrap();

    let killed_at = Instant::now();
    pair.app.app.kill("node-1", Signal::SIGKILL).unwrap();
    // The survivor notices the crash in well under a second (its cluster session closes).
    let survivor = pair.app.node("node-2");
    loop {
        let view = survivor
            .request(reqwest::Method::GET, "/cluster", None, None)
            .await
            .unwrap();
        let members = view.body["members"].as_array().cloned().unwrap_or_default();
        let node_1_alive = members.iter().any(|member| {
            member["name"].as_str().unwrap_or_default().starts_with("node-1#") && member["alive"] == true
        });
        if !node_1_alive {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(1),
            "crash not detected within 1 s: {}",
            view.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let detected_after = killed_at.elapsed();
    // Drain until the socket dies.
    while let Ok(SocketEvent::Envelope(envelope)) = alice.next_event(WAIT).await {
        inbox.take(&envelope);
    }
    // Reconnect through nginx, which now only has node-2.
    let mut reconnected = None;
    while reconnected.is_none() {
        assert!(killed_at.elapsed() < WAIT, "could not reconnect");
        reconnected = MessengerSocket::connect(pair.app.http.base_url(), &pair.alice)
            .await
            .ok();
    }
    let mut alice = reconnected.unwrap();
    let mut first_replayed = None;
    loop {
        let envelope = alice.next_envelope(WAIT).await.unwrap();
        if envelope.action == actions::SEND_MESSAGE && first_replayed.is_none() {
            first_replayed = Some(killed_at.elapsed());
        }
        inbox.take(&envelope);
        if envelope.action == actions::REPLAY_COMPLETE {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while inbox.texts_in_order.len() < TOTAL && Instant::now() < deadline {
        if let Ok(SocketEvent::Envelope(envelope)) = alice.next_event(WAIT).await {
            inbox.take(&envelope);
        }
    }
    assert_eq!(sender.await.unwrap(), TOTAL, "Bob holds an ack for every message");
    assert_eq!(inbox.texts_in_order.len(), TOTAL, "Alice holds every message once");
    let expected: Vec<(u64, String)> = (0..TOTAL).map(|i| (i as u64 + 1, format!("message {i}"))).collect();
    assert_eq!(
        inbox.texts_in_order, expected,
        "exactly the messages Bob sent, in the order he sent them, with gap-free seqs"
    );
    let history = pair.app.http.messages(&pair.bob, &pair.chat_id, 0, 1000).await.unwrap();
    assert_eq!(history.total, TOTAL as u64, "the database holds each message once");
    let resume = first_replayed.expect("something was replayed or delivered after the reconnect");
    println!(
        "crash detected after {detected_after:?}; kill to first message after reconnect: {resume:?}; duplicates on the wire: {}",
        inbox.duplicates_on_the_wire
    );
    assert!(resume < Duration::from_secs(1), "resume took {resume:?}");
}
