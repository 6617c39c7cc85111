//! Which sessions of which users live on this node. Written by sessions as they start
//! and stop, read by every delivery; a plain concurrent map so deliveries never queue
//! behind a mailbox.

use std::collections::HashMap;
use std::sync::RwLock;

use ractor::ActorRef;

use super::outbound::OutboundQueue;
use super::session::SessionMessage;

/// Identifies one websocket connection on this node.
pub type SessionId = u64;

/// One registered session.
#[derive(Clone)]
pub struct RegisteredSession {
    /// The session's id, unique on this node.
    pub session_id: SessionId,
    /// The session's actor.
    pub actor: ActorRef<SessionMessage>,
    /// Its socket's queue, so a session that failed can still have its socket closed.
    pub outbound: OutboundQueue,
}

/// The node's sessions by user.
#[derive(Default)]
pub struct SessionRegistry {
    by_user: RwLock<HashMap<String, Vec<RegisteredSession>>>,
}

impl SessionRegistry {
    /// Returns true when this is the user's first session on the node.
    pub fn register(&self, user_id: &str, session: RegisteredSession) -> bool {
        let mut by_user = self.by_user.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sessions = by_user.entry(user_id.to_owned()).or_default();
        sessions.push(session);
        sessions.len() == 1
    }

    /// Returns true when that was the user's last session on the node.
    pub fn unregister(&self, user_id: &str, session_id: SessionId) -> bool {
        let mut by_user = self.by_user.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(sessions) = by_user.get_mut(user_id) else {
            return false;
        };
        sessions.retain(|session| session.session_id != session_id);
        if sessions.is_empty() {
            by_user.remove(user_id);
            return true;
        }
        false
    }

    /// Removes the session run by `actor` (it failed): its user, the session, and whether
    /// it was the user's last here. A scan, but failures are rare.
    pub fn remove_actor(&self, actor: ractor::ActorId) -> Option<(String, RegisteredSession, bool)> {
        let mut by_user = self.by_user.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (user, position) = by_user.iter().find_map(|(user, sessions)| {
            let position = sessions.iter().position(|session| session.actor.get_id() == actor)?;
            Some((user.clone(), position))
        })?;
        let sessions = by_user.get_mut(&user)?;
        let session = sessions.remove(position);
        let last_here = sessions.is_empty();
        if last_here {
            by_user.remove(&user);
        }
        Some((user, session, last_here))
    }

    /// The sessions of `user_id` on this node (empty when none).
    pub fn sessions_of(&self, user_id: &str) -> Vec<RegisteredSession> {
        let by_user = self.by_user.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_user.get(user_id).cloned().unwrap_or_default()
    }

    /// Every user with a session here.
    pub fn online_users(&self) -> Vec<String> {
        let by_user = self.by_user.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_user.keys().cloned().collect()
    }

    /// Whether `user_id` has a session on this node.
    pub fn is_online(&self, user_id: &str) -> bool {
        let by_user = self.by_user.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_user.contains_key(user_id)
    }

    /// Every session (for shutdown).
    pub fn all_sessions(&self) -> Vec<RegisteredSession> {
        let by_user = self.by_user.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_user.values().flatten().cloned().collect()
    }

    /// Sessions on this node, all users.
    pub fn session_count(&self) -> usize {
        let by_user = self.by_user.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_user.values().map(Vec::len).sum()
    }
}
