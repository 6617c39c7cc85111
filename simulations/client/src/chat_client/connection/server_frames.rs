//! The server's frames as the client task sees them: deliveries go through the inbox
//! (dedup, contiguous seqs) to the application, acks empty the outbox, `replay-complete`
//! turns a connection live and releases the resends, refusals are retried or given up.

use protocol::websocket::{
    actions, AckPayload, DeliveryPayload, Envelope, ErrorPayload, PresencePayload, RenewedPayload,
    ReplayCompletePayload, StatusPayload,
};
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::socket::{read_server_frame, ServerFrame};

use super::super::inbox::DeliveryVerdict;
use super::super::{ChatClientEvent, ReceivedMessage, ResumeRecord, SendRefusal, SentMessageAck};
use super::{lost, ClientTask, ConnectionEnd, OpenConnection};

/// Error codes after which a refused message is sent again: nothing was stored and the
/// cause passes (the master is back, the node recovered).
const PASSING_REFUSAL_CODES: &[&str] = &["database_unavailable", "internal", "rate_limited"];

impl ClientTask {
    pub(super) async fn on_frame(
        &mut self,
        connection: &mut OpenConnection,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), ConnectionEnd> {
        let now = Instant::now();
        let frame = match frame {
            None => return Err(lost("the connection ended", connection)),
            Some(Err(error)) => return Err(lost(format!("reading failed: {error}"), connection)),
            Some(Ok(frame)) => frame,
        };
        match read_server_frame(frame) {
            ServerFrame::Closed(code) => {
                if code == Some(protocol::websocket::close_codes::SIGNED_OUT) {
                    return Err(ConnectionEnd::SignedOut(
                        "the server closed the socket: signed out".to_owned(),
                    ));
                }
                Err(lost(format!("closed by the server with {code:?}"), connection))
            }
            ServerFrame::Envelope(envelope) => {
                connection.last_frame_at = now;
                self.on_envelope(connection, envelope, now).await
            }
            ServerFrame::NotAnEnvelope(error) => {
                connection.last_frame_at = now;
                tracing::warn!(%error, "the server sent a frame that is not an envelope");
                Ok(())
            }
            ServerFrame::Other => {
                connection.last_frame_at = now;
                Ok(())
            }
        }
    }

    async fn on_envelope(
        &mut self,
        connection: &mut OpenConnection,
        envelope: Envelope,
        now: Instant,
    ) -> Result<(), ConnectionEnd> {
        match envelope.action.as_str() {
            actions::SEND_MESSAGE => match envelope.decode_payload::<DeliveryPayload>() {
                Ok(delivery) => self.on_delivery(connection, delivery, now).await,
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            actions::ACK => match envelope.decode_payload::<AckPayload>() {
                Ok(ack) => self.on_ack(connection, ack, now).await,
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            actions::REPLAY_COMPLETE => match envelope.decode_payload::<ReplayCompletePayload>() {
                Ok(complete) => self.on_replay_complete(connection, complete, now).await,
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            actions::ERROR => match envelope.decode_payload::<ErrorPayload>() {
                Ok(error) => {
                    self.on_error(error, envelope.reference);
                    self.write_due_messages(connection).await
                }
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            actions::STATUS => match envelope.decode_payload::<StatusPayload>() {
                Ok(status) => {
                    self.emit(ChatClientEvent::Status(status));
                    Ok(())
                }
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            actions::RENEWED => match envelope.decode_payload::<RenewedPayload>() {
                Ok(renewed) => {
                    self.emit(ChatClientEvent::TokenRenewed {
                        expires_at_ms: renewed.expires_at_ms,
                    });
                    Ok(())
                }
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            actions::PRESENCE => match envelope.decode_payload::<PresencePayload>() {
                Ok(presence) => {
                    self.emit(ChatClientEvent::Presence(presence));
                    Ok(())
                }
                Err(error) => ignore_undecodable(&envelope, &error),
            },
            other => {
                tracing::debug!(action = other, "chat client ignores an unknown action");
                Ok(())
            }
        }
    }

    async fn on_delivery(
        &mut self,
        connection: &mut OpenConnection,
        delivery: DeliveryPayload,
        now: Instant,
    ) -> Result<(), ConnectionEnd> {
        connection.note_traffic(now);
        for message in delivery.messages {
            let sent_by_this_client = message
                .client_id
                .as_deref()
                .is_some_and(|client_id| self.outbox.contains(client_id));
            let verdict = self
                .inbox
                .accept_delivered(&message.chat_id, message.seq, &message.id, sent_by_this_client);
            match verdict {
                DeliveryVerdict::Duplicate => {
                    self.counters.duplicates_dropped += 1;
                    continue;
                }
                DeliveryVerdict::OwnEcho => {
                    self.counters.own_echoes_absorbed += 1;
                    connection.advanced_since_report += 1;
                    continue;
                }
                DeliveryVerdict::SequenceConflict { held_id } => {
                    self.counters.sequence_conflicts += 1;
                    tracing::warn!(
                        chat_id = %message.chat_id,
                        seq = message.seq,
                        %held_id,
                        new_id = %message.id,
                        "the server delivered two different messages with one seq"
                    );
                }
                DeliveryVerdict::New => connection.advanced_since_report += 1,
            }
            self.counters.messages_delivered_to_app += 1;
            self.emit(ChatClientEvent::Message(ReceivedMessage {
                chat_id: message.chat_id,
                id: message.id,
                seq: message.seq,
                sender_user_id: message.user_id,
                text: message.text,
                status: message.status,
                create_time: message.create_time,
                client_id: message.client_id,
                received_at: now,
                connection_number: connection.number,
            }));
        }
        self.report_if_batch_full(connection).await
    }

    async fn on_ack(
        &mut self,
        connection: &mut OpenConnection,
        ack: AckPayload,
        now: Instant,
    ) -> Result<(), ConnectionEnd> {
        for entry in ack.acks {
            let pending = entry
                .client_id
                .as_deref()
                .and_then(|client_id| self.outbox.acknowledge(client_id));
            let Some(pending) = pending else {
                self.counters.unexpected_acks += 1;
                tracing::debug!(client_id = ?entry.client_id, id = %entry.id, "ack for no unacked message");
                continue;
            };
            self.counters.messages_acked += 1;
            self.inbox.record_acked(&pending.chat_id, entry.seq, &entry.id);
            connection.advanced_since_report += 1;
            self.emit(ChatClientEvent::Acked(SentMessageAck {
                client_id: pending.client_id,
                chat_id: pending.chat_id,
                id: entry.id,
                seq: entry.seq,
                create_time: entry.create_time,
                acked_at: now,
                times_written: pending.times_written,
            }));
        }
        self.counters.messages_unacked = self.outbox.unacked() as u64;
        // An ack may have opened the in-flight window.
        self.write_due_messages(connection).await?;
        self.report_if_batch_full(connection).await
    }

    async fn on_replay_complete(
        &mut self,
        connection: &mut OpenConnection,
        complete: ReplayCompletePayload,
        now: Instant,
    ) -> Result<(), ConnectionEnd> {
        connection.note_traffic(now);
        connection.live = true;
        self.counters.live = true;
        self.counters.current_node = Some(complete.node.clone());
        if let Some(disconnected_at) = self.disconnected_at.take() {
            let record = ResumeRecord {
                connection_number: connection.number,
                node: complete.node.clone(),
                disconnected_at,
                reconnected_at: connection.opened_at,
                first_traffic_at: connection.first_traffic_at.unwrap_or(now),
                live_at: now,
                replayed: complete.replayed,
            };
            tracing::info!(
                connection = connection.number,
                node = %complete.node,
                replayed = complete.replayed,
                resume_time = ?record.resume_time(),
                "chat client resumed"
            );
            self.counters.resume_records.push(record);
        } else {
            tracing::debug!(node = %complete.node, replayed = complete.replayed, "chat client live");
        }
        self.emit(ChatClientEvent::Live {
            connection_number: connection.number,
            node: complete.node,
            replayed: complete.replayed,
        });
        self.send_received_reports(connection).await?;
        self.write_due_messages(connection).await
    }

    fn on_error(&mut self, error: ErrorPayload, reference: Option<String>) {
        if error.client_ids.is_empty() {
            tracing::warn!(code = %error.code, message = %error.message, "the server refused a frame");
            self.emit(ChatClientEvent::ServerError {
                code: error.code,
                message: error.message,
                reference,
            });
            return;
        }
        let passing = PASSING_REFUSAL_CODES.contains(&error.code.as_str());
        let backoff = self.config.refused_send_backoff;
        // The server's word on when to send again (a send rate limit) beats our backoff.
        let server_wait = Duration::from_millis(error.retry_after_ms.unwrap_or(0));
        for client_id in &error.client_ids {
            if passing {
                self.outbox.refuse_for_now(client_id, |refusals| {
                    Instant::now() + backoff.next_delay(refusals.saturating_sub(1)).max(server_wait)
                });
                continue;
            }
            if let Some(refused) = self.outbox.refuse_permanently(client_id) {
                self.counters.messages_refused += 1;
                self.emit(ChatClientEvent::SendRefused(SendRefusal {
                    client_id: refused.client_id,
                    chat_id: refused.chat_id,
                    code: error.code.clone(),
                    message: error.message.clone(),
                }));
            }
        }
        tracing::debug!(code = %error.code, messages = error.client_ids.len(), passing, "the server refused messages");
        self.counters.messages_unacked = self.outbox.unacked() as u64;
    }
}

/// A payload that does not decode is the server's bug; the connection stays useful for
/// everything else, so it is logged and skipped rather than torn down.
fn ignore_undecodable(envelope: &Envelope, error: &serde_json::Error) -> Result<(), ConnectionEnd> {
    tracing::warn!(action = %envelope.action, payload = %envelope.payload, %error, "the server sent a payload that does not decode");
    Ok(())
}
