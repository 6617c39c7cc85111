//! A session's bounded outbound queue. The socket writer drains it; a client that
//! reads too slowly fills it, and is then closed (it resumes on reconnect) instead of
//! growing the node's memory or slowing anyone else down.
//!
//! The queue also carries the socket's protocol-level pings, so the writer stays the
//! only one writing to the socket and no socket needs a timer or a task of its own for
//! them: the reader's loop decides when a ping is due and queues it here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify};

/// Replay frames queued or in the writer's hands, not yet flushed to the socket, at
/// most: a replay is paced by the socket, not by the queue's capacity in frames (a
/// queue of 1,024 replay frames of 100 messages each could hold a whole backlog).
pub const REPLAY_FRAMES_AHEAD: usize = 4;

/// Close codes the server uses.
pub mod close_codes {
    /// Going away: the node is shutting down; reconnect elsewhere. Also sent to a
    /// client the node has heard nothing from within the idle timeout (the frame most
    /// likely never reaches it): reconnecting is the right answer for a client that was
    /// merely slow, while 1011 would claim a server failure that did not happen.
    pub const GOING_AWAY: u16 = 1001;
    /// Invalid frame payload data: a text frame that is not UTF-8 (RFC 6455 asks the
    /// endpoint to fail the connection; nothing of the frame is used).
    pub const INVALID_FRAME_PAYLOAD: u16 = 1007;
    /// Policy violation: the client fell too far behind.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Message too big.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL_ERROR: u16 = 1011;
    pub use protocol::websocket::close_codes::{ACCESS_TOKEN_EXPIRED, SIGNED_OUT};
}

/// Why the socket is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The websocket close code (RFC 6455, or 4401/4403 of the protocol).
    pub code: u16,
    /// The close reason sent to the client (short: at most 123 bytes fit a close frame).
    pub reason: String,
}

/// One item of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundFrame {
    /// A text frame for the client.
    Text(String),
    /// A websocket ping: the client's pong (any frame, in fact) shows it is still there.
    Ping,
    /// A text frame of a replay: the writer reports it through [`ReplayPacing`] once it
    /// is flushed, which lets the replay queue its next one.
    Replay(String),
}

/// The writer's side: frames in order, a close request that jumps the queue, and a ping
/// that found the queue full.
pub struct OutboundReceiver {
    /// Frames to write, in order.
    pub frames: mpsc::Receiver<OutboundFrame>,
    /// Fires once when the socket must close: the writer sends the close frame and stops.
    pub close: oneshot::Receiver<CloseRequest>,
    /// Set when a ping could not be queued (queue full); the writer sends it when it can.
    pub owed_ping: OwedPing,
    /// The writer reports flushed replay frames here.
    pub replay_pacing: ReplayPacing,
}

/// The writer's report of replay frames flushed to the socket; dropped with the writer,
/// it wakes a replay waiting for room so that it finds the socket gone.
pub struct ReplayPacing(Arc<SharedState>);

impl ReplayPacing {
    /// `frames` replay frames reached the socket.
    pub fn flushed(&self, frames: usize) {
        if frames > 0 {
            self.0.replay_ahead.fetch_sub(frames, Ordering::AcqRel);
            self.0.replay_room.notify_waiters();
        }
    }
}

impl Drop for ReplayPacing {
    fn drop(&mut self) {
        self.0.writer_gone.store(true, Ordering::Release);
        self.0.replay_room.notify_waiters();
    }
}

/// A ping that could not be queued because the queue was full. A full queue means the
/// writer is busy draining it (a long replay waits for room), so it looks here after
/// each batch; without this, a client reading a long replay would get no ping and,
/// having nothing to answer, could be taken for a silent one.
pub struct OwedPing(Arc<SharedState>);

impl OwedPing {
    /// Whether a ping is owed; clears it.
    pub fn take(&self) -> bool {
        self.0.ping_owed.swap(false, Ordering::AcqRel)
    }
}

/// What producers and the writer share: one allocation per socket, which existed
/// already for the close request.
struct SharedState {
    close: Mutex<Option<oneshot::Sender<CloseRequest>>>,
    ping_owed: AtomicBool,
    /// Replay frames queued and not yet flushed.
    replay_ahead: AtomicUsize,
    replay_room: Notify,
    writer_gone: AtomicBool,
}

/// The producers' side; cheap to clone.
#[derive(Clone)]
pub struct OutboundQueue {
    frames: mpsc::Sender<OutboundFrame>,
    shared: Arc<SharedState>,
}

/// The frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The client is too slow: the session is being closed with 1008.
    Overflow,
    /// The socket is gone.
    Closed,
}

impl OutboundQueue {
    /// A queue holding at most `capacity` frames (at least 1), and its writer's side.
    pub fn new(capacity: usize) -> (OutboundQueue, OutboundReceiver) {
        let (frames_sender, frames) = mpsc::channel(capacity.max(1));
        let (close_sender, close) = oneshot::channel();
        let shared = Arc::new(SharedState {
            close: Mutex::new(Some(close_sender)),
            ping_owed: AtomicBool::new(false),
            replay_ahead: AtomicUsize::new(0),
            replay_room: Notify::new(),
            writer_gone: AtomicBool::new(false),
        });
        (
            OutboundQueue {
                frames: frames_sender,
                shared: Arc::clone(&shared),
            },
            OutboundReceiver {
                frames,
                close,
                owed_ping: OwedPing(Arc::clone(&shared)),
                replay_pacing: ReplayPacing(shared),
            },
        )
    }

    /// Queues a text frame; on overflow the session is closed with 1008.
    pub fn push(&self, frame: String) -> Result<(), PushError> {
        match self.frames.try_send(OutboundFrame::Text(frame)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(
                    close_codes::POLICY_VIOLATION,
                    "client too slow: outbound queue full; reconnect to resume",
                );
                Err(PushError::Overflow)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
        }
    }

    /// Queues a frame of a replay once fewer than [`REPLAY_FRAMES_AHEAD`] of its frames
    /// wait to be flushed: a client that reads slowly (or not at all) holds up the
    /// replay, not the node's memory. Live frames are not held up by it.
    pub async fn push_replay(&self, frame: String) -> Result<(), PushError> {
        loop {
            let room = self.shared.replay_room.notified();
            if self.shared.writer_gone.load(Ordering::Acquire) || self.frames.is_closed() {
                return Err(PushError::Closed);
            }
            let ahead = self.shared.replay_ahead.load(Ordering::Acquire);
            if ahead < REPLAY_FRAMES_AHEAD
                && self
                    .shared
                    .replay_ahead
                    .compare_exchange(ahead, ahead + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break;
            }
            room.await;
        }
        self.frames
            .send(OutboundFrame::Replay(frame))
            .await
            .map_err(|_| PushError::Closed)
    }

    /// Asks the writer for a websocket ping, behind the frames already queued. Never
    /// closes the socket: a full queue only means the ping is owed and written after the
    /// writer's current batch.
    pub fn ping(&self) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(OutboundFrame::Ping) {
            self.shared.ping_owed.store(true, Ordering::Release);
        }
    }

    /// Asks the writer to close the socket; only the first request counts.
    pub fn close(&self, code: u16, reason: &str) {
        let sender = self
            .shared
            .close
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(CloseRequest {
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// True once the writer is gone (the socket ended).
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_1008_once() {
        let (queue, mut receiver) = OutboundQueue::new(2);
        queue.push("a".into()).unwrap();
        queue.push("b".into()).unwrap();
        assert_eq!(queue.push("c".into()), Err(PushError::Overflow));
        let close = receiver.close.try_recv().unwrap();
        assert_eq!(close.code, close_codes::POLICY_VIOLATION);
        queue.close(close_codes::GOING_AWAY, "later requests are ignored");
        assert_eq!(receiver.frames.try_recv().unwrap(), OutboundFrame::Text("a".into()));
    }

    #[test]
    fn a_ping_is_queued_in_order_or_owed_when_the_queue_is_full_and_never_closes() {
        let (queue, mut receiver) = OutboundQueue::new(2);
        queue.push("a".into()).unwrap();
        queue.ping();
        assert!(!receiver.owed_ping.take());
        queue.ping();
        assert!(receiver.owed_ping.take(), "the ping that found the queue full is owed");
        assert!(!receiver.owed_ping.take(), "taking it clears it");
        assert!(receiver.close.try_recv().is_err(), "a ping never closes the socket");
        assert_eq!(receiver.frames.try_recv().unwrap(), OutboundFrame::Text("a".into()));
        assert_eq!(receiver.frames.try_recv().unwrap(), OutboundFrame::Ping);
    }
}
