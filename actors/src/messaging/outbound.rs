//! A session's bounded outbound queue. The socket writer drains it; a client that
//! reads too slowly fills it, and is then closed (it resumes on reconnect) instead of
//! growing the node's memory or slowing anyone else down.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

/// Close codes the server uses.
pub mod close_codes {
    /// Going away: the node is shutting down; reconnect elsewhere.
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
}

/// Why the socket is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// The writer's side: frames in order, and a close request that jumps the queue.
pub struct OutboundReceiver {
    pub frames: mpsc::Receiver<String>,
    pub close: oneshot::Receiver<CloseRequest>,
}

/// The producers' side; cheap to clone.
#[derive(Clone)]
pub struct OutboundQueue {
    frames: mpsc::Sender<String>,
    close: Arc<Mutex<Option<oneshot::Sender<CloseRequest>>>>,
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
    pub fn new(capacity: usize) -> (OutboundQueue, OutboundReceiver) {
        let (frames_sender, frames) = mpsc::channel(capacity.max(1));
        let (close_sender, close) = oneshot::channel();
        (
            OutboundQueue {
                frames: frames_sender,
                close: Arc::new(Mutex::new(Some(close_sender))),
            },
            OutboundReceiver { frames, close },
        )
    }

    /// Queues a text frame; on overflow the session is closed with 1008.
    pub fn push(&self, frame: String) -> Result<(), PushError> {
        match self.frames.try_send(frame) {
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

    /// Queues a frame, waiting for room instead of overflowing: for the replay, whose
    /// size is known and bounded by the database, not by a sender's speed.
    pub async fn push_waiting(&self, frame: String) -> Result<(), PushError> {
        self.frames.send(frame).await.map_err(|_| PushError::Closed)
    }

    /// Asks the writer to close the socket; only the first request counts.
    pub fn close(&self, code: u16, reason: &str) {
        let sender = self
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
        assert_eq!(receiver.frames.try_recv().unwrap(), "a");
    }
}
