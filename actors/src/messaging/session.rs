//! `Session`: one per websocket connection.
//!
//! Its place in the node's tree is drawn in `crate::supervisor`.
//!
//! ```text
//! MessagingSupervisor
//!  └── Session (local, one per socket)
//!        start:  register in the node's SessionRegistry (live deliveries start
//!                arriving and are held back), read everything pending above the user's
//!                received cursors a page at a time and send each in seq order at the
//!                pace the socket takes it, send `replay-complete`, then release the
//!                held-back deliveries that the replay did not contain
//!        frames: send-message → the chat's actor (ack after commit), received/read →
//!                cursor moves, heartbeat → answered at once, renew → a later expiry
//!                of the socket's token; a bad frame gets an error frame, the socket
//!                stays open
//!        sign-out of its sign-in (here or on a peer) → closed with 4403
//! ```
//!
//! The replay reads the master after registering, and a chat's seqs commit in order,
//! so per chat the replay is a prefix: a held-back delivery with `seq` at or below the
//! replayed maximum is a duplicate, anything above it is new. No gap, no duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use protocol::websocket::{
    actions, AckPayload, DeliveredMessage, DeliveryPayload, Envelope, HeartbeatAnswerPayload, MessageAck,
    PresencePayload, RenewedPayload, StatusPayload,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use crate::cluster::node_router::announce_online;

mod delivery_gaps;
mod error_frames;
mod gap_repair;
mod replay;
use delivery_gaps::{DeliveredSeqs, DueRepair};
use error_frames::{error_envelope, rate_limited, send_failure};
use replay::stream_replay;

use super::device_access::{AccessRefused, SocketGrant};
use super::frames::{codes, parse_client_frame, ClientCommand, FrameError};
use super::ordered_replies::OrderedReplies;
use super::outbound::{close_codes, OutboundQueue};
use super::session_registry::{RegisteredSession, SessionId};
use super::MessagingServices;

/// How long a connecting session waits for each peer to record its user.
const ANNOUNCE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The `Session` actor.
pub struct Session;

/// Start-up arguments of a `Session`.
pub struct SessionArguments {
    /// The authenticated user (UUID) the socket belongs to.
    pub user_id: String,
    /// The socket's outbound queue.
    pub outbound: OutboundQueue,
    /// The node's messaging services.
    pub services: Arc<MessagingServices>,
    /// The sign-in and expiry of the token the socket was opened with.
    pub grant: SocketGrant,
}

/// A client frame's place among the frames a socket may have in the node at once. The
/// socket's reader takes one before it reads a frame and the session gives it back once
/// the frame's answer is out (an ack after the commit), so a client that sends faster
/// than its frames are handled stops being read: TCP holds the rest, not the node.
pub struct FrameInFlight(#[allow(dead_code)] pub Option<tokio::sync::OwnedSemaphorePermit>);

impl FrameInFlight {
    /// A frame that counts against no bound (tests).
    pub fn unbounded() -> FrameInFlight {
        FrameInFlight(None)
    }
}

/// Messages of a `Session`.
#[derive(RactorMessage)]
pub enum SessionMessage {
    /// A text frame from the client, holding its place until its answer is out.
    ClientText(String, FrameInFlight),
    /// A binary frame from the client (refused with an error frame).
    ClientBinary,
    /// Messages committed in one of the user's chats, with the span of their delivery.
    Deliver(Arc<DeliveryPayload>, tracing::Span),
    /// A member's cursor moved in one of the user's chats.
    Status(Arc<StatusPayload>),
    /// A companion went online or offline.
    Presence(Arc<PresencePayload>),
    /// The replay could not be read; the socket is closed so the client retries.
    ReplayFailed {
        /// Why the replay failed (for the log).
        reason: String,
    },
    /// The replay is queued for the socket; highest seq replayed per chat.
    ReplaySent(HashMap<String, u64>),
    /// This socket's own messages were acked (the chat delivers them to the user's other
    /// sockets, not back to this one).
    OwnAcked {
        /// The chat they were sent to.
        chat_id: String,
        /// Their seqs.
        seqs: Vec<u64>,
    },
    /// Time to read from the database what is still missing below delivered seqs.
    RepairGaps,
    /// The repairs' reads came back.
    GapsRead {
        /// Each repair with what was read.
        reads: Vec<(DueRepair, Vec<DeliveredMessage>)>,
        /// Whether some read failed (those repairs are absent and stay due).
        some_failed: bool,
    },
    /// Close the socket with this code (1001 when the node stops).
    Close {
        /// The websocket close code.
        code: u16,
        /// The close reason sent to the client (at most 123 bytes).
        reason: String,
    },
    /// A sign-in of this user was revoked: the socket closes with 4403 if it lives on it.
    SignedOut {
        /// The revoked sign-in (refresh-token family).
        family_id: String,
    },
}

enum Phase {
    /// Live deliveries wait here until the replay has been sent.
    Replaying {
        held_back: Vec<Arc<DeliveryPayload>>,
    },
    Live,
}

/// A session's state.
pub struct SessionState {
    user_id: String,
    session_id: SessionId,
    outbound: OutboundQueue,
    /// Answers to the client's frames, in frame order.
    replies: OrderedReplies,
    services: Arc<MessagingServices>,
    phase: Phase,
    /// The sign-in the socket lives on (a `renew` may move it to another of the user's).
    grant: SocketGrant,
    /// The seqs sent to the socket, per chat, to find messages that never arrived.
    delivered: DeliveredSeqs,
    /// A `RepairGaps` is on its way, or a repair's reads are.
    repair: gap_repair::RepairState,
}

impl SessionState {
    fn push(&self, envelope: &Envelope) {
        // On overflow the queue closes the socket itself; the client resumes on reconnect.
        let _ = self.outbound.push(envelope.to_text());
    }
}

impl Actor for Session {
    type Msg = SessionMessage;
    type State = SessionState;
    type Arguments = SessionArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: SessionArguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let services = arguments.services;
        let session_id = services.next_session_id();
        let was_online = services.online_anywhere(&arguments.user_id);
        services.sessions.register(
            &arguments.user_id,
            RegisteredSession {
                session_id,
                actor: myself.clone(),
                outbound: arguments.outbound.clone(),
            },
        );
        // Registered first, checked second: a sign-out recorded in between finds this
        // session registered, one recorded before is seen here. Either way it closes.
        if let Some(family_id) = &arguments.grant.family_id {
            if services.revoked_families.is_revoked(family_id) {
                let _ = myself.cast(SessionMessage::SignedOut {
                    family_id: family_id.clone(),
                });
            }
        }
        // Every peer must route this user's deliveries here before the replay reads the
        // database, or a message committed on a peer in between would reach no one.
        announce_online(&services, &arguments.user_id, ANNOUNCE_TIMEOUT).await;
        if !was_online {
            services.announce_presence(&arguments.user_id, true, true);
        }
        tokio::spawn(stream_replay(
            Arc::clone(&services),
            arguments.user_id.clone(),
            arguments.outbound.clone(),
            myself.clone(),
        ));
        Ok(SessionState {
            user_id: arguments.user_id,
            session_id,
            replies: OrderedReplies::new(arguments.outbound.clone()),
            outbound: arguments.outbound,
            services,
            phase: Phase::Replaying { held_back: Vec::new() },
            grant: arguments.grant,
            delivered: DeliveredSeqs::default(),
            repair: gap_repair::RepairState::default(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let last_here = state.services.sessions.unregister(&state.user_id, state.session_id);
        state.services.session_left(&state.user_id, last_here);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMessage::ClientText(text, in_flight) => {
                let parsed = parse_client_frame(&text, &state.services.frame_limits);
                if let Ok(ClientCommand::Heartbeat { reference, sent_at_ms }) = parsed {
                    // Untraced: a browser sends one every few seconds, and their traces
                    // would bury those of the messages.
                    answer_heartbeat(state, reference, sent_at_ms);
                    return Ok(());
                }
                if let Ok(ClientCommand::Renew {
                    reference,
                    access_token,
                }) = parsed
                {
                    renew(state, reference, &access_token);
                    return Ok(());
                }
                // Each frame starts a trace of its own; the chat's commit and the
                // deliveries, here and on other nodes, continue it.
                let frame_span = tracing::info_span!(parent: None, "ws.frame", user_id = %state.user_id);
                // Boxed: the actor's task is sized for the largest future its handler
                // awaits, and every idle session would carry this one's ~1.3 KB.
                Box::pin(handle_client_frame(&myself, state, parsed, in_flight).instrument(frame_span)).await;
            }
            SessionMessage::ClientBinary => state.replies.queue_now(
                error_envelope(&FrameError {
                    code: codes::BINARY_NOT_SUPPORTED,
                    message: "binary frames are not supported; send JSON text frames".to_owned(),
                    reference: None,
                    client_ids: Vec::new(),
                })
                .to_text(),
            ),
            SessionMessage::Deliver(delivery, trace) => match &mut state.phase {
                Phase::Replaying { held_back } => held_back.push(delivery),
                Phase::Live => {
                    // The first message's id finds the trace of a message seen by a
                    // client (Jaeger's tag search; the latency benchmark's hop breakdown).
                    let _delivering = tracing::info_span!(
                        parent: &trace,
                        "socket.deliver",
                        user_id = %state.user_id,
                        messages = delivery.messages.len(),
                        message.id = delivery.messages.first().map_or("", |message| message.id.as_str()),
                    )
                    .entered();
                    gap_repair::deliver_live(&myself, state, &delivery);
                }
            },
            SessionMessage::Status(status) => state.push(&Envelope::messenger(actions::STATUS, status.as_ref(), None)),
            SessionMessage::Presence(presence) => {
                state.push(&Envelope::messenger(actions::PRESENCE, presence.as_ref(), None));
            }
            SessionMessage::ReplaySent(replayed_up_to) => go_live(&myself, state, replayed_up_to),
            SessionMessage::OwnAcked { chat_id, seqs } => gap_repair::note_own(&myself, state, &chat_id, seqs),
            SessionMessage::RepairGaps => gap_repair::start(&myself, state),
            SessionMessage::GapsRead { reads, some_failed } => gap_repair::finish(&myself, state, reads, some_failed),
            SessionMessage::ReplayFailed { reason: error } => {
                tracing::warn!(user_id = %state.user_id, %error, "replay failed; closing so the client retries");
                state.outbound.close(
                    close_codes::INTERNAL_ERROR,
                    "could not load pending messages; reconnect",
                );
                myself.stop(Some("replay failed".to_owned()));
            }
            SessionMessage::Close { code, reason } => {
                state.outbound.close(code, &reason);
                myself.stop(Some(reason));
            }
            SessionMessage::SignedOut { family_id } => {
                if state.grant.family_id.as_deref() == Some(family_id.as_str()) {
                    tracing::info!(user_id = %state.user_id, "socket closed: its sign-in was signed out");
                    state.outbound.close(
                        close_codes::SIGNED_OUT,
                        "signed out: this sign-in was revoked; sign in again",
                    );
                    myself.stop(Some("signed out".to_owned()));
                }
            }
        }
        Ok(())
    }
}

/// The replay is out: release the held-back live deliveries it did not contain (per
/// chat the replay is a prefix, so those at or below its top were in it).
fn go_live(myself: &ActorRef<SessionMessage>, state: &mut SessionState, replayed_up_to: HashMap<String, u64>) {
    let held_back = match std::mem::replace(&mut state.phase, Phase::Live) {
        Phase::Replaying { held_back } => held_back,
        Phase::Live => Vec::new(),
    };
    state.delivered.note_replayed(&replayed_up_to);
    for delivery in held_back {
        gap_repair::deliver_live(myself, state, &delivery);
    }
}

/// Answers a client's `heartbeat` at once, ahead of the acks still waiting in the
/// ordered replies: the client asks whether its node is alive, and a slow commit must
/// not make a live node look dead.
fn answer_heartbeat(state: &SessionState, reference: Option<String>, sent_at_ms: Option<u64>) {
    let answer = HeartbeatAnswerPayload {
        sent_at_ms,
        node: state.services.node_name.clone(),
    };
    state.push(&Envelope::messenger(actions::HEARTBEAT, &answer, reference));
}

/// Takes a fresh access token for the socket: the same user's, valid and not signed
/// out. The socket then lives until the new token's expiry, on its sign-in.
fn renew(state: &mut SessionState, reference: Option<String>, access_token: &str) {
    let refusal = |message: &str| FrameError {
        code: codes::INVALID_TOKEN,
        message: message.to_owned(),
        reference: reference.clone(),
        client_ids: Vec::new(),
    };
    let answer = match state.services.access_check.check_access(access_token) {
        Ok(grant) if grant.user_id == state.user_id => {
            state.grant.expiry.extend_to(grant.expires_at_ms);
            state.grant.family_id = grant.family_id;
            let renewed = RenewedPayload {
                expires_at_ms: state.grant.expiry.expires_at_ms(),
            };
            Envelope::messenger(actions::RENEWED, &renewed, reference.clone())
        }
        Ok(_) => error_envelope(&refusal("the token is another user's; this socket keeps its token")),
        Err(AccessRefused::SignedOut) => error_envelope(&refusal(
            "the token's sign-in was signed out; this socket keeps its token",
        )),
        Err(AccessRefused::Invalid) => error_envelope(&refusal(
            "the token is invalid or expired; this socket keeps its token until it expires",
        )),
    };
    state.push(&answer);
}

/// Handles one client frame. `in_flight` moves into the frame's answer and is given back
/// when the answer is out.
async fn handle_client_frame(
    myself: &ActorRef<SessionMessage>,
    state: &SessionState,
    parsed: Result<ClientCommand, FrameError>,
    in_flight: FrameInFlight,
) {
    let command = match parsed {
        Ok(command) => command,
        Err(error) => return answer_holding(state, in_flight, error_envelope(&error).to_text()),
    };
    let services = &state.services;
    match command {
        ClientCommand::Send {
            reference,
            chat_id,
            messages,
        } => {
            let client_ids: Vec<String> = messages
                .iter()
                .filter_map(|message| message.client_id.clone())
                .collect();
            // Counted in messages, before anything is queued or stored: a flood costs
            // the node no more than the refusals.
            let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
            if let Err(wait) = services.send_limit.check_many(&state.user_id, count) {
                services.metrics.messages_rate_limited.inc_by(u64::from(count));
                return answer_holding(state, in_flight, rate_limited(reference, client_ids, wait).to_text());
            }
            // Queued on the chat here, in frame order; the answer waits in the ordered
            // replies so deliveries to this socket keep flowing meanwhile.
            let pending = services
                .submit_send(&chat_id, &state.user_id, messages, Some(state.session_id))
                .await;
            let session = myself.clone();
            state.replies.queue(async move {
                let _in_flight = in_flight;
                let outcome = match pending {
                    Ok(pending) => pending.wait().await,
                    Err(error) => Err(error),
                };
                let envelope = match outcome {
                    Ok(committed) => {
                        let seqs = committed.iter().map(|entry| entry.message.seq).collect();
                        let _ = session.cast(SessionMessage::OwnAcked {
                            chat_id: chat_id.clone(),
                            seqs,
                        });
                        let acks = committed
                            .into_iter()
                            .map(|entry| MessageAck {
                                client_id: entry.message.client_id,
                                id: entry.message.id,
                                seq: entry.message.seq,
                                create_time: entry.message.create_time,
                            })
                            .collect();
                        Envelope::messenger(actions::ACK, &AckPayload { chat_id, acks }, reference)
                    }
                    Err(error) => error_envelope(&send_failure(error, reference, client_ids)),
                };
                Some(envelope.to_text())
            });
        }
        ClientCommand::MoveCursor {
            reference,
            chat_id,
            kind,
            seq,
        } => {
            let pending = services.submit_cursor_move(&chat_id, &state.user_id, kind, seq).await;
            state.replies.queue(async move {
                let _in_flight = in_flight;
                let outcome = match pending {
                    Ok(pending) => pending.wait().await.map(|_| ()),
                    Err(error) => Err(error),
                };
                outcome
                    .err()
                    .map(|error| error_envelope(&send_failure(error, reference, Vec::new())).to_text())
            });
        }
        ClientCommand::Heartbeat { reference, sent_at_ms } => answer_heartbeat(state, reference, sent_at_ms),
        // Handled before tracing, like heartbeats.
        ClientCommand::Renew { .. } => {}
    }
}

/// Queues an answer known at once; the frame's place is given back when it is out.
fn answer_holding(state: &SessionState, in_flight: FrameInFlight, text: String) {
    state.replies.queue(async move {
        let _in_flight = in_flight;
        Some(text)
    });
}
