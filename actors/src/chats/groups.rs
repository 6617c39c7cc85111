//! Group chats: creating a group, adding and removing members, listing them.
//!
//! Who may do what: any member adds people; a member leaves; only the group's creator
//! removes others (when the creator leaves, the longest-standing member takes the role).
//! Every change is a message in the chat's own sequence (`messages.kind` names it), taken
//! under the chat's row lock like a send: a send committed after a removal does not
//! reach the removed member, on any node, because the send's transaction reads the
//! members after that lock. A new member gets what is sent from their `added` event on
//! and reads the whole history; a former member reads the history up to the event that
//! took them out (`chat_former_members.left_seq`), as Matrix does.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Transaction, Value};
use protocol::messenger::chat_kinds;
use protocol::websocket::{membership_events, DeliveredMessage};
use uuid::Uuid;

use super::ChatError;
use crate::database::statement_sizes::padded_to_statement_size;
use crate::messaging::store::{delivered_event, membership_event};

/// How many ids one `IN (...)` holds at most; fewer are padded to one of these sizes so
/// the prepared statements stay few.
const IN_LIST_SIZES: [usize; 4] = [1, 4, 16, 64];

/// Longest group title, in characters, once trimmed.
pub const MAX_TITLE_CHARS: usize = 200;

/// What groups may grow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Members of one group at most, its creator included.
    pub max_members: u64,
    /// Groups one user may be in at most (created, added to, or joined).
    pub max_groups_per_user: u64,
}

/// A change of a group's members as committed, and the event to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The group.
    pub chat_id: String,
    /// The member added or removed.
    pub user_id: String,
    /// The event's seq, or the chat's newest seq when nothing changed.
    pub seq: u64,
    /// The membership event and everyone who gets it live (none when nothing changed):
    /// the members after an addition, the members before a removal (the removed one
    /// sees it happen).
    pub delivery: Option<(DeliveredMessage, Vec<String>)>,
}

/// A group that passed the checks needing no database, ready to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    /// Trimmed, 1 to [`MAX_TITLE_CHARS`] characters.
    pub title: String,
    /// The creator first, then the others, each once.
    pub members: Vec<String>,
}

/// A new group: its id, its `created` event and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedGroup {
    /// The group (UUID).
    pub chat_id: String,
    /// The `created` event (seq 1).
    pub event: DeliveredMessage,
    /// Every member, the creator first.
    pub members: Vec<String>,
}

/// A group title as stored: trimmed, 1 to [`MAX_TITLE_CHARS`] characters.
pub fn checked_title(title: &str) -> Result<String, ChatError> {
    let title = title.trim();
    let length = title.chars().count();
    if length == 0 || length > MAX_TITLE_CHARS {
        return Err(ChatError::InvalidTitle(length));
    }
    Ok(title.to_owned())
}

/// The creator first, then the other ids in the order given, each once.
pub fn members_of_new_group(creator: &str, member_ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::from([creator]);
    let others = member_ids.iter().filter(|member| seen.insert(member.as_str())).cloned();
    std::iter::once(creator.to_owned()).chain(others).collect()
}

/// The chat row as a membership change reads it under its lock.
pub(super) struct LockedChat {
    pub last_seq: u64,
    pub kind: String,
    pub creator_id: Option<String>,
    /// Members, longest-standing first.
    pub members: Vec<String>,
}

/// Locks the chat's row (as a send does) and reads its members after the lock.
async fn lock_chat(transaction: &mut Transaction<'_>, chat_id: &str) -> Result<Option<LockedChat>, mysql_async::Error> {
    let chat: Option<(u64, String, Option<String>)> = transaction
        .exec_first(
            "SELECT last_seq, kind, creator_id FROM chats WHERE id = ? FOR UPDATE",
            (chat_id,),
        )
        .await?;
    let Some((last_seq, kind, creator_id)) = chat else {
        return Ok(None);
    };
    let members: Vec<String> = transaction
        .exec(
            "SELECT user_id FROM chat_members WHERE chat_id = ? ORDER BY joined_at, user_id",
            (chat_id,),
        )
        .await?;
    Ok(Some(LockedChat {
        last_seq,
        kind,
        creator_id,
        members,
    }))
}

/// Locks the group `chat_id` for a change by `caller`: not found unless the caller is a
/// member (an outsider learns nothing), and only a group has members to change.
pub(super) async fn lock_group_for(
    transaction: &mut Transaction<'_>,
    chat_id: &str,
    caller: &str,
) -> Result<Result<LockedChat, ChatError>, mysql_async::Error> {
    let Some(chat) = lock_chat(transaction, chat_id).await? else {
        return Ok(Err(ChatError::ChatNotFound));
    };
    if !chat.members.iter().any(|member| member == caller) {
        return Ok(Err(ChatError::ChatNotFound));
    }
    if chat.kind != chat_kinds::GROUP {
        return Ok(Err(ChatError::NotAGroup));
    }
    Ok(Ok(chat))
}

/// `name surname` of each of `ids` that exists.
pub(super) async fn display_names(
    transaction: &mut Transaction<'_>,
    ids: &[String],
) -> Result<Vec<(String, String)>, mysql_async::Error> {
    let mut names = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IN_LIST_SIZES[IN_LIST_SIZES.len() - 1]) {
        let padded = padded_to_statement_size(chunk, &IN_LIST_SIZES);
        let statement = format!(
            "SELECT id, name, surname FROM users WHERE id IN ({})",
            vec!["?"; padded.len()].join(", ")
        );
        // `IN` returns each user's row once, whatever it repeats (the padding, a member
        // leaving who is also the caller); a new group's members are distinct.
        let rows: Vec<(String, String, String)> = transaction.exec(statement, padded).await?;
        names.extend(
            rows.into_iter()
                .map(|(id, name, surname)| (id, format!("{name} {surname}").trim().to_owned())),
        );
    }
    Ok(names)
}

/// The first of `ids` already in `max_groups` groups, with how many.
pub(super) async fn first_at_group_limit(
    transaction: &mut Transaction<'_>,
    ids: &[String],
    max_groups: u64,
) -> Result<Option<(String, u64)>, mysql_async::Error> {
    for chunk in ids.chunks(IN_LIST_SIZES[IN_LIST_SIZES.len() - 1]) {
        let padded = padded_to_statement_size(chunk, &IN_LIST_SIZES);
        let statement = format!(
            "SELECT m.user_id, COUNT(*) FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE c.kind = 'group' AND m.user_id IN ({}) GROUP BY m.user_id HAVING COUNT(*) >= ? LIMIT 1",
            vec!["?"; padded.len()].join(", ")
        );
        let mut parameters: Vec<Value> = padded.into_iter().map(Value::from).collect();
        parameters.push(Value::from(max_groups));
        let over: Option<(String, u64)> = transaction
            .exec_first(statement, Params::Positional(parameters))
            .await?;
        if over.is_some() {
            return Ok(over);
        }
    }
    Ok(None)
}

/// A membership event about to be stored.
pub(super) struct NewEvent<'a> {
    pub chat_id: &'a str,
    pub seq: u64,
    pub actor: &'a str,
    pub kind: &'static str,
    pub subject: &'a str,
    pub text: String,
}

/// Stores the event at its seq and moves the chat's counter there; the message as
/// members receive it.
pub(super) async fn store_event(
    transaction: &mut Transaction<'_>,
    event: NewEvent<'_>,
) -> Result<DeliveredMessage, mysql_async::Error> {
    let id = Uuid::now_v7().to_string();
    let now: NaiveDateTime = Utc::now().naive_utc().trunc_subsecs(6);
    transaction
        .exec_drop(
            "INSERT INTO messages (id, chat_id, seq, user_id, client_id, text, create_time, kind, subject_id) \
             VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)",
            (
                &id,
                event.chat_id,
                event.seq,
                event.actor,
                &event.text,
                now,
                event.kind,
                event.subject,
            ),
        )
        .await?;
    transaction
        .exec_drop("UPDATE chats SET last_seq = ? WHERE id = ?", (event.seq, event.chat_id))
        .await?;
    Ok(delivered_event(
        id,
        event.chat_id.to_owned(),
        event.seq,
        event.actor,
        event.text,
        now,
        None,
        membership_event(event.kind.to_owned(), Some(event.subject.to_owned())),
    ))
}

/// The sentence a membership event carries as its text, for clients that show only text.
pub fn event_text(kind: &str, actor_name: &str, subject_name: &str, title: &str) -> String {
    match kind {
        membership_events::CREATED => format!("{actor_name} created the group \u{201c}{title}\u{201d}"),
        membership_events::ADDED => format!("{actor_name} added {subject_name}"),
        membership_events::LEFT => format!("{subject_name} left"),
        _ => format!("{actor_name} removed {subject_name}"),
    }
}

/// The name of `id` among `names`, or the id itself (a deleted account).
pub(super) fn name_of<'n>(names: &'n [(String, String)], id: &'n str) -> &'n str {
    names
        .iter()
        .find(|(known, _)| known == id)
        .map_or(id, |(_, name)| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_is_trimmed_and_bounded() {
        assert_eq!(checked_title("  Team  ").unwrap(), "Team");
        assert!(matches!(checked_title("   "), Err(ChatError::InvalidTitle(0))));
        assert!(checked_title(&"é".repeat(200)).is_ok());
        assert!(matches!(
            checked_title(&"é".repeat(201)),
            Err(ChatError::InvalidTitle(201))
        ));
    }

    #[test]
    fn a_new_group_has_its_creator_first_and_everyone_once() {
        let given = ["b", "creator", "c", "b"].map(str::to_owned);
        assert_eq!(members_of_new_group("creator", &given), ["creator", "b", "c"]);
    }

    #[test]
    fn events_read_as_sentences() {
        assert_eq!(event_text(membership_events::ADDED, "Ann", "Bob", "t"), "Ann added Bob");
        assert_eq!(event_text(membership_events::LEFT, "Bob", "Bob", "t"), "Bob left");
        assert_eq!(
            event_text(membership_events::CREATED, "Ann", "Ann", "Team"),
            "Ann created the group \u{201c}Team\u{201d}"
        );
    }
}
