//! The session's side of [`super::delivery_gaps`]: live deliveries go through the
//! delivered seqs (a seq already sent is dropped), a hole older than the grace is read
//! from the database in a task of its own (the session keeps delivering meanwhile), and
//! what the read finds missing is sent.

use std::sync::Arc;

use protocol::websocket::{DeliveredMessage, DeliveryPayload};
use ractor::ActorRef;
use tokio::time::Instant;

use super::delivery_gaps::{pick, DueRepair, GAP_GRACE, MAX_HELD_ABOVE_GAP, REPAIR_PAGE};
use super::{SessionMessage, SessionState};
use crate::messaging::delivery_envelope;
use crate::messaging::outbound::close_codes;

/// Whether a repair is scheduled or running (at most one of either per session).
#[derive(Debug, Default)]
pub(super) struct RepairState {
    scheduled: bool,
    running: bool,
    /// The last repair's reads failed: the next waits a grace before trying again.
    last_failed: bool,
}

/// Sends what of a live delivery the socket does not have yet; a hole it reveals gets a
/// repair scheduled.
pub(super) fn deliver_live(
    myself: &ActorRef<SessionMessage>,
    state: &mut SessionState,
    delivery: &Arc<DeliveryPayload>,
) {
    let fresh = state
        .delivered
        .admit(&delivery.chat_id, &delivery.messages, Instant::now());
    if fresh.len() == delivery.messages.len() {
        state.push(&delivery_envelope(delivery));
    } else if !fresh.is_empty() {
        state.push(&delivery_envelope(&DeliveryPayload {
            chat_id: delivery.chat_id.clone(),
            messages: pick(&delivery.messages, &fresh),
        }));
    }
    if state.delivered.has_gap(&delivery.chat_id) {
        schedule(myself, state);
    }
}

/// Notes the socket's own acked seqs (the chat does not deliver them back); a hole they
/// reveal gets a repair scheduled, as one a live delivery reveals does: a hole whose only
/// later seqs are the socket's own must not wait for someone else's message.
pub(super) fn note_own(myself: &ActorRef<SessionMessage>, state: &mut SessionState, chat_id: &str, seqs: Vec<u64>) {
    state.delivered.note_own(chat_id, seqs, Instant::now());
    if state.delivered.has_gap(chat_id) {
        schedule(myself, state);
    }
}

/// Schedules a `RepairGaps` for when the oldest hole is due, unless one is on its way.
fn schedule(myself: &ActorRef<SessionMessage>, state: &mut SessionState) {
    if state.repair.scheduled || state.repair.running {
        return;
    }
    let Some(due_at) = state.delivered.next_due_at() else {
        return;
    };
    if state.delivered.held_above_gaps() > MAX_HELD_ABOVE_GAP {
        // The database has not answered for a long while: the client's reconnect will
        // replay everything above its cursor once it does.
        tracing::warn!(user_id = %state.user_id, "too many messages held above a hole; closing so the client resumes");
        state.outbound.close(
            close_codes::INTERNAL_ERROR,
            "missed messages could not be read; reconnect",
        );
        myself.stop(Some("delivery gap not repaired".to_owned()));
        return;
    }
    let mut delay = due_at.saturating_duration_since(Instant::now());
    if state.repair.last_failed {
        delay = delay.max(GAP_GRACE);
    }
    state.repair.scheduled = true;
    myself.send_after(delay, || SessionMessage::RepairGaps);
}

/// Reads every due hole in a task; its answer comes back as `GapsRead`.
pub(super) fn start(myself: &ActorRef<SessionMessage>, state: &mut SessionState) {
    state.repair.scheduled = false;
    let due = state.delivered.due(Instant::now());
    if due.is_empty() {
        return schedule(myself, state);
    }
    state.repair.running = true;
    let (storage, user, session) = (
        Arc::clone(&state.services.storage),
        state.user_id.clone(),
        myself.clone(),
    );
    tokio::spawn(async move {
        let mut reads = Vec::with_capacity(due.len());
        let mut some_failed = false;
        for repair in due {
            let read = storage
                .messages_missed(&user, &repair.chat_id, repair.after, repair.through, REPAIR_PAGE)
                .await;
            match read {
                Ok(messages) => reads.push((repair, messages)),
                Err(error) => {
                    some_failed = true;
                    tracing::warn!(user_id = %user, chat_id = %repair.chat_id, %error, "could not read missed messages; trying again");
                }
            }
        }
        let _ = session.cast(SessionMessage::GapsRead { reads, some_failed });
    });
}

/// Sends what the reads found missing, then schedules what is still due.
pub(super) fn finish(
    myself: &ActorRef<SessionMessage>,
    state: &mut SessionState,
    reads: Vec<(DueRepair, Vec<DeliveredMessage>)>,
    some_failed: bool,
) {
    state.repair.running = false;
    state.repair.last_failed = some_failed;
    let now = Instant::now();
    for (repair, read) in reads {
        let (missed, whole) = state.delivered.repaired(&repair, &read, now);
        if !whole {
            tracing::info!(user_id = %state.user_id, chat_id = %repair.chat_id, "missed messages read only in part (a lagging replica); trying again");
            state.repair.last_failed = true;
        }
        if missed.is_empty() {
            continue;
        }
        tracing::info!(
            user_id = %state.user_id,
            chat_id = %repair.chat_id,
            seqs = ?missed.iter().map(|message| message.seq).collect::<Vec<_>>(),
            "sent messages this socket missed"
        );
        state
            .services
            .metrics
            .delivery_gaps_repaired
            .inc_by(missed.len() as u64);
        state.push(&delivery_envelope(&DeliveryPayload {
            chat_id: repair.chat_id,
            messages: missed,
        }));
    }
    schedule(myself, state);
}
