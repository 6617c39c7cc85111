//! The replay of a connecting session: everything pending above the user's `received`
//! cursors, read a page at a time and queued at the pace the socket takes it.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::websocket::{actions, DeliveredMessage, DeliveryPayload, Envelope, ReplayCompletePayload};
use ractor::ActorRef;

use super::SessionMessage;
use crate::messaging::outbound::OutboundQueue;
use crate::messaging::{delivery_envelope, store, MessagingServices};

/// Messages in one replayed `send-message` frame.
const REPLAY_BATCH: usize = 100;

/// Reads the replay a page at a time and queues it at the pace the socket takes it (a
/// long backlog is not a slow reader, and never sits in the node whole), then tells
/// the session to go live. A socket holds one page at most. Of one user's replays on
/// this node one reads the database at a time; a replay waiting for its client to read
/// does not hold up the others.
pub(super) async fn stream_replay(
    services: Arc<MessagingServices>,
    user: String,
    outbound: OutboundQueue,
    session: ActorRef<SessionMessage>,
) {
    let mut pages = store::PendingPages::new(Arc::clone(&services.storage), &user);
    let mut replayed = 0_u64;
    let mut replayed_up_to: HashMap<String, u64> = HashMap::new();
    loop {
        let next_page = async {
            let _turn = services.replay_turns.take(&user).await;
            pages.next_page().await
        };
        let page = match next_page.await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(error) => {
                let _ = session.cast(SessionMessage::ReplayFailed {
                    reason: error.to_string(),
                });
                return;
            }
        };
        replayed += page.len() as u64;
        for (chat_id, messages) in replay_frames(page, &mut replayed_up_to) {
            let frame = delivery_envelope(&DeliveryPayload { chat_id, messages }).to_text();
            if outbound.push_replay(frame).await.is_err() {
                return;
            }
        }
    }
    if replayed > 0 {
        services.metrics.resume_replays.inc();
        services.metrics.resume_replayed_messages.inc_by(replayed);
    }
    let node = services.node_name.clone();
    let complete = Envelope::messenger(
        actions::REPLAY_COMPLETE,
        &ReplayCompletePayload { replayed, node },
        None,
    );
    if outbound.push_replay(complete.to_text()).await.is_ok() {
        let _ = session.cast(SessionMessage::ReplaySent(replayed_up_to));
    }
}

/// A page of the replay as delivery frames of up to [`REPLAY_BATCH`] messages of one
/// chat each; notes the highest seq of each chat.
fn replay_frames(
    page: Vec<DeliveredMessage>,
    replayed_up_to: &mut HashMap<String, u64>,
) -> Vec<(String, Vec<DeliveredMessage>)> {
    let mut by_chat: Vec<(String, Vec<DeliveredMessage>)> = Vec::new();
    for message in page {
        let top = replayed_up_to.entry(message.chat_id.clone()).or_insert(0);
        *top = (*top).max(message.seq);
        match by_chat.last_mut() {
            Some((chat_id, batch)) if *chat_id == message.chat_id && batch.len() < REPLAY_BATCH => batch.push(message),
            _ => by_chat.push((message.chat_id.clone(), vec![message])),
        }
    }
    by_chat
}
