//! History pages and the status each message has for its sender.

use chrono::NaiveDateTime;
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::messenger::{status, MessageView, MessagesPage};

use crate::database::{Database, DbError, Freshness};
use crate::messaging::store::membership_event;
use crate::time_format::format_utc;

/// Which slice of the history: messages with `offset < seq <= offset + limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Messages with `seq` above this are returned (0: from the first message).
    pub offset: u64,
    /// Most messages in the page; the caller bounds it (1 to the node's maximum page size).
    pub limit: u64,
}

/// A member's delivery cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberCursor {
    pub user_id: String,
    pub received_seq: u64,
    pub read_seq: u64,
}

/// The status of message `seq` by `sender`: `read` once every other member has read it,
/// `received` once every other member has received it, `created` before.
pub(crate) fn status_for(sender: &str, seq: u64, members: &[MemberCursor]) -> &'static str {
    let others = members.iter().filter(|member| member.user_id != sender);
    let (mut everyone_read, mut everyone_received, mut anyone) = (true, true, false);
    for member in others {
        anyone = true;
        everyone_read &= member.read_seq >= seq;
        everyone_received &= member.received_seq >= seq;
    }
    match (anyone, everyone_read, everyone_received) {
        (true, true, _) => status::READ,
        (true, false, true) => status::RECEIVED,
        _ => status::CREATED,
    }
}

/// What the master says of a chat now: its newest seq and every member's cursors, read
/// by primary key on the master when it is up (a replica otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatMarks {
    pub last_seq: u64,
    pub members: Vec<MemberCursor>,
}

pub(crate) async fn master_marks(database: &Database, chat_id: &str) -> Result<Option<ChatMarks>, DbError> {
    // One round trip: the chat's row joined with its members' rows (all by primary key).
    let rows: Vec<(u64, String, u64, u64)> = database
        .read(Freshness::MasterFirst, move |conn| {
            let chat_id = chat_id.to_owned();
            async move {
                conn.exec(
                    "SELECT c.last_seq, m.user_id, m.received_seq, m.read_seq FROM chats c \
                     JOIN chat_members m ON m.chat_id = c.id WHERE c.id = ?",
                    (chat_id,),
                )
                .await
            }
            .boxed()
        })
        .await?;
    let Some(&(last_seq, ..)) = rows.first() else {
        return Ok(None);
    };
    let members = rows
        .into_iter()
        .map(|(_, user_id, received_seq, read_seq)| (user_id, received_seq, read_seq))
        .collect();
    Ok(Some(ChatMarks {
        last_seq,
        members: cursors(members),
    }))
}

/// Gives every message of `page` the status `members`' cursors make it.
pub(crate) fn restatus(page: &mut MessagesPage, members: &[MemberCursor]) {
    for message in &mut page.messages {
        message.status = status_for(&message.user_id, message.seq, members).to_owned();
    }
}

fn cursors(rows: Vec<(String, u64, u64)>) -> Vec<MemberCursor> {
    rows.into_iter()
        .map(|(user_id, received_seq, read_seq)| MemberCursor {
            user_id,
            received_seq,
            read_seq,
        })
        .collect()
}

type MessageRow = (String, u64, String, String, NaiveDateTime, String, Option<String>);

/// The page, or `None` when the caller is not a member of the chat (or it does not exist).
/// A former member of a group gets the history up to the event that took them out:
/// `total` is that event's seq and nothing after it is in a page.
pub(crate) async fn read_page(
    database: &Database,
    freshness: Freshness<'_>,
    caller: &str,
    chat_id: &str,
    page: PageRequest,
) -> Result<Option<MessagesPage>, DbError> {
    let found = database
        .read(freshness, move |conn| {
            let (chat_id, caller) = (chat_id.to_owned(), caller.to_owned());
            async move {
                let members: Vec<(String, u64, u64)> = conn
                    .exec(
                        "SELECT user_id, received_seq, read_seq FROM chat_members WHERE chat_id = ?",
                        (&chat_id,),
                    )
                    .await?;
                let last_seq: Option<u64> = conn
                    .exec_first("SELECT last_seq FROM chats WHERE id = ?", (&chat_id,))
                    .await?;
                let left_seq: Option<u64> = match members.iter().any(|(member, ..)| *member == caller) {
                    true => None,
                    false => {
                        conn.exec_first(
                            "SELECT left_seq FROM chat_former_members WHERE chat_id = ? AND user_id = ?",
                            (&chat_id, &caller),
                        )
                        .await?
                    }
                };
                // seq is gap-free, so the page is a seq range: no OFFSET scan however deep.
                let rows: Vec<MessageRow> = conn
                    .exec(
                        "SELECT id, seq, user_id, text, create_time, kind, subject_id FROM messages \
                         WHERE chat_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                        (&chat_id, page.offset, page.offset.saturating_add(page.limit)),
                    )
                    .await?;
                Ok((members, last_seq, left_seq, rows))
            }
            .boxed()
        })
        .await?;
    let (members, last_seq, left_seq, rows) = found;
    let members = cursors(members);
    let is_member = members.iter().any(|member| member.user_id == caller);
    let total = match (last_seq, is_member, left_seq) {
        (Some(last_seq), true, _) => last_seq,
        (Some(last_seq), false, Some(left_seq)) => last_seq.min(left_seq),
        _ => return Ok(None),
    };
    let messages = rows
        .into_iter()
        .filter(|(_, seq, ..)| *seq <= total)
        .map(|(id, seq, user_id, text, create_time, kind, subject)| MessageView {
            event: membership_event(kind, subject),
            status: status_for(&user_id, seq, &members).to_owned(),
            id,
            seq,
            chat_id: chat_id.to_owned(),
            user_id,
            text,
            create_time: format_utc(create_time),
        })
        .collect();
    Ok(Some(MessagesPage {
        total,
        offset: page.offset,
        limit: page.limit,
        messages,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(user_id: &str, received_seq: u64, read_seq: u64) -> MemberCursor {
        MemberCursor {
            user_id: user_id.into(),
            received_seq,
            read_seq,
        }
    }

    #[test]
    fn status_follows_the_other_members_cursors() {
        let members = [cursor("bob", 0, 0), cursor("alice", 5, 3)];
        assert_eq!(status_for("bob", 3, &members), status::READ);
        assert_eq!(status_for("bob", 4, &members), status::RECEIVED);
        assert_eq!(status_for("bob", 6, &members), status::CREATED);
        // Alice's own messages depend on Bob's cursors, not hers.
        assert_eq!(status_for("alice", 1, &members), status::CREATED);
    }

    #[test]
    fn a_message_in_a_chat_with_nobody_else_stays_created() {
        assert_eq!(status_for("bob", 1, &[cursor("bob", 9, 9)]), status::CREATED);
    }
}
