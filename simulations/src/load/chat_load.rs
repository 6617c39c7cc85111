//! The websocket half of the experiment: per pair a sender and a recipient, each a
//! reconnecting [`ChatClient`] through nginx; senders write at a steady rate; every ack
//! and every delivery is written down in a ledger, from which the end of the run tells
//! what was lost and what came twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::latency_samples::LatencySamples;
use super::load_users::ChatPairAccounts;
use parley_client::chat_client::{ChatClient, ChatClientConfig, ChatClientEvent, ChatClientStats, ReceivedMessage};
use parley_launcher::readiness::POLL_INTERVAL;

/// Kept for the report; the counts go on past it.
const LISTED_PROBLEMS_LIMIT: usize = 50;

/// How the websocket load runs.
#[derive(Debug, Clone)]
pub struct ChatLoadSettings {
    /// nginx: it spreads the connections over the nodes, and every reconnect goes there.
    pub base_url: String,
    /// Messages per second each pair's sender sends.
    pub message_rate_per_pair: f64,
    /// Where each pair's first connections go, when they must be split over the nodes:
    /// pair i's sender to `first_connect_node_urls[i % n]`, its recipient to the next
    /// one. Empty: nginx places them. Reconnects always go through `base_url`.
    pub first_connect_node_urls: Vec<String>,
    /// At most this many messages of a sender written and not yet acked (None: no
    /// limit); the rest wait in the client.
    pub max_in_flight: Option<usize>,
}

/// An acked message the recipient's application never got.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct LostMessage {
    /// Index of the pair (sender and recipient) it was sent in.
    pub pair: usize,
    /// The pair's chat (UUID).
    pub chat_id: String,
    /// The client id it was sent with.
    pub client_id: String,
    /// The id the server acked it with.
    pub id: String,
    /// The seq the server acked it with.
    pub seq: u64,
    /// When it was acked, in seconds from the start of the load.
    pub acked_at_s: f64,
}

/// A message handed to the recipient's application a second time: the same id again, or
/// the same client id under another id (stored twice).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct DuplicateDelivery {
    /// Index of the pair it was delivered in.
    pub pair: usize,
    /// The id of the second copy.
    pub id: String,
    /// The seq of the second copy.
    pub seq: u64,
    /// The sender's client id, when it had one.
    pub client_id: Option<String>,
    /// The id of the first copy (the same as `id` for a repeated id).
    pub first_id: String,
    /// When the second copy arrived, in seconds from the start of the load.
    pub at_s: f64,
}

#[derive(Debug, Default)]
struct PairLedger {
    sent_at_by_client_id: HashMap<String, Instant>,
    /// client id → (message id, seq, acked at).
    acked: HashMap<String, (String, u64, Instant)>,
    refused: u64,
    /// message id → when the recipient's application got it.
    delivered_at_by_id: HashMap<String, Instant>,
    /// client id → the message id it was first delivered under.
    delivered_id_by_client_id: HashMap<String, String>,
    duplicates: Vec<(ReceivedMessage, String)>,
}

impl PairLedger {
    fn settled(&self) -> bool {
        self.acked.len() as u64 + self.refused >= self.sent_at_by_client_id.len() as u64
            && self
                .acked
                .values()
                .all(|(id, _, _)| self.delivered_at_by_id.contains_key(id))
    }

    fn record_delivery(&mut self, message: ReceivedMessage) {
        let first_id = match &message.client_id {
            Some(client_id) => self
                .delivered_id_by_client_id
                .get(client_id)
                .cloned()
                .filter(|first_id| *first_id != message.id),
            None => None,
        };
        if let Some(first_id) = first_id {
            self.duplicates.push((message, first_id));
            return;
        }
        if self.delivered_at_by_id.contains_key(&message.id) {
            let first_id = message.id.clone();
            self.duplicates.push((message, first_id));
            return;
        }
        if let Some(client_id) = &message.client_id {
            self.delivered_id_by_client_id
                .insert(client_id.clone(), message.id.clone());
        }
        self.delivered_at_by_id.insert(message.id, message.received_at);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairRole {
    Sender,
    Recipient,
}

struct PairClients {
    accounts: ChatPairAccounts,
    sender: ChatClient,
    recipient: ChatClient,
}

/// One acked message that reached its recipient.
#[derive(Debug, Clone)]
pub struct DeliveredTiming {
    /// The message's id.
    pub id: String,
    /// When the sender queued it (`send`).
    pub sent_at: Instant,
    /// When the recipient's client handed it to the application.
    pub delivered_at: Instant,
}

/// Where the users were when the load started.
#[derive(Debug, Default, Clone, serde::Serialize, PartialEq)]
pub struct ChatPlacement {
    /// Users connected to each node.
    pub users_by_node: BTreeMap<String, u64>,
    /// Pairs whose sender and recipient are on different nodes.
    pub cross_node_pairs: u64,
}

/// What the websocket load measured.
#[derive(Debug, Default)]
pub struct ChatLoadOutcome {
    /// Messages queued by the senders.
    pub sent: u64,
    /// Messages the server acked.
    pub acked: u64,
    /// Messages the server refused for good.
    pub refused: u64,
    /// Distinct messages the recipients got.
    pub delivered: u64,
    /// Acked messages never delivered (the first ones listed, by ack time).
    pub lost: Vec<LostMessage>,
    /// All acked messages never delivered.
    pub lost_count: u64,
    /// Messages delivered twice (the first ones listed).
    pub duplicates: Vec<DuplicateDelivery>,
    /// All messages delivered twice.
    pub duplicate_count: u64,
    /// Copies the ChatClients dropped by id (at-least-once delivery at work, not a fault).
    pub redeliveries_absorbed: u64,
    /// Two ids at one seq of a chat (a server bug if ever non-zero).
    pub sequence_conflicts: u64,
    /// Connections reopened after one was lost, over every client.
    pub reconnects: u64,
    /// Connection attempts that failed (refused upgrades, timeouts) before a reconnect.
    pub connect_failures: u64,
    /// Per reconnect: from the lost connection to the first traffic on the new one.
    pub resume_times: LatencySamples,
    /// From `send` on the sender to the recipient's application.
    pub delivery_times: LatencySamples,
    /// The same, message by message.
    pub delivered_messages: Vec<DeliveredTiming>,
    /// Indexed by the second of the load in which the recipient got it.
    pub delivered_per_second: Vec<u64>,
    /// Every ack arrived and every acked message reached its recipient in time.
    pub settled: bool,
    /// When each ack arrived, in seconds from the start of the load, in order.
    pub ack_times_s: Vec<f64>,
}

/// The websocket load while it runs: the pairs' clients and what they recorded.
pub struct RunningChatLoad {
    pairs: Vec<PairClients>,
    ledgers: Arc<Vec<Mutex<PairLedger>>>,
    event_consumers: Vec<JoinHandle<()>>,
    delivered_so_far: Arc<AtomicU64>,
    settings: ChatLoadSettings,
}

impl RunningChatLoad {
    /// Starts both clients of every pair; they connect in the background.
    pub fn connect(accounts: Vec<ChatPairAccounts>, settings: ChatLoadSettings) -> RunningChatLoad {
        let ledgers: Arc<Vec<Mutex<PairLedger>>> =
            Arc::new(accounts.iter().map(|_| Mutex::new(PairLedger::default())).collect());
        let delivered_so_far = Arc::new(AtomicU64::new(0));
        let mut event_consumers = Vec::with_capacity(accounts.len() * 2);
        let mut pairs = Vec::with_capacity(accounts.len());
        for (slot, pair) in accounts.into_iter().enumerate() {
            let start_client = |token: &str, role: PairRole, label: &str| {
                let mut config = ChatClientConfig::new(settings.base_url.clone(), token);
                let node_urls = &settings.first_connect_node_urls;
                if !node_urls.is_empty() {
                    let offset = usize::from(role == PairRole::Recipient);
                    config.first_connect_base_url =
                        Some(node_urls[(pair.pair_index + offset) % node_urls.len()].clone());
                }
                config.client_id_prefix = format!("pair{}-{label}", pair.pair_index);
                config.max_in_flight = settings.max_in_flight;
                // A partitioned node keeps its sockets open and silent; the experiment
                // wants its users to notice within seconds, not the default 15.
                config.keepalive_interval = Duration::from_secs(1);
                config.silence_timeout = Duration::from_secs(5);
                let (client, events) = ChatClient::start(config);
                let consumer = tokio::spawn(consume_events(
                    events,
                    role,
                    ledgers.clone(),
                    slot,
                    delivered_so_far.clone(),
                ));
                (client, consumer)
            };
            let (sender, sender_consumer) = start_client(&pair.sender.access_token, PairRole::Sender, "sender");
            let (recipient, recipient_consumer) =
                start_client(&pair.recipient.access_token, PairRole::Recipient, "recipient");
            event_consumers.extend([sender_consumer, recipient_consumer]);
            pairs.push(PairClients {
                accounts: pair,
                sender,
                recipient,
            });
        }
        RunningChatLoad {
            pairs,
            ledgers,
            event_consumers,
            delivered_so_far,
            settings,
        }
    }

    /// Waits until every client finished its first replay, and says where each landed.
    pub async fn wait_all_live(&self, timeout: Duration) -> anyhow::Result<ChatPlacement> {
        let waits = self.pairs.iter().flat_map(|pair| {
            [&pair.sender, &pair.recipient]
                .into_iter()
                .map(move |client| client.wait_until_live(timeout))
        });
        futures::future::try_join_all(waits)
            .await
            .context("waiting for every chat client to connect")?;
        let mut placement = ChatPlacement::default();
        for pair in &self.pairs {
            let sender_node = pair.sender.stats().current_node.unwrap_or_default();
            let recipient_node = pair.recipient.stats().current_node.unwrap_or_default();
            if sender_node != recipient_node {
                placement.cross_node_pairs += 1;
            }
            for node in [sender_node, recipient_node] {
                *placement.users_by_node.entry(node).or_default() += 1;
            }
        }
        Ok(placement)
    }

    /// Every pair's sender sends `message_rate_per_pair` messages a second until
    /// `load_ends_at`. One metronome takes the pairs in turn, so sends are spread evenly
    /// over each second rather than arriving in bursts.
    pub async fn send_at_steady_rate(&self, load_ends_at: Instant) -> anyhow::Result<()> {
        let sends_per_second = self.settings.message_rate_per_pair * self.pairs.len() as f64;
        if self.pairs.is_empty() || sends_per_second <= 0.0 {
            return Ok(());
        }
        let mut metronome = tokio::time::interval(Duration::from_secs_f64(1.0 / sends_per_second));
        // A late tick (a busy runtime) is made up for, so each pair sends its full count.
        metronome.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut messages_per_pair = vec![0u64; self.pairs.len()];
        let mut next_pair = 0;
        loop {
            metronome.tick().await;
            if Instant::now() >= load_ends_at {
                return Ok(());
            }
            let pair = &self.pairs[next_pair];
            messages_per_pair[next_pair] += 1;
            let text = format!(
                "pair {} message {}",
                pair.accounts.pair_index, messages_per_pair[next_pair]
            );
            let client_id = pair
                .sender
                .send(&pair.accounts.chat_id, text)
                .map_err(|error| anyhow!("pair {}: {error}", pair.accounts.pair_index))?;
            lock(&self.ledgers[next_pair])
                .sent_at_by_client_id
                .insert(client_id, Instant::now());
            next_pair = (next_pair + 1) % self.pairs.len();
        }
    }

    /// Messages delivered so far (for the progress line).
    pub fn delivered_so_far(&self) -> u64 {
        self.delivered_so_far.load(Ordering::Relaxed)
    }

    /// Reconnects so far, over every client.
    pub fn reconnects_so_far(&self) -> u64 {
        self.all_stats().iter().map(|stats| stats.reconnects).sum()
    }

    fn all_stats(&self) -> Vec<ChatClientStats> {
        self.pairs
            .iter()
            .flat_map(|pair| [pair.sender.stats(), pair.recipient.stats()])
            .collect()
    }

    /// Polls until every send is acked (or refused) and every acked message reached its
    /// recipient's application; false if `timeout` passed first.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ledgers.iter().all(|ledger| lock(ledger).settled()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Closes every client and reads the ledger.
    pub async fn finish(self, load_started_at: Instant, settled: bool) -> anyhow::Result<ChatLoadOutcome> {
        let chat_ids: Vec<String> = self.pairs.iter().map(|pair| pair.accounts.chat_id.clone()).collect();
        let mut final_stats = Vec::with_capacity(self.pairs.len() * 2);
        for pair in self.pairs {
            for client in [pair.sender, pair.recipient] {
                final_stats.push(client.shutdown().await.context("closing a chat client")?);
            }
        }
        for consumer in self.event_consumers {
            consumer.await.context("a chat event consumer panicked")?;
        }
        let mut outcome = ChatLoadOutcome {
            settled,
            ..ChatLoadOutcome::default()
        };
        for stats in &final_stats {
            outcome.redeliveries_absorbed += stats.duplicates_dropped;
            outcome.sequence_conflicts += stats.sequence_conflicts;
            outcome.reconnects += stats.reconnects;
            outcome.connect_failures += stats.connect_failures;
            for resume in &stats.resume_records {
                outcome.resume_times.record(resume.resume_time());
            }
        }
        for (slot, ledger) in self.ledgers.iter().enumerate() {
            add_pair_to_outcome(&mut outcome, slot, &chat_ids[slot], &lock(ledger), load_started_at);
        }
        outcome
            .lost
            .sort_by(|left, right| left.acked_at_s.total_cmp(&right.acked_at_s));
        outcome.lost.truncate(LISTED_PROBLEMS_LIMIT);
        outcome.ack_times_s.sort_by(f64::total_cmp);
        outcome
            .duplicates
            .sort_by(|left, right| left.at_s.total_cmp(&right.at_s));
        outcome.duplicates.truncate(LISTED_PROBLEMS_LIMIT);
        Ok(outcome)
    }
}

fn add_pair_to_outcome(
    outcome: &mut ChatLoadOutcome,
    pair: usize,
    chat_id: &str,
    ledger: &PairLedger,
    load_started_at: Instant,
) {
    let seconds_into_load = |at: Instant| at.saturating_duration_since(load_started_at);
    outcome.sent += ledger.sent_at_by_client_id.len() as u64;
    outcome.acked += ledger.acked.len() as u64;
    outcome.refused += ledger.refused;
    outcome.delivered += ledger.delivered_at_by_id.len() as u64;
    for (client_id, (id, seq, acked_at)) in &ledger.acked {
        outcome.ack_times_s.push(seconds_into_load(*acked_at).as_secs_f64());
        match ledger.delivered_at_by_id.get(id) {
            Some(delivered_at) => {
                if let Some(sent_at) = ledger.sent_at_by_client_id.get(client_id) {
                    outcome
                        .delivery_times
                        .record(delivered_at.saturating_duration_since(*sent_at));
                    outcome.delivered_messages.push(DeliveredTiming {
                        id: id.clone(),
                        sent_at: *sent_at,
                        delivered_at: *delivered_at,
                    });
                }
            }
            None => {
                outcome.lost_count += 1;
                outcome.lost.push(LostMessage {
                    pair,
                    chat_id: chat_id.to_owned(),
                    client_id: client_id.clone(),
                    id: id.clone(),
                    seq: *seq,
                    acked_at_s: seconds_into_load(*acked_at).as_secs_f64(),
                });
            }
        }
    }
    for delivered_at in ledger.delivered_at_by_id.values() {
        let second = seconds_into_load(*delivered_at).as_secs() as usize;
        if outcome.delivered_per_second.len() <= second {
            outcome.delivered_per_second.resize(second + 1, 0);
        }
        outcome.delivered_per_second[second] += 1;
    }
    outcome.duplicate_count += ledger.duplicates.len() as u64;
    for (message, first_id) in &ledger.duplicates {
        outcome.duplicates.push(DuplicateDelivery {
            pair,
            id: message.id.clone(),
            seq: message.seq,
            client_id: message.client_id.clone(),
            first_id: first_id.clone(),
            at_s: seconds_into_load(message.received_at).as_secs_f64(),
        });
    }
}

async fn consume_events(
    mut events: UnboundedReceiver<ChatClientEvent>,
    role: PairRole,
    ledgers: Arc<Vec<Mutex<PairLedger>>>,
    slot: usize,
    delivered_so_far: Arc<AtomicU64>,
) {
    while let Some(event) = events.recv().await {
        match (role, event) {
            (PairRole::Sender, ChatClientEvent::Acked(ack)) => {
                lock(&ledgers[slot])
                    .acked
                    .insert(ack.client_id, (ack.id, ack.seq, ack.acked_at));
            }
            (PairRole::Sender, ChatClientEvent::SendRefused(refusal)) => {
                tracing::warn!(pair = slot, code = %refusal.code, "the server refused a message for good: {}", refusal.message);
                lock(&ledgers[slot]).refused += 1;
            }
            (PairRole::Recipient, ChatClientEvent::Message(message)) => {
                delivered_so_far.fetch_add(1, Ordering::Relaxed);
                lock(&ledgers[slot]).record_delivery(message);
            }
            (_, ChatClientEvent::ServerError { code, message, .. }) => {
                tracing::warn!(pair = slot, %code, "server error frame: {message}");
            }
            _ => {}
        }
    }
}

fn lock(ledger: &Mutex<PairLedger>) -> MutexGuard<'_, PairLedger> {
    // A panicking consumer must not hide the figures of every other pair.
    ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, seq: u64, client_id: &str) -> ReceivedMessage {
        ReceivedMessage {
            chat_id: "chat".into(),
            id: id.into(),
            seq,
            sender_user_id: "sender".into(),
            text: format!("text {seq}"),
            status: "created".into(),
            create_time: String::new(),
            client_id: Some(client_id.into()),
            received_at: Instant::now(),
            connection_number: 1,
        }
    }

    #[test]
    fn the_same_id_twice_or_one_client_id_under_two_ids_is_a_duplicate() {
        let mut ledger = PairLedger::default();
        ledger.record_delivery(delivery("id-1", 1, "c-1"));
        ledger.record_delivery(delivery("id-2", 2, "c-2"));
        assert!(ledger.duplicates.is_empty());
        ledger.record_delivery(delivery("id-1", 1, "c-1"));
        ledger.record_delivery(delivery("id-3", 3, "c-2"));
        let duplicate_ids: Vec<(&str, &str)> = ledger
            .duplicates
            .iter()
            .map(|(message, first_id)| (message.id.as_str(), first_id.as_str()))
            .collect();
        assert_eq!(duplicate_ids, [("id-1", "id-1"), ("id-3", "id-2")]);
        assert_eq!(ledger.delivered_at_by_id.len(), 2);
    }

    #[test]
    fn a_pair_settles_once_every_send_is_acked_and_every_ack_delivered() {
        let mut ledger = PairLedger::default();
        let now = Instant::now();
        ledger.sent_at_by_client_id.insert("c-1".into(), now);
        ledger.sent_at_by_client_id.insert("c-2".into(), now);
        ledger.acked.insert("c-1".into(), ("id-1".into(), 1, now));
        assert!(!ledger.settled(), "c-2 is not acked");
        ledger.acked.insert("c-2".into(), ("id-2".into(), 2, now));
        ledger.record_delivery(delivery("id-1", 1, "c-1"));
        assert!(!ledger.settled(), "id-2 is not delivered");
        ledger.record_delivery(delivery("id-2", 2, "c-2"));
        assert!(ledger.settled());
    }
}
