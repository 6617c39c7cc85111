//! The statements of a batch commit, a few rows per round trip: a batch of 500 messages
//! took 1,000 round trips (a duplicate check and an INSERT per message) while holding the
//! chat's row lock, and under load such a transaction outlived its timeout.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Transaction, Value};

use crate::database::statement_sizes::padded_to_statement_size;

/// Rows per statement, largest first. A handful of fixed sizes keeps the prepared
/// statements per connection few (the driver caches them by text).
const ROWS_PER_STATEMENT: [usize; 4] = [64, 16, 4, 1];

/// A message row about to be inserted.
pub(super) struct NewMessageRow<'a> {
    pub chat_id: &'a str,
    pub id: &'a str,
    pub seq: u64,
    pub sender: &'a str,
    pub client_id: Option<&'a str>,
    pub text: &'a str,
}

/// What is stored for a sender's `client_id` in a chat: id, chat, seq, text, create time.
pub(crate) type StoredMessage = (String, String, u64, String, NaiveDateTime);

/// Rows per INSERT, largest first. A row cannot be repeated to fill a statement as a
/// list value can, so a count is split into these sizes: powers of two keep a group's
/// inserts to a few statements.
const ROWS_PER_INSERT: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Splits `count` rows into INSERT sizes, largest first: 77 rows are 64 + 8 + 4 + 1.
fn statement_sizes(mut count: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    for size in ROWS_PER_INSERT {
        while count >= size {
            sizes.push(size);
            count -= size;
        }
    }
    sizes
}

/// Inserts `rows` (of any chats) with multi-row INSERTs.
pub(super) async fn insert_messages(
    transaction: &mut Transaction<'_>,
    create_time: NaiveDateTime,
    rows: &[NewMessageRow<'_>],
) -> Result<(), mysql_async::Error> {
    let mut remaining = rows;
    for size in statement_sizes(rows.len()) {
        let (chunk, rest) = remaining.split_at(size);
        remaining = rest;
        let statement = format!(
            "INSERT INTO messages (id, chat_id, seq, user_id, client_id, text, create_time) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?)"; size].join(", ")
        );
        let mut parameters: Vec<Value> = Vec::with_capacity(size * 7);
        for row in chunk {
            parameters.extend([
                Value::from(row.id),
                Value::from(row.chat_id),
                Value::from(row.seq),
                Value::from(row.sender),
                Value::from(row.client_id),
                Value::from(row.text),
                Value::from(create_time),
            ]);
        }
        transaction.exec_drop(statement, Params::Positional(parameters)).await?;
    }
    Ok(())
}

/// `items` in statements of at most [`MAX_CHATS_PER_STATEMENT`], each padded to a fixed
/// size by repeating its last item: only for statements where a repeated row changes
/// nothing (an `IN` list, a `CASE`, a cursor moved to the same place twice).
pub(super) fn padded_chunks<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    items
        .chunks(ROWS_PER_STATEMENT[0])
        .map(|chunk| padded_to_statement_size(chunk, &ROWS_PER_STATEMENT))
        .collect()
}

/// Sets each chat's `last_seq`, several chats per statement.
pub(super) async fn update_last_seqs(
    transaction: &mut Transaction<'_>,
    last_seqs: &[(&str, u64)],
) -> Result<(), mysql_async::Error> {
    for chunk in padded_chunks(last_seqs) {
        let size = chunk.len();
        let statement = format!(
            "UPDATE chats SET last_seq = CASE id {} END WHERE id IN ({})",
            vec!["WHEN ? THEN ?"; size].join(" "),
            vec!["?"; size].join(", ")
        );
        let mut parameters: Vec<Value> = Vec::with_capacity(size * 3);
        for (chat_id, last_seq) in &chunk {
            parameters.extend([Value::from(*chat_id), Value::from(*last_seq)]);
        }
        parameters.extend(chunk.iter().map(|(chat_id, _)| Value::from(*chat_id)));
        transaction.exec_drop(statement, Params::Positional(parameters)).await?;
    }
    Ok(())
}

/// The `last_seq` and kind of each chat of `chat_ids` that exists, locked in id order
/// (so two transactions locking overlapping sets of chats wait for each other instead of
/// deadlocking). `chat_ids` holds at most [`MAX_CHATS_PER_STATEMENT`]. The primary key
/// is forced: a table scan would lock every chat it passes under repeatable read.
pub(super) async fn lock_chats(
    transaction: &mut Transaction<'_>,
    chat_ids: &[&str],
) -> Result<HashMap<String, (u64, String)>, mysql_async::Error> {
    let chat_ids = padded_to_statement_size(chat_ids, &ROWS_PER_STATEMENT);
    let statement = format!(
        "SELECT id, last_seq, kind FROM chats FORCE INDEX (PRIMARY) WHERE id IN ({}) ORDER BY id FOR UPDATE",
        vec!["?"; chat_ids.len()].join(", ")
    );
    let rows: Vec<(String, u64, String)> = transaction
        .exec(
            statement,
            Params::Positional(chat_ids.into_iter().map(Value::from).collect()),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(chat_id, last_seq, kind)| (chat_id, (last_seq, kind)))
        .collect())
}

/// The members of each chat of `chat_ids` (at most [`MAX_CHATS_PER_STATEMENT`]).
pub(super) async fn members_of_chats(
    transaction: &mut Transaction<'_>,
    chat_ids: &[&str],
) -> Result<HashMap<String, Vec<String>>, mysql_async::Error> {
    let chat_ids = padded_to_statement_size(chat_ids, &ROWS_PER_STATEMENT);
    let statement = format!(
        "SELECT chat_id, user_id FROM chat_members WHERE chat_id IN ({})",
        vec!["?"; chat_ids.len()].join(", ")
    );
    let rows: Vec<(String, String)> = transaction
        .exec(
            statement,
            Params::Positional(chat_ids.into_iter().map(Value::from).collect()),
        )
        .await?;
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for (chat_id, user_id) in rows {
        members.entry(chat_id).or_default().push(user_id);
    }
    Ok(members)
}

/// Chats one statement locks or reads the members of at most.
pub(super) const MAX_CHATS_PER_STATEMENT: usize = ROWS_PER_STATEMENT[0];

/// The messages already stored in `chat_id` under any of `client_ids` of `sender`, by
/// client id. Only this chat's: the same client id in another chat is another message.
pub(super) async fn stored_by_client_id(
    transaction: &mut Transaction<'_>,
    chat_id: &str,
    sender: &str,
    client_ids: &[&str],
) -> Result<HashMap<String, StoredMessage>, mysql_async::Error> {
    let mut stored = HashMap::new();
    for chunk in client_ids.chunks(ROWS_PER_STATEMENT[0]) {
        let client_ids = padded_to_statement_size(chunk, &ROWS_PER_STATEMENT);
        let statement = format!(
            "SELECT client_id, id, chat_id, seq, text, create_time FROM messages \
             WHERE chat_id = ? AND user_id = ? AND client_id IN ({})",
            vec!["?"; client_ids.len()].join(", ")
        );
        let mut parameters = vec![Value::from(chat_id), Value::from(sender)];
        parameters.extend(client_ids.into_iter().map(Value::from));
        let rows: Vec<(String, String, String, u64, String, NaiveDateTime)> =
            transaction.exec(statement, Params::Positional(parameters)).await?;
        for (client_id, id, chat_id, seq, text, create_time) in rows {
            stored.insert(client_id, (id, chat_id, seq, text, create_time));
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_split_into_the_fixed_statement_sizes_largest_first() {
        assert_eq!(statement_sizes(0), Vec::<usize>::new());
        assert_eq!(statement_sizes(1), vec![1]);
        assert_eq!(statement_sizes(77), vec![64, 8, 4, 1]);
        assert_eq!(statement_sizes(500), [vec![64; 7], vec![32, 16, 4]].concat());
    }

    #[test]
    fn rows_that_may_repeat_go_in_chunks_of_64_padded_with_their_last_row() {
        let rows: Vec<u32> = (0..70).collect();
        let chunks = padded_chunks(&rows);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [64, 16]);
        assert_eq!(chunks[1][..6], [64, 65, 66, 67, 68, 69]);
        assert!(chunks[1][6..].iter().all(|row| *row == 69));
    }
}
