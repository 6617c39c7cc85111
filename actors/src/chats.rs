//! Chats: one-to-one chats and groups, the caller's chat list, history pages.
//!
//! Every read here is for one caller and must show that caller's own writes, so reads
//! use [`Freshness::ReadYourWrites`]; "you are not a member" is confirmed on the master
//! because a replica may not have the chat yet.

mod group_changes;
pub mod groups;
mod history;

use std::collections::HashMap;

use chrono::NaiveDateTime;
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::messenger::{chat_kinds, ChatSummary, MessagesPage, Participant};
use uuid::Uuid;

use crate::database::{Database, DbError, Freshness};
use crate::time_format::format_utc;

pub use groups::{CreatedGroup, GroupLimits, MembershipChange, NewGroup};
pub use history::PageRequest;

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The companion (or the caller, if deleted meanwhile) does not exist; holds the id
    /// (404 `not_found`).
    #[error("no user with id {0}")]
    UnknownUser(String),
    /// `companion_id` is the caller's own id (400 `invalid_parameter`).
    #[error("a chat needs another person: companion_id is the caller's own id")]
    ChatWithSelf,
    /// The chat does not exist, or the caller is not in it: the same answer for both,
    /// so outsiders learn nothing about which chats exist.
    #[error("chat not found")]
    ChatNotFound,
    /// The caller is in as many chats as a user may be.
    #[error("you are in {0} chats, the most allowed; no new chat can be started")]
    TooManyChats(u64),
    /// A group title must have 1 to 200 characters once trimmed; holds how many it had
    /// (400 `invalid_parameter`).
    #[error("title must have 1 to 200 characters once trimmed, not {0}")]
    InvalidTitle(usize),
    /// Members are added to and removed from groups only (400 `invalid_parameter`).
    #[error("this is a one-to-one chat: its members cannot change")]
    NotAGroup,
    /// The group would have more members than allowed; holds the limit (403 `limit_reached`).
    #[error("a group has at most {0} members")]
    TooManyMembers(u64),
    /// The user is in as many groups as allowed (403 `limit_reached`).
    #[error("user {user} is in {groups} groups, the most allowed")]
    TooManyGroups {
        /// The user at the limit.
        user: String,
        /// How many groups they are in.
        groups: u64,
    },
    /// The user to remove is not a member of the group (404 `not_found`).
    #[error("user {0} is not a member of this group")]
    NotAMember(String),
    /// Only the group's creator removes other members; anyone may leave (403 `forbidden`).
    #[error("only the group's creator removes other members; a member may remove only themself")]
    OnlyTheCreatorRemoves,
    /// The database failed; an outage (`is_unavailable`) is worth a retry (503).
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Chat operations.
#[derive(Clone)]
pub struct Chats {
    database: Database,
    /// Chats a user may start at most (chats others start with them are not refused).
    max_chats_per_user: u64,
    /// What groups may grow to.
    group_limits: GroupLimits,
}

/// `<smaller id>:<larger id>`: the same pair always maps to the same chat.
fn direct_key(first: &str, second: &str) -> String {
    if first <= second {
        format!("{first}:{second}")
    } else {
        format!("{second}:{first}")
    }
}

impl Chats {
    /// Chat operations on `database`; each user may start at most `max_chats_per_user`
    /// one-to-one chats, and groups stay within `group_limits`.
    pub fn new(database: Database, max_chats_per_user: u64, group_limits: GroupLimits) -> Chats {
        Chats {
            database,
            max_chats_per_user,
            group_limits,
        }
    }

    /// The one-to-one chat of `caller` and `companion`, created if it does not exist yet.
    pub async fn create_direct_chat(&self, caller: &str, companion: &str) -> Result<String, ChatError> {
        if caller == companion {
            return Err(ChatError::ChatWithSelf);
        }
        let key = direct_key(caller, companion);
        let max_chats = self.max_chats_per_user;
        let created = self
            .database
            // Runs again after a commit lost with the master: the pair's unique key finds
            // the chat an earlier run stored.
            .write_idempotent(caller, |transaction| {
                let (caller, companion, key) = (caller.to_owned(), companion.to_owned(), key.clone());
                async move {
                    let known: Vec<String> = transaction
                        .exec("SELECT id FROM users WHERE id IN (?, ?)", (&caller, &companion))
                        .await?;
                    if !known.contains(&companion) {
                        return Ok(Err(ChatError::UnknownUser(companion)));
                    }
                    if !known.contains(&caller) {
                        return Ok(Err(ChatError::UnknownUser(caller)));
                    }
                    // Concurrent creations of the same pair meet at the unique direct_key.
                    transaction
                        .exec_drop(
                            "INSERT INTO chats (id, direct_key, last_seq, create_time) VALUES (?, ?, 0, UTC_TIMESTAMP(6)) \
                             ON DUPLICATE KEY UPDATE direct_key = direct_key",
                            (Uuid::new_v4().to_string(), &key),
                        )
                        .await?;
                    // 1: this transaction created the chat; 0: it existed. Only a new chat
                    // counts against the caller's limit (refused, the insert is rolled back).
                    if transaction.affected_rows() == 1 {
                        let chats_of_caller: Option<u64> = transaction
                            .exec_first(
                                "SELECT COUNT(*) FROM chat_members m JOIN chats c ON c.id = m.chat_id \
                                 WHERE m.user_id = ? AND c.kind = 'direct'",
                                (&caller,),
                            )
                            .await?;
                        let chats_of_caller = chats_of_caller.unwrap_or(0);
                        if chats_of_caller >= max_chats {
                            return Ok(Err(ChatError::TooManyChats(chats_of_caller)));
                        }
                    }
                    // A locking read: a plain one would read this transaction's snapshot,
                    // taken before a concurrent creation of the same pair committed the row
                    // the insert above just ran into.
                    let chat_id: Option<String> = transaction
                        .exec_first("SELECT id FROM chats WHERE direct_key = ? FOR UPDATE", (&key,))
                        .await?;
                    let Some(chat_id) = chat_id else {
                        return Ok(Err(ChatError::ChatNotFound));
                    };
                    for member in [&caller, &companion] {
                        transaction
                            .exec_drop(
                                "INSERT INTO chat_members (chat_id, user_id, received_seq, read_seq, joined_at) \
                                 VALUES (?, ?, 0, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE chat_id = chat_id",
                                (&chat_id, member),
                            )
                            .await?;
                    }
                    Ok(Ok(chat_id))
                }
                .boxed()
            })
            .await?;
        created
    }

    /// Every chat the caller is in, oldest first, with unread counts; participants for
    /// one-to-one chats, title and member count for groups.
    pub async fn list_chats(&self, caller: &str) -> Result<Vec<ChatSummary>, ChatError> {
        type ChatRow = (String, NaiveDateTime, u64, String, Option<String>, u64);
        type MemberRow = (String, String, String, String);
        let (chats, members, unread) = self
            .database
            .read(Freshness::ReadYourWrites(caller), move |conn| {
                let caller = caller.to_owned();
                async move {
                    let chats: Vec<ChatRow> = conn
                        .exec(
                            "SELECT c.id, c.create_time, c.last_seq, c.kind, c.title, \
                             (SELECT COUNT(*) FROM chat_members everyone WHERE everyone.chat_id = c.id) \
                             FROM chat_members mine JOIN chats c ON c.id = mine.chat_id \
                             WHERE mine.user_id = ? ORDER BY c.create_time, c.id",
                            (&caller,),
                        )
                        .await?;
                    let members: Vec<MemberRow> = conn
                        .exec(
                            "SELECT everyone.chat_id, u.id, u.name, u.surname FROM chat_members mine \
                             JOIN chats c ON c.id = mine.chat_id AND c.kind = 'direct' \
                             JOIN chat_members everyone ON everyone.chat_id = mine.chat_id \
                             JOIN users u ON u.id = everyone.user_id WHERE mine.user_id = ? ORDER BY u.id",
                            (&caller,),
                        )
                        .await?;
                    let unread: Vec<(String, u64)> = conn
                        .exec(
                            "SELECT m.chat_id, COUNT(*) FROM chat_members mine \
                             JOIN messages m ON m.chat_id = mine.chat_id AND m.seq > mine.read_seq AND m.user_id <> mine.user_id \
                             AND m.kind = 'text' \
                             WHERE mine.user_id = ? GROUP BY m.chat_id",
                            (&caller,),
                        )
                        .await?;
                    Ok((chats, members, unread))
                }
                .boxed()
            })
            .await?;
        let mut participants: HashMap<String, Vec<Participant>> = HashMap::new();
        for (chat_id, user_id, name, surname) in members {
            participants
                .entry(chat_id)
                .or_default()
                // Presence lives in the node's session registry, not the database: the
                // HTTP layer fills it in.
                .push(Participant {
                    user_id,
                    name,
                    surname,
                    online: false,
                });
        }
        let unread: HashMap<String, u64> = unread.into_iter().collect();
        Ok(chats
            .into_iter()
            .map(
                |(chat_id, create_time, last_seq, kind, title, member_count)| ChatSummary {
                    participants: participants.remove(&chat_id).unwrap_or_default(),
                    title: title.filter(|_| kind == chat_kinds::GROUP),
                    kind,
                    member_count,
                    unread: unread.get(&chat_id).copied().unwrap_or(0),
                    chat_id,
                    create_time: format_utc(create_time),
                    last_seq,
                },
            )
            .collect())
    }

    /// One page of a chat's history, for a member of the chat only.
    pub async fn messages_page(
        &self,
        caller: &str,
        chat_id: &str,
        page: PageRequest,
    ) -> Result<MessagesPage, ChatError> {
        if let Some(mut found) =
            history::read_page(&self.database, Freshness::ReadYourWrites(caller), caller, chat_id, page).await?
        {
            // The messages of a page never change, but a replica may lag behind what the
            // caller has already seen live: messages others committed a moment ago (on
            // the tail) and receipts (the status of any message). One primary-key read
            // on the master tells; the message rows stay on the replica.
            let Some(marks) = history::master_marks(&self.database, chat_id).await? else {
                return Err(ChatError::ChatNotFound);
            };
            let is_tail = found.offset.saturating_add(found.limit) > found.total;
            if !is_tail || marks.last_seq <= found.total {
                history::restatus(&mut found, &marks.members);
                return Ok(found);
            }
        }
        history::read_page(&self.database, Freshness::MasterFirst, caller, chat_id, page)
            .await?
            .ok_or(ChatError::ChatNotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_key_does_not_depend_on_who_asks() {
        assert_eq!(direct_key("b", "a"), direct_key("a", "b"));
        assert_eq!(direct_key("a", "b"), "a:b");
    }
}
