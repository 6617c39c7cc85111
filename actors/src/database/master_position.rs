//! The master's binlog position "as of now", for reads that must see every write any
//! node answered before they began (read-your-writes on every node).
//!
//! A node knows the commit positions of the writes it took itself, but not of those its
//! peers took: Bob's chat created through node-1 must show up in his chat list read
//! through node-2, and so must a message node-2 acked if Bob then reads through node-1.
//! Any position the master reports after the read began covers every write answered
//! before it, whichever node took it; a replica that has applied that position can
//! answer the read.
//!
//! One round trip to the master per read would double the master's read load, so reads
//! share fetches: a fetch that *began* after a read arrived is good for that read, and
//! while one fetch runs every read arriving meanwhile waits for the next one, which
//! serves them all. At most one fetch per node is in flight; under load a read waits
//! for at most two master round trips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::Mutex;

use super::Endpoint;

/// The last fetch: its number (fetches are numbered from 1 in the order they began) and
/// what the master said (`None`: it could not be asked).
type FetchOutcome = (u64, Option<String>);

/// Shares fetches of the master's `@@gtid_binlog_pos` between concurrent reads.
#[derive(Default)]
pub(crate) struct MasterPositionFetches {
    /// Fetches begun so far.
    begun: AtomicU64,
    /// Held while a fetch runs; holds the last fetch's outcome.
    last: Mutex<FetchOutcome>,
}

impl MasterPositionFetches {
    /// A position of the master's binlog read after this call began, or `None` when the
    /// master did not answer within `timeout` (it is down or overloaded: then no write
    /// can be answered either, and the caller falls back to what it knows).
    pub(crate) async fn position_after_now(&self, master: &Endpoint, timeout: Duration) -> Option<String> {
        // Any fetch numbered above this began after the read arrived.
        let begun_before_arrival = self.begun.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if last.0 > begun_before_arrival {
            return last.1.clone();
        }
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let position = fetch(master, timeout).await;
        *last = (number, position.clone());
        position
    }
}

async fn fetch(master: &Endpoint, timeout: Duration) -> Option<String> {
    let attempt = async {
        let mut conn = master.connection(timeout).await.ok()?;
        match conn.query_first::<String, _>("SELECT @@gtid_binlog_pos").await {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(endpoint = %master.name, %error, "could not read the master's position");
                None
            }
        }
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}
