//! The failover lock: `GET_LOCK('parley_failover', 0)` in a session of its own on each
//! database server, held on a majority of all servers by the one node that acts (see
//! `promotion`). Nodes that decide at the same moment must not each end up with a
//! minority and give up together, round after round: so the servers are locked one by
//! one in the configured order, and a node that finds one of them locked by another
//! stops at once and leaves the rest to that node. Servers the last round could not
//! read come last, all at once, since one cut off by a partition answers nothing until
//! the timeout and is not needed when the others make a majority.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::promotion::FailoverError;
use super::promotion_decision::{is_majority, ServerView};
use super::server_topology::WatchedServer;

/// The lock's name: the same on every server, taken by whichever node acts.
const FAILOVER_LOCK: &str = "parley_failover";

/// What one server said to `GET_LOCK`.
enum LockAttempt {
    /// This node holds it, for as long as the session lives.
    Held(Conn),
    /// Another node holds it: that one acts.
    HeldByAnother,
    /// No connection or no answer within the timeout.
    NoAnswer,
}

/// The sessions holding the lock on a majority of `servers`, or `NoMajority`.
pub(super) async fn lock_majority(
    servers: &[Arc<WatchedServer>],
    last_views: &[ServerView],
    timeout: Duration,
) -> Result<Vec<Conn>, FailoverError> {
    let answered_last_round = |server: &WatchedServer| {
        last_views
            .iter()
            .any(|view| view.name == server.name && view.reading.is_some())
    };
    let (readable, unread): (Vec<&Arc<WatchedServer>>, Vec<&Arc<WatchedServer>>) =
        servers.iter().partition(|server| answered_last_round(server));
    // One by one in order, then the unread ones all at once. Attempts still under way
    // when a majority is held are dropped, and with their sessions any lock they got.
    let one_by_one = futures::stream::iter(readable).then(|server| try_lock(server, timeout));
    let all_at_once: futures::stream::FuturesUnordered<_> =
        unread.into_iter().map(|server| try_lock(server, timeout)).collect();
    let mut attempts = std::pin::pin!(one_by_one.chain(all_at_once));
    let mut locks: Vec<Conn> = Vec::with_capacity(servers.len());
    while let Some(attempt) = attempts.next().await {
        match attempt {
            LockAttempt::Held(conn) => locks.push(conn),
            LockAttempt::HeldByAnother => return Err(release(locks, servers.len()).await),
            LockAttempt::NoAnswer => continue,
        }
        if is_majority(locks.len(), servers.len()) {
            return Ok(locks);
        }
    }
    Err(release(locks, servers.len()).await)
}

async fn try_lock(server: &WatchedServer, timeout: Duration) -> LockAttempt {
    let Ok(mut conn) = server.dedicated_connection(timeout).await else {
        return LockAttempt::NoAnswer;
    };
    let locking = conn.exec_first::<Option<i64>, _, _>("SELECT GET_LOCK(?, 0)", (FAILOVER_LOCK,));
    match tokio::time::timeout(timeout, locking).await {
        Ok(Ok(Some(Some(1)))) => LockAttempt::Held(conn),
        Ok(Ok(Some(Some(0)))) => {
            let _ = conn.disconnect().await;
            LockAttempt::HeldByAnother
        }
        _ => {
            let _ = conn.disconnect().await;
            LockAttempt::NoAnswer
        }
    }
}

/// Ends the sessions (which releases their locks) and says how far this node got.
async fn release(locks: Vec<Conn>, total: usize) -> FailoverError {
    let locked = locks.len();
    for conn in locks {
        let _ = conn.disconnect().await;
    }
    FailoverError::NoMajority { locked, total }
}
