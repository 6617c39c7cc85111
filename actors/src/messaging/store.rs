//! The messaging tables: committing sends, cursors, and what a reconnecting user missed.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::messenger::status;
use protocol::websocket::{DeliveredMessage, OutgoingMessage};
use tracing::Instrument;
use uuid::Uuid;

use crate::database::{Database, DbError, Freshness};
use crate::time_format::format_utc;
/// Defined with the frame parser, which produces it; the store decides which column it moves.
pub use checks::frames::CursorKind;

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No such chat, or the sender is not in it: one answer for both.
    #[error("chat not found")]
    ChatNotFound,
    #[error(transparent)]
    Database(#[from] DbError),
    /// The transaction of a batch of frames failed; every frame of it gets this.
    #[error(transparent)]
    Shared(std::sync::Arc<DbError>),
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
    pub message: DeliveredMessage,
    /// False when the `client_id` had been stored before: the original is acked again.
    pub newly_stored: bool,
}

/// One client frame waiting for its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameToCommit {
    pub sender: String,
    pub messages: Vec<OutgoingMessage>,
}

/// Commits several frames for one chat in one master transaction, in order. The chat row
/// is locked first, so sequence numbers are gap-free even when several nodes send into
/// one chat; a `client_id` already stored by its sender returns the original message.
/// Each frame gets its own outcome: a sender who is not a member is refused alone.
pub async fn commit_frames(
    database: &Database,
    chat_id: &str,
    frames: &[FrameToCommit],
) -> Result<Vec<Result<Vec<CommittedMessage>, SendError>>, DbError> {
    // Two retries of one send racing on two nodes meet at the unique (user_id, client_id)
    // key; the loser runs again and finds the winner's row.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let messages: usize = frames.iter().map(|frame| frame.messages.len()).sum();
        let insert_span = tracing::info_span!("db.insert", db.table = "messages", messages, attempt = attempts);
        match commit_once(database, chat_id, frames).instrument(insert_span).await {
            Err(DbError::Duplicate { key }) if key == "messages_sender_client" && attempts < 3 => continue,
            other => return other,
        }
    }
}

type StoredRow = (String, String, u64, String, NaiveDateTime);
type FrameOutcomes = Vec<Result<Vec<CommittedMessage>, SendError>>;

async fn commit_once(database: &Database, chat_id: &str, frames: &[FrameToCommit]) -> Result<FrameOutcomes, DbError> {
    let writers: Vec<&str> = frames.iter().map(|frame| frame.sender.as_str()).collect();
    database
        .write_for(&writers, |transaction| {
            let (chat_id, frames) = (chat_id.to_owned(), frames.to_vec());
            async move {
                let last_seq: Option<u64> = transaction
                    .exec_first("SELECT last_seq FROM chats WHERE id = ? FOR UPDATE", (&chat_id,))
                    .await?;
                let Some(mut seq) = last_seq else {
                    let refused = frames.iter().map(|_| Err(SendError::ChatNotFound)).collect();
                    return Ok(Ok::<FrameOutcomes, DbError>(refused));
                };
                let members: Vec<String> = transaction
                    .exec("SELECT user_id FROM chat_members WHERE chat_id = ?", (&chat_id,))
                    .await?;
                let first_new_seq = seq + 1;
                let now = Utc::now().naive_utc().trunc_subsecs(6);
                let mut outcomes = Vec::with_capacity(frames.len());
                for frame in &frames {
                    if !members.contains(&frame.sender) {
                        outcomes.push(Err(SendError::ChatNotFound));
                        continue;
                    }
                    let mut committed = Vec::with_capacity(frame.messages.len());
                    for outgoing in &frame.messages {
                        if let Some(client_id) = &outgoing.client_id {
                            let existing: Option<StoredRow> = transaction
                                .exec_first(
                                    "SELECT id, chat_id, seq, text, create_time FROM messages WHERE user_id = ? AND client_id = ?",
                                    (&frame.sender, client_id),
                                )
                                .await?;
                            if let Some((id, stored_chat, stored_seq, text, create_time)) = existing {
                                committed.push(CommittedMessage {
                                    message: delivered(id, stored_chat, stored_seq, &frame.sender, text, create_time, Some(client_id)),
                                    newly_stored: false,
                                });
                                continue;
                            }
                        }
                        seq += 1;
                        let id = Uuid::now_v7().to_string();
                        transaction
                            .exec_drop(
                                "INSERT INTO messages (id, chat_id, seq, user_id, client_id, text, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (&id, &chat_id, seq, &frame.sender, &outgoing.client_id, &outgoing.text, now),
                            )
                            .await?;
                        committed.push(CommittedMessage {
                            message: delivered(id, chat_id.clone(), seq, &frame.sender, outgoing.text.clone(), now, outgoing.client_id.as_deref()),
                            newly_stored: true,
                        });
                    }
                    outcomes.push(Ok(committed));
                }
                if seq >= first_new_seq {
                    transaction
                        .exec_drop("UPDATE chats SET last_seq = ? WHERE id = ?", (seq, &chat_id))
                        .await?;
                }
                Ok(Ok(outcomes))
            }
            .boxed()
        })
        .await?
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
    DeliveredMessage {
        id,
        seq,
        chat_id,
        user_id: sender.to_owned(),
        text,
        status: status::CREATED.to_owned(),
        create_time: format_utc(create_time),
        client_id: client_id.map(str::to_owned),
    }
}

/// The members of a chat (empty when it does not exist), confirmed on the master when a
/// replica knows none.
pub async fn chat_members(database: &Database, chat_id: &str) -> Result<Vec<String>, DbError> {
    let lookup = |freshness| {
        database.read(freshness, move |conn| {
            let chat_id = chat_id.to_owned();
            async move {
                conn.exec::<String, _, _>("SELECT user_id FROM chat_members WHERE chat_id = ?", (chat_id,))
                    .await
            }
            .boxed()
        })
    };
    let members = lookup(Freshness::Any).await?;
    if !members.is_empty() {
        return Ok(members);
    }
    lookup(Freshness::MasterFirst).await
}

/// Moves `user`'s cursor in `chat` forward to `seq` (never backwards, never past the
/// chat's last message). Returns the cursor's new value, or `None` when the user is not
/// in the chat.
pub async fn advance_cursor(
    database: &Database,
    user: &str,
    chat_id: &str,
    kind: CursorKind,
    seq: u64,
) -> Result<Option<u64>, DbError> {
    let update = match kind {
        // Reading implies receiving.
        CursorKind::Read => {
            "UPDATE chat_members m JOIN chats c ON c.id = m.chat_id \
             SET m.read_seq = GREATEST(m.read_seq, LEAST(?, c.last_seq)), \
                 m.received_seq = GREATEST(m.received_seq, LEAST(?, c.last_seq)) \
             WHERE m.chat_id = ? AND m.user_id = ?"
        }
        CursorKind::Received => {
            "UPDATE chat_members m JOIN chats c ON c.id = m.chat_id \
             SET m.received_seq = GREATEST(m.received_seq, LEAST(?, c.last_seq)) \
             WHERE m.chat_id = ? AND m.user_id = ?"
        }
    };
    let select = match kind {
        CursorKind::Read => "SELECT read_seq FROM chat_members WHERE chat_id = ? AND user_id = ?",
        CursorKind::Received => "SELECT received_seq FROM chat_members WHERE chat_id = ? AND user_id = ?",
    };
    database
        .write(Some(user), |transaction| {
            let (user, chat_id) = (user.to_owned(), chat_id.to_owned());
            async move {
                match kind {
                    CursorKind::Read => transaction.exec_drop(update, (seq, seq, &chat_id, &user)).await?,
                    CursorKind::Received => transaction.exec_drop(update, (seq, &chat_id, &user)).await?,
                }
                let cursor: Option<u64> = transaction.exec_first(select, (&chat_id, &user)).await?;
                Ok(Ok::<_, DbError>(cursor))
            }
            .boxed()
        })
        .await?
}

/// Messages per query while replaying.
const REPLAY_PAGE: u64 = 500;

/// Every message of every chat of `user` above the user's received cursor, chat by chat
/// in `seq` order, with no cap. Read on the master first: a lagging replica must not
/// hide a message committed just before the user reconnected.
pub async fn pending_messages(database: &Database, user: &str) -> Result<Vec<DeliveredMessage>, DbError> {
    let cursors: Vec<(String, u64)> = database
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
        .await?;
    let mut pending = Vec::new();
    for (chat_id, received_seq) in cursors {
        let mut after = received_seq;
        loop {
            type Row = (String, u64, String, String, NaiveDateTime, Option<String>);
            let page: Vec<Row> = database
                .read(Freshness::MasterFirst, |conn| {
                    let chat_id = chat_id.clone();
                    async move {
                        conn.exec(
                            "SELECT id, seq, user_id, text, create_time, client_id FROM messages \
                             WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                            (chat_id, after, REPLAY_PAGE),
                        )
                        .await
                    }
                    .boxed()
                })
                .await?;
            let full = page.len() as u64 == REPLAY_PAGE;
            for (id, seq, sender, text, create_time, client_id) in page {
                after = seq;
                pending.push(delivered(
                    id,
                    chat_id.clone(),
                    seq,
                    &sender,
                    text,
                    create_time,
                    client_id.as_deref(),
                ));
            }
            if !full {
                break;
            }
        }
    }
    Ok(pending)
}
