//! Counting of open websockets: per user, so the per-user limit holds however many
//! upgrades race, and in all, so a stopping node can wait for their close frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Counts open sockets so a stopping node can wait for their close frames to go out
/// (upgraded connections are not part of the HTTP server's graceful drain), and each
/// user's, so the per-user limit is taken before the upgrade, not after the session
/// registers.
#[derive(Default)]
pub struct OpenSockets {
    count: AtomicUsize,
    by_user: Mutex<HashMap<String, usize>>,
    all_closed: tokio::sync::Notify,
}

impl OpenSockets {
    fn by_user(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.by_user.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for one more of `user_id`'s sockets, or how many they have open when
    /// that is already `max_per_user`. Checked and taken in one step: parallel upgrades
    /// of one user cannot pass the limit together.
    pub(super) fn open_for(self: &Arc<Self>, user_id: &str, max_per_user: usize) -> Result<OpenSocketGuard, usize> {
        let mut by_user = self.by_user();
        let open = by_user.entry(user_id.to_owned()).or_insert(0);
        if *open >= max_per_user {
            return Err(*open);
        }
        *open += 1;
        drop(by_user);
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(OpenSocketGuard {
            sockets: Arc::clone(self),
            user_id: user_id.to_owned(),
        })
    }

    /// Waits until every socket has finished, or `timeout` passed.
    pub async fn wait_all_closed(&self, timeout: std::time::Duration) {
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

/// One open (or opening) socket; counted until dropped.
pub(super) struct OpenSocketGuard {
    sockets: Arc<OpenSockets>,
    user_id: String,
}

impl Drop for OpenSocketGuard {
    fn drop(&mut self) {
        {
            let mut by_user = self.sockets.by_user();
            if let Some(open) = by_user.get_mut(&self.user_id) {
                *open -= 1;
                if *open == 0 {
                    by_user.remove(&self.user_id);
                }
            }
        }
        if self.sockets.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.sockets.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_sockets_are_counted_up_to_the_limit_and_free_their_place_when_dropped() {
        let sockets = Arc::new(OpenSockets::default());
        let first = sockets.open_for("bob", 2).unwrap();
        let _second = sockets.open_for("bob", 2).unwrap();
        assert_eq!(sockets.open_for("bob", 2).err(), Some(2));
        assert!(sockets.open_for("alice", 2).is_ok(), "each user has their own count");
        drop(first);
        assert!(sockets.open_for("bob", 2).is_ok());
    }
}
