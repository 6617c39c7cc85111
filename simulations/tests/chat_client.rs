//! `ChatClient` against a real two-node cluster behind nginx: the recipient's node and the
//! sender's node are SIGKILLed mid-conversation, and every message still ends up stored
//! once and held once by the recipient's application, in seq order.
//!
//! Needs the `parley` binary next to this test's target dir (`cargo build -p parley-node`
//! into the same CARGO_TARGET_DIR) or PARLEY_BIN.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use nix::sys::signal::Signal;
use parley_client::chat_client::{ChatClient, ChatClientConfig, ChatClientEvent, ReceivedMessage, SentMessageAck};
use parley_client::http::{seed_person, ParleyHttp};
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::{ClusterSpec, LocalCluster};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Cheap password hashing: sign-ups are setup here, not the subject. No send rate limit:
/// these tests send hundreds of messages from one user as fast as the client can.
const NODE_ARGS: [&str; 4] = ["--scrypt-log-n", "10", "--send-messages-per-second", "0"];
const CONNECT_WAIT: Duration = Duration::from_secs(10);
const SETTLE_WAIT: Duration = Duration::from_secs(20);
/// Between Bob's messages: 1,000 messages take 8 s, long enough for a crash and a
/// reconnect to fall in the middle of steady traffic.
const SEND_INTERVAL: Duration = Duration::from_millis(8);

/// A running cluster with Bob and Alice signed in and a chat between them.
struct Conversation {
    cluster: LocalCluster,
    http: ParleyHttp,
    bob_token: String,
    alice_token: String,
    chat_id: String,
    // Dropped last: the cluster's processes live in it.
    _state_dir: tempfile::TempDir,
}

async fn start_conversation(tag: &str) -> anyhow::Result<Conversation> {
    start_conversation_with_args(tag, &[]).await
}

/// Like [`start_conversation`], with more flags for every node.
async fn start_conversation_with_args(tag: &str, extra_node_args: &[&str]) -> anyhow::Result<Conversation> {
    resolve_parley_binary(None).context("build the node first: cargo build -p parley-node, or set PARLEY_BIN")?;
    let state_dir = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state_dir.path().to_path_buf(), 2);
    spec.node_extra_args = NODE_ARGS
        .iter()
        .chain(extra_node_args)
        .map(|arg| arg.to_string())
        .collect();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    wait_until_cluster_formed(&cluster).await?;
    let http = ParleyHttp::new(cluster.app.public_url());
    http.sign_up_ok(&seed_person("Bob", tag)).await?;
    let alice_id = http.sign_up_ok(&seed_person("Alice", tag)).await?;
    let bob_token = http
        .sign_in(&format!("bob.{tag}@email.com"), "1234567890")
        .await?
        .access_token;
    let alice_token = http
        .sign_in(&format!("alice.{tag}@email.com"), "1234567890")
        .await?
        .access_token;
    let chat_id = http.create_chat(&bob_token, &alice_id).await?;
    Ok(Conversation {
        cluster,
        http,
        bob_token,
        alice_token,
        chat_id,
        _state_dir: state_dir,
    })
}

/// Cross-node delivery needs the mesh: wait until every node sees every node alive.
async fn wait_until_cluster_formed(cluster: &LocalCluster) -> anyhow::Result<()> {
    let names = cluster.app.node_names();
    let deadline = Instant::now() + Duration::from_secs(15);
    for name in &names {
        let node = ParleyHttp::new(cluster.app.node_url(name));
        loop {
            let view = node.request(reqwest::Method::GET, "/cluster", None, None).await?;
            let alive = view.body["members"].as_array().map_or(0, |members| {
                members.iter().filter(|member| member["alive"] == true).count()
            });
            if alive == names.len() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{name} never saw the whole cluster: {}",
                view.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn other_node(cluster: &LocalCluster, node: &str) -> anyhow::Result<String> {
    cluster
        .app
        .node_names()
        .into_iter()
        .find(|name| name != node)
        .with_context(|| format!("no node other than {node}"))
}

fn client_config(
    conversation: &Conversation,
    token: &str,
    name: &str,
    first_connect_node: Option<&str>,
) -> ChatClientConfig {
    let mut config = ChatClientConfig::new(conversation.cluster.app.public_url(), token);
    config.client_id_prefix = name.to_owned();
    config.first_connect_base_url = first_connect_node.map(|node| conversation.cluster.app.node_url(node));
    config
}

/// Keeps every event until the client shuts down (which ends the channel).
fn collect_events(mut events: UnboundedReceiver<ChatClientEvent>) -> JoinHandle<Vec<ChatClientEvent>> {
    tokio::spawn(async move {
        let mut collected = Vec::new();
        while let Some(event) = events.recv().await {
            collected.push(event);
        }
        collected
    })
}

fn received_messages(events: &[ChatClientEvent]) -> Vec<&ReceivedMessage> {
    events
        .iter()
        .filter_map(|event| match event {
            ChatClientEvent::Message(message) => Some(message),
            _ => None,
        })
        .collect()
}

fn acks(events: &[ChatClientEvent]) -> Vec<&SentMessageAck> {
    events
        .iter()
        .filter_map(|event| match event {
            ChatClientEvent::Acked(ack) => Some(ack),
            _ => None,
        })
        .collect()
}

/// The recipient's application holds each text once, with gap-free seqs from 1, in the
/// order the sender queued them.
fn assert_held_once_in_order(received: &[&ReceivedMessage], sent_texts: &[String]) {
    let distinct_ids: HashSet<&str> = received.iter().map(|message| message.id.as_str()).collect();
    assert_eq!(
        distinct_ids.len(),
        received.len(),
        "a message id reached the application twice"
    );
    let held: Vec<(u64, &str)> = received
        .iter()
        .map(|message| (message.seq, message.text.as_str()))
        .collect();
    let expected: Vec<(u64, &str)> = sent_texts
        .iter()
        .enumerate()
        .map(|(index, text)| (index as u64 + 1, text.as_str()))
        .collect();
    assert_eq!(held.len(), expected.len(), "messages held by the recipient");
    assert_eq!(
        held, expected,
        "the recipient holds exactly the sent messages, in order, with gap-free seqs"
    );
}

async fn assert_history_holds_each_text_once(conversation: &Conversation, sent_texts: &[String]) -> anyhow::Result<()> {
    let history = conversation
        .http
        .messages(&conversation.bob_token, &conversation.chat_id, 0, 1000)
        .await?;
    assert_eq!(
        history.total,
        sent_texts.len() as u64,
        "the database holds each message once"
    );
    let mut stored_texts: HashMap<&str, usize> = HashMap::new();
    for message in &history.messages {
        *stored_texts.entry(message.text.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = stored_texts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "texts stored more than once: {duplicated:?}");
    assert!(
        sent_texts.iter().all(|text| stored_texts.contains_key(text.as_str())),
        "every sent text is stored"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_whose_node_is_killed_holds_every_message_once_in_order() -> anyhow::Result<()> {
    const TOTAL: usize = 1000;
    let conversation = start_conversation("recipient-crash").await?;
    let chat_id = conversation.chat_id.clone();

    let (alice, alice_events) =
        ChatClient::start(client_config(&conversation, &conversation.alice_token, "alice", None));
    let alice_events = collect_events(alice_events);
    let alices_node = alice
        .wait_until_live(CONNECT_WAIT)
        .await?
        .current_node
        .context("a live connection names its node")?;
    let bobs_node = other_node(&conversation.cluster, &alices_node)?;
    let (bob, bob_events) = ChatClient::start(client_config(
        &conversation,
        &conversation.bob_token,
        "bob",
        Some(&bobs_node),
    ));
    let bob_events = collect_events(bob_events);
    let bob_live = bob.wait_until_live(CONNECT_WAIT).await?;
    assert_eq!(bob_live.current_node.as_deref(), Some(bobs_node.as_str()));

    let sent_texts: Vec<String> = (0..TOTAL).map(|index| format!("message {index}")).collect();
    let mut client_ids = Vec::with_capacity(TOTAL);
    let mut killed_at = None;
    let mut pace = tokio::time::interval(SEND_INTERVAL);
    for (index, text) in sent_texts.iter().enumerate() {
        pace.tick().await;
        client_ids.push(bob.send(&chat_id, text.as_str())?);
        if index == TOTAL / 2 {
            // Taken before the signal: the client may notice the dead socket before kill returns.
            killed_at = Some(Instant::now());
            conversation.cluster.kill(&alices_node, Signal::SIGKILL)?;
        }
    }
    let killed_at = killed_at.expect("the loop passed the halfway mark");
    bob.wait_all_acked(SETTLE_WAIT).await?;
    alice.wait_delivered(TOTAL as u64, SETTLE_WAIT).await?;
    let alice_stats = alice.shutdown().await?;
    let bob_stats = bob.shutdown().await?;
    let alice_events = alice_events.await?;
    let bob_events = bob_events.await?;

    assert_held_once_in_order(&received_messages(&alice_events), &sent_texts);
    let bob_acks = acks(&bob_events);
    let acked_client_ids: HashSet<&str> = bob_acks.iter().map(|ack| ack.client_id.as_str()).collect();
    let sent_client_ids: HashSet<&str> = client_ids.iter().map(String::as_str).collect();
    assert_eq!(bob_acks.len(), TOTAL, "one ack per message");
    assert_eq!(
        acked_client_ids, sent_client_ids,
        "Bob holds an ack for every message he sent"
    );
    assert_eq!(bob_stats.messages_acked, TOTAL as u64);
    assert_history_holds_each_text_once(&conversation, &sent_texts).await?;

    assert!(alice_stats.reconnects >= 1, "Alice reconnected: {alice_stats:?}");
    let resume = alice_stats
        .resume_records
        .iter()
        .find(|record| record.disconnected_at >= killed_at)
        .context("a resume after the kill")?;
    assert_ne!(resume.node, alices_node, "nginx sent Alice to the surviving node");
    let kill_to_first_traffic = resume.first_traffic_at.saturating_duration_since(killed_at);
    println!(
        "recipient crash: kill to first message after reconnect {kill_to_first_traffic:?} \
         (client-side resume {:?}, replayed {}); alice: {} delivered, {} duplicates dropped, {} reconnects; \
         bob: {} written, {} resent",
        resume.resume_time(),
        resume.replayed,
        alice_stats.messages_delivered_to_app,
        alice_stats.duplicates_dropped,
        alice_stats.reconnects,
        bob_stats.messages_written,
        bob_stats.messages_resent,
    );
    assert!(
        kill_to_first_traffic < Duration::from_secs(2),
        "resume took {kill_to_first_traffic:?}"
    );
    conversation.cluster.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_node_is_killed_gets_every_message_stored_and_delivered_once() -> anyhow::Result<()> {
    const TOTAL: usize = 600;
    /// Sent back to back into Bob's node frozen with SIGSTOP, then the node is SIGKILLed:
    /// the crash always catches messages written and never acked, and their resends must
    /// not be stored twice.
    const BURST: usize = 40;
    let conversation = start_conversation("sender-crash").await?;
    let chat_id = conversation.chat_id.clone();

    let (bob, bob_events) = ChatClient::start(client_config(&conversation, &conversation.bob_token, "bob", None));
    let bob_events = collect_events(bob_events);
    let bobs_node = bob
        .wait_until_live(CONNECT_WAIT)
        .await?
        .current_node
        .context("a live connection names its node")?;
    let alices_node = other_node(&conversation.cluster, &bobs_node)?;
    let (alice, alice_events) = ChatClient::start(client_config(
        &conversation,
        &conversation.alice_token,
        "alice",
        Some(&alices_node),
    ));
    let alice_events = collect_events(alice_events);
    alice.wait_until_live(CONNECT_WAIT).await?;

    let sent_texts: Vec<String> = (0..TOTAL).map(|index| format!("message {index}")).collect();
    let burst_starts_at = TOTAL / 2;
    let mut killed = None;
    let mut pace = tokio::time::interval(SEND_INTERVAL);
    for (index, text) in sent_texts.iter().enumerate() {
        let in_burst = (burst_starts_at..burst_starts_at + BURST).contains(&index);
        if !in_burst {
            pace.tick().await;
        }
        if index == burst_starts_at {
            conversation.cluster.kill(&bobs_node, Signal::SIGSTOP)?;
        }
        bob.send(&chat_id, text.as_str())?;
        if index + 1 == burst_starts_at + BURST {
            let queued = index as u64 + 1;
            let at_kill = bob
                .wait_for("the burst written", CONNECT_WAIT, |stats| {
                    stats.messages_written >= queued
                })
                .await?;
            killed = Some((Instant::now(), at_kill.messages_acked));
            conversation.cluster.kill(&bobs_node, Signal::SIGKILL)?;
        }
    }
    let (killed_at, acked_before_kill) = killed.expect("the loop passed the burst");
    bob.wait_all_acked(SETTLE_WAIT).await?;
    alice.wait_delivered(TOTAL as u64, SETTLE_WAIT).await?;
    let alice_stats = alice.shutdown().await?;
    let bob_stats = bob.shutdown().await?;
    let alice_events = alice_events.await?;
    let bob_events = bob_events.await?;

    let received = received_messages(&alice_events);
    let received_ids: HashMap<&str, u64> = received
        .iter()
        .map(|message| (message.id.as_str(), message.seq))
        .collect();
    let bob_acks = acks(&bob_events);
    let acked_before_the_kill: Vec<&&SentMessageAck> =
        bob_acks.iter().filter(|ack| ack.acked_at <= killed_at).collect();
    for ack in &acked_before_the_kill {
        assert_eq!(
            received_ids.get(ack.id.as_str()),
            Some(&ack.seq),
            "a message acked before the kill reached Alice with its acked seq"
        );
    }
    assert_held_once_in_order(&received, &sent_texts);
    assert_history_holds_each_text_once(&conversation, &sent_texts).await?;
    let acked_client_ids: HashSet<&str> = bob_acks.iter().map(|ack| ack.client_id.as_str()).collect();
    assert_eq!(acked_client_ids.len(), TOTAL, "one ack per message");
    let resent_and_acked = bob_acks.iter().filter(|ack| ack.times_written > 1).count();

    assert!(bob_stats.reconnects >= 1, "Bob reconnected: {bob_stats:?}");
    assert!(
        bob_stats.messages_resent > 0,
        "the kill caught no message in flight, so nothing exercised a resend: {bob_stats:?}"
    );
    assert_eq!(alice_stats.reconnects, 0, "Alice's node survived: {alice_stats:?}");
    let resume = bob_stats.resume_records.first().context("Bob resumed")?;
    assert_ne!(resume.node, bobs_node, "nginx sent Bob to the surviving node");
    println!(
        "sender crash: {} acked before the kill (counter {acked_before_kill}), {} copies resent, {} messages acked \
         after a resend; bob kill to live again {:?} (client-side resume {:?}); alice: {} delivered, {} duplicates \
         dropped",
        acked_before_the_kill.len(),
        bob_stats.messages_resent,
        resent_and_acked,
        resume.live_at.saturating_duration_since(killed_at),
        resume.resume_time(),
        alice_stats.messages_delivered_to_app,
        alice_stats.duplicates_dropped,
    );
    conversation.cluster.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_refresh_token_keeps_its_socket_past_token_expiry_and_stops_when_signed_out(
) -> anyhow::Result<()> {
    // Access tokens of 4 s: the client renews at about 2.7 s, over the open socket.
    let conversation = start_conversation_with_args("renew", &["--access-token-ttl-seconds", "4"]).await?;
    let pair = conversation.http.sign_in("bob.renew@email.com", "1234567890").await?;
    let mut config = client_config(&conversation, &pair.access_token, "bob", None);
    config.refresh_token = Some(pair.refresh_token.clone());
    let (bob, mut events) = ChatClient::start(config);
    bob.wait_until_live(CONNECT_WAIT).await?;

    // Two renewals: the socket outlives the token it was opened with (4 s) and the next.
    let mut renewals = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while renewals < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(ChatClientEvent::TokenRenewed { .. })) => {
                renewals += 1;
                bob.send(&conversation.chat_id, format!("after renewal {renewals}"))?;
            }
            Ok(Some(ChatClientEvent::Disconnected { reason, .. })) => panic!("the socket was lost: {reason}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("two renewals did not happen within 20 s: {:?}", bob.stats()),
        }
    }
    let stats = bob.wait_all_acked(SETTLE_WAIT).await?;
    assert_eq!(stats.connections_opened, 1, "one socket all along: {stats:?}");
    assert_eq!(stats.messages_acked, 2, "{stats:?}");

    // Signing out (with the sign-in's first refresh token: any token of the family ends
    // it) closes the socket with 4403 and stops the client.
    let body = serde_json::json!({ "refresh_token": pair.refresh_token }).to_string();
    let answer = conversation
        .http
        .request(reqwest::Method::POST, "/auth/sign-out", None, Some(&body))
        .await?;
    assert_eq!(answer.status, 204, "{}", answer.body);
    let signed_out = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(event) = events.recv().await {
            if let ChatClientEvent::SignedOut { reason } = event {
                return Some(reason);
            }
        }
        None
    })
    .await;
    assert!(
        matches!(signed_out, Ok(Some(_))),
        "the client heard of the sign-out within a second: {signed_out:?}"
    );
    bob.wait_for("the client to stop", Duration::from_secs(5), |stats| !stats.live)
        .await?;
    conversation.cluster.shutdown().await?;
    Ok(())
}
