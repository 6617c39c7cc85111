//! Every message the application queued that the server has not acked yet, in the order
//! it was queued. Nothing leaves before its ack: a node may die after committing and
//! before acking, and only a resend with the same client id finds out (the server then
//! answers with the original ack and stores nothing new).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use protocol::websocket::OutgoingMessage;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingState {
    /// Not written on the current connection.
    Queued,
    /// Written on the current connection, ack awaited.
    InFlight,
    /// The server refused it for a passing reason; written again at this time.
    AwaitingRetry(Instant),
}

/// One unacked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// The id the server de-duplicates resends by (unique per client).
    pub client_id: String,
    /// The chat (UUID) it goes to.
    pub chat_id: String,
    /// The message text.
    pub text: String,
    /// Copies written so far, over every connection.
    pub times_written: u32,
    /// Passing refusals (database unavailable) so far, to space out the retries.
    pub transient_refusals: u32,
    state: PendingState,
}

/// One `send-message` frame to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingFrame {
    /// The chat (UUID) of every message of the frame.
    pub chat_id: String,
    /// The messages in queue order, each with its client id.
    pub messages: Vec<OutgoingMessage>,
    /// How many of the messages had been written before (resends).
    pub rewritten_messages: u64,
}

/// The unacked messages.
#[derive(Debug, Default)]
pub struct Outbox {
    entries: BTreeMap<u64, PendingMessage>,
    order_by_client_id: HashMap<String, u64>,
    queued: BTreeSet<u64>,
    awaiting_retry: BTreeSet<(Instant, u64)>,
    in_flight: usize,
    next_order: u64,
}

impl Outbox {
    /// Queues a message behind every earlier one. A client id already queued is ignored
    /// (the caller generates unique ones).
    pub fn push(&mut self, client_id: String, chat_id: String, text: String) {
        if self.order_by_client_id.contains_key(&client_id) {
            return;
        }
        let order = self.next_order;
        self.next_order += 1;
        self.order_by_client_id.insert(client_id.clone(), order);
        self.queued.insert(order);
        self.entries.insert(
            order,
            PendingMessage {
                client_id,
                chat_id,
                text,
                times_written: 0,
                transient_refusals: 0,
                state: PendingState::Queued,
            },
        );
    }

    /// Whether `client_id` is still unacked.
    pub fn contains(&self, client_id: &str) -> bool {
        self.order_by_client_id.contains_key(client_id)
    }

    /// Messages neither acked nor refused yet.
    pub fn unacked(&self) -> usize {
        self.entries.len()
    }

    /// Messages written on the current connection and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A new connection: whatever was in flight on the old one may or may not have been
    /// committed, so every unacked message is due again, in the original order.
    pub fn begin_connection(&mut self) {
        for entry in self.entries.values_mut() {
            entry.state = PendingState::Queued;
        }
        self.queued = self.entries.keys().copied().collect();
        self.awaiting_retry.clear();
        self.in_flight = 0;
    }

    /// The frames to write now, oldest messages first, and marks their messages in flight.
    /// Consecutive messages of one chat share a frame of at most `max_messages_per_frame`;
    /// with a window, no more than `max_in_flight` messages are in flight at once.
    pub fn take_frames(&mut self, max_in_flight: Option<usize>, max_messages_per_frame: usize) -> Vec<OutgoingFrame> {
        let mut frames: Vec<OutgoingFrame> = Vec::new();
        while let Some(&order) = self.queued.first() {
            if max_in_flight.is_some_and(|window| self.in_flight >= window) {
                break;
            }
            self.queued.remove(&order);
            let entry = self.entries.get_mut(&order).expect("queued orders have entries");
            entry.state = PendingState::InFlight;
            entry.times_written += 1;
            self.in_flight += 1;
            let message = OutgoingMessage {
                text: entry.text.clone(),
                status: Some(protocol::messenger::status::CREATED.to_owned()),
                client_id: Some(entry.client_id.clone()),
            };
            let rewritten = u64::from(entry.times_written > 1);
            match frames.last_mut() {
                Some(frame)
                    if frame.chat_id == entry.chat_id && frame.messages.len() < max_messages_per_frame.max(1) =>
                {
                    frame.messages.push(message);
                    frame.rewritten_messages += rewritten;
                }
                _ => frames.push(OutgoingFrame {
                    chat_id: entry.chat_id.clone(),
                    messages: vec![message],
                    rewritten_messages: rewritten,
                }),
            }
        }
        frames
    }

    /// The server committed it: it leaves the outbox.
    pub fn acknowledge(&mut self, client_id: &str) -> Option<PendingMessage> {
        self.remove(client_id)
    }

    /// The server refused it for good (no such chat, text too long): it leaves the outbox.
    pub fn refuse_permanently(&mut self, client_id: &str) -> Option<PendingMessage> {
        self.remove(client_id)
    }

    /// The server refused it for a passing reason: it is written again at `retry_at`,
    /// which the caller computes from the returned count of refusals so far.
    pub fn refuse_for_now(&mut self, client_id: &str, retry_at: impl FnOnce(u32) -> Instant) -> bool {
        let Some(&order) = self.order_by_client_id.get(client_id) else {
            return false;
        };
        let entry = self.entries.get_mut(&order).expect("indexed orders have entries");
        if entry.state != PendingState::InFlight {
            return false;
        }
        entry.transient_refusals += 1;
        let at = retry_at(entry.transient_refusals);
        entry.state = PendingState::AwaitingRetry(at);
        self.in_flight -= 1;
        self.awaiting_retry.insert((at, order));
        true
    }

    /// When the earliest refused message is due again, if any waits.
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.awaiting_retry.first().map(|(at, _)| *at)
    }

    /// Messages whose retry time came are queued again (ahead of anything queued later).
    pub fn release_due_retries(&mut self, now: Instant) -> usize {
        let mut released = 0;
        while let Some(&(at, order)) = self.awaiting_retry.first() {
            if at > now {
                break;
            }
            self.awaiting_retry.remove(&(at, order));
            if let Some(entry) = self.entries.get_mut(&order) {
                entry.state = PendingState::Queued;
                self.queued.insert(order);
                released += 1;
            }
        }
        released
    }

    fn remove(&mut self, client_id: &str) -> Option<PendingMessage> {
        let order = self.order_by_client_id.remove(client_id)?;
        let entry = self.entries.remove(&order).expect("indexed orders have entries");
        match entry.state {
            PendingState::Queued => {
                self.queued.remove(&order);
            }
            PendingState::InFlight => self.in_flight -= 1,
            PendingState::AwaitingRetry(at) => {
                self.awaiting_retry.remove(&(at, order));
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outbox_with(messages: &[(&str, &str)]) -> Outbox {
        let mut outbox = Outbox::default();
        for (client_id, chat_id) in messages {
            outbox.push(
                client_id.to_string(),
                chat_id.to_string(),
                format!("text of {client_id}"),
            );
        }
        outbox
    }

    fn client_ids(frames: &[OutgoingFrame]) -> Vec<Vec<String>> {
        frames
            .iter()
            .map(|frame| frame.messages.iter().map(|m| m.client_id.clone().unwrap()).collect())
            .collect()
    }

    #[test]
    fn consecutive_messages_of_a_chat_share_frames_in_queue_order() {
        let mut outbox = outbox_with(&[("a", "x"), ("b", "x"), ("c", "y"), ("d", "x"), ("e", "x"), ("f", "x")]);
        let frames = outbox.take_frames(None, 2);
        assert_eq!(
            client_ids(&frames),
            [vec!["a", "b"], vec!["c"], vec!["d", "e"], vec!["f"]]
        );
        assert_eq!(frames[1].chat_id, "y");
        assert_eq!(outbox.in_flight(), 6);
        assert!(
            outbox.take_frames(None, 2).is_empty(),
            "nothing is written twice on one connection"
        );
    }

    #[test]
    fn after_a_reconnect_every_unacked_message_is_resent_in_the_original_order() {
        let mut outbox = outbox_with(&[("a", "x"), ("b", "x"), ("c", "x"), ("d", "x")]);
        outbox.take_frames(None, 100);
        outbox.acknowledge("b").unwrap();
        outbox.push("e".into(), "x".into(), "late".into());
        outbox.begin_connection();
        let frames = outbox.take_frames(None, 100);
        assert_eq!(client_ids(&frames), [vec!["a", "c", "d", "e"]]);
        assert_eq!(frames[0].rewritten_messages, 3, "e was never written before");
        assert_eq!(frames[0].messages[1].text, "text of c");
    }

    #[test]
    fn the_window_bounds_messages_in_flight() {
        let mut outbox = outbox_with(&[("a", "x"), ("b", "x"), ("c", "x"), ("d", "x")]);
        assert_eq!(client_ids(&outbox.take_frames(Some(2), 100)), [vec!["a", "b"]]);
        assert!(outbox.take_frames(Some(2), 100).is_empty());
        outbox.acknowledge("a");
        assert_eq!(client_ids(&outbox.take_frames(Some(2), 100)), [vec!["c"]]);
        assert_eq!((outbox.in_flight(), outbox.unacked()), (2, 3));
    }

    #[test]
    fn acks_in_any_order_empty_the_outbox_and_unknown_acks_are_ignored() {
        let mut outbox = outbox_with(&[("a", "x"), ("b", "x"), ("c", "x")]);
        outbox.take_frames(Some(2), 100);
        assert!(outbox.acknowledge("b").is_some());
        assert!(outbox.acknowledge("b").is_none());
        assert!(outbox.acknowledge("nobody").is_none());
        assert!(outbox.acknowledge("c").is_some(), "a queued message can be acked too");
        assert!(outbox.contains("a"));
        assert!(outbox.acknowledge("a").is_some());
        assert_eq!((outbox.unacked(), outbox.in_flight()), (0, 0));
        assert!(outbox.take_frames(None, 100).is_empty());
    }

    #[test]
    fn a_passing_refusal_waits_for_its_retry_time_and_a_permanent_one_drops_the_message() {
        let mut outbox = outbox_with(&[("a", "x"), ("b", "x")]);
        outbox.take_frames(None, 100);
        let now = Instant::now();
        let mut refusals_seen = 0;
        assert!(outbox.refuse_for_now("a", |refusals| {
            refusals_seen = refusals;
            now + Duration::from_millis(100)
        }));
        assert_eq!(refusals_seen, 1);
        assert!(
            !outbox.refuse_for_now("a", |_| now),
            "only a message in flight can be refused"
        );
        assert_eq!(outbox.refuse_permanently("b").unwrap().client_id, "b");
        assert_eq!(outbox.next_retry_at(), Some(now + Duration::from_millis(100)));
        assert_eq!(outbox.release_due_retries(now), 0);
        assert_eq!(outbox.release_due_retries(now + Duration::from_millis(100)), 1);
        let frames = outbox.take_frames(None, 100);
        assert_eq!(client_ids(&frames), [vec!["a"]]);
        assert_eq!(frames[0].rewritten_messages, 1);
        assert_eq!(outbox.next_retry_at(), None);
    }
}
