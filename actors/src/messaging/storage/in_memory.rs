//! An in-memory [`MessagingStorage`] for in-process tests of the actors' logic: the same
//! rules as MariaDB's (the batch plan is the very function the MariaDB store uses), no
//! server. Never the only proof of a behaviour: the real-process tests are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{SubsecRound, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use protocol::websocket::DeliveredMessage;

use super::MessagingStorage;
use crate::database::DbError;
use crate::messaging::receipts::{MemberCursors, ReceiptInputs};
use crate::messaging::store::{plan_batch, ChatRoster, CommittedBatch, CursorKind, FrameToCommit, StoredMessage};

/// One chat as stored.
#[derive(Debug, Default)]
struct StoredChat {
    members: Vec<String>,
    is_group: bool,
    /// Per member: (received, read).
    cursors: HashMap<String, (u64, u64)>,
    /// In seq order.
    messages: Vec<DeliveredMessage>,
}

impl StoredChat {
    fn last_seq(&self) -> u64 {
        self.messages.last().map_or(0, |message| message.seq)
    }
}

/// Chats, members, messages and cursors in memory.
#[derive(Debug, Default)]
pub struct InMemoryStorage {
    chats: Mutex<HashMap<String, StoredChat>>,
    /// When set, every call fails as if the database were down.
    unavailable: Mutex<bool>,
    /// A chat whose next commit panics (a bug in the store, for supervision tests).
    panic_on_commit_to: Mutex<Option<String>>,
}

impl InMemoryStorage {
    /// Creates a chat of `members`.
    pub fn create_chat(&self, chat_id: &str, members: &[&str]) {
        self.create(chat_id, members, false);
    }

    /// Creates a group of `members`.
    pub fn create_group(&self, chat_id: &str, members: &[&str]) {
        self.create(chat_id, members, true);
    }

    /// Takes `member` out of `chat_id` (what removing a group member commits).
    pub fn remove_member(&self, chat_id: &str, member: &str) {
        if let Some(chat) = self.lock().get_mut(chat_id) {
            chat.members.retain(|current| current != member);
            chat.cursors.remove(member);
        }
    }

    fn create(&self, chat_id: &str, members: &[&str], is_group: bool) {
        let chat = StoredChat {
            is_group,
            members: members.iter().map(|member| member.to_string()).collect(),
            cursors: members.iter().map(|member| (member.to_string(), (0, 0))).collect(),
            messages: Vec::new(),
        };
        self.lock().insert(chat_id.to_owned(), chat);
    }

    /// Every message of a chat, in seq order.
    pub fn messages(&self, chat_id: &str) -> Vec<DeliveredMessage> {
        self.lock()
            .get(chat_id)
            .map(|chat| chat.messages.clone())
            .unwrap_or_default()
    }

    /// Makes every call fail (true) or work again (false).
    pub fn set_unavailable(&self, unavailable: bool) {
        *self.unavailable.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = unavailable;
    }

    /// The next commit to `chat_id` panics, once.
    pub fn panic_on_next_commit(&self, chat_id: &str) {
        *self
            .panic_on_commit_to
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(chat_id.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredChat>> {
        self.chats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_available(&self) -> Result<(), DbError> {
        if *self.unavailable.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            return Err(DbError::Unavailable {
                endpoint: "in-memory".to_owned(),
                reason: "made unavailable by the test".to_owned(),
            });
        }
        Ok(())
    }

    fn commit(&self, chat_id: &str, frames: &[FrameToCommit]) -> Result<CommittedBatch, DbError> {
        self.check_available()?;
        let doomed = {
            let mut panic_on = self
                .panic_on_commit_to
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            panic_on.take_if(|doomed| doomed == chat_id).is_some()
        };
        assert!(!doomed, "the test made this commit panic");
        let mut chats = self.lock();
        let Some(chat) = chats.get_mut(chat_id) else {
            return Ok(CommittedBatch {
                outcomes: frames
                    .iter()
                    .map(|_| Err(crate::messaging::store::SendError::ChatNotFound))
                    .collect(),
                members: Vec::new(),
                is_group: false,
            });
        };
        let stored: HashMap<(String, String), StoredMessage> = chat
            .messages
            .iter()
            .filter_map(|message| {
                let client_id = message.client_id.clone()?;
                let create_time = chrono::DateTime::parse_from_rfc3339(&message.create_time)
                    .map(|time| time.naive_utc())
                    .unwrap_or_default();
                let stored = (
                    message.id.clone(),
                    message.chat_id.clone(),
                    message.seq,
                    message.text.clone(),
                    create_time,
                );
                Some(((message.user_id.clone(), client_id), stored))
            })
            .collect();
        let now = Utc::now().naive_utc().trunc_subsecs(6);
        let plan = plan_batch(chat_id, frames, &chat.members, stored, chat.last_seq(), now);
        let new_messages = plan
            .outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .flatten()
            .filter(|committed| committed.newly_stored)
            .map(|committed| committed.message.clone());
        chat.messages.extend(new_messages);
        Ok(CommittedBatch {
            outcomes: plan.outcomes,
            members: chat.members.clone(),
            is_group: chat.is_group,
        })
    }

    fn pending(&self, user: &str) -> Vec<DeliveredMessage> {
        let chats = self.lock();
        let mut pending = Vec::new();
        for chat in chats.values() {
            if let Some((received, _)) = chat.cursors.get(user) {
                pending.extend(chat.messages.iter().filter(|message| message.seq > *received).cloned());
            }
        }
        pending
    }
}

impl MessagingStorage for InMemoryStorage {
    fn commit_frames<'a>(
        &'a self,
        chat_id: &'a str,
        frames: &'a [FrameToCommit],
    ) -> BoxFuture<'a, Result<CommittedBatch, Arc<DbError>>> {
        futures::future::ready(self.commit(chat_id, frames).map_err(Arc::new)).boxed()
    }

    fn chat_roster<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<ChatRoster, DbError>> {
        let roster = self.check_available().map(|()| {
            self.lock()
                .get(chat_id)
                .map(|chat| ChatRoster {
                    members: chat.members.clone(),
                    is_group: chat.is_group,
                })
                .unwrap_or_default()
        });
        futures::future::ready(roster).boxed()
    }

    fn receipt_inputs<'a>(&'a self, chat_id: &'a str, up_to: u64) -> BoxFuture<'a, Result<ReceiptInputs, DbError>> {
        let inputs = self.check_available().map(|()| {
            let chats = self.lock();
            let Some(chat) = chats.get(chat_id) else {
                return ReceiptInputs::default();
            };
            let mut newest: HashMap<String, u64> = HashMap::new();
            for message in chat
                .messages
                .iter()
                .filter(|message| message.seq <= up_to && message.event.is_none())
            {
                newest.insert(message.user_id.clone(), message.seq);
            }
            let mut newest_by_sender: Vec<(String, u64)> = newest.into_iter().collect();
            newest_by_sender.sort();
            let members = chat
                .members
                .iter()
                .map(|member| {
                    let (received_seq, read_seq) = chat.cursors.get(member).copied().unwrap_or_default();
                    MemberCursors {
                        user_id: member.clone(),
                        received_seq,
                        read_seq,
                    }
                })
                .collect();
            ReceiptInputs {
                newest_by_sender,
                members,
            }
        });
        futures::future::ready(inputs).boxed()
    }

    fn advance_cursor<'a>(
        &'a self,
        user: &'a str,
        chat_id: &'a str,
        kind: CursorKind,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, Arc<DbError>>> {
        let outcome = self.check_available().map(|()| {
            let mut chats = self.lock();
            let chat = chats.get_mut(chat_id)?;
            let last_seq = chat.last_seq();
            let (received, read) = chat.cursors.get_mut(user)?;
            let target = seq.min(last_seq);
            *received = (*received).max(target);
            match kind {
                CursorKind::Received => Some(*received),
                CursorKind::Read => {
                    *read = (*read).max(target);
                    Some(*read)
                }
            }
        });
        futures::future::ready(outcome.map_err(Arc::new)).boxed()
    }

    fn pending_messages<'a>(
        &'a self,
        user: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>> {
        let pending = self.check_available().map(|()| {
            let mut pending = self.pending(user);
            pending.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            pending
        });
        futures::future::ready(pending).boxed()
    }

    fn pending_cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, DbError>> {
        let cursors = self.check_available().map(|()| {
            let chats = self.lock();
            let mut cursors: Vec<(String, u64)> = chats
                .iter()
                .filter_map(|(chat_id, chat)| {
                    let (received, _) = chat.cursors.get(user)?;
                    (chat.last_seq() > *received).then(|| (chat_id.clone(), *received))
                })
                .collect();
            cursors.sort();
            cursors
        });
        futures::future::ready(cursors).boxed()
    }

    fn chat_page<'a>(
        &'a self,
        chat_id: &'a str,
        after: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>> {
        let page = self.check_available().map(|()| {
            let chats = self.lock();
            chats
                .get(chat_id)
                .map(|chat| {
                    chat.messages
                        .iter()
                        .filter(|message| message.seq > after)
                        .take(usize::try_from(limit).unwrap_or(usize::MAX))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        });
        futures::future::ready(page).boxed()
    }

    fn messages_missed<'a>(
        &'a self,
        user: &'a str,
        chat_id: &'a str,
        after: Option<u64>,
        through: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>> {
        let missed = self.check_available().map(|()| {
            let chats = self.lock();
            let Some(chat) = chats.get(chat_id) else {
                return Vec::new();
            };
            let Some((received, _)) = chat.cursors.get(user) else {
                return Vec::new();
            };
            let above = after.unwrap_or((*received).min(through.saturating_sub(1)));
            chat.messages
                .iter()
                .filter(|message| message.seq > above && message.seq <= through)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .cloned()
                .collect()
        });
        futures::future::ready(missed).boxed()
    }

    fn companions_of_users<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<String>>, DbError>> {
        let companions = self.check_available().map(|()| {
            let chats = self.lock();
            let mut companions: HashMap<String, Vec<String>> = HashMap::new();
            for chat in chats.values().filter(|chat| !chat.is_group) {
                for user in users.iter().filter(|user| chat.members.contains(user)) {
                    let theirs = companions.entry(user.clone()).or_default();
                    for other in chat.members.iter().filter(|other| *other != user) {
                        if !theirs.contains(other) {
                            theirs.push(other.clone());
                        }
                    }
                }
            }
            companions
        });
        futures::future::ready(companions).boxed()
    }
}
