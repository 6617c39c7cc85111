//! Answers to one socket's frames, in the order the frames came.
//!
//! A session must not wait for a commit before reading the next frame (deliveries and
//! further sends keep flowing), so each answer is a future that completes later; commits
//! of different chats, or a commit and a refusal, may complete in any order. One task per
//! session awaits the answers one after the other, so the client sees the `ack` of frame
//! 1 before that of frame 2, whatever finished first. Every answer is bounded by the
//! chat's own timeout, so one slow commit delays the ones behind it, never forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use tokio::sync::mpsc;

use super::outbound::OutboundQueue;

type PendingReply = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// The session's side: queue answers in frame order.
///
/// The task and its queue start with the first answer: most sockets of a large node are
/// idle and never send a frame, and each would otherwise hold a task and a channel.
pub struct OrderedReplies {
    outbound: OutboundQueue,
    pending: OnceLock<mpsc::UnboundedSender<PendingReply>>,
}

impl OrderedReplies {
    /// Answers will go to `outbound`. The task writing them ends once this handle is
    /// dropped and the answers already queued are out.
    pub fn new(outbound: OutboundQueue) -> OrderedReplies {
        OrderedReplies {
            outbound,
            pending: OnceLock::new(),
        }
    }

    /// Queues an answer (None: the frame needs no answer after all).
    pub fn queue(&self, reply: impl Future<Output = Option<String>> + Send + 'static) {
        let pending = self.pending.get_or_init(|| start_writing(self.outbound.clone()));
        let _ = pending.send(Box::pin(reply));
    }

    /// Queues an answer that is already known.
    pub fn queue_now(&self, text: String) {
        self.queue(std::future::ready(Some(text)));
    }
}

fn start_writing(outbound: OutboundQueue) -> mpsc::UnboundedSender<PendingReply> {
    let (pending, mut queued) = mpsc::unbounded_channel::<PendingReply>();
    tokio::spawn(async move {
        while let Some(reply) = queued.recv().await {
            if let Some(text) = reply.await {
                // A closed socket takes nothing more; the client resends on reconnect.
                let _ = outbound.push(text);
            }
        }
    });
    pending
}
