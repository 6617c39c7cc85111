//! The messaging tables: committing sends, cursors, and what a reconnecting user missed.

mod batched_cursors;
mod batched_statements;
pub(crate) mod group_commit;
mod group_transaction;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDateTime;
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::messenger::{chat_kinds, status};
use protocol::websocket::{DeliveredMessage, MembershipEvent, OutgoingMessage};
use uuid::Uuid;

use super::storage::MessagingStorage;
use crate::database::{Database, DbError, Freshness};
use crate::time_format::format_utc;
/// A client's cursor report, as a commit group takes it.
pub use batched_cursors::CursorMove;
/// A stored message as a resend finds it: id, chat, seq, text, create time.
pub(crate) use batched_statements::StoredMessage;
/// Defined with the frame parser, which produces it; the store decides which column it moves.
pub use checks::frames::CursorKind;

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No such chat, or the sender is not in it: one answer for both.
    #[error("chat not found")]
    ChatNotFound,
    /// The database failed for this frame alone; an outage is worth a resend.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The transaction of a batch of frames failed; every frame of it gets this.
    #[error(transparent)]
    Shared(Arc<DbError>),
}

impl SendError {
    /// The database error behind this one, if any.
    pub fn database_error(&self) -> Option<&DbError> {
        match self {
            SendError::ChatNotFound => None,
            SendError::Database(error) => Some(error),
            SendError::Shared(error) => Some(error),
        }
    }
}

/// One committed message of a send, in the order of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedMessage {
    /// The message as stored (the original one when the `client_id` was seen before).
    pub message: DeliveredMessage,
    /// False when the `client_id` had been stored before: the original is acked again.
    pub newly_stored: bool,
}

/// One client frame waiting for its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameToCommit {
    /// The sending user (UUID).
    pub sender: String,
    /// The frame's messages in order.
    pub messages: Vec<OutgoingMessage>,
}

/// What a batch's transaction committed, and to whom it goes.
#[derive(Debug)]
pub struct CommittedBatch {
    /// Each frame's outcome, in frame order.
    pub outcomes: FrameOutcomes,
    /// The chat's members as the transaction read them under the chat's row lock: a
    /// member removed before this commit is not here, one added before it is.
    pub members: Vec<String>,
    /// The chat is a group (receipts are summarised for senders).
    pub is_group: bool,
}

/// A chat's kind and members, as a chat actor keeps them between commits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatRoster {
    /// The members (empty when the chat does not exist).
    pub members: Vec<String>,
    /// The chat is a group.
    pub is_group: bool,
}

/// Each frame's outcome, in frame order.
pub type FrameOutcomes = Vec<Result<Vec<CommittedMessage>, SendError>>;

/// What a batch commits: each frame's outcome in order, and the sequence it ends at.
pub(crate) struct BatchPlan {
    pub(crate) outcomes: FrameOutcomes,
    pub(crate) last_seq: u64,
}

/// Assigns sequence numbers after `last_seq`, in frame order. A `client_id` stored before,
/// or earlier in this same batch (a resend while the first send waited), gets the
/// original message back instead of a new row.
pub(crate) fn plan_batch(
    chat_id: &str,
    frames: &[FrameToCommit],
    members: &[String],
    mut stored: HashMap<(String, String), StoredMessage>,
    mut seq: u64,
    now: NaiveDateTime,
) -> BatchPlan {
    let mut outcomes = Vec::with_capacity(frames.len());
    for frame in frames {
        if !members.contains(&frame.sender) {
            outcomes.push(Err(SendError::ChatNotFound));
            continue;
        }
        let mut committed = Vec::with_capacity(frame.messages.len());
        for outgoing in &frame.messages {
            let key = outgoing
                .client_id
                .as_ref()
                .map(|client_id| (frame.sender.clone(), client_id.clone()));
            if let Some((id, stored_chat, stored_seq, text, create_time)) = key.as_ref().and_then(|key| stored.get(key))
            {
                let message = delivered(
                    id.clone(),
                    stored_chat.clone(),
                    *stored_seq,
                    &frame.sender,
                    text.clone(),
                    *create_time,
                    outgoing.client_id.as_deref(),
                );
                committed.push(CommittedMessage {
                    message,
                    newly_stored: false,
                });
                continue;
            }
            seq += 1;
            let id = Uuid::now_v7().to_string();
            if let Some(key) = key {
                stored.insert(key, (id.clone(), chat_id.to_owned(), seq, outgoing.text.clone(), now));
            }
            let message = delivered(
                id,
                chat_id.to_owned(),
                seq,
                &frame.sender,
                outgoing.text.clone(),
                now,
                outgoing.client_id.as_deref(),
            );
            committed.push(CommittedMessage {
                message,
                newly_stored: true,
            });
        }
        outcomes.push(Ok(committed));
    }
    BatchPlan {
        outcomes,
        last_seq: seq,
    }
}

fn delivered(
    id: String,
    chat_id: String,
    seq: u64,
    sender: &str,
    text: String,
    create_time: NaiveDateTime,
    client_id: Option<&str>,
) -> DeliveredMessage {
    delivered_event(id, chat_id, seq, sender, text, create_time, client_id, None)
}

/// A stored row's message, with its membership event when it is one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn delivered_event(
    id: String,
    chat_id: String,
    seq: u64,
    sender: &str,
    text: String,
    create_time: NaiveDateTime,
    client_id: Option<&str>,
    event: Option<MembershipEvent>,
) -> DeliveredMessage {
    DeliveredMessage {
        id,
        seq,
        chat_id,
        user_id: sender.to_owned(),
        text,
        status: status::CREATED.to_owned(),
        create_time: format_utc(create_time),
        client_id: client_id.map(str::to_owned),
        event,
    }
}

/// The membership event of a stored row (`messages.kind`, `messages.subject_id`); none
/// for what people wrote.
pub(crate) fn membership_event(kind: String, subject_id: Option<String>) -> Option<MembershipEvent> {
    if kind == MESSAGE_KIND_TEXT {
        return None;
    }
    Some(MembershipEvent {
        kind,
        subject_id: subject_id.unwrap_or_default(),
    })
}

/// `messages.kind` of what people wrote.
pub(crate) const MESSAGE_KIND_TEXT: &str = "text";

/// A chat's kind and members (no members when it does not exist), confirmed on the
/// master when a replica knows none.
pub async fn chat_roster(database: &Database, chat_id: &str) -> Result<ChatRoster, DbError> {
    let lookup = |freshness| {
        database.read(freshness, move |conn| {
            let chat_id = chat_id.to_owned();
            async move {
                conn.exec::<(String, String), _, _>(
                    "SELECT m.user_id, c.kind FROM chat_members m JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ?",
                    (chat_id,),
                )
                .await
            }
            .boxed()
        })
    };
    let mut rows = lookup(Freshness::Any).await?;
    if rows.is_empty() {
        rows = lookup(Freshness::MasterFirst).await?;
    }
    Ok(ChatRoster {
        is_group: rows.first().is_some_and(|(_, kind)| kind == chat_kinds::GROUP),
        members: rows.into_iter().map(|(member, _)| member).collect(),
    })
}

/// Messages per query while replaying chat by chat.
const REPLAY_PAGE: u64 = 500;

/// At most this many pending messages are read with one query for all of a user's
/// chats; a user with more is read chat by chat in pages.
const REPLAY_AT_ONCE: u64 = 1000;

/// A pending message as the replay reads it: chat, id, seq, sender, text, create time,
/// client id, kind, subject.
type PendingRow = (
    String,
    String,
    u64,
    String,
    String,
    NaiveDateTime,
    Option<String>,
    String,
    Option<String>,
);

/// Every message of every chat of a user above the user's received cursors, chat by chat
/// in `seq` order, with no cap, a page at a time: a replay holds one page, however big the
/// backlog. Read on the master first: a lagging replica must not hide a message
/// committed just before the user reconnected.
///
/// A reconnecting user usually misses a few messages: one query reads them all (a storm
/// of reconnects is thousands of these at once), and they are the only page. Only past
/// [`REPLAY_AT_ONCE`] does the replay go through each chat, [`REPLAY_PAGE`] messages a
/// page.
pub struct PendingPages {
    storage: Arc<dyn MessagingStorage>,
    user: String,
    reading: PendingReading,
}

enum PendingReading {
    /// Nothing read yet.
    Start,
    /// Chat by chat: the chats still to read, and where the current one stands.
    ChatByChat {
        chats: std::collections::VecDeque<(String, u64)>,
    },
    Done,
}

impl PendingPages {
    /// The pages pending for `user`, read from `storage` on demand.
    pub fn new(storage: Arc<dyn MessagingStorage>, user: &str) -> PendingPages {
        PendingPages {
            storage,
            user: user.to_owned(),
            reading: PendingReading::Start,
        }
    }

    /// The next page, in order; `None` once everything pending was read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<DeliveredMessage>>, DbError> {
        loop {
            match &mut self.reading {
                PendingReading::Done => return Ok(None),
                PendingReading::Start => {
                    let mut at_once = self.storage.pending_messages(&self.user, REPLAY_AT_ONCE + 1).await?;
                    if at_once.len() as u64 <= REPLAY_AT_ONCE {
                        self.reading = PendingReading::Done;
                        if at_once.is_empty() {
                            return Ok(None);
                        }
                        at_once.sort_unstable_by(|left, right| {
                            (&left.chat_id, left.seq).cmp(&(&right.chat_id, right.seq))
                        });
                        return Ok(Some(at_once));
                    }
                    let chats = self.storage.pending_cursors(&self.user).await?;
                    self.reading = PendingReading::ChatByChat { chats: chats.into() };
                }
                PendingReading::ChatByChat { chats } => {
                    let Some((chat_id, after)) = chats.front().cloned() else {
                        self.reading = PendingReading::Done;
                        return Ok(None);
                    };
                    let page = self.storage.chat_page(&chat_id, after, REPLAY_PAGE).await?;
                    match page.last() {
                        // A full page: the chat may have more after its last seq.
                        Some(last) if page.len() as u64 == REPLAY_PAGE => {
                            chats[0].1 = last.seq;
                        }
                        _ => {
                            chats.pop_front();
                        }
                    }
                    if !page.is_empty() {
                        return Ok(Some(page));
                    }
                }
            }
        }
    }
}

/// Up to `limit` pending messages of all of `user`'s chats, unsorted.
pub(super) async fn read_pending_messages(
    database: &Database,
    user: &str,
    limit: u64,
) -> Result<Vec<DeliveredMessage>, DbError> {
    let rows: Vec<PendingRow> = database
        .read(Freshness::MasterFirst, move |conn| {
            let user = user.to_owned();
            async move {
                // No ORDER BY: sorting a join is a temporary table, on disk when a TEXT
                // column is in it (a file created per replay, most of the database's
                // time in a reconnect storm). The rows are sorted by the caller; the
                // LIMIT only tells whether there are more than fit.
                conn.exec(
                    "SELECT STRAIGHT_JOIN m.chat_id, msg.id, msg.seq, msg.user_id, msg.text, msg.create_time, \
                     msg.client_id, msg.kind, msg.subject_id FROM chat_members m \
                     JOIN messages msg ON msg.chat_id = m.chat_id AND msg.seq > m.received_seq \
                     WHERE m.user_id = ? LIMIT ?",
                    (user, limit),
                )
                .await
            }
            .boxed()
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(chat_id, id, seq, sender, text, create_time, client_id, kind, subject)| {
                from_columns(chat_id, (id, seq, sender, text, create_time, client_id, kind, subject))
            },
        )
        .collect())
}

/// The chats of `user` with anything pending, and the user's received cursor in each.
pub(super) async fn read_pending_cursors(database: &Database, user: &str) -> Result<Vec<(String, u64)>, DbError> {
    database
        .read(Freshness::MasterFirst, move |conn| {
            let user = user.to_owned();
            async move {
                conn.exec(
                    "SELECT m.chat_id, m.received_seq FROM chat_members m JOIN chats c ON c.id = m.chat_id \
                     WHERE m.user_id = ? AND c.last_seq > m.received_seq ORDER BY m.chat_id",
                    (user,),
                )
                .await
            }
            .boxed()
        })
        .await
}

/// Up to `limit` messages of `chat_id` after `after`, in `seq` order.
pub(super) async fn read_chat_page(
    database: &Database,
    chat_id: &str,
    after: u64,
    limit: u64,
) -> Result<Vec<DeliveredMessage>, DbError> {
    let page: Vec<MessageColumns> = database
        .read(Freshness::MasterFirst, |conn| {
            let chat_id = chat_id.to_owned();
            async move {
                conn.exec(
                    "SELECT id, seq, user_id, text, create_time, client_id, kind, subject_id FROM messages \
                     WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (chat_id, after, limit),
                )
                .await
            }
            .boxed()
        })
        .await?;
    Ok(page
        .into_iter()
        .map(|columns| from_columns(chat_id.to_owned(), columns))
        .collect())
}

/// Up to `limit` messages of `chat_id` above `after` (when `None`, above `user`'s received
/// cursor, yet `through` itself always: a read without it came from a replica that lags)
/// and up to `through`, in seq order, none when `user` is not a member; read on
/// the master first, as the replay is. Two statements on one connection: the membership
/// by primary key, then a range of the `(chat_id, seq)` key, already in seq order (a join
/// ordered by seq could sort in a temporary table).
pub(super) async fn read_messages_missed(
    database: &Database,
    user: &str,
    chat_id: &str,
    after: Option<u64>,
    through: u64,
    limit: u64,
) -> Result<Vec<DeliveredMessage>, DbError> {
    let page: Vec<MessageColumns> = database
        .read(Freshness::MasterFirst, |conn| {
            let (user, chat_id) = (user.to_owned(), chat_id.to_owned());
            async move {
                let cursor: Option<u64> = conn
                    .exec_first(
                        "SELECT received_seq FROM chat_members WHERE chat_id = ? AND user_id = ?",
                        (&chat_id, &user),
                    )
                    .await?;
                let Some(cursor) = cursor else {
                    return Ok(Vec::new());
                };
                conn.exec(
                    "SELECT id, seq, user_id, text, create_time, client_id, kind, subject_id FROM messages \
                     WHERE chat_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (
                        &chat_id,
                        after.unwrap_or(cursor.min(through.saturating_sub(1))),
                        through,
                        limit,
                    ),
                )
                .await
            }
            .boxed()
        })
        .await?;
    Ok(page
        .into_iter()
        .map(|columns| from_columns(chat_id.to_owned(), columns))
        .collect())
}

/// A stored message's columns: id, seq, sender, text, create time, client id, kind, subject.
type MessageColumns = (
    String,
    u64,
    String,
    String,
    NaiveDateTime,
    Option<String>,
    String,
    Option<String>,
);

fn from_columns(chat_id: String, columns: MessageColumns) -> DeliveredMessage {
    let (id, seq, sender, text, create_time, client_id, kind, subject) = columns;
    let event = membership_event(kind, subject);
    delivered_event(
        id,
        chat_id,
        seq,
        &sender,
        text,
        create_time,
        client_id.as_deref(),
        event,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{SubsecRound, Utc};

    fn outgoing(text: &str, client_id: Option<&str>) -> OutgoingMessage {
        OutgoingMessage {
            text: text.to_owned(),
            status: None,
            client_id: client_id.map(str::to_owned),
        }
    }

    fn frame(sender: &str, messages: Vec<OutgoingMessage>) -> FrameToCommit {
        FrameToCommit {
            sender: sender.to_owned(),
            messages,
        }
    }

    fn committed(outcome: &Result<Vec<CommittedMessage>, SendError>) -> Vec<(u64, bool, String)> {
        let messages = outcome.as_ref().expect("frame committed");
        messages
            .iter()
            .map(|message| (message.message.seq, message.newly_stored, message.message.id.clone()))
            .collect()
    }

    #[test]
    fn a_batch_numbers_new_messages_in_order_and_returns_the_originals_of_resends() {
        let now = Utc::now().naive_utc().trunc_subsecs(6);
        let members = vec!["alice".to_owned(), "bob".to_owned()];
        let earlier = ("m-old".to_owned(), "chat".to_owned(), 7, "before".to_owned(), now);
        let stored = HashMap::from([(("alice".to_owned(), "c-old".to_owned()), earlier)]);
        let frames = vec![
            frame(
                "alice",
                vec![outgoing("one", Some("c1")), outgoing("resent", Some("c-old"))],
            ),
            frame("mallory", vec![outgoing("not a member", Some("c9"))]),
            frame("bob", vec![outgoing("two", None)]),
            // The same client id again within the batch: the first one's message.
            frame("alice", vec![outgoing("one again", Some("c1"))]),
        ];
        let plan = plan_batch("chat", &frames, &members, stored, 10, now);

        assert_eq!(plan.last_seq, 12);
        let first = committed(&plan.outcomes[0]);
        assert_eq!((first[0].0, first[0].1), (11, true));
        assert_eq!(first[1], (7, false, "m-old".to_owned()));
        assert!(matches!(plan.outcomes[1], Err(SendError::ChatNotFound)));
        assert_eq!(committed(&plan.outcomes[2])[0].0, 12);
        assert_eq!(committed(&plan.outcomes[3]), vec![(11, false, first[0].2.clone())]);
        let batch = CommittedBatch {
            outcomes: plan.outcomes,
            members,
            is_group: false,
        };
        let inserted: Vec<(u64, &str)> = batch.new_messages().map(|row| (row.seq, row.text)).collect();
        assert_eq!(inserted, vec![(11, "one"), (12, "two")]);
    }
}
