//! One replay page read per user at a time on a node. A user who reconnects on several
//! sockets at once (several tabs, a client retrying) would otherwise have the node read
//! the same backlog from the master once per socket at the same time. The turn covers
//! reading a page, not sending it: a socket whose client does not read holds its one
//! page and nobody's turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Entries beyond this count trigger a sweep of the users no replay holds or waits for.
const SWEEP_ABOVE: usize = 10_000;

/// The node's replay turns, by user.
#[derive(Default)]
pub struct ReplayTurns {
    by_user: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// The user's turn; the next replay of the user starts when it is dropped.
pub type ReplayTurn = tokio::sync::OwnedMutexGuard<()>;

impl ReplayTurns {
    /// Waits for `user`'s turn (at once when no replay of theirs runs).
    pub async fn take(&self, user: &str) -> ReplayTurn {
        let turn = {
            let mut by_user = self.by_user.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if by_user.len() > SWEEP_ABOVE {
                by_user.retain(|_, turn| turn.strong_count() > 0);
            }
            match by_user.get(user).and_then(Weak::upgrade) {
                Some(turn) => turn,
                None => {
                    let turn = Arc::new(tokio::sync::Mutex::new(()));
                    by_user.insert(user.to_owned(), Arc::downgrade(&turn));
                    turn
                }
            }
        };
        turn.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_users_replays_take_turns_and_other_users_do_not_wait() {
        let turns = ReplayTurns::default();
        let first = turns.take("bob").await;
        let _alice = turns.take("alice").await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), turns.take("bob")).await;
        assert!(second.is_err(), "bob's second replay waits for the first");
        drop(first);
        let _second = turns.take("bob").await;
    }
}
