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
    pub id: &'a str,
    pub seq: u64,
    pub sender: &'a str,
    pub client_id: Option<&'a str>,
    pub text: &'a str,
}

/// What is stored for a sender's `client_id` in a chat: id, chat, seq, text, create time.
pub(crate) type StoredMessage = (String, String, u64, String, NaiveDateTime);

/// Splits `count` rows into statement sizes, largest first: 70 rows are 64 + 4 + 1 + 1.
fn statement_sizes(mut count: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    for size in ROWS_PER_STATEMENT {
        while count >= size {
            sizes.push(size);
            count -= size;
        }
    }
    sizes
}

/// Inserts `rows` into `chat_id` with multi-row INSERTs.
pub(super) async fn insert_messages(
    transaction: &mut Transaction<'_>,
    chat_id: &str,
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
                Value::from(chat_id),
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
        assert_eq!(statement_sizes(70), vec![64, 4, 1, 1]);
        assert_eq!(statement_sizes(500), [vec![64; 7], vec![16; 3], vec![4]].concat());
    }
}
