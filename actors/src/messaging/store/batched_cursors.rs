//! The cursor moves of a commit group, several per statement. A client reports
//! `received` for every delivery, so under load cursor moves outnumbered the messages'
//! own transactions three to one on the master, each with its own commit, fsyncs and
//! replica acknowledgement.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Transaction, Value};

use super::batched_statements::padded_chunks;
use super::CursorKind;

/// A move of `user`'s cursor in `chat_id` as a client reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorMove {
    /// The user whose cursor moves.
    pub user: String,
    /// The chat.
    pub chat_id: String,
    /// Which cursor.
    pub kind: CursorKind,
    /// Where to, as the client sent it (clamped to the chat's last seq).
    pub seq: u64,
}

/// Where a group's moves take one user's cursors in one chat: the highest of them
/// (reading implies receiving; a `read_up_to` of 0 leaves the read cursor alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CursorTargets {
    pub received_up_to: u64,
    pub read_up_to: u64,
}

/// The group's moves, one target per (chat, user).
pub(super) fn coalesce(moves: &[&CursorMove]) -> HashMap<(String, String), CursorTargets> {
    let mut targets: HashMap<(String, String), CursorTargets> = HashMap::new();
    for cursor_move in moves {
        let target = targets
            .entry((cursor_move.chat_id.clone(), cursor_move.user.clone()))
            .or_insert(CursorTargets {
                received_up_to: 0,
                read_up_to: 0,
            });
        target.received_up_to = target.received_up_to.max(cursor_move.seq);
        if cursor_move.kind == CursorKind::Read {
            target.read_up_to = target.read_up_to.max(cursor_move.seq);
        }
    }
    targets
}

/// `SELECT ? AS chat_id, ? AS user_id[, …] UNION ALL SELECT ?, ?[, …]`: `rows` rows of
/// `columns` parameters each, as a derived table.
fn parameter_rows(rows: usize, columns: &[&str]) -> String {
    let first = columns
        .iter()
        .map(|column| format!("? AS {column}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rest = vec!["?"; columns.len()].join(", ");
    let mut derived = format!("SELECT {first}");
    for _ in 1..rows {
        derived.push_str(&format!(" UNION ALL SELECT {rest}"));
    }
    derived
}

/// Moves every target's cursors forward (never back, never past the chat's last seq).
/// The chats' rows are locked by the group already. The join order and the primary keys
/// are forced: on a small table the optimizer would scan `chat_members`, which under
/// repeatable read locks every row it passes.
pub(super) async fn move_cursors(
    transaction: &mut Transaction<'_>,
    targets: &[((&str, &str), CursorTargets)],
) -> Result<(), mysql_async::Error> {
    for chunk in padded_chunks(targets) {
        let size = chunk.len();
        let statement = format!(
            "UPDATE ({}) v \
             STRAIGHT_JOIN chat_members m FORCE INDEX (PRIMARY) ON m.chat_id = v.chat_id AND m.user_id = v.user_id \
             STRAIGHT_JOIN chats c FORCE INDEX (PRIMARY) ON c.id = m.chat_id \
             SET m.received_seq = GREATEST(m.received_seq, LEAST(v.received_up_to, c.last_seq)), \
                 m.read_seq = GREATEST(m.read_seq, LEAST(v.read_up_to, c.last_seq))",
            parameter_rows(size, &["chat_id", "user_id", "received_up_to", "read_up_to"])
        );
        let mut parameters: Vec<Value> = Vec::with_capacity(size * 4);
        for ((chat_id, user), target) in &chunk {
            parameters.extend([
                Value::from(*chat_id),
                Value::from(*user),
                Value::from(target.received_up_to),
                Value::from(target.read_up_to),
            ]);
        }
        transaction.exec_drop(statement, Params::Positional(parameters)).await?;
    }
    Ok(())
}

/// The received and read cursors of each (chat, user) of `keys` that is a membership.
pub(super) async fn read_cursors(
    transaction: &mut Transaction<'_>,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), (u64, u64)>, mysql_async::Error> {
    let mut cursors = HashMap::new();
    for chunk in padded_chunks(keys) {
        let size = chunk.len();
        let statement = format!(
            "SELECT m.chat_id, m.user_id, m.received_seq, m.read_seq FROM ({}) v \
             STRAIGHT_JOIN chat_members m FORCE INDEX (PRIMARY) ON m.chat_id = v.chat_id AND m.user_id = v.user_id",
            parameter_rows(size, &["chat_id", "user_id"])
        );
        let parameters: Vec<Value> = chunk
            .iter()
            .flat_map(|(chat_id, user)| [Value::from(*chat_id), Value::from(*user)])
            .collect();
        let rows: Vec<(String, String, u64, u64)> = transaction.exec(statement, Params::Positional(parameters)).await?;
        for (chat_id, user, received, read) in rows {
            cursors.insert((chat_id, user), (received, read));
        }
    }
    Ok(cursors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor_move(chat_id: &str, user: &str, kind: CursorKind, seq: u64) -> CursorMove {
        CursorMove {
            user: user.to_owned(),
            chat_id: chat_id.to_owned(),
            kind,
            seq,
        }
    }

    #[test]
    fn moves_of_one_user_in_one_chat_become_one_target_and_reading_implies_receiving() {
        let moves = [
            cursor_move("chat", "bob", CursorKind::Received, 7),
            cursor_move("chat", "bob", CursorKind::Read, 5),
            cursor_move("chat", "bob", CursorKind::Received, 6),
            cursor_move("chat", "alice", CursorKind::Read, 9),
            cursor_move("other", "bob", CursorKind::Received, 2),
        ];
        let targets = coalesce(&moves.iter().collect::<Vec<_>>());
        let target = |chat: &str, user: &str| targets[&(chat.to_owned(), user.to_owned())];
        assert_eq!(targets.len(), 3);
        assert_eq!(
            target("chat", "bob"),
            CursorTargets {
                received_up_to: 7,
                read_up_to: 5
            }
        );
        assert_eq!(
            target("chat", "alice"),
            CursorTargets {
                received_up_to: 9,
                read_up_to: 9
            }
        );
        assert_eq!(target("other", "bob").read_up_to, 0);
    }

    #[test]
    fn parameter_rows_name_the_first_rows_columns() {
        assert_eq!(parameter_rows(1, &["a", "b"]), "SELECT ? AS a, ? AS b");
        assert_eq!(
            parameter_rows(3, &["a", "b"]),
            "SELECT ? AS a, ? AS b UNION ALL SELECT ?, ? UNION ALL SELECT ?, ?"
        );
    }
}
