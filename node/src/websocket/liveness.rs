//! The server's side of the websocket heartbeat: when a socket is pinged, and when a
//! client that has gone silent is given up.
//!
//! A frozen peer (a stopped process, a laptop lid closed, a cable cut without a reset)
//! keeps its TCP connection open for as long as nobody writes to it, and nginx in front
//! of the nodes drops a websocket it has seen no traffic on for its read timeout. So the
//! node pings every socket every `ping_interval` (well below nginx's timeout: the pings
//! keep healthy idle sockets open) and closes one from which nothing at all, a pong, a
//! text frame, anything, has arrived within `idle_timeout`.
//!
//! No timer of its own per socket and no extra task: an idle socket is the common case
//! on a large node and every byte of it counts. The reader's loop keeps one [`Sleep`]
//! armed at [`SocketLiveness::next_wake`] and a frame only updates a timestamp here; the
//! sleep is re-armed when it fires, not on every frame.
//!
//! [`Sleep`]: tokio::time::Sleep

use std::time::Duration;

use tokio::time::Instant;

/// How often the server pings and how long it waits for a sign of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketHeartbeat {
    /// How often the server pings every socket (well below nginx's read timeout, so
    /// healthy idle sockets stay open).
    pub ping_interval: Duration,
    /// How long without any frame from the client (pongs count) before the socket is closed
    /// with 1001; longer than `ping_interval`.
    pub idle_timeout: Duration,
}

/// What a wake-up of the reader's timer calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LivenessDue {
    /// Nothing yet (the client was heard since the timer was armed).
    Nothing,
    /// Queue a ping.
    Ping,
    /// Nothing heard within the idle timeout: close the socket.
    GiveUp,
}

/// One socket's clock: when the client was last heard, and when the next ping is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct SocketLiveness {
    heartbeat: SocketHeartbeat,
    last_heard_at: Instant,
    next_ping_at: Instant,
}

impl SocketLiveness {
    /// A socket that has just opened counts as heard (its handshake just arrived).
    pub(super) fn new(heartbeat: SocketHeartbeat, now: Instant) -> SocketLiveness {
        SocketLiveness {
            heartbeat,
            last_heard_at: now,
            next_ping_at: now + heartbeat.ping_interval,
        }
    }

    /// Anything arrived from the client.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard_at = now;
    }

    /// When the reader's timer must fire next: the next ping, or the moment the client
    /// would have been silent for the whole idle timeout, whichever comes first.
    pub(super) fn next_wake(&self) -> Instant {
        self.next_ping_at.min(self.give_up_at())
    }

    fn give_up_at(&self) -> Instant {
        self.last_heard_at + self.heartbeat.idle_timeout
    }

    /// The timer fired at `now`: what is due. A ping is due at most once per interval.
    pub(super) fn on_wake(&mut self, now: Instant) -> LivenessDue {
        if now >= self.give_up_at() {
            return LivenessDue::GiveUp;
        }
        if now >= self.next_ping_at {
            self.next_ping_at = now + self.heartbeat.ping_interval;
            return LivenessDue::Ping;
        }
        LivenessDue::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: SocketHeartbeat = SocketHeartbeat {
        ping_interval: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(15),
    };

    fn seconds(count: u64) -> Duration {
        Duration::from_secs(count)
    }

    #[test]
    fn a_silent_client_is_pinged_each_interval_then_given_up_at_the_idle_timeout() {
        let opened = Instant::now();
        let mut liveness = SocketLiveness::new(HEARTBEAT, opened);
        let mut wakes = Vec::new();
        loop {
            let at = liveness.next_wake();
            let due = liveness.on_wake(at);
            wakes.push((at - opened, due));
            if due == LivenessDue::GiveUp {
                break;
            }
        }
        assert_eq!(
            wakes,
            [
                (seconds(5), LivenessDue::Ping),
                (seconds(10), LivenessDue::Ping),
                (seconds(15), LivenessDue::GiveUp),
            ]
        );
    }

    #[test]
    fn a_client_heard_in_time_is_kept_and_the_give_up_moves_with_it() {
        let opened = Instant::now();
        let mut liveness = SocketLiveness::new(HEARTBEAT, opened);
        assert_eq!(liveness.on_wake(opened + seconds(5)), LivenessDue::Ping);
        liveness.heard(opened + seconds(6));
        assert_eq!(liveness.on_wake(opened + seconds(10)), LivenessDue::Ping);
        assert_eq!(liveness.on_wake(opened + seconds(15)), LivenessDue::Ping);
        // Last heard at 6 s: the give-up is at 21 s, before the ping due at 20 s + 5 s.
        assert_eq!(liveness.on_wake(opened + seconds(20)), LivenessDue::Ping);
        assert_eq!(liveness.next_wake(), opened + seconds(21));
        assert_eq!(liveness.on_wake(opened + seconds(21)), LivenessDue::GiveUp);
    }

    #[test]
    fn an_early_wake_asks_for_nothing() {
        let opened = Instant::now();
        let mut liveness = SocketLiveness::new(HEARTBEAT, opened);
        assert_eq!(liveness.on_wake(opened + seconds(1)), LivenessDue::Nothing);
        assert_eq!(liveness.next_wake(), opened + seconds(5));
    }
}
