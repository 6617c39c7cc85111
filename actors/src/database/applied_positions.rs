//! Read connections kept between reads together with the binlog position their server is
//! known to have applied, so that a read-your-writes read skips the `MASTER_GTID_WAIT`
//! round trip when its connection's server already applied what the read needs.
//!
//! Why per connection and not per endpoint: reads go through a proxy (HAProxy) that
//! spreads connections over the replicas, so a read endpoint has no one applied position.
//! A TCP connection, though, stays with the server it reached for its whole life, and
//! what a running server has applied only grows (a server that is restarted, fenced or
//! rebuilt drops its connections first). So once a connection's wait for position P
//! succeeded, any later read on it that needs P or less may skip the wait. Under a
//! read-mostly load (the master's position unchanged between reads) the wait goes from
//! one per read to one per connection; under writes a read waits as before.
//!
//! The connections live here between reads instead of in the driver's pool (which
//! cannot carry a position with a connection); after [`MAX_IDLE`] unused they go back to
//! the pool, whose idle timeouts then apply as before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mysql_async::Conn;

use super::server_topology::GtidPosition;

/// How long a connection stays here unused before it goes back to the driver's pool.
const MAX_IDLE: Duration = Duration::from_secs(10);

/// A read connection and what its server is known to have applied (`None`: not known).
pub(crate) struct PositionedConnection {
    pub(crate) conn: Conn,
    pub(crate) applied: Option<GtidPosition>,
}

impl PositionedConnection {
    /// Whether the server behind the connection is known to hold `wanted`.
    pub(crate) fn holds(&self, wanted: &GtidPosition) -> bool {
        self.applied.as_ref().is_some_and(|applied| applied.includes(wanted))
    }

    /// Records that the server has applied `waited_for` (its wait for it succeeded).
    pub(crate) fn note_applied(&mut self, waited_for: GtidPosition) {
        self.applied = Some(known_after_wait(self.applied.take(), waited_for));
    }
}

/// What a server is known to have applied once its wait for `waited_for` succeeded,
/// given what was known before: both are facts about it, so the further when they
/// compare, the one just confirmed when they do not (domains moved differently).
fn known_after_wait(known: Option<GtidPosition>, waited_for: GtidPosition) -> GtidPosition {
    match known {
        Some(known) if known.includes(&waited_for) => known,
        _ => waited_for,
    }
}

struct IdleConnection {
    connection: PositionedConnection,
    idle_since: Instant,
}

impl std::fmt::Debug for IdleReadConnections {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IdleReadConnections")
            .field("capacity", &self.capacity)
            .field("idle", &self.lock().len())
            .finish()
    }
}

/// The idle read connections of one endpoint, most recently used last.
pub(crate) struct IdleReadConnections {
    capacity: usize,
    idle: Mutex<Vec<IdleConnection>>,
}

impl IdleReadConnections {
    /// Keeps at most `capacity` connections; more go back to the pool.
    pub(crate) fn new(capacity: usize) -> IdleReadConnections {
        IdleReadConnections {
            capacity,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, preferring the most recently used one whose server holds
    /// `wanted`, else the most recently used of all; `None` when none is idle.
    pub(crate) fn take(&self, wanted: Option<&GtidPosition>) -> Option<PositionedConnection> {
        let (taken, expired) = {
            let mut idle = self.lock();
            let expired = take_expired(&mut idle);
            let holding = wanted.and_then(|wanted| idle.iter().rposition(|entry| entry.connection.holds(wanted)));
            let taken = match holding {
                Some(index) => Some(idle.remove(index)),
                None => idle.pop(),
            };
            (taken, expired)
        };
        // Connections are dropped (returned to the driver's pool) outside the lock.
        drop(expired);
        taken.map(|entry| entry.connection)
    }

    /// Keeps a connection that just answered a read for the next one.
    pub(crate) fn put_back(&self, connection: PositionedConnection) {
        let overflow = {
            let mut idle = self.lock();
            if idle.len() < self.capacity {
                idle.push(IdleConnection {
                    connection,
                    idle_since: Instant::now(),
                });
                None
            } else {
                Some(connection)
            }
        };
        drop(overflow);
    }

    /// Gives every idle connection back to the pool (before the pool is closed).
    pub(crate) fn release_all(&self) {
        let released: Vec<IdleConnection> = std::mem::take(&mut *self.lock());
        drop(released);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes the connections idle longer than [`MAX_IDLE`] (the oldest are first).
fn take_expired(idle: &mut Vec<IdleConnection>) -> Vec<IdleConnection> {
    let fresh_from = idle
        .iter()
        .position(|entry| entry.idle_since.elapsed() < MAX_IDLE)
        .unwrap_or(idle.len());
    idle.drain(..fresh_from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_moves_what_is_known_forward_never_back() {
        let position = GtidPosition::parse;
        assert_eq!(known_after_wait(None, position("0-1-5")), position("0-1-5"));
        assert_eq!(
            known_after_wait(Some(position("0-1-5")), position("0-1-9")),
            position("0-1-9")
        );
        // A wait for less than is known (a read that began earlier) forgets nothing.
        assert_eq!(
            known_after_wait(Some(position("0-1-9")), position("0-1-5")),
            position("0-1-9")
        );
        // Positions that do not compare: the one just confirmed.
        assert_eq!(
            known_after_wait(Some(position("0-1-9,1-1-2")), position("0-1-5,1-1-4")),
            position("0-1-5,1-1-4")
        );
    }
}
