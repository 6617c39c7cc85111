//! A 200-member group on a real two-node cluster behind nginx: half the members on each
//! node, four of them sending paced rounds while node-2 is frozen (SIGSTOP) with a burst
//! written to it and then SIGKILLed. Every member must end up holding every message once,
//! with the stored id, each sender's messages in order; every send is acked once at the
//! seq the history has.
//!
//! It fills both cores, so it is a test binary of its own: cargo runs test binaries one
//! after another, so nothing else runs beside it. The smaller group tests are in
//! `group_chats.rs`; the helpers both use are in `support/group_members.rs`.

#[path = "support/group_members.rs"]
mod group_members;
#[path = "support/test_app.rs"]
mod test_app;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use group_members::{
    assert_history_gap_free_from_created, collect_member_events, history, ids, sign_up_all, User, MANY_USERS_ARGS, WAIT,
};
use nix::sys::signal::Signal;
use parley_client::{ChatClient, ChatClientConfig, ChatClientStats};
use protocol::messenger::MessageView;
use test_app::{shared_servers, TestApp};
use tokio::time::Instant;

const BINARY: &str = "group_chats_node_kill";

const MEMBERS: usize = 200;
/// Members 0..SENDERS send; even members start on node-1, odd ones on node-2.
const SENDERS: usize = 4;
/// Rounds of one message per sender, paced.
const ROUNDS: usize = 60;
const ROUND_INTERVAL: Duration = Duration::from_millis(50);
/// In this round node-2 is frozen, every sender writes `FROZEN_BURST` messages more, and
/// node-2 is SIGKILLed with its senders' messages written and never answered.
const KILL_ROUND: usize = ROUNDS / 3;
const FROZEN_BURST: usize = 5;
const SETTLE: Duration = Duration::from_secs(90);

fn node_of_member(index: usize) -> &'static str {
    if index.is_multiple_of(2) {
        "node-1"
    } else {
        "node-2"
    }
}

/// Waits until `node`'s process is gone.
async fn wait_until_dead(app: &TestApp, node: &str) {
    let deadline = Instant::now() + WAIT;
    while app
        .app
        .status()
        .iter()
        .any(|component| component.name == node && component.alive)
    {
        assert!(Instant::now() < deadline, "{node} did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_member_group_over_both_nodes_gets_every_message_once_in_order_through_a_node_kill() {
    let started = Instant::now();
    let mut args = MANY_USERS_ARGS.to_vec();
    args.extend(["--max-group-members", "200"]);
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 2, &args).await;
    app.wait_cluster_formed().await;
    let http = &app.http;

    let people = (0..MEMBERS)
        .map(|index| ("Member".to_owned(), format!("big-{index}")))
        .collect();
    let users = sign_up_all(http, people).await;
    let signed_up_in = started.elapsed();
    let creator = &users[0];
    let others: Vec<&User> = users[1..].iter().collect();
    let chat_id = http
        .create_group(&creator.token, "Two hundred", &ids(&others))
        .await
        .unwrap();
    let members = http.group_members(&creator.token, &chat_id).await.unwrap();
    assert_eq!(members.kind, "group");
    assert_eq!(members.title.as_deref(), Some("Two hundred"));
    assert_eq!(members.creator_id.as_deref(), Some(creator.id.as_str()));
    assert_eq!(members.members.len(), MEMBERS, "the creator and all 199");

    // Every member's socket: half on each node.
    let connecting = Instant::now();
    let mut clients = Vec::with_capacity(MEMBERS);
    let mut logs = Vec::with_capacity(MEMBERS);
    let mut collectors = Vec::with_capacity(MEMBERS);
    for (index, user) in users.iter().enumerate() {
        let mut config = ChatClientConfig::new(http.base_url(), user.token.clone());
        config.client_id_prefix = format!("m{index}");
        config.first_connect_base_url = Some(app.app.node_url(node_of_member(index)));
        let (client, events) = ChatClient::start(config);
        let (log, collector) = collect_member_events(chat_id.clone(), events);
        clients.push(client);
        logs.push(log);
        collectors.push(collector);
    }
    let lives = futures::future::join_all(
        clients
            .iter()
            .map(|client| client.wait_until_live(Duration::from_secs(60))),
    )
    .await;
    for (index, live) in lives.into_iter().enumerate() {
        let live = live.unwrap_or_else(|error| panic!("member {index} never went live: {error}"));
        assert_eq!(
            live.current_node.as_deref(),
            Some(node_of_member(index)),
            "member {index}"
        );
    }
    let connected_in = connecting.elapsed();

    // The burst: every sender a message a round; node-2 frozen then killed a third in.
    let burst_started = Instant::now();
    let mut sent: Vec<Vec<(String, String)>> = vec![Vec::new(); SENDERS];
    let mut queued_at: HashMap<String, Instant> = HashMap::new();
    let mut send = |sender: usize, sent: &mut Vec<Vec<(String, String)>>| {
        let text = format!("sender {sender} message {}", sent[sender].len());
        let client_id = clients[sender].send(&chat_id, text.clone()).unwrap();
        queued_at.insert(client_id.clone(), Instant::now());
        sent[sender].push((client_id, text));
    };
    let node_2_senders: Vec<usize> = (0..SENDERS)
        .filter(|sender| node_of_member(*sender) == "node-2")
        .collect();
    let mut pace = tokio::time::interval(ROUND_INTERVAL);
    let mut killed_at = None;
    for round in 0..ROUNDS {
        pace.tick().await;
        if round == KILL_ROUND {
            let acked_before: u64 = clients[..SENDERS]
                .iter()
                .map(|client| client.stats().messages_acked)
                .sum();
            assert!(acked_before > 0, "the burst is under way before the kill");
            app.app.kill("node-2", Signal::SIGSTOP).unwrap();
            for _ in 0..FROZEN_BURST {
                for sender in 0..SENDERS {
                    send(sender, &mut sent);
                }
            }
            for &sender in &node_2_senders {
                let queued = sent[sender].len() as u64;
                clients[sender]
                    .wait_for("the frozen burst written", WAIT, |stats| {
                        stats.messages_written >= queued
                    })
                    .await
                    .unwrap();
            }
            killed_at = Some(Instant::now());
            app.app.kill("node-2", Signal::SIGKILL).unwrap();
            wait_until_dead(&app, "node-2").await;
        }
        for sender in 0..SENDERS {
            send(sender, &mut sent);
        }
    }
    let killed_at = killed_at.expect("the loop passed the kill round");
    let burst_sent_in = burst_started.elapsed();
    for (sender, client) in clients[..SENDERS].iter().enumerate() {
        client
            .wait_all_acked(SETTLE)
            .await
            .unwrap_or_else(|error| panic!("sender {sender}: {error}"));
    }
    let all_acked_in = burst_started.elapsed();

    // The group's history is the reference: gap-free, and each sent text once.
    let stored = history(http, creator, &chat_id).await;
    assert_history_gap_free_from_created(&stored, creator);
    let total = stored.len() as u64;
    let by_seq: BTreeMap<u64, &MessageView> = stored.iter().map(|message| (message.seq, message)).collect();
    let text_seqs: BTreeSet<u64> = stored
        .iter()
        .filter(|message| message.event.is_none())
        .map(|message| message.seq)
        .collect();
    let sent_count: usize = sent.iter().map(Vec::len).sum();
    let mut stored_texts: HashMap<&str, usize> = HashMap::new();
    for message in stored.iter().filter(|message| message.event.is_none()) {
        *stored_texts.entry(message.text.as_str()).or_default() += 1;
    }
    assert_eq!(text_seqs.len(), sent_count, "each sent message is stored once");
    for (sender, texts) in sent.iter().enumerate() {
        for (_, text) in texts {
            assert_eq!(
                stored_texts.get(text.as_str()),
                Some(&1),
                "sender {sender}: {text:?} stored once"
            );
        }
    }

    // Every member holds every seq (delivered, or his own acked).
    let deadline = Instant::now() + SETTLE;
    loop {
        let lagging: Vec<(usize, Vec<u64>)> = logs
            .iter()
            .enumerate()
            .filter_map(|(index, log)| {
                let log = log.lock().unwrap();
                let missing: Vec<u64> = (1..=total).filter(|seq| !log.held.contains(seq)).collect();
                (!missing.is_empty()).then_some((index, missing))
            })
            .collect();
        if lagging.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let examples: Vec<String> = lagging
                .iter()
                .take(5)
                .map(|(index, missing)| {
                    format!(
                        "member {index} ({}) misses {} seqs, first {:?}",
                        node_of_member(*index),
                        missing.len(),
                        &missing[..missing.len().min(10)]
                    )
                })
                .collect();
            panic!(
                "{} of {MEMBERS} members still miss messages {SETTLE:?} after the senders' acks (total \
                 {total}): {examples:#?}",
                lagging.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_delivered_in = burst_started.elapsed();

    let mut final_stats: Vec<ChatClientStats> = Vec::with_capacity(MEMBERS);
    for (index, client) in clients.into_iter().enumerate() {
        final_stats.push(
            client
                .shutdown()
                .await
                .unwrap_or_else(|error| panic!("member {index}: {error}")),
        );
    }
    for collector in collectors {
        collector.await.unwrap();
    }

    // Every send acked once, at the seq the history has, in the order it was sent.
    let mut sender_figures = Vec::new();
    for (sender, texts) in sent.iter().enumerate() {
        let stats = &final_stats[sender];
        assert_eq!(stats.messages_acked, texts.len() as u64, "sender {sender}: {stats:?}");
        assert_eq!(stats.messages_refused, 0, "sender {sender}: {stats:?}");
        let log = logs[sender].lock().unwrap();
        let latencies = |before_kill: bool| {
            let mut latencies: Vec<Duration> = texts
                .iter()
                .filter(|(client_id, _)| (queued_at[client_id] < killed_at) == before_kill)
                .filter_map(|(client_id, _)| {
                    let acked = log.acked_at.get(client_id)?;
                    Some(acked.saturating_duration_since(queued_at[client_id]))
                })
                .collect();
            latencies.sort();
            let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
            (median, latencies.last().copied().unwrap_or_default())
        };
        sender_figures.push(format!(
            "sender {sender} ({}): ack latency median/max {:?} before the kill, {:?} after; {} acked after a \
             resend, {} copies resent",
            node_of_member(sender),
            latencies(true),
            latencies(false),
            log.acked_after_a_resend,
            stats.messages_resent
        ));
        let acks: HashMap<&str, (u64, &str)> = log
            .acked
            .iter()
            .map(|(client_id, seq, id)| (client_id.as_str(), (*seq, id.as_str())))
            .collect();
        assert_eq!(acks.len(), texts.len(), "sender {sender}: one ack per message");
        let mut previous_seq = 0;
        for (client_id, text) in texts {
            let (seq, id) = acks
                .get(client_id.as_str())
                .unwrap_or_else(|| panic!("sender {sender}: no ack for {client_id}"));
            let stored = by_seq[seq];
            assert_eq!((stored.id.as_str(), stored.text.as_str()), (*id, text.as_str()));
            assert!(
                *seq > previous_seq,
                "sender {sender}: {text:?} at seq {seq} after {previous_seq}"
            );
            previous_seq = *seq;
        }
    }
    for &sender in &node_2_senders {
        let stats = &final_stats[sender];
        assert!(
            stats.messages_resent > 0,
            "sender {sender}'s frozen burst was resent after the kill: {stats:?}"
        );
    }

    // Every member: each seq once, with the stored id; each sender's messages in order.
    let mut duplicates_dropped = 0;
    let mut arrival_inversions = 0;
    let mut slowest_resume = Duration::ZERO;
    let expected: BTreeMap<u64, &str> = by_seq
        .iter()
        .map(|(seq, message)| (*seq, message.id.as_str()))
        .collect();
    for (index, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        let stats = &final_stats[index];
        assert!(log.errors.is_empty(), "member {index}: {:?}", log.errors);
        assert_eq!(stats.sequence_conflicts, 0, "member {index}: {stats:?}");
        let mut held: BTreeMap<u64, &str> = BTreeMap::new();
        let mut ids_seen: HashSet<&str> = HashSet::new();
        let own = log.acked.iter().map(|(_, seq, id)| (*seq, id.as_str()));
        for (seq, id) in log.delivered.iter().map(|(seq, id)| (*seq, id.as_str())).chain(own) {
            assert!(ids_seen.insert(id), "member {index}: message {id} held twice");
            assert!(held.insert(seq, id).is_none(), "member {index}: seq {seq} held twice");
        }
        assert_eq!(held, expected, "member {index} holds exactly the stored messages");
        let texts_held = held.keys().filter(|seq| text_seqs.contains(seq)).count();
        assert_eq!(texts_held, sent_count, "member {index}: every sent message, once");
        // Arrival order: each sender's messages in seq order.
        let mut last_seq_by_sender: HashMap<&str, u64> = HashMap::new();
        let mut last_seq = 0;
        for (seq, _) in &log.delivered {
            let sender = by_seq[seq].user_id.as_str();
            let last = last_seq_by_sender.entry(sender).or_default();
            assert!(
                *seq > *last,
                "member {index}: seq {seq} of {sender} arrived after its seq {last}"
            );
            *last = *seq;
            if *seq < last_seq {
                arrival_inversions += 1;
            }
            last_seq = last_seq.max(*seq);
        }
        duplicates_dropped += stats.duplicates_dropped;
        if node_of_member(index) == "node-2" {
            assert!(stats.reconnects >= 1, "member {index} lost node-2: {stats:?}");
            assert_eq!(stats.current_node.as_deref(), Some("node-1"), "member {index}");
            let resume = stats
                .resume_records
                .iter()
                .find(|record| record.disconnected_at >= killed_at)
                .unwrap_or_else(|| panic!("member {index} resumed after the kill: {stats:?}"));
            slowest_resume = slowest_resume.max(resume.live_at.saturating_duration_since(killed_at));
        } else {
            assert_eq!(stats.reconnects, 0, "member {index} stayed on node-1: {stats:?}");
        }
    }
    println!(
        "200-member group: {total} seqs ({sent_count} messages); sign-ups {signed_up_in:?}, sockets live in \
         {connected_in:?}; burst queued in {burst_sent_in:?}, all acked {all_acked_in:?} and all delivered \
         {all_delivered_in:?} after the burst began; slowest node-2 member live again {slowest_resume:?} after \
         the kill; {duplicates_dropped} duplicate deliveries dropped by the clients; {arrival_inversions} \
         arrivals below an earlier seq (of different senders)\n{}",
        sender_figures.join("\n")
    );
}
