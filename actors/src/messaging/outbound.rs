//! A session's bounded outbound queue. The socket writer drains it; a client that
//! reads too slowly fills it, and is then closed (it resumes on reconnect) instead of
//! growing the node's memory or slowing anyone else down.
//!
//! The queue also carries the socket's protocol-level pings, so the writer stays the
//! only one writing to the socket and no socket needs a timer or a task of its own for
//! them: the reader's loop decides when a ping is due and queues it here.
//!
//! The frames wait in a `VecDeque` of the socket's one shared allocation, not in a
//! tokio channel: a channel allocates a block of 32 slots and its cache-padded state
//! when it is made and keeps both for the socket's life (1.5 KB a socket, measured with
//! dhat), while an idle socket's queue is empty nearly all the time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

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
    pub frames: QueuedFrames,
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

/// What producers and the writer share: one allocation per socket.
struct SharedState {
    /// The frames not yet taken by the writer.
    frames: Mutex<FrameSlots>,
    /// Most frames queued at once.
    capacity: usize,
    /// A frame was queued, or the last producer went.
    frame_queued: Notify,
    /// The writer took a frame from a full queue, or went.
    frame_taken: Notify,
    close: Mutex<Option<oneshot::Sender<CloseRequest>>>,
    ping_owed: AtomicBool,
    /// Replay frames queued and not yet flushed.
    replay_ahead: AtomicUsize,
    replay_room: Notify,
    writer_gone: AtomicBool,
}

/// The queued frames and who is still there to use them.
struct FrameSlots {
    queued: VecDeque<OutboundFrame>,
    /// Live [`OutboundQueue`] handles; at none (and nothing queued) the writer finishes.
    producers: usize,
    /// The writer's [`QueuedFrames`] was dropped: the socket is gone.
    writer_gone: bool,
}

impl SharedState {
    fn frames(&self) -> MutexGuard<'_, FrameSlots> {
        self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `frame` unless the queue is full or its writer gone (the frame comes back).
    fn offer(&self, frame: OutboundFrame) -> Result<(), Refused> {
        let mut frames = self.frames();
        if frames.writer_gone {
            return Err(Refused::Closed);
        }
        if frames.queued.len() >= self.capacity {
            return Err(Refused::Full(frame));
        }
        frames.queued.push_back(frame);
        drop(frames);
        self.frame_queued.notify_one();
        Ok(())
    }

    /// The writer's next frame, if one is queued.
    fn take(&self) -> Option<OutboundFrame> {
        let mut frames = self.frames();
        let was_full = frames.queued.len() >= self.capacity;
        let frame = frames.queued.pop_front()?;
        if frames.queued.is_empty() {
            // A drained queue gives its buffer back: an idle socket holds none, and a
            // busy one allocates once per burst, not per frame.
            frames.queued = VecDeque::new();
        }
        drop(frames);
        if was_full {
            self.frame_taken.notify_waiters();
        }
        Some(frame)
    }
}

/// Why [`SharedState::offer`] did not queue a frame.
enum Refused {
    Full(OutboundFrame),
    Closed,
}

/// The writer's side of the frames; dropping it tells the producers the socket is gone.
pub struct QueuedFrames(Arc<SharedState>);

impl QueuedFrames {
    /// The next frame, waiting for one; `None` once every producer is gone and nothing
    /// is left. Cancel-safe: a frame is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<OutboundFrame> {
        loop {
            let queued = self.0.frame_queued.notified();
            if let Some(frame) = self.0.take() {
                return Some(frame);
            }
            let finished = {
                let frames = self.0.frames();
                frames.producers == 0 && frames.queued.is_empty()
            };
            if finished {
                return None;
            }
            queued.await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<OutboundFrame> {
        self.0.take()
    }
}

impl Drop for QueuedFrames {
    fn drop(&mut self) {
        let dropped = {
            let mut frames = self.0.frames();
            frames.writer_gone = true;
            std::mem::take(&mut frames.queued)
        };
        // Frames are dropped outside the lock; producers waiting for room find it gone.
        drop(dropped);
        self.0.frame_taken.notify_waiters();
    }
}

/// The producers' side; cheap to clone.
pub struct OutboundQueue {
    shared: Arc<SharedState>,
}

impl Clone for OutboundQueue {
    fn clone(&self) -> OutboundQueue {
        self.shared.frames().producers += 1;
        OutboundQueue {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for OutboundQueue {
    fn drop(&mut self) {
        let last = {
            let mut frames = self.shared.frames();
            frames.producers -= 1;
            frames.producers == 0
        };
        if last {
            // The writer drains what is left, then finishes.
            self.shared.frame_queued.notify_one();
        }
    }
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
        let (close_sender, close) = oneshot::channel();
        let shared = Arc::new(SharedState {
            frames: Mutex::new(FrameSlots {
                queued: VecDeque::new(),
                producers: 1,
                writer_gone: false,
            }),
            capacity: capacity.max(1),
            frame_queued: Notify::new(),
            frame_taken: Notify::new(),
            close: Mutex::new(Some(close_sender)),
            ping_owed: AtomicBool::new(false),
            replay_ahead: AtomicUsize::new(0),
            replay_room: Notify::new(),
            writer_gone: AtomicBool::new(false),
        });
        (
            OutboundQueue {
                shared: Arc::clone(&shared),
            },
            OutboundReceiver {
                frames: QueuedFrames(Arc::clone(&shared)),
                close,
                owed_ping: OwedPing(Arc::clone(&shared)),
                replay_pacing: ReplayPacing(shared),
            },
        )
    }

    /// Queues a text frame; on overflow the session is closed with 1008.
    pub fn push(&self, frame: String) -> Result<(), PushError> {
        match self.shared.offer(OutboundFrame::Text(frame)) {
            Ok(()) => Ok(()),
            Err(Refused::Full(_)) => {
                self.close(
                    close_codes::POLICY_VIOLATION,
                    "client too slow: outbound queue full; reconnect to resume",
                );
                Err(PushError::Overflow)
            }
            Err(Refused::Closed) => Err(PushError::Closed),
        }
    }

    /// Queues a frame of a replay once fewer than [`REPLAY_FRAMES_AHEAD`] of its frames
    /// wait to be flushed: a client that reads slowly (or not at all) holds up the
    /// replay, not the node's memory. Live frames are not held up by it.
    pub async fn push_replay(&self, frame: String) -> Result<(), PushError> {
        loop {
            let room = self.shared.replay_room.notified();
            if self.shared.writer_gone.load(Ordering::Acquire) || self.is_closed() {
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
        // Live frames may fill the queue meanwhile: wait for room, not refuse.
        let mut frame = OutboundFrame::Replay(frame);
        loop {
            let taken = self.shared.frame_taken.notified();
            match self.shared.offer(frame) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed) => return Err(PushError::Closed),
                Err(Refused::Full(returned)) => frame = returned,
            }
            taken.await;
        }
    }

    /// Asks the writer for a websocket ping, behind the frames already queued. Never
    /// closes the socket: a full queue only means the ping is owed and written after the
    /// writer's current batch.
    pub fn ping(&self) {
        if let Err(Refused::Full(_)) = self.shared.offer(OutboundFrame::Ping) {
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
        self.shared.frames().writer_gone
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
        assert_eq!(
            receiver.frames.try_recv().expect("a frame"),
            OutboundFrame::Text("a".into())
        );
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
        assert_eq!(
            receiver.frames.try_recv().expect("a frame"),
            OutboundFrame::Text("a".into())
        );
        assert_eq!(receiver.frames.try_recv().expect("a frame"), OutboundFrame::Ping);
    }

    #[tokio::test]
    async fn the_writer_drains_what_is_left_once_every_producer_is_gone() {
        let (queue, mut receiver) = OutboundQueue::new(4);
        let second_producer = queue.clone();
        queue.push("a".into()).unwrap();
        drop(queue);
        second_producer.push("b".into()).unwrap();
        let waiting_writer = tokio::spawn(async move {
            let mut written = Vec::new();
            while let Some(frame) = receiver.frames.recv().await {
                written.push(frame);
            }
            written
        });
        drop(second_producer);
        let written = tokio::time::timeout(std::time::Duration::from_secs(5), waiting_writer)
            .await
            .expect("the writer finishes once the producers are gone")
            .unwrap();
        assert_eq!(
            written,
            vec![OutboundFrame::Text("a".into()), OutboundFrame::Text("b".into())]
        );
    }

    #[tokio::test]
    async fn a_replay_frame_waits_for_room_behind_live_frames_and_a_drained_queue_holds_no_buffer() {
        let (queue, mut receiver) = OutboundQueue::new(2);
        queue.push("live 1".into()).unwrap();
        queue.push("live 2".into()).unwrap();
        let replaying = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push_replay("replay".into()).await })
        };
        tokio::task::yield_now().await;
        assert!(!replaying.is_finished(), "the queue is full: the replay frame waits");
        assert_eq!(receiver.frames.recv().await, Some(OutboundFrame::Text("live 1".into())));
        tokio::time::timeout(std::time::Duration::from_secs(5), replaying)
            .await
            .expect("room made by the writer lets the replay frame in")
            .unwrap()
            .unwrap();
        assert_eq!(receiver.frames.try_recv(), Some(OutboundFrame::Text("live 2".into())));
        assert_eq!(receiver.frames.try_recv(), Some(OutboundFrame::Replay("replay".into())));
        assert_eq!(receiver.frames.try_recv(), None);
        assert_eq!(
            queue.shared.frames().queued.capacity(),
            0,
            "a drained queue gives its buffer back"
        );
    }

    #[tokio::test]
    async fn once_the_writer_is_gone_frames_are_refused_and_a_waiting_replay_ends() {
        let (queue, receiver) = OutboundQueue::new(1);
        queue.push("live".into()).unwrap();
        let replaying = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push_replay("replay".into()).await })
        };
        tokio::task::yield_now().await;
        assert!(!queue.is_closed());
        drop(receiver);
        assert!(queue.is_closed());
        assert_eq!(queue.push("late".into()), Err(PushError::Closed));
        let replayed = tokio::time::timeout(std::time::Duration::from_secs(5), replaying)
            .await
            .expect("the waiting replay frame finds the socket gone")
            .unwrap();
        assert_eq!(replayed, Err(PushError::Closed));
    }
}
