//! One master transaction for the queued frames and cursor moves of several chats (a
//! commit group, formed by [`super::group_commit`]). Per chat it does what a chat's own
//! transaction did: lock the chat row, read the members under that lock, assign the seqs
//! after `last_seq`, insert, move `last_seq`, move cursors. Each of those is one
//! statement for the whole group, so the round trips, the commit's fsyncs and the
//! semi-synchronous wait for a replica are shared by everything in it. Every chat row
//! the group touches is locked first, in id order, in one statement: two groups on two
//! nodes wait for each other instead of deadlocking.

use std::collections::{BTreeSet, HashMap};

use chrono::{SubsecRound, Utc};
use futures::FutureExt;
use protocol::messenger::chat_kinds;
use tracing::Instrument;

use super::batched_cursors::{coalesce, move_cursors, read_cursors, CursorMove};
use super::batched_statements::{
    insert_messages, lock_chats, members_of_chats, stored_by_client_id, update_last_seqs, NewMessageRow,
    MAX_CHATS_PER_STATEMENT,
};
use super::{plan_batch, CommittedBatch, CursorKind, FrameToCommit, SendError};
use crate::database::{Database, DbError};

/// Chats one group touches at most (one statement locks them all).
pub(crate) const MAX_CHATS_PER_GROUP: usize = MAX_CHATS_PER_STATEMENT;

/// One chat's frames in a group, in the order they queued at the chat.
#[derive(Debug, Clone)]
pub(crate) struct ChatFrames {
    /// The chat.
    pub chat_id: String,
    /// Its frames, in order.
    pub frames: Vec<FrameToCommit>,
}

/// The unique key that makes a send idempotent: one message per (chat, sender, client id).
/// The same client id in another chat is another message.
const RESEND_KEY: &str = "messages_chat_sender_client";

/// Whether a commit attempt reads the stored messages of the batch's client ids first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResendLookup {
    /// Insert straight away; a resent client id fails the attempt on the unique key.
    TrustTheUniqueKey,
    /// Read them, so resends get their original message back.
    LookUp,
}

/// What a group's transaction did: each chat's batch in the order of its `chats`, and
/// each cursor move's new cursor (`None`: no such membership) in the order of its moves.
#[derive(Debug)]
pub(crate) struct GroupOutcome {
    pub batches: Vec<CommittedBatch>,
    pub cursors: Vec<Option<u64>>,
}

/// Commits every chat's frames of `chats` (distinct chats) and every move of
/// `cursor_moves` in one master transaction; at most [`MAX_CHATS_PER_GROUP`] chats in all.
pub(crate) async fn commit_group(
    database: &Database,
    chats: &[ChatFrames],
    cursor_moves: &[CursorMove],
) -> Result<GroupOutcome, DbError> {
    // The first attempt does not look for resent client ids: resends are rare (a client
    // that reconnects before its ack), and the unique (chat_id, user_id, client_id) key
    // refuses one anyway, which sends the group to the next attempt, which looks them up.
    // That saves a round trip per sender under the chats' locks in the common case. Two
    // retries of one send racing on two nodes meet at the same key; the loser runs
    // again and finds the winner's row.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let messages: usize = chats
            .iter()
            .flat_map(|chat| &chat.frames)
            .map(|frame| frame.messages.len())
            .sum();
        let insert_span = tracing::info_span!(
            "db.insert",
            db.table = "messages",
            chats = chats.len(),
            messages,
            attempt = attempts
        );
        let resends = match attempts {
            1 => ResendLookup::TrustTheUniqueKey,
            _ => ResendLookup::LookUp,
        };
        match commit_once(database, chats, cursor_moves, resends)
            .instrument(insert_span)
            .await
        {
            Err(DbError::Duplicate { key }) if key == RESEND_KEY && attempts < 4 => continue,
            other => return other,
        }
    }
}

async fn commit_once(
    database: &Database,
    chats: &[ChatFrames],
    cursor_moves: &[CursorMove],
    resends: ResendLookup,
) -> Result<GroupOutcome, DbError> {
    let senders = chats
        .iter()
        .flat_map(|chat| &chat.frames)
        .map(|frame| frame.sender.as_str());
    let movers = cursor_moves.iter().map(|cursor_move| cursor_move.user.as_str());
    let writers: BTreeSet<&str> = senders.chain(movers).collect();
    let writers: Vec<&str> = writers.into_iter().collect();
    database
        .write_for(&writers, |transaction| {
            let (chats, cursor_moves) = (chats.to_vec(), cursor_moves.to_vec());
            async move {
                let frame_chats: Vec<&str> = chats.iter().map(|chat| chat.chat_id.as_str()).collect();
                let touched: BTreeSet<&str> = frame_chats
                    .iter()
                    .copied()
                    .chain(cursor_moves.iter().map(|cursor_move| cursor_move.chat_id.as_str()))
                    .collect();
                let locked = lock_chats(transaction, &touched.into_iter().collect::<Vec<_>>()).await?;
                // Read after the row locks: a membership change holds the same lock, so
                // this sees every change committed before this group and none after.
                let mut members = if frame_chats.is_empty() {
                    HashMap::new()
                } else {
                    members_of_chats(transaction, &frame_chats).await?
                };
                let now = Utc::now().naive_utc().trunc_subsecs(6);
                let mut batches = Vec::with_capacity(chats.len());
                let mut plans = Vec::with_capacity(chats.len());
                for chat in &chats {
                    let Some((last_seq, kind)) = locked.get(&chat.chat_id) else {
                        batches.push(CommittedBatch {
                            outcomes: chat.frames.iter().map(|_| Err(SendError::ChatNotFound)).collect(),
                            members: Vec::new(),
                            is_group: false,
                        });
                        plans.push(None);
                        continue;
                    };
                    let chat_members = members.remove(&chat.chat_id).unwrap_or_default();
                    let mut stored = HashMap::new();
                    if resends == ResendLookup::LookUp {
                        for (sender, client_ids) in client_ids_by_member(&chat.frames, &chat_members) {
                            for (client_id, row) in
                                stored_by_client_id(transaction, &chat.chat_id, sender, &client_ids).await?
                            {
                                stored.insert((sender.to_owned(), client_id), row);
                            }
                        }
                    }
                    let plan = plan_batch(&chat.chat_id, &chat.frames, &chat_members, stored, *last_seq, now);
                    plans.push((plan.last_seq > *last_seq).then_some(plan.last_seq));
                    batches.push(CommittedBatch {
                        outcomes: plan.outcomes,
                        members: chat_members,
                        is_group: kind == chat_kinds::GROUP,
                    });
                }
                let rows: Vec<NewMessageRow<'_>> = batches.iter().flat_map(CommittedBatch::new_messages).collect();
                insert_messages(transaction, now, &rows).await?;
                let last_seqs: Vec<(&str, u64)> = chats
                    .iter()
                    .zip(&plans)
                    .filter_map(|(chat, last_seq)| Some((chat.chat_id.as_str(), (*last_seq)?)))
                    .collect();
                update_last_seqs(transaction, &last_seqs).await?;
                // After the inserts: a cursor may move up to a message of this group.
                let cursors = if cursor_moves.is_empty() {
                    Vec::new()
                } else {
                    let existing: Vec<&CursorMove> = cursor_moves
                        .iter()
                        .filter(|cursor_move| locked.contains_key(&cursor_move.chat_id))
                        .collect();
                    let targets = coalesce(&existing);
                    let mut targets: Vec<((&str, &str), _)> = targets
                        .iter()
                        .map(|((chat_id, user), target)| ((chat_id.as_str(), user.as_str()), *target))
                        .collect();
                    // In key order, as InnoDB would take the member rows' locks anyway.
                    targets.sort_by(|left, right| left.0.cmp(&right.0));
                    move_cursors(transaction, &targets).await?;
                    let keys: Vec<(&str, &str)> = targets.iter().map(|(key, _)| *key).collect();
                    let now_at = read_cursors(transaction, &keys).await?;
                    cursor_moves
                        .iter()
                        .map(|cursor_move| {
                            let (received, read) =
                                now_at.get(&(cursor_move.chat_id.clone(), cursor_move.user.clone()))?;
                            Some(match cursor_move.kind {
                                CursorKind::Received => *received,
                                CursorKind::Read => *read,
                            })
                        })
                        .collect()
                };
                Ok(Ok::<_, DbError>(GroupOutcome { batches, cursors }))
            }
            .boxed()
        })
        .await?
}

/// Each member sender's client ids in the batch (a non-member's frame is refused unread).
fn client_ids_by_member<'f>(frames: &'f [FrameToCommit], members: &[String]) -> HashMap<&'f str, Vec<&'f str>> {
    let mut by_sender: HashMap<&str, Vec<&str>> = HashMap::new();
    for frame in frames.iter().filter(|frame| members.contains(&frame.sender)) {
        let client_ids = frame.messages.iter().filter_map(|message| message.client_id.as_deref());
        by_sender.entry(frame.sender.as_str()).or_default().extend(client_ids);
    }
    by_sender
}

impl CommittedBatch {
    /// The rows to insert: the messages newly stored, in sequence order.
    pub(super) fn new_messages(&self) -> impl Iterator<Item = NewMessageRow<'_>> {
        self.outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .flatten()
            .filter(|committed| committed.newly_stored)
            .map(|committed| NewMessageRow {
                chat_id: &committed.message.chat_id,
                id: &committed.message.id,
                seq: committed.message.seq,
                sender: &committed.message.user_id,
                client_id: committed.message.client_id.as_deref(),
                text: &committed.message.text,
            })
    }
}
