//! The storage seam: what sessions, chats and presence need from the database, and
//! nothing more. [`MariaDbStorage`] is the real one (MariaDB through [`Database`]'s
//! routing); the in-memory one (tests only) lets the actors' logic be tested in-process,
//! with no database server.
//!
//! Every method is one step the actors take; the SQL behind each lives in `store` and
//! `presence`, next to the logic that reads it.

#[cfg(test)]
pub mod in_memory;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use protocol::websocket::DeliveredMessage;

use super::receipts::{self, ReceiptInputs};
use super::store::group_commit::GroupCommits;
use super::store::{self, ChatRoster, CommittedBatch, CursorKind, CursorMove, FrameToCommit};
use crate::database::{Database, DbError};

/// What the messaging actors read and write.
pub trait MessagingStorage: Send + Sync + 'static {
    /// Commits several frames for one chat in one transaction, in order: gap-free seqs, a
    /// `client_id` already stored by its sender answered with the original message, a
    /// sender who is not a member refused alone (`ChatNotFound` for every frame when the
    /// chat does not exist). Also the members the transaction saw, who get the delivery.
    /// The transaction may carry other chats' frames too; its error is then theirs as
    /// well, hence shared.
    fn commit_frames<'a>(
        &'a self,
        chat_id: &'a str,
        frames: &'a [FrameToCommit],
    ) -> BoxFuture<'a, Result<CommittedBatch, Arc<DbError>>>;

    /// A chat's kind and members (no members when it does not exist).
    fn chat_roster<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<ChatRoster, DbError>>;

    /// A group's receipts up to `up_to`: each recent sender's newest message and every
    /// member's cursors (see `receipts`).
    fn receipt_inputs<'a>(&'a self, chat_id: &'a str, up_to: u64) -> BoxFuture<'a, Result<ReceiptInputs, DbError>>;

    /// Moves `user`'s cursor in `chat_id` forward to `seq` (never backwards, never past
    /// the chat's last message; read implies received). The cursor's new value, or
    /// `None` when the user is not in the chat.
    fn advance_cursor<'a>(
        &'a self,
        user: &'a str,
        chat_id: &'a str,
        kind: CursorKind,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, Arc<DbError>>>;

    /// Up to `limit` messages of all of `user`'s chats above the user's received cursors,
    /// in any order (the caller sorts).
    fn pending_messages<'a>(
        &'a self,
        user: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>>;

    /// The chats of `user` with anything pending, and the user's received cursor in
    /// each, by chat id.
    fn pending_cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, DbError>>;

    /// Up to `limit` messages of `chat_id` after `after`, in seq order.
    fn chat_page<'a>(
        &'a self,
        chat_id: &'a str,
        after: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>>;

    /// The people each of `users` shares a chat with (users with none are absent).
    fn companions_of_users<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<String>>, DbError>>;

    /// Up to `limit` messages of `chat_id` above `after` (when `None`, above `user`'s
    /// received cursor, yet `through` itself always) and up to `through`, in seq order;
    /// none when `user` is not a member.
    /// What a live session may have missed (see `session::delivery_gaps`).
    fn messages_missed<'a>(
        &'a self,
        user: &'a str,
        chat_id: &'a str,
        after: Option<u64>,
        through: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>>;
}

/// The storage of a running node: MariaDB, writes on the master, reads routed by
/// [`Database`].
pub struct MariaDbStorage {
    database: Database,
    commit_groups: Arc<GroupCommits>,
}

impl MariaDbStorage {
    /// Storage on `database`.
    pub fn new(database: Database) -> MariaDbStorage {
        MariaDbStorage {
            commit_groups: GroupCommits::new(database.clone()),
            database,
        }
    }
}

impl MessagingStorage for MariaDbStorage {
    fn commit_frames<'a>(
        &'a self,
        chat_id: &'a str,
        frames: &'a [FrameToCommit],
    ) -> BoxFuture<'a, Result<CommittedBatch, Arc<DbError>>> {
        self.commit_groups.commit(chat_id, frames).boxed()
    }

    fn chat_roster<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<ChatRoster, DbError>> {
        store::chat_roster(&self.database, chat_id).boxed()
    }

    fn receipt_inputs<'a>(&'a self, chat_id: &'a str, up_to: u64) -> BoxFuture<'a, Result<ReceiptInputs, DbError>> {
        receipts::read_inputs(&self.database, chat_id, up_to).boxed()
    }

    fn advance_cursor<'a>(
        &'a self,
        user: &'a str,
        chat_id: &'a str,
        kind: CursorKind,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, Arc<DbError>>> {
        let cursor_move = CursorMove {
            user: user.to_owned(),
            chat_id: chat_id.to_owned(),
            kind,
            seq,
        };
        self.commit_groups.move_cursor(cursor_move).boxed()
    }

    fn pending_messages<'a>(
        &'a self,
        user: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>> {
        store::read_pending_messages(&self.database, user, limit).boxed()
    }

    fn pending_cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, DbError>> {
        store::read_pending_cursors(&self.database, user).boxed()
    }

    fn chat_page<'a>(
        &'a self,
        chat_id: &'a str,
        after: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>> {
        store::read_chat_page(&self.database, chat_id, after, limit).boxed()
    }

    fn companions_of_users<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<String>>, DbError>> {
        super::presence::companions_of_users(&self.database, users).boxed()
    }

    fn messages_missed<'a>(
        &'a self,
        user: &'a str,
        chat_id: &'a str,
        after: Option<u64>,
        through: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<DeliveredMessage>, DbError>> {
        store::read_messages_missed(&self.database, user, chat_id, after, through, limit).boxed()
    }
}
