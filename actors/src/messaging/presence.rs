//! Presence announcements: a user went online or offline, and everyone sharing a
//! one-to-one chat with them (their companions) is told; groups are not announced to.
//!
//! ```text
//! MessagingServices ── presence task (one per node, not an actor: it has no state
//!  │                    to supervise and nothing to restart)
//!  ├── Session pre_start / post_stop ─┐
//!  └── NodeRouter (peer gone, peer    ├─> queue ─> one companions query per batch
//!      back)                          ┘            ─> local sessions, peers hosting them
//! ```
//!
//! A node's death sends its thousands of users to the survivors within a second. One
//! companions query per departed and per arriving user was thousands of queries
//! competing with those users' replays for the same pool. Changes queue here instead,
//! and each query answers every change that arrived while the previous one ran.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::cluster::PeerMessage;
use protocol::websocket::PresencePayload;
use tokio::sync::mpsc;

use super::MessagingServices;
use crate::database::statement_sizes::padded_to_statement_size;
use crate::database::{Database, DbError, Freshness};

/// A user went online or offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// The user (UUID) whose presence changed.
    pub user_id: String,
    /// True when the user came online (first session), false when they went offline.
    pub online: bool,
    /// Also tell companions on peers. A peer's death is seen by every survivor, so each
    /// tells only its own sessions then.
    pub cluster_wide: bool,
}

/// Most changes answered by one query.
const MAX_BATCH: usize = 256;

/// The queue of changes waiting for their companions' lookup.
pub struct PresenceAnnouncer {
    changes: mpsc::UnboundedSender<PresenceChange>,
}

impl PresenceAnnouncer {
    /// Starts the task. It holds the services weakly, so it ends with them.
    pub(super) fn start(services: Weak<MessagingServices>) -> Self {
        let (changes, queued) = mpsc::unbounded_channel();
        tokio::spawn(announce_batches(queued, services));
        PresenceAnnouncer { changes }
    }

    /// Queues the change; its companions are looked up and told in the background, in
    /// batches. Never blocks.
    pub fn announce(&self, change: PresenceChange) {
        // The task ends only when the services are gone, and then nobody is listening.
        let _ = self.changes.send(change);
    }
}

async fn announce_batches(mut queued: mpsc::UnboundedReceiver<PresenceChange>, services: Weak<MessagingServices>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(services) = services.upgrade() else {
            return;
        };
        let users: Vec<String> = batch
            .iter()
            .map(|change| change.user_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        match services.storage.companions_of_users(&users).await {
            Ok(companions) => {
                // In arrival order: a user who left and came back ends up online.
                for change in batch.drain(..) {
                    let theirs = companions.get(&change.user_id).map_or(&[][..], Vec::as_slice);
                    dispatch(&services, change, theirs);
                }
            }
            Err(error) => {
                tracing::warn!(users = users.len(), %error, "could not load companions for presence changes");
                batch.clear();
            }
        }
    }
}

fn dispatch(services: &MessagingServices, change: PresenceChange, companions: &[String]) {
    if companions.is_empty() {
        return;
    }
    let presence = Arc::new(PresencePayload {
        user_id: change.user_id,
        online: change.online,
    });
    if change.cluster_wide {
        for (node, recipients) in services.peers.nodes_hosting(companions) {
            let message = PeerMessage::PresenceChanged {
                from: services.peers.node_name().to_owned(),
                recipients,
                presence: presence.as_ref().clone(),
            };
            services.peer_network.send_to(&node, &message);
        }
    }
    services.notify_presence_locally(companions, presence);
}

/// Everyone sharing a chat with each of `users`. A replica that knows of none for a user
/// may simply not have the user's first chat yet: the master confirms those.
pub(super) async fn companions_of_users(
    database: &Database,
    users: &[String],
) -> Result<HashMap<String, Vec<String>>, DbError> {
    let mut companions = lookup(database, Freshness::Any, users).await?;
    let unconfirmed: Vec<String> = users
        .iter()
        .filter(|user| !companions.contains_key(*user))
        .cloned()
        .collect();
    if !unconfirmed.is_empty() {
        companions.extend(lookup(database, Freshness::MasterFirst, &unconfirmed).await?);
    }
    Ok(companions)
}

async fn lookup(
    database: &Database,
    freshness: Freshness<'_>,
    users: &[String],
) -> Result<HashMap<String, Vec<String>>, DbError> {
    let parameters = padded_to_statement_size(users, &STATEMENT_SIZES);
    let statement = format!(
        // One-to-one companions only: a group of a thousand would make every sign-in a
        // thousand presence frames, and everyone in it signing in a million. A group's
        // member list (GET .../members) carries presence instead.
        "SELECT DISTINCT mine.user_id, other.user_id FROM chat_members mine \
         JOIN chats c ON c.id = mine.chat_id AND c.kind = 'direct' \
         JOIN chat_members other ON other.chat_id = mine.chat_id AND other.user_id <> mine.user_id \
         WHERE mine.user_id IN ({})",
        vec!["?"; parameters.len()].join(", ")
    );
    let pairs: Vec<(String, String)> = database
        .read(freshness, |conn| {
            let (statement, parameters) = (statement.clone(), parameters.clone());
            async move { conn.exec(statement, parameters).await }.boxed()
        })
        .await?;
    let mut companions: HashMap<String, Vec<String>> = HashMap::new();
    for (user, companion) in pairs {
        companions.entry(user).or_default().push(companion);
    }
    Ok(companions)
}

/// The parameter counts a lookup is prepared with.
const STATEMENT_SIZES: [usize; 5] = [1, 4, 16, 64, MAX_BATCH];
