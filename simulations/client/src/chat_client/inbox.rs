//! What the client holds of each chat: which messages it already handed over (so a replay
//! or a double forward is dropped) and the highest seq below which nothing is missing
//! (the only safe value for a `received` report: reporting past a gap would make the
//! server skip the missing message on the next replay).

use std::collections::{BTreeMap, HashMap};

/// How many message ids below the contiguous top each chat remembers. Older duplicates
/// are still recognised by their seq alone (seqs are unique per chat); the window only
/// bounds memory for long-running load clients.
pub const RETAINED_IDS_BELOW_CONTIGUOUS_TOP: u64 = 10_000;

/// How the client came to hold a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldOrigin {
    /// Delivered by the server and handed to the application.
    Delivered,
    /// Sent by this client (known from its ack or recognised by its client id).
    SentByThisClient,
}

/// What to do with one delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryVerdict {
    /// Not seen before: hand it to the application.
    New,
    /// Already handed over (a replay of something received, or a second forward).
    Duplicate,
    /// This client's own message coming back (replays include the user's own messages).
    OwnEcho,
    /// A different id at a seq already held: the server broke "one message per seq". The
    /// message is new by id, so it is handed over, but this is a bug to report.
    SequenceConflict {
        /// The id already held at that seq.
        held_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldMessage {
    id: String,
    origin: HeldOrigin,
}

/// One chat's sequence bookkeeping.
#[derive(Debug, Default, Clone)]
pub struct ChatSequenceTracker {
    contiguous_top: u64,
    /// Held seqs above the contiguous top, plus a window of recent ones at or below it.
    held_by_seq: BTreeMap<u64, HeldMessage>,
    /// The last `received` value sent on the current connection.
    reported_on_this_connection: u64,
}

impl ChatSequenceTracker {
    /// The highest seq such that every seq from 1 to it is held.
    pub fn contiguous_top(&self) -> u64 {
        self.contiguous_top
    }

    /// Seqs held above the contiguous top (the gaps' far side).
    pub fn held_above_gap(&self) -> usize {
        self.held_by_seq.range(self.contiguous_top + 1..).count()
    }

    fn classify(&mut self, seq: u64, id: &str, sent_by_this_client: bool) -> DeliveryVerdict {
        if let Some(held) = self.held_by_seq.get(&seq) {
            return match (held.id == id, held.origin) {
                (true, HeldOrigin::SentByThisClient) => DeliveryVerdict::OwnEcho,
                (true, HeldOrigin::Delivered) => DeliveryVerdict::Duplicate,
                (false, _) => DeliveryVerdict::SequenceConflict {
                    held_id: held.id.clone(),
                },
            };
        }
        if seq <= self.contiguous_top {
            // Below the retained window: seqs are unique per chat, so it was held.
            return DeliveryVerdict::Duplicate;
        }
        let origin = if sent_by_this_client {
            HeldOrigin::SentByThisClient
        } else {
            HeldOrigin::Delivered
        };
        self.hold(seq, id, origin);
        match origin {
            HeldOrigin::SentByThisClient => DeliveryVerdict::OwnEcho,
            HeldOrigin::Delivered => DeliveryVerdict::New,
        }
    }

    fn hold(&mut self, seq: u64, id: &str, origin: HeldOrigin) {
        if seq <= self.contiguous_top || self.held_by_seq.contains_key(&seq) {
            return;
        }
        self.held_by_seq.insert(
            seq,
            HeldMessage {
                id: id.to_owned(),
                origin,
            },
        );
        while self.held_by_seq.contains_key(&(self.contiguous_top + 1)) {
            self.contiguous_top += 1;
        }
        let forget_at_or_below = self.contiguous_top.saturating_sub(RETAINED_IDS_BELOW_CONTIGUOUS_TOP);
        while let Some(oldest) = self.held_by_seq.first_entry() {
            if *oldest.key() > forget_at_or_below {
                break;
            }
            oldest.remove();
        }
    }
}

/// Every chat's tracker.
#[derive(Debug, Default, Clone)]
pub struct Inbox {
    chats: HashMap<String, ChatSequenceTracker>,
}

impl Inbox {
    /// Classifies a delivered message and, when it is new to the client, holds it.
    /// `sent_by_this_client`: its client id is one this client queued.
    pub fn accept_delivered(
        &mut self,
        chat_id: &str,
        seq: u64,
        id: &str,
        sent_by_this_client: bool,
    ) -> DeliveryVerdict {
        self.tracker(chat_id).classify(seq, id, sent_by_this_client)
    }

    /// Holds this client's own message once the server acked it: the seq is part of the
    /// chat, so it counts towards the contiguous top (and its echo in a replay is no news).
    pub fn record_acked(&mut self, chat_id: &str, seq: u64, id: &str) {
        self.tracker(chat_id).hold(seq, id, HeldOrigin::SentByThisClient);
    }

    /// The highest seq of `chat_id` such that every seq from 1 to it is held (0: none yet).
    pub fn contiguous_top(&self, chat_id: &str) -> u64 {
        self.chats.get(chat_id).map_or(0, ChatSequenceTracker::contiguous_top)
    }

    /// The bookkeeping of `chat_id`, if anything was held there.
    pub fn chat(&self, chat_id: &str) -> Option<&ChatSequenceTracker> {
        self.chats.get(chat_id)
    }

    /// The `received` reports due: each chat whose contiguous top moved past what was
    /// reported on this connection. Marks them reported.
    pub fn take_due_reports(&mut self) -> Vec<(String, u64)> {
        let mut due: Vec<(String, u64)> = self
            .chats
            .iter_mut()
            .filter(|(_, tracker)| tracker.contiguous_top > tracker.reported_on_this_connection)
            .map(|(chat_id, tracker)| {
                tracker.reported_on_this_connection = tracker.contiguous_top;
                (chat_id.clone(), tracker.contiguous_top)
            })
            .collect();
        due.sort();
        due
    }

    /// A new connection: the previous one may have died before the server stored the last
    /// reports, so everything is due again.
    pub fn begin_connection(&mut self) {
        for tracker in self.chats.values_mut() {
            tracker.reported_on_this_connection = 0;
        }
    }

    fn tracker(&mut self, chat_id: &str) -> &mut ChatSequenceTracker {
        if !self.chats.contains_key(chat_id) {
            self.chats.insert(chat_id.to_owned(), ChatSequenceTracker::default());
        }
        self.chats.get_mut(chat_id).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(inbox: &mut Inbox, seq: u64) -> DeliveryVerdict {
        inbox.accept_delivered("chat", seq, &format!("id-{seq}"), false)
    }

    #[test]
    fn the_contiguous_top_never_passes_a_gap() {
        let mut inbox = Inbox::default();
        for seq in [1, 2, 4, 5] {
            assert_eq!(deliver(&mut inbox, seq), DeliveryVerdict::New);
        }
        assert_eq!(inbox.contiguous_top("chat"), 2);
        assert_eq!(inbox.chat("chat").unwrap().held_above_gap(), 2);
        assert_eq!(deliver(&mut inbox, 3), DeliveryVerdict::New);
        assert_eq!(inbox.contiguous_top("chat"), 5);
        assert_eq!(inbox.chat("chat").unwrap().held_above_gap(), 0);
        assert_eq!(inbox.contiguous_top("another chat"), 0);
    }

    #[test]
    fn a_replayed_or_reforwarded_message_is_a_duplicate() {
        let mut inbox = Inbox::default();
        assert_eq!(deliver(&mut inbox, 1), DeliveryVerdict::New);
        assert_eq!(deliver(&mut inbox, 3), DeliveryVerdict::New);
        assert_eq!(deliver(&mut inbox, 1), DeliveryVerdict::Duplicate);
        assert_eq!(deliver(&mut inbox, 3), DeliveryVerdict::Duplicate);
        assert_eq!(deliver(&mut inbox, 2), DeliveryVerdict::New);
        assert_eq!(inbox.accept_delivered("other", 1, "id-1", false), DeliveryVerdict::New);
    }

    #[test]
    fn a_different_id_at_a_held_seq_is_reported_as_a_conflict() {
        let mut inbox = Inbox::default();
        deliver(&mut inbox, 1);
        assert_eq!(
            inbox.accept_delivered("chat", 1, "impostor", false),
            DeliveryVerdict::SequenceConflict {
                held_id: "id-1".to_owned()
            }
        );
    }

    #[test]
    fn own_acked_messages_fill_gaps_and_their_echoes_are_not_duplicates() {
        let mut inbox = Inbox::default();
        deliver(&mut inbox, 1);
        deliver(&mut inbox, 3);
        inbox.record_acked("chat", 2, "mine");
        assert_eq!(inbox.contiguous_top("chat"), 3);
        assert_eq!(
            inbox.accept_delivered("chat", 2, "mine", false),
            DeliveryVerdict::OwnEcho
        );
        // Echo of an unacked own message (the ack died with the node) counts too.
        assert_eq!(
            inbox.accept_delivered("chat", 4, "unacked", true),
            DeliveryVerdict::OwnEcho
        );
        assert_eq!(inbox.contiguous_top("chat"), 4);
        // Its ack arriving later changes nothing.
        inbox.record_acked("chat", 4, "unacked");
        assert_eq!(
            inbox.accept_delivered("chat", 4, "unacked", true),
            DeliveryVerdict::OwnEcho
        );
    }

    #[test]
    fn reports_are_due_once_per_advance_and_again_on_a_new_connection() {
        let mut inbox = Inbox::default();
        assert!(inbox.take_due_reports().is_empty());
        deliver(&mut inbox, 1);
        deliver(&mut inbox, 2);
        deliver(&mut inbox, 4);
        assert_eq!(inbox.take_due_reports(), [("chat".to_owned(), 2)]);
        assert!(inbox.take_due_reports().is_empty());
        deliver(&mut inbox, 3);
        assert_eq!(inbox.take_due_reports(), [("chat".to_owned(), 4)]);
        inbox.begin_connection();
        assert_eq!(inbox.take_due_reports(), [("chat".to_owned(), 4)]);
    }

    #[test]
    fn old_ids_are_forgotten_but_old_seqs_stay_duplicates() {
        let mut inbox = Inbox::default();
        let total = RETAINED_IDS_BELOW_CONTIGUOUS_TOP + 500;
        for seq in 1..=total {
            deliver(&mut inbox, seq);
        }
        let tracker = inbox.chat("chat").unwrap();
        assert!(tracker.held_by_seq.len() as u64 <= RETAINED_IDS_BELOW_CONTIGUOUS_TOP);
        assert_eq!(deliver(&mut inbox, 1), DeliveryVerdict::Duplicate);
        assert_eq!(deliver(&mut inbox, total), DeliveryVerdict::Duplicate);
        assert_eq!(deliver(&mut inbox, total + 1), DeliveryVerdict::New);
    }
}
