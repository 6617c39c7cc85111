//! `Chat`: one per active chat on each node that handles sends for it.
//!
//! Its place in the node's tree is drawn in `crate::supervisor`.
//!
//! ```text
//! MessagingSupervisor
//!  └── Chat per active chat (found through the ChatDirectory), local, passivated after idle
//!        Send:       the frames queued meanwhile in one commit (seqs assigned under the
//!                    chat row lock; the transaction may carry other chats' commits too,
//!                    see `store::group_commit`), reply to the sender's session, deliver
//!                    to members' sessions
//!        MoveCursor: received/read cursors, status to the other member (one-to-one)
//!                    or, in a group, a coalesced summary to the senders (ReceiptTick)
//! ```
//!
//! Two nodes may host the same chat at once; the database, not this actor, orders them.
//! Deliveries go to the members the commit's transaction read under the chat's row lock,
//! never to a cached list: a group member removed on another node gets nothing committed
//! after the removal, and one added gets everything after.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

// tokio's clock, so tests can pause time and advance it past the idle limit.
use tokio::time::Instant;

use protocol::websocket::{DeliveryPayload, OutgoingMessage, StatusPayload};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tracing::Instrument;

use super::receipts::{self, SentSummaries};
use super::session_registry::SessionId;
use super::store::{ChatRoster, CommittedMessage, CursorKind, FrameToCommit, SendError};
use super::MessagingServices;

/// A chat with no traffic for this long stops; the next send starts it again.
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// The `Chat` actor.
pub struct ChatActor;

/// Messages of a `Chat`.
#[derive(RactorMessage)]
pub enum ChatMessage {
    /// Commit one frame's messages from `sender`, in frame order, and deliver them.
    Send {
        /// The sending user (UUID); must be a member of the chat.
        sender: String,
        /// The frame's messages, already checked by the frame parser.
        messages: Vec<OutgoingMessage>,
        /// The sending socket: it gets the ack, not a copy of the delivery.
        origin: Option<SessionId>,
        /// The frame's span: the commit and the deliveries continue its trace.
        trace: tracing::Span,
        /// The committed messages in frame order, or why the frame was refused.
        reply: RpcReplyPort<Result<Vec<CommittedMessage>, SendError>>,
    },
    /// Commit the queued sends (sent by the chat to itself after a send arrives).
    Flush,
    /// Move `user`'s received or read cursor and tell the other members.
    MoveCursor {
        /// The user (UUID) whose cursor moves; must be a member.
        user: String,
        /// Which cursor.
        kind: CursorKind,
        /// The cursor's new value as the client sent it.
        seq: u64,
        /// The cursor after the move (never lower than before, never above the chat's newest
        /// `seq`), or why it was refused.
        reply: RpcReplyPort<Result<u64, SendError>>,
    },
    /// Send a group's coalesced receipt summaries (sent to itself after a cursor move).
    ReceiptTick,
    /// Stop when idle (sent periodically to itself).
    IdleCheck,
}

/// Start-up arguments of a `Chat`.
pub struct ChatArguments {
    /// The chat this actor serves.
    pub chat_id: String,
    /// The node's services, held weakly so a chat never keeps them alive.
    pub services: Weak<MessagingServices>,
}

/// A chat's state.
pub struct ChatState {
    chat_id: String,
    services: Weak<MessagingServices>,
    /// Kind and members, cached once known and refreshed by every commit. Deliveries
    /// never use it (they use the commit's own reading); a one-to-one chat's status
    /// frames do, and its members never change.
    roster: Option<ChatRoster>,
    /// A group's highest cursor moved since the last summaries; summaries are due.
    receipts_up_to: Option<u64>,
    /// What each sender of the group was told last.
    sent_summaries: SentSummaries,
    last_activity: Instant,
    /// Frames waiting for the next transaction, in arrival order.
    queued: Vec<QueuedSend>,
    flush_requested: bool,
}

/// A frame waiting for its commit, with where its outcome goes.
pub struct QueuedSend {
    frame: FrameToCommit,
    origin: Option<SessionId>,
    trace: tracing::Span,
    reply: RpcReplyPort<Result<Vec<CommittedMessage>, SendError>>,
}

/// Messages committed together at most; more wait for the next transaction.
const MAX_MESSAGES_PER_TRANSACTION: usize = 500;

/// Commits the queued frames (up to the batch bound) in one transaction, answers each
/// frame's sender, and delivers what was committed.
async fn flush(
    myself: &ActorRef<ChatMessage>,
    state: &mut ChatState,
    services: &Arc<MessagingServices>,
) -> Result<(), ActorProcessingErr> {
    let mut batch = Vec::new();
    let mut batch_messages = 0;
    while !state.queued.is_empty()
        && (batch.is_empty() || batch_messages + state.queued[0].frame.messages.len() <= MAX_MESSAGES_PER_TRANSACTION)
    {
        let next = state.queued.remove(0);
        batch_messages += next.frame.messages.len();
        batch.push(next);
    }
    if !state.queued.is_empty() && !state.flush_requested {
        state.flush_requested = true;
        myself.cast(ChatMessage::Flush)?;
    }
    if batch.is_empty() {
        return Ok(());
    }
    let frames: Vec<FrameToCommit> = batch.iter().map(|queued| queued.frame.clone()).collect();
    // One transaction serves several frames, each with its own trace: the commit belongs
    // to the first frame's trace and is linked from the others.
    let commit_span = tracing::info_span!(
        parent: &batch[0].trace,
        "chat.commit",
        chat_id = %state.chat_id,
        frames = batch.len(),
        messages = batch_messages,
    );
    for queued in &batch[1..] {
        commit_span.follows_from(&queued.trace);
    }
    let committed = services
        .storage
        .commit_frames(&state.chat_id, &frames)
        .instrument(commit_span)
        .await;
    match committed {
        Ok(committed_batch) => {
            let members = committed_batch.members;
            for (queued, outcome) in batch.into_iter().zip(committed_batch.outcomes) {
                if let Ok(committed) = &outcome {
                    let stored = committed.iter().filter(|entry| entry.newly_stored).count() as u64;
                    services.metrics.messages_committed.inc_by(stored);
                    let delivery = Arc::new(DeliveryPayload {
                        chat_id: state.chat_id.clone(),
                        messages: committed.iter().map(|entry| entry.message.clone()).collect(),
                    });
                    let deliver_span =
                        tracing::info_span!(parent: &queued.trace, "chat.deliver", chat_id = %state.chat_id);
                    services.deliver(&members, delivery, queued.origin, &deliver_span);
                }
                let _ = queued.reply.send(outcome);
            }
            if !members.is_empty() {
                state.roster = Some(ChatRoster {
                    members,
                    is_group: committed_batch.is_group,
                });
            }
        }
        Err(error) => {
            // Nothing of the batch is stored: every sender gets the error and may resend.
            for queued in batch {
                let _ = queued.reply.send(Err(SendError::Shared(Arc::clone(&error))));
            }
        }
    }
    Ok(())
}

impl ChatState {
    fn services(&self) -> Result<Arc<MessagingServices>, ActorProcessingErr> {
        self.services
            .upgrade()
            .ok_or_else(|| "messaging services are gone".into())
    }

    async fn roster(&mut self, services: &MessagingServices) -> Result<ChatRoster, SendError> {
        if let Some(roster) = &self.roster {
            return Ok(roster.clone());
        }
        let roster = services.storage.chat_roster(&self.chat_id).await?;
        if !roster.members.is_empty() {
            self.roster = Some(roster.clone());
        }
        Ok(roster)
    }

    /// Tells each sender of the group how far their newest message got, when that changed.
    async fn send_receipt_summaries(&mut self, services: &MessagingServices) {
        let Some(up_to) = self.receipts_up_to.take() else {
            return;
        };
        match services.storage.receipt_inputs(&self.chat_id, up_to).await {
            Ok(inputs) => {
                let summaries = self.sent_summaries.changed(receipts::summarize(&self.chat_id, &inputs));
                for summary in summaries {
                    let sender = [summary.user_id.clone()];
                    services.notify_status(&sender, Arc::new(summary));
                }
            }
            // Receipts are advisory: the next cursor move summarises again, and history
            // pages carry every message's status.
            Err(error) => tracing::warn!(chat_id = %self.chat_id, %error, "reading receipts failed"),
        }
    }
}

impl Actor for ChatActor {
    type Msg = ChatMessage;
    type State = ChatState;
    type Arguments = ChatArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: ChatArguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(IDLE_AFTER / 2, || ChatMessage::IdleCheck);
        Ok(ChatState {
            chat_id: arguments.chat_id,
            services: arguments.services,
            roster: None,
            receipts_up_to: None,
            sent_summaries: SentSummaries::default(),
            last_activity: Instant::now(),
            queued: Vec::new(),
            flush_requested: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let services = state.services()?;
        match message {
            ChatMessage::Send {
                sender,
                messages,
                origin,
                trace,
                reply,
            } => {
                state.last_activity = Instant::now();
                state.queued.push(QueuedSend {
                    frame: FrameToCommit { sender, messages },
                    origin,
                    trace,
                    reply,
                });
                // Sends that arrive while a commit is running queue up behind this flush
                // and go out together in the next transaction.
                if !state.flush_requested {
                    state.flush_requested = true;
                    myself.cast(ChatMessage::Flush)?;
                }
            }
            ChatMessage::Flush => {
                state.flush_requested = false;
                flush(&myself, state, &services).await?;
            }
            ChatMessage::MoveCursor { user, kind, seq, reply } => {
                state.last_activity = Instant::now();
                let outcome = match services.storage.advance_cursor(&user, &state.chat_id, kind, seq).await {
                    Ok(Some(cursor)) => Ok(cursor),
                    Ok(None) => Err(SendError::ChatNotFound),
                    Err(error) => Err(SendError::Shared(error)),
                };
                if let Ok(cursor) = &outcome {
                    let roster = state.roster(&services).await.unwrap_or_default();
                    if roster.is_group {
                        // Coalesced: one summary per sender per interval, not a frame
                        // per member per move.
                        if state.receipts_up_to.is_none() {
                            myself.send_after(receipts::SUMMARY_INTERVAL, || ChatMessage::ReceiptTick);
                        }
                        state.receipts_up_to = Some(state.receipts_up_to.unwrap_or(0).max(*cursor));
                    } else {
                        let others: Vec<String> = roster.members.into_iter().filter(|member| *member != user).collect();
                        services.notify_status(
                            &others,
                            Arc::new(StatusPayload {
                                chat_id: state.chat_id.clone(),
                                user_id: user.clone(),
                                status: kind.status().to_owned(),
                                seq: *cursor,
                                received_by: None,
                                read_by: None,
                                members: None,
                            }),
                        );
                    }
                }
                let _ = reply.send(outcome);
            }
            ChatMessage::ReceiptTick => {
                state.send_receipt_summaries(&services).await;
            }
            ChatMessage::IdleCheck => {
                if state.last_activity.elapsed() >= IDLE_AFTER
                    && state.queued.is_empty()
                    && state.receipts_up_to.is_none()
                {
                    services.chats.forget(&state.chat_id, &myself).await;
                    myself.stop(Some("idle".to_owned()));
                }
            }
        }
        Ok(())
    }
}

/// The node's running `Chat` actors by chat id.
#[derive(Default)]
pub struct ChatDirectory {
    chats: tokio::sync::Mutex<HashMap<String, ActorRef<ChatMessage>>>,
}

impl ChatDirectory {
    /// The chat's actor, started if it is not running.
    pub async fn get_or_start(
        &self,
        chat_id: &str,
        services: &Arc<MessagingServices>,
    ) -> Result<ActorRef<ChatMessage>, ActorProcessingErr> {
        let mut chats = self.chats.lock().await;
        if let Some(chat) = chats.get(chat_id) {
            return Ok(chat.clone());
        }
        let arguments = ChatArguments {
            chat_id: chat_id.to_owned(),
            services: Arc::downgrade(services),
        };
        let chat = services.spawn_supervised(ChatActor, arguments).await?;
        chats.insert(chat_id.to_owned(), chat.clone());
        Ok(chat)
    }

    /// Drops the entry of the chat run by `actor` (it failed); its chat id.
    pub async fn forget_actor(&self, actor: ractor::ActorId) -> Option<String> {
        let mut chats = self.chats.lock().await;
        let chat_id = chats
            .iter()
            .find(|(_, chat)| chat.get_id() == actor)
            .map(|(chat_id, _)| chat_id.clone())?;
        chats.remove(&chat_id);
        Some(chat_id)
    }

    /// Drops the entry if it still names this actor.
    pub async fn forget(&self, chat_id: &str, chat: &ActorRef<ChatMessage>) {
        let mut chats = self.chats.lock().await;
        if chats
            .get(chat_id)
            .is_some_and(|current| current.get_id() == chat.get_id())
        {
            chats.remove(chat_id);
        }
    }

    /// The chats with a running actor on this node.
    pub async fn running(&self) -> Vec<String> {
        self.chats.lock().await.keys().cloned().collect()
    }

    /// Stops every chat (node shutdown).
    pub async fn stop_all(&self) {
        let mut chats = self.chats.lock().await;
        for (_, chat) in chats.drain() {
            chat.stop(Some("node stopping".to_owned()));
        }
    }
}
