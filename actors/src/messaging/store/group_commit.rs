//! Group commit across chats: the sends and cursor moves of a node's chats that want to
//! commit at about the same time share one master transaction.
//!
//! A chat commits one transaction at a time, and under load each of its transactions
//! carries the frames that queued during the previous one. With many chats, though, each
//! paid its own round trips (lock, members, insert, update, commit, position) and its own
//! fsyncs and semi-synchronous wait, on two cores shared with everything else; and every
//! `received` report of a client was a transaction of its own. Here a chat's commit or
//! cursor move joins a queue; at most [`GROUPS_IN_FLIGHT`] transactions run per node,
//! and each takes everything waiting when it starts (up to [`MAX_CHATS_PER_GROUP`] chats
//! and [`MAX_MESSAGES_PER_GROUP`] messages). At low load the work finds a free slot and
//! commits at once, alone, as before; under load the groups grow, and the work per
//! message shrinks.
//!
//! A group's transaction runs in a task of its own, so a chat actor stopped while it
//! waits cannot cut another chat's commit short. A group that fails on something other
//! than an outage (a query error, which one chat's frames could cause) is committed
//! again chat by chat, so one chat's failure is never another's.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tracing::Instrument;

use super::batched_cursors::CursorMove;
use super::group_transaction::{commit_group, ChatFrames, MAX_CHATS_PER_GROUP};
use super::{CommittedBatch, FrameToCommit};
use crate::database::{Database, DbError};

/// Group transactions running at once per node: while one commits (its fsyncs, its
/// replica's acknowledgement), the next is already taking what queued meanwhile.
const GROUPS_IN_FLIGHT: usize = 2;

/// Messages one group commits at most; the first chat's frames always go.
const MAX_MESSAGES_PER_GROUP: usize = 2_000;

/// Cursor moves one group carries at most.
const MAX_CURSOR_MOVES_PER_GROUP: usize = 256;

/// What a chat's commit answers.
pub type CommitAnswer = Result<CommittedBatch, Arc<DbError>>;

/// What a cursor move answers: the cursor after it, `None` when the user is not in the
/// chat.
pub type CursorAnswer = Result<Option<u64>, Arc<DbError>>;

/// Work waiting for a group.
enum Work {
    /// A chat's frames, and where its batch goes.
    Frames(ChatFrames, oneshot::Sender<CommitAnswer>),
    /// A cursor move, and where its new cursor goes.
    Cursor(CursorMove, oneshot::Sender<CursorAnswer>),
}

impl Work {
    fn chat_id(&self) -> &str {
        match self {
            Work::Frames(chat, _) => &chat.chat_id,
            Work::Cursor(cursor_move, _) => &cursor_move.chat_id,
        }
    }

    fn messages(&self) -> usize {
        match self {
            Work::Frames(chat, _) => chat.frames.iter().map(|frame| frame.messages.len()).sum(),
            Work::Cursor(..) => 0,
        }
    }
}

/// Work waiting for a group, with the span of whoever asked.
struct WaitingWork {
    work: Work,
    trace: tracing::Span,
}

#[derive(Default)]
struct GroupQueue {
    waiting: VecDeque<WaitingWork>,
    in_flight: usize,
}

/// The node's commit groups (one per [`super::super::storage::MariaDbStorage`]).
pub struct GroupCommits {
    database: Database,
    queue: Mutex<GroupQueue>,
}

impl GroupCommits {
    /// Group commits on `database`'s master.
    pub fn new(database: Database) -> Arc<GroupCommits> {
        Arc::new(GroupCommits {
            database,
            queue: Mutex::new(GroupQueue::default()),
        })
    }

    /// Commits `frames` of `chat_id` in the next group that has room; a chat must not
    /// commit again before this returns (its seqs would race its own).
    pub async fn commit(self: &Arc<Self>, chat_id: &str, frames: &[FrameToCommit]) -> CommitAnswer {
        let (reply, answer) = oneshot::channel();
        let chat = ChatFrames {
            chat_id: chat_id.to_owned(),
            frames: frames.to_vec(),
        };
        self.enqueue(Work::Frames(chat, reply));
        answer.await.unwrap_or_else(|_| Err(self.stopped_before_answering()))
    }

    /// Moves a cursor in the next group that has room (never back, never past the
    /// chat's last seq; reading implies receiving).
    pub async fn move_cursor(self: &Arc<Self>, cursor_move: CursorMove) -> CursorAnswer {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Work::Cursor(cursor_move, reply));
        answer.await.unwrap_or_else(|_| Err(self.stopped_before_answering()))
    }

    fn enqueue(self: &Arc<Self>, work: Work) {
        let waiting = WaitingWork {
            work,
            trace: tracing::Span::current(),
        };
        {
            // The gauge moves under the queue's lock, so it never reads below zero.
            let mut queue = self.lock();
            queue.waiting.push_back(waiting);
            self.database.metrics().message_commits_waiting.inc();
        }
        self.start_groups();
    }

    /// The group's task panicked, maybe after its commit: a sender resends by client id,
    /// which finds what was stored; a cursor is reported again with the next delivery.
    fn stopped_before_answering(&self) -> Arc<DbError> {
        Arc::new(DbError::Unavailable {
            endpoint: self.database.master().name.clone(),
            reason: "the commit group stopped before answering".to_owned(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupQueue> {
        // Nothing panics while holding it; a poisoned queue is still a consistent one.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts groups while slots are free and chats wait.
    fn start_groups(self: &Arc<Self>) {
        loop {
            let group = {
                let mut queue = self.lock();
                if queue.in_flight >= GROUPS_IN_FLIGHT || queue.waiting.is_empty() {
                    return;
                }
                queue.in_flight += 1;
                let group = take_group(&mut queue.waiting);
                self.database.metrics().message_commits_waiting.sub(group.len() as i64);
                group
            };
            let slot = InFlightSlot(Arc::clone(self));
            tokio::spawn(async move {
                slot.0.run(group).await;
                drop(slot);
            });
        }
    }

    async fn run(&self, group: Vec<WaitingWork>) {
        let span = tracing::info_span!(parent: &group[0].trace, "chat.group_commit", work = group.len());
        for waiting in &group[1..] {
            span.follows_from(&waiting.trace);
        }
        let metrics = self.database.metrics();
        metrics.message_commit_transactions.inc();
        metrics.message_commit_items.inc_by(group.len() as u64);
        // Split once: the transaction reads the chats' frames and the moves in place.
        let mut chats = Vec::new();
        let mut frame_replies = Vec::new();
        let mut cursor_moves = Vec::new();
        let mut cursor_replies = Vec::new();
        for waiting in group {
            match waiting.work {
                Work::Frames(chat, reply) => {
                    chats.push(chat);
                    frame_replies.push(reply);
                }
                Work::Cursor(cursor_move, reply) => {
                    cursor_moves.push(cursor_move);
                    cursor_replies.push(reply);
                }
            }
        }
        let committed = commit_group(&self.database, &chats, &cursor_moves)
            .instrument(span.clone())
            .await;
        match committed {
            Ok(outcome) => {
                for (reply, batch) in frame_replies.into_iter().zip(outcome.batches) {
                    let _ = reply.send(Ok(batch));
                }
                for (reply, cursor) in cursor_replies.into_iter().zip(outcome.cursors) {
                    let _ = reply.send(Ok(cursor));
                }
            }
            Err(error) if chats.len() + cursor_moves.len() > 1 && !error.is_unavailable() => {
                tracing::warn!(work = chats.len() + cursor_moves.len(), %error, "a commit group failed; committing its work one by one");
                for (chat, reply) in chats.iter().zip(frame_replies) {
                    metrics.message_commit_transactions.inc();
                    let alone = commit_group(&self.database, std::slice::from_ref(chat), &[])
                        .instrument(span.clone())
                        .await;
                    let answer = alone.map_err(Arc::new).and_then(|outcome| {
                        outcome
                            .batches
                            .into_iter()
                            .next()
                            .ok_or_else(|| no_answer(&chat.chat_id))
                    });
                    let _ = reply.send(answer);
                }
                for (cursor_move, reply) in cursor_moves.iter().zip(cursor_replies) {
                    metrics.message_commit_transactions.inc();
                    let alone = commit_group(&self.database, &[], std::slice::from_ref(cursor_move))
                        .instrument(span.clone())
                        .await;
                    let answer = alone.map_err(Arc::new).and_then(|outcome| {
                        outcome
                            .cursors
                            .into_iter()
                            .next()
                            .ok_or_else(|| no_answer(&cursor_move.chat_id))
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                // Nothing of the group is stored (or, after a commit lost with its
                // master, nothing is known): every sender gets the error and may resend.
                let error = Arc::new(error);
                for reply in frame_replies {
                    let _ = reply.send(Err(Arc::clone(&error)));
                }
                for reply in cursor_replies {
                    let _ = reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}

/// A transaction of one item that returned nothing for it: a bug, not an outage.
fn no_answer(chat_id: &str) -> Arc<DbError> {
    Arc::new(DbError::Config(format!(
        "a commit in chat {chat_id} returned no outcome"
    )))
}

/// A running group's place among the [`GROUPS_IN_FLIGHT`]; freed when its task ends,
/// even by a panic, and the next group starts then.
struct InFlightSlot(Arc<GroupCommits>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.start_groups();
    }
}

/// The next group: waiting work in arrival order within the group's bounds, each chat's
/// frames once (a chat queued twice stays for a later group, behind its first commit).
fn take_group(waiting: &mut VecDeque<WaitingWork>) -> Vec<WaitingWork> {
    let mut group = Vec::new();
    let mut chats_touched = HashSet::new();
    let mut chats_sending = HashSet::new();
    let mut messages = 0;
    let mut cursor_moves = 0;
    let mut left = VecDeque::with_capacity(waiting.len());
    while let Some(next) = waiting.pop_front() {
        let chat_id = next.work.chat_id().to_owned();
        let next_messages = next.work.messages();
        let is_cursor = matches!(next.work, Work::Cursor(..));
        let fits = group.is_empty()
            || ((chats_touched.contains(&chat_id) || chats_touched.len() < MAX_CHATS_PER_GROUP)
                && messages + next_messages <= MAX_MESSAGES_PER_GROUP
                && (!is_cursor || cursor_moves < MAX_CURSOR_MOVES_PER_GROUP));
        let once = is_cursor || !chats_sending.contains(&chat_id);
        if fits && once {
            if is_cursor {
                cursor_moves += 1;
            } else {
                chats_sending.insert(chat_id.clone());
            }
            chats_touched.insert(chat_id);
            messages += next_messages;
            group.push(next);
        } else {
            left.push_back(next);
        }
    }
    *waiting = left;
    group
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::websocket::OutgoingMessage;

    fn frames(chat_id: &str, messages: usize) -> WaitingWork {
        let frame = FrameToCommit {
            sender: "alice".to_owned(),
            messages: (0..messages)
                .map(|number| OutgoingMessage {
                    text: format!("m{number}"),
                    status: None,
                    client_id: None,
                })
                .collect(),
        };
        let chat = ChatFrames {
            chat_id: chat_id.to_owned(),
            frames: vec![frame],
        };
        WaitingWork {
            work: Work::Frames(chat, oneshot::channel().0),
            trace: tracing::Span::none(),
        }
    }

    fn cursor(chat_id: &str) -> WaitingWork {
        let cursor_move = CursorMove {
            user: "bob".to_owned(),
            chat_id: chat_id.to_owned(),
            kind: super::super::CursorKind::Received,
            seq: 1,
        };
        WaitingWork {
            work: Work::Cursor(cursor_move, oneshot::channel().0),
            trace: tracing::Span::none(),
        }
    }

    fn chat_ids(group: &[WaitingWork]) -> Vec<&str> {
        group.iter().map(|waiting| waiting.work.chat_id()).collect()
    }

    #[test]
    fn a_group_takes_each_chats_frames_once_in_arrival_order_and_every_cursor_move() {
        let mut queue: VecDeque<WaitingWork> = [
            frames("a", 1),
            frames("b", 1),
            frames("a", 1),
            cursor("a"),
            cursor("a"),
            frames("c", 1),
        ]
        .into();
        let group = take_group(&mut queue);
        assert_eq!(chat_ids(&group), ["a", "b", "a", "a", "c"]);
        assert!(matches!(group[2].work, Work::Cursor(..)));
        assert_eq!(chat_ids(queue.make_contiguous()), ["a"]);
        assert!(matches!(queue[0].work, Work::Frames(..)));
    }

    #[test]
    fn a_group_stays_within_its_bounds_but_always_takes_the_first_work() {
        let mut queue: VecDeque<WaitingWork> = [frames("big", MAX_MESSAGES_PER_GROUP + 5), frames("next", 1)].into();
        assert_eq!(chat_ids(&take_group(&mut queue)), ["big"]);
        assert_eq!(chat_ids(&take_group(&mut queue)), ["next"]);

        let mut many: VecDeque<WaitingWork> = (0..MAX_CHATS_PER_GROUP + 3)
            .map(|number| frames(&format!("chat-{number}"), 1))
            .collect();
        // A cursor move in a chat the group already touches still fits.
        many.push_back(cursor("chat-0"));
        let group = take_group(&mut many);
        assert_eq!(group.len(), MAX_CHATS_PER_GROUP + 1);
        assert_eq!(many.len(), 3);

        let mut cursors: VecDeque<WaitingWork> = (0..MAX_CURSOR_MOVES_PER_GROUP + 1).map(|_| cursor("a")).collect();
        assert_eq!(take_group(&mut cursors).len(), MAX_CURSOR_MOVES_PER_GROUP);
        assert_eq!(cursors.len(), 1);
    }
}
