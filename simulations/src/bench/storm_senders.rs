//! The other side of the storm's chats: senders on the node that survives, each writing
//! the same number of messages into each of its chats and collecting the acks, so the
//! storm knows which message ids each user must get back.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{stream, StreamExt, TryStreamExt};
use protocol::errors::codes;
use protocol::websocket::{actions, AckPayload, ErrorPayload, OutgoingMessage};
use tokio::time::Instant;

use crate::load::load_users::SignedInUser;
use parley_client::MessengerSocket;

const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// Frames a sender has written and not yet seen acked.
const SENDS_IN_FLIGHT: usize = 8;
/// Refusals the server means as "try again" (its write pool or the master was busy).
const RETRIED_CODES: [&str; 2] = [codes::DATABASE_UNAVAILABLE, codes::INTERNAL];
const RETRY_DELAY: Duration = Duration::from_millis(100);
const CLIENT_ID_PREFIX: &str = "storm-";

/// One sender's chats: (recipient index, chat id).
pub struct SenderChats<'users> {
    pub sender: &'users SignedInUser,
    pub chats: Vec<(usize, String)>,
}

/// Sends `per_chat` messages into every chat from its sender's socket on `node_url`;
/// returns the acked message ids per recipient index.
pub async fn send_pending_messages(
    node_url: &str,
    senders: Vec<SenderChats<'_>>,
    per_chat: usize,
) -> anyhow::Result<HashMap<usize, Vec<String>>> {
    let sender_count = senders.len();
    let acked: Vec<HashMap<usize, Vec<String>>> = stream::iter(senders)
        .map(|sender| async move { send_from_one(node_url, sender, per_chat).await })
        .buffer_unordered(sender_count.max(1))
        .try_collect()
        .await?;
    Ok(acked.into_iter().flatten().collect())
}

async fn send_from_one(
    node_url: &str,
    sender: SenderChats<'_>,
    per_chat: usize,
) -> anyhow::Result<HashMap<usize, Vec<String>>> {
    let email = &sender.sender.email;
    let mut socket = MessengerSocket::connect(node_url, &sender.sender.access_token)
        .await
        .with_context(|| format!("connecting sender {email}"))?;
    socket
        .until_action(actions::REPLAY_COMPLETE, ACK_TIMEOUT)
        .await
        .with_context(|| format!("sender {email} connecting"))?;
    let recipient_by_chat: HashMap<&str, usize> = sender
        .chats
        .iter()
        .map(|(recipient, chat_id)| (chat_id.as_str(), *recipient))
        .collect();
    let mut unsent: VecDeque<&str> = sender.chats.iter().map(|(_, chat_id)| chat_id.as_str()).collect();
    let mut in_flight = 0;
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut acked: HashMap<usize, Vec<String>> = HashMap::new();
    while acked.len() < sender.chats.len() {
        // A window, not everything at once: thousands of commits queued together only
        // time out in the node's write pool.
        while in_flight < SENDS_IN_FLIGHT {
            let Some(chat_id) = unsent.pop_front() else { break };
            socket
                .send_messages(chat_id, pending_messages(chat_id, per_chat), None)
                .await?;
            in_flight += 1;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let envelope = socket
            .next_envelope(left)
            .await
            .with_context(|| format!("sender {email}: {} of {} chats acked", acked.len(), sender.chats.len()))?;
        match envelope.action.as_str() {
            actions::ACK => {
                let ack: AckPayload = envelope.decode_payload().context("decoding an ack")?;
                let recipient = *recipient_by_chat
                    .get(ack.chat_id.as_str())
                    .with_context(|| format!("an ack for a chat {email} did not write to"))?;
                in_flight -= 1;
                acked
                    .entry(recipient)
                    .or_default()
                    .extend(ack.acks.into_iter().map(|message| message.id));
            }
            actions::ERROR => {
                let error: ErrorPayload = envelope.decode_payload().context("decoding an error")?;
                let refused_chat = error
                    .client_ids
                    .first()
                    .and_then(|client_id| chat_of_client_id(client_id))
                    .and_then(|chat_id| recipient_by_chat.get_key_value(chat_id).map(|(chat_id, _)| *chat_id));
                match refused_chat {
                    Some(chat_id) if RETRIED_CODES.contains(&error.code.as_str()) => {
                        // The same client ids again: stored once whatever happened before.
                        tracing::debug!(%email, code = %error.code, "storm send refused, sending again");
                        in_flight -= 1;
                        unsent.push_back(chat_id);
                        tokio::time::sleep(RETRY_DELAY).await;
                    }
                    _ => bail!("sender {email} was refused: {} ({})", error.message, error.code),
                }
            }
            _ => {}
        }
    }
    socket.close().await?;
    Ok(acked)
}

/// `per_chat` messages for `chat_id`, with client ids that name the chat.
fn pending_messages(chat_id: &str, per_chat: usize) -> Vec<OutgoingMessage> {
    (0..per_chat)
        .map(|number| OutgoingMessage {
            text: format!("pending {number} while you are away"),
            status: Some("created".to_owned()),
            client_id: Some(format!("{CLIENT_ID_PREFIX}{chat_id}-{number}")),
        })
        .collect()
}

/// The chat a client id of [`pending_messages`] was made for.
fn chat_of_client_id(client_id: &str) -> Option<&str> {
    let (chat_id, _number) = client_id.strip_prefix(CLIENT_ID_PREFIX)?.rsplit_once('-')?;
    Some(chat_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_names_its_chat() {
        let chat_id = "0190f0a2-7c1e-7000-8000-000000000001";
        let messages = pending_messages(chat_id, 2);
        for message in &messages {
            assert_eq!(chat_of_client_id(message.client_id.as_deref().unwrap()), Some(chat_id));
        }
        assert_eq!(chat_of_client_id("other-1"), None);
    }
}
