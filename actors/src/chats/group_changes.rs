//! The group operations of [`Chats`]: create, add, remove (or leave), list members. The
//! rules and the statements they share are in `groups`.

use chrono::{SubsecRound, Utc};
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use protocol::messenger::{chat_kinds, ChatMembersResponse, Participant};
use protocol::websocket::membership_events;
use uuid::Uuid;

use std::collections::HashSet;

use super::groups::{
    checked_title, display_names, event_text, first_at_group_limit, lock_group_for, members_of_new_group, name_of,
    store_event, CreatedGroup, MembershipChange, NewEvent, NewGroup,
};
use super::{ChatError, Chats};
use crate::database::Freshness;

/// Member rows per INSERT when a group is created.
const MEMBER_ROWS_PER_INSERT: usize = 64;

impl Chats {
    /// The checks of a new group that need no database: the title, and the member
    /// limit. What passes them is what [`Chats::create_group`] creates.
    pub fn check_new_group(&self, caller: &str, title: &str, member_ids: &[String]) -> Result<NewGroup, ChatError> {
        let title = checked_title(title)?;
        let members = members_of_new_group(caller, member_ids);
        if members.len() as u64 > self.group_limits.max_members {
            return Err(ChatError::TooManyMembers(self.group_limits.max_members));
        }
        Ok(NewGroup { title, members })
    }

    /// Creates `group`: its creator (the first member) and the others.
    pub async fn create_group(&self, group: NewGroup) -> Result<CreatedGroup, ChatError> {
        let NewGroup { title, members } = group;
        let limits = self.group_limits;
        let writers: Vec<&str> = members.iter().map(String::as_str).collect();
        // Not idempotent: a commit lost with the master fails, and a retry may make a
        // second group (the caller sees the error and decides).
        let created = self
            .database
            .write_for(&writers, |transaction| {
                let (members, title, chat_id) = (members.clone(), title.clone(), Uuid::new_v4().to_string());
                async move {
                    let names = display_names(transaction, &members).await?;
                    let known: HashSet<&str> = names.iter().map(|(id, _)| id.as_str()).collect();
                    if let Some(unknown) = members.iter().find(|member| !known.contains(member.as_str())) {
                        return Ok(Err(ChatError::UnknownUser(unknown.clone())));
                    }
                    if let Some((user, groups)) =
                        first_at_group_limit(transaction, &members, limits.max_groups_per_user).await?
                    {
                        return Ok(Err(ChatError::TooManyGroups { user, groups }));
                    }
                    let creator = members[0].clone();
                    transaction
                        .exec_drop(
                            "INSERT INTO chats (id, direct_key, last_seq, create_time, kind, title, creator_id) \
                             VALUES (?, NULL, 0, UTC_TIMESTAMP(6), 'group', ?, ?)",
                            (&chat_id, &title, &creator),
                        )
                        .await?;
                    // The creator's row is a microsecond older than the others', so
                    // "longest-standing first" lists the creator first.
                    let joined_at = Utc::now().naive_utc().trunc_subsecs(6);
                    let creator_joined_at = joined_at - chrono::Duration::microseconds(1);
                    for chunk in members.chunks(MEMBER_ROWS_PER_INSERT) {
                        let statement = format!(
                            "INSERT INTO chat_members (chat_id, user_id, received_seq, read_seq, joined_at) VALUES {}",
                            vec!["(?, ?, 0, 0, ?)"; chunk.len()].join(", ")
                        );
                        let mut parameters = Vec::with_capacity(chunk.len() * 3);
                        for member in chunk {
                            let at = if *member == creator {
                                creator_joined_at
                            } else {
                                joined_at
                            };
                            parameters.extend([Value::from(&chat_id), Value::from(member), Value::from(at)]);
                        }
                        transaction.exec_drop(statement, Params::Positional(parameters)).await?;
                    }
                    let creator_name = name_of(&names, &creator).to_owned();
                    let text = event_text(membership_events::CREATED, &creator_name, &creator_name, &title);
                    let event = NewEvent {
                        chat_id: &chat_id,
                        seq: 1,
                        actor: &creator,
                        kind: membership_events::CREATED,
                        subject: &creator,
                        text,
                    };
                    let event = store_event(transaction, event).await?;
                    Ok(Ok(CreatedGroup {
                        chat_id,
                        event,
                        members,
                    }))
                }
                .boxed()
            })
            .await?;
        created
    }

    /// Adds `user` to the group `chat_id`; any member may.
    pub async fn add_member(&self, caller: &str, chat_id: &str, user: &str) -> Result<MembershipChange, ChatError> {
        let limits = self.group_limits;
        let changed = self
            .database
            .write_for(&[caller, user], |transaction| {
                let (caller, chat_id, user) = (caller.to_owned(), chat_id.to_owned(), user.to_owned());
                async move {
                    let chat = match lock_group_for(transaction, &chat_id, &caller).await? {
                        Ok(chat) => chat,
                        Err(refused) => return Ok(Err(refused)),
                    };
                    if chat.members.contains(&user) {
                        return Ok(Ok(MembershipChange {
                            chat_id,
                            user_id: user,
                            seq: chat.last_seq,
                            delivery: None,
                        }));
                    }
                    if chat.members.len() as u64 >= limits.max_members {
                        return Ok(Err(ChatError::TooManyMembers(limits.max_members)));
                    }
                    let names = display_names(transaction, &[caller.clone(), user.clone()]).await?;
                    if !names.iter().any(|(id, _)| *id == user) {
                        return Ok(Err(ChatError::UnknownUser(user)));
                    }
                    if let Some((user, groups)) =
                        first_at_group_limit(transaction, std::slice::from_ref(&user), limits.max_groups_per_user)
                            .await?
                    {
                        return Ok(Err(ChatError::TooManyGroups { user, groups }));
                    }
                    // The new member's cursors start at the event before theirs: they get
                    // their own `added` event and what follows, not a replay of the past
                    // (which they may read as history).
                    transaction
                        .exec_drop(
                            "INSERT INTO chat_members (chat_id, user_id, received_seq, read_seq, joined_at) \
                             VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6))",
                            (&chat_id, &user, chat.last_seq, chat.last_seq),
                        )
                        .await?;
                    transaction
                        .exec_drop(
                            "DELETE FROM chat_former_members WHERE chat_id = ? AND user_id = ?",
                            (&chat_id, &user),
                        )
                        .await?;
                    let text = event_text(
                        membership_events::ADDED,
                        name_of(&names, &caller),
                        name_of(&names, &user),
                        "",
                    );
                    let seq = chat.last_seq + 1;
                    let event = NewEvent {
                        chat_id: &chat_id,
                        seq,
                        actor: &caller,
                        kind: membership_events::ADDED,
                        subject: &user,
                        text,
                    };
                    let event = store_event(transaction, event).await?;
                    let mut recipients = chat.members;
                    recipients.push(user.clone());
                    Ok(Ok(MembershipChange {
                        chat_id,
                        user_id: user,
                        seq,
                        delivery: Some((event, recipients)),
                    }))
                }
                .boxed()
            })
            .await?;
        changed
    }

    /// Takes `user` out of the group `chat_id`: the caller leaving, or the group's
    /// creator removing someone.
    pub async fn remove_member(&self, caller: &str, chat_id: &str, user: &str) -> Result<MembershipChange, ChatError> {
        let changed = self
            .database
            .write_for(&[caller, user], |transaction| {
                let (caller, chat_id, user) = (caller.to_owned(), chat_id.to_owned(), user.to_owned());
                async move {
                    let chat = match lock_group_for(transaction, &chat_id, &caller).await? {
                        Ok(chat) => chat,
                        Err(refused) => return Ok(Err(refused)),
                    };
                    if !chat.members.contains(&user) {
                        return Ok(Err(ChatError::NotAMember(user)));
                    }
                    let leaving = user == caller;
                    if !leaving && chat.creator_id.as_deref() != Some(caller.as_str()) {
                        return Ok(Err(ChatError::OnlyTheCreatorRemoves));
                    }
                    let names = display_names(transaction, &[caller.clone(), user.clone()]).await?;
                    let kind = if leaving {
                        membership_events::LEFT
                    } else {
                        membership_events::REMOVED
                    };
                    let text = event_text(kind, name_of(&names, &caller), name_of(&names, &user), "");
                    let seq = chat.last_seq + 1;
                    let event = NewEvent {
                        chat_id: &chat_id,
                        seq,
                        actor: &caller,
                        kind,
                        subject: &user,
                        text,
                    };
                    let event = store_event(transaction, event).await?;
                    transaction
                        .exec_drop(
                            "DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?",
                            (&chat_id, &user),
                        )
                        .await?;
                    transaction
                        .exec_drop(
                            "INSERT INTO chat_former_members (chat_id, user_id, left_seq, left_at) \
                             VALUES (?, ?, ?, UTC_TIMESTAMP(6)) \
                             ON DUPLICATE KEY UPDATE left_seq = VALUES(left_seq), left_at = VALUES(left_at)",
                            (&chat_id, &user, seq),
                        )
                        .await?;
                    if chat.creator_id.as_deref() == Some(user.as_str()) {
                        // The longest-standing member who stays takes the creator's role.
                        let successor = chat.members.iter().find(|member| **member != user);
                        transaction
                            .exec_drop("UPDATE chats SET creator_id = ? WHERE id = ?", (successor, &chat_id))
                            .await?;
                    }
                    Ok(Ok(MembershipChange {
                        chat_id,
                        user_id: user,
                        seq,
                        delivery: Some((event, chat.members)),
                    }))
                }
                .boxed()
            })
            .await?;
        changed
    }

    /// The members of `chat_id` with their names, for a member only. Read on the master
    /// (a replica when it is down): pages reload the list when a membership event
    /// arrives, and a replica a few milliseconds behind would show the list before it.
    pub async fn members(&self, caller: &str, chat_id: &str) -> Result<ChatMembersResponse, ChatError> {
        let found = self.read_members(Freshness::MasterFirst, chat_id).await?;
        found
            .filter(|found| found.members.iter().any(|member| member.user_id == caller))
            .ok_or(ChatError::ChatNotFound)
    }

    async fn read_members(
        &self,
        freshness: Freshness<'_>,
        chat_id: &str,
    ) -> Result<Option<ChatMembersResponse>, ChatError> {
        type ChatRow = (String, Option<String>, Option<String>);
        let (chat, members) = self
            .database
            .read(freshness, move |conn| {
                let chat_id = chat_id.to_owned();
                async move {
                    let chat: Option<ChatRow> = conn
                        .exec_first("SELECT kind, title, creator_id FROM chats WHERE id = ?", (&chat_id,))
                        .await?;
                    let members: Vec<(String, String, String)> = conn
                        .exec(
                            "SELECT u.id, u.name, u.surname FROM chat_members m JOIN users u ON u.id = m.user_id \
                             WHERE m.chat_id = ? ORDER BY m.joined_at, m.user_id",
                            (&chat_id,),
                        )
                        .await?;
                    Ok((chat, members))
                }
                .boxed()
            })
            .await?;
        let Some((kind, title, creator_id)) = chat else {
            return Ok(None);
        };
        let is_group = kind == chat_kinds::GROUP;
        Ok(Some(ChatMembersResponse {
            chat_id: chat_id.to_owned(),
            kind,
            title,
            creator_id: creator_id.filter(|_| is_group),
            members: members
                .into_iter()
                .map(|(user_id, name, surname)| Participant {
                    user_id,
                    name,
                    surname,
                    online: false,
                })
                .collect(),
        }))
    }
}
