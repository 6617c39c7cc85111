//! Which seqs of each chat a live session has handed to its socket, so that a message
//! committed but never delivered live is found and sent from the database.
//!
//! How a message goes missing: a node commits it, acks its sender, and dies before its
//! delivery to the recipient's node left its buffers (seen in `bench peer`: 4 acked
//! messages of one pair, node-2 SIGKILLed). The recipient's socket lives on another node
//! and never reconnects, so no replay fills the hole: the client holds everything after
//! it and cannot report past it.
//!
//! So each session notes per chat the seqs it sent (replayed, delivered live, or its own
//! acked ones, which the chat does not deliver back to the sending socket). A seq missing
//! below one it sent may still be on its way (another node's delivery, an ack being
//! written), so only after [`GAP_GRACE`] does the session read the chat above what it
//! holds contiguously, up to the highest seq it sent, and send what is missing. A chat
//! first seen live has no known start: the seqs between the user's received cursor and
//! the first one seen are read the same way. A seq the session already sent is not sent
//! again, so a late live copy of a repaired message is dropped here.
//!
//! A repair reads no further than the highest seq sent: everything up to it was
//! committed before the read (a chat's seqs commit in order), and nothing after it is
//! sent by a repair (a member removed since gets nothing of what followed).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use protocol::websocket::DeliveredMessage;
use tokio::time::Instant;

/// How long a missing seq may be in flight before the database is asked for it.
pub(crate) const GAP_GRACE: Duration = Duration::from_secs(1);

/// Messages read per chat per repair; a longer hole takes another round.
pub(crate) const REPAIR_PAGE: u64 = 500;

/// Seqs held above a hole beyond which the session gives up repairing and closes the
/// socket (the client's reconnect replays everything): bounds a session's memory while
/// the database cannot be read.
pub(crate) const MAX_HELD_ABOVE_GAP: usize = 10_000;

/// One chat's seqs as this session sent them.
#[derive(Debug, Default)]
struct ChatSeqs {
    /// Every seq up to it is with the client; `None` until known (a chat first seen live).
    contiguous_top: Option<u64>,
    /// Seqs sent above `contiguous_top`.
    above: BTreeSet<u64>,
    /// Since when something below a sent seq is missing.
    gap_since: Option<Instant>,
}

impl ChatSeqs {
    fn covers(&self, seq: u64) -> bool {
        self.contiguous_top.is_some_and(|top| seq <= top) || self.above.contains(&seq)
    }

    fn note(&mut self, seq: u64, now: Instant) {
        if self.covers(seq) {
            return;
        }
        self.above.insert(seq);
        self.advance();
        if !self.above.is_empty() {
            self.gap_since.get_or_insert(now);
        }
    }

    /// Moves the contiguous top over the seqs that now follow it; any seq left above it
    /// stands beyond a hole.
    fn advance(&mut self) {
        // A chat's first message starts it: nothing before it to miss.
        if self.contiguous_top.is_none() && self.above.first() == Some(&1) {
            self.contiguous_top = Some(0);
        }
        if let Some(top) = self.contiguous_top.as_mut() {
            while self.above.remove(&(*top + 1)) {
                *top += 1;
            }
        }
        if self.above.is_empty() {
            self.gap_since = None;
        }
    }
}

/// The messages at `positions` of `messages`.
pub(crate) fn pick(messages: &[DeliveredMessage], positions: &[usize]) -> Vec<DeliveredMessage> {
    positions.iter().map(|position| messages[*position].clone()).collect()
}

/// A repair to read: the messages of `chat_id` above `after` (above the user's received
/// cursor when `None`: a chat whose start the session does not know) up to `through`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRepair {
    /// The chat.
    pub chat_id: String,
    /// Read above this seq; above the user's received cursor when `None`.
    pub after: Option<u64>,
    /// Read up to this seq (the highest the session sent).
    pub through: u64,
}

/// Every chat's seqs for one live session.
#[derive(Debug, Default)]
pub(crate) struct DeliveredSeqs {
    chats: HashMap<String, ChatSeqs>,
}

impl DeliveredSeqs {
    /// The replay sent everything above the user's cursors up to these seqs (and the
    /// client had what is below its cursors).
    pub(crate) fn note_replayed(&mut self, replayed_up_to: &HashMap<String, u64>) {
        for (chat_id, top) in replayed_up_to {
            let chat = self.chats.entry(chat_id.clone()).or_default();
            chat.contiguous_top = Some(chat.contiguous_top.unwrap_or(0).max(*top));
            chat.above.retain(|seq| seq > top);
            chat.advance();
        }
    }

    /// This session's own messages, acked to it (the chat does not deliver them back).
    pub(crate) fn note_own(&mut self, chat_id: &str, seqs: impl IntoIterator<Item = u64>, now: Instant) {
        if let Some(chat) = self.chat_mut(chat_id) {
            for seq in seqs {
                chat.note(seq, now);
            }
        }
    }

    /// Of `messages` for `chat_id`, the positions of those the session has not sent yet,
    /// in order; they count as sent from now on.
    pub(crate) fn admit(&mut self, chat_id: &str, messages: &[DeliveredMessage], now: Instant) -> Vec<usize> {
        let Some(chat) = self.chat_mut(chat_id) else {
            return Vec::new();
        };
        let mut fresh = Vec::with_capacity(messages.len());
        for (position, message) in messages.iter().enumerate() {
            if !chat.covers(message.seq) {
                chat.note(message.seq, now);
                fresh.push(position);
            }
        }
        fresh
    }

    /// A repair's read came back: `read` holds the messages `repair` names, at most
    /// [`REPAIR_PAGE`] of them, in seq order. Returns those to send, and whether the read
    /// was whole. A whole page that is not full had all of them up to `repair.through`
    /// (any other seq there was at or below the user's cursor: with the client); a full
    /// one had them up to its last seq. A read with a hole of its own or without
    /// `through` (a replica that lags, answering while the master is down) covers nothing
    /// beyond what it holds: the hole stays due.
    pub(crate) fn repaired(
        &mut self,
        repair: &DueRepair,
        read: &[DeliveredMessage],
        now: Instant,
    ) -> (Vec<DeliveredMessage>, bool) {
        let fresh = pick(read, &self.admit(&repair.chat_id, read, now));
        let page_full = read.len() as u64 >= REPAIR_PAGE;
        let contiguous = read.windows(2).all(|pair| pair[1].seq == pair[0].seq + 1);
        let starts_right = match (repair.after, read.first()) {
            (Some(after), Some(first)) => first.seq == after + 1,
            _ => true,
        };
        let ends_right = page_full || read.last().map(|last| last.seq) == Some(repair.through);
        if !(contiguous && starts_right && ends_right) {
            return (fresh, false);
        }
        let covered_to = match read.last() {
            Some(last) if page_full => last.seq,
            _ => repair.through,
        };
        let Some(chat) = self.chat_mut(&repair.chat_id) else {
            return (fresh, false);
        };
        let top = chat.contiguous_top.unwrap_or(0).max(covered_to);
        chat.contiguous_top = Some(top);
        chat.above.retain(|seq| *seq > top);
        chat.advance();
        (fresh, true)
    }

    /// The chat's seqs, made empty when the session first meets the chat (its id is
    /// copied then only, not on every delivery).
    fn chat_mut(&mut self, chat_id: &str) -> Option<&mut ChatSeqs> {
        if !self.chats.contains_key(chat_id) {
            self.chats.insert(chat_id.to_owned(), ChatSeqs::default());
        }
        self.chats.get_mut(chat_id)
    }

    /// The repairs whose hole is older than [`GAP_GRACE`] at `now`.
    pub(crate) fn due(&self, now: Instant) -> Vec<DueRepair> {
        let mut due: Vec<DueRepair> = self
            .chats
            .iter()
            .filter(|(_, chat)| {
                chat.gap_since
                    .is_some_and(|since| now.duration_since(since) >= GAP_GRACE)
            })
            .filter_map(|(chat_id, chat)| {
                Some(DueRepair {
                    chat_id: chat_id.clone(),
                    after: chat.contiguous_top,
                    through: *chat.above.last()?,
                })
            })
            .collect();
        due.sort_by(|left, right| left.chat_id.cmp(&right.chat_id));
        due
    }

    /// Whether something below a seq sent in `chat_id` is missing: O(1), so a live
    /// delivery asks it rather than scanning every chat for the next due hole.
    pub(crate) fn has_gap(&self, chat_id: &str) -> bool {
        self.chats.get(chat_id).is_some_and(|chat| chat.gap_since.is_some())
    }

    /// When the oldest hole becomes due, if there is one.
    pub(crate) fn next_due_at(&self) -> Option<Instant> {
        self.chats
            .values()
            .filter_map(|chat| chat.gap_since)
            .min()
            .map(|since| since + GAP_GRACE)
    }

    /// Seqs held above holes, over all chats.
    pub(crate) fn held_above_gaps(&self) -> usize {
        self.chats
            .values()
            .filter(|chat| chat.gap_since.is_some())
            .map(|chat| chat.above.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> DeliveredMessage {
        DeliveredMessage {
            id: format!("id-{seq}"),
            seq,
            chat_id: "chat".into(),
            user_id: "alice".into(),
            text: format!("m{seq}"),
            status: "created".into(),
            create_time: String::new(),
            client_id: None,
            event: None,
        }
    }

    fn messages(seqs: &[u64]) -> Vec<DeliveredMessage> {
        seqs.iter().copied().map(message).collect()
    }

    fn seqs_of(messages: &[DeliveredMessage]) -> Vec<u64> {
        messages.iter().map(|message| message.seq).collect()
    }

    /// Which of `seqs`, delivered live, the session sends.
    fn admitted(seqs: &mut DeliveredSeqs, chat_id: &str, delivered: &[u64], now: Instant) -> Vec<u64> {
        let delivered = messages(delivered);
        seqs_of(&pick(&delivered, &seqs.admit(chat_id, &delivered, now)))
    }

    #[test]
    fn a_hole_becomes_due_after_the_grace_and_its_repair_sends_only_what_is_missing() {
        let start = Instant::now();
        let mut seqs = DeliveredSeqs::default();
        seqs.note_replayed(&HashMap::from([("chat".to_owned(), 3)]));
        assert_eq!(admitted(&mut seqs, "chat", &[4, 5, 8], start), [4, 5, 8]);
        assert!(seqs.due(start).is_empty(), "6 and 7 may still be on their way");
        assert_eq!(seqs.next_due_at(), Some(start + GAP_GRACE));
        let due = seqs.due(start + GAP_GRACE);
        assert_eq!(
            due,
            [DueRepair {
                chat_id: "chat".into(),
                after: Some(5),
                through: 8,
            }]
        );
        // 9 arrives live while the read of 6 to 8 is out; 8 went out already.
        assert_eq!(admitted(&mut seqs, "chat", &[9], start), [9]);
        let (sent, whole) = seqs.repaired(&due[0], &messages(&[6, 7, 8]), start + GAP_GRACE);
        assert_eq!((seqs_of(&sent), whole), (vec![6, 7], true));
        assert!(seqs.due(start + GAP_GRACE * 10).is_empty());
        assert_eq!(seqs.next_due_at(), None);
        // A late live copy of a repaired message is not sent twice.
        assert!(admitted(&mut seqs, "chat", &[7, 9], start).is_empty());
        assert_eq!(admitted(&mut seqs, "chat", &[10], start), [10]);
    }

    #[test]
    fn a_hole_filled_in_time_by_a_late_delivery_or_an_own_ack_needs_no_repair() {
        let start = Instant::now();
        let mut seqs = DeliveredSeqs::default();
        seqs.note_replayed(&HashMap::from([("chat".to_owned(), 1)]));
        admitted(&mut seqs, "chat", &[4], start);
        admitted(&mut seqs, "chat", &[2], start);
        seqs.note_own("chat", [3], start);
        assert_eq!(seqs.next_due_at(), None);
        assert!(seqs.due(start + GAP_GRACE).is_empty());
        assert_eq!(seqs.held_above_gaps(), 0);
    }

    #[test]
    fn a_chat_first_seen_live_above_seq_1_is_read_from_the_cursor() {
        let start = Instant::now();
        let mut seqs = DeliveredSeqs::default();
        admitted(&mut seqs, "fresh", &[1, 2], start);
        admitted(&mut seqs, "later", &[7], start);
        let due = seqs.due(start + GAP_GRACE);
        assert_eq!(
            due,
            [DueRepair {
                chat_id: "later".into(),
                after: None,
                through: 7,
            }]
        );
        // Nothing above the cursor but 7 itself: the client had 1 to 6.
        assert_eq!(seqs.repaired(&due[0], &messages(&[7]), start), (Vec::new(), true));
        assert!(seqs.due(start + GAP_GRACE * 10).is_empty());
        assert!(admitted(&mut seqs, "later", &[6], start).is_empty());
    }

    #[test]
    fn a_hole_after_the_session_met_a_chat_at_its_first_seq_is_found() {
        let start = Instant::now();
        let mut seqs = DeliveredSeqs::default();
        admitted(&mut seqs, "chat", &[1, 2, 5], start);
        let due = seqs.due(start + GAP_GRACE);
        assert_eq!((due[0].after, due[0].through), (Some(2), 5));
    }

    #[test]
    fn a_read_from_a_lagging_replica_covers_only_what_it_holds() {
        let start = Instant::now();
        let mut seqs = DeliveredSeqs::default();
        seqs.note_replayed(&HashMap::from([("chat".to_owned(), 2)]));
        admitted(&mut seqs, "chat", &[6], start);
        let due = seqs.due(start + GAP_GRACE);
        assert_eq!((due[0].after, due[0].through), (Some(2), 6));
        // The replica had applied up to 4 only: 3 and 4 go out, 5 stays due.
        let (sent, whole) = seqs.repaired(&due[0], &messages(&[3, 4]), start);
        assert_eq!((seqs_of(&sent), whole), (vec![3, 4], false));
        let due = seqs.due(start + GAP_GRACE);
        assert_eq!((due[0].after, due[0].through), (Some(4), 6));
        // Nothing at all for a chat met after the hole: still due.
        admitted(&mut seqs, "later", &[9], start);
        let later = DueRepair {
            chat_id: "later".into(),
            after: None,
            through: 9,
        };
        assert_eq!(seqs.repaired(&later, &[], start), (Vec::new(), false));
        assert_eq!(seqs.due(start + GAP_GRACE).len(), 2);
    }

    #[test]
    fn a_full_page_repairs_up_to_its_last_seq_and_leaves_the_rest_due() {
        let start = Instant::now();
        let mut seqs = DeliveredSeqs::default();
        seqs.note_replayed(&HashMap::from([("chat".to_owned(), 0)]));
        let top = REPAIR_PAGE * 2 + 1;
        admitted(&mut seqs, "chat", &[top], start);
        let due = seqs.due(start + GAP_GRACE);
        let page: Vec<u64> = (1..=REPAIR_PAGE).collect();
        let (sent, whole) = seqs.repaired(&due[0], &messages(&page), start);
        assert_eq!((sent.len() as u64, whole), (REPAIR_PAGE, true));
        let due = seqs.due(start + GAP_GRACE);
        assert_eq!(due[0].after, Some(REPAIR_PAGE), "the rest of the hole is still due");
    }
}
