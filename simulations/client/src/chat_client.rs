//! `ChatClient`: one user's messenger connection that survives node crashes, for the load
//! tools, the failover experiment and tests.
//!
//! ```text
//! application ── send() ──> command channel ──> background task ── websocket ──> nginx ──> a node
//!      ^                                         │ reconnects forever (backoff + jitter)
//!      └──────────── ChatClientEvent channel <───┘ de-duplicates, acks, reports `received`
//! ```
//!
//! The contract it builds on the server's: every acked message reaches every participant
//! at least once (a reconnect replays everything above the user's `received` cursor), and
//! a resend with the same client id is stored once and acked with the original id and seq.
//! On top of that the client
//! * hands every message to the application exactly once, in arrival order, however
//!   often the server delivers it (dedup by message id);
//! * keeps every message the application queued until its ack and resends the unacked
//!   ones with their original client ids, in the original order, after each reconnect's
//!   `replay-complete`;
//! * reports `received` up to the highest seq below which it holds every message, so a
//!   reconnect replays little and never skips a message;
//! * with a refresh token, keeps its access token fresh and renews it over the open
//!   socket before it expires (see [`ChatClientConfig::refresh_token`]), and stops for
//!   good when its sign-in is signed out (4403);
//! * notices a server gone silent (a frozen node keeps the socket open) within about
//!   10 s by default, through its own pings (see [`ChatClientConfig::silence_timeout`]),
//!   and reconnects.

mod backoff;
mod connection;
mod inbox;
mod outbox;
mod token_keeper;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::websocket::{PresencePayload, StatusPayload};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::ClientError;

pub use backoff::ReconnectBackoff;
pub use inbox::{ChatSequenceTracker, DeliveryVerdict, Inbox, RETAINED_IDS_BELOW_CONTIGUOUS_TOP};
pub use outbox::{Outbox, OutgoingFrame, PendingMessage};

/// How a `ChatClient` connects and behaves.
#[derive(Debug, Clone)]
pub struct ChatClientConfig {
    /// Where every reconnect goes (nginx): it picks a live node.
    pub base_url: String,
    /// The user's access token.
    pub token: String,
    /// The sign-in's refresh token. With it the client renews its access token at two
    /// thirds of its lifetime (`PUT /auth/token`, then `renew` over the open socket) and
    /// reconnects with the newest one. Without it the socket closes when the access
    /// token expires (4401) and reconnects fail from then on.
    pub refresh_token: Option<String>,
    /// Where the first connection goes, when it must land on a particular node (tests
    /// that put two users on different nodes); reconnects always use `base_url`.
    pub first_connect_base_url: Option<String>,
    /// Start of every client id (for reading logs); a random per-client part and a counter
    /// follow, so two clients of one user never share an id. Keep it under 40 characters:
    /// the server refuses client ids over 64.
    pub client_id_prefix: String,
    /// Spacing of connection attempts after a lost or failed connection (doubling, jittered).
    pub reconnect_backoff: ReconnectBackoff,
    /// Spacing of resends of a message the server refused for a passing reason
    /// (`database_unavailable`, `internal`).
    pub refused_send_backoff: ReconnectBackoff,
    /// A connect (TCP, upgrade) that takes longer counts as failed.
    pub connect_timeout: Duration,
    /// `received` reports go out at most this often...
    pub received_report_interval: Duration,
    /// ...or as soon as this many messages advanced the contiguous seqs since the last one.
    pub received_report_every_messages: u64,
    /// At most this many messages written and not acked at once (None: no limit).
    pub max_in_flight: Option<usize>,
    /// The server accepts up to 100 messages per frame.
    pub max_messages_per_frame: usize,
    /// A ping goes out this often (the server answers it, and pings on its own every
    /// 5 s by default)...
    pub keepalive_interval: Duration,
    /// ...and a connection silent for this long is considered dead (a frozen node or a
    /// partition never closes the socket by itself). Silence is checked at each
    /// keepalive, so a silent server is noticed between `silence_timeout` and
    /// `silence_timeout + keepalive_interval` after its last frame: 8 to 10 s by
    /// default, as fast as the web page (node/web/app.js), and well inside the node's
    /// own 15 s idle timeout for a client, which the keepalives keep this one clear of.
    pub silence_timeout: Duration,
}

impl ChatClientConfig {
    /// Defaults for a client of `base_url` (trailing `/` dropped) signed in with the access
    /// token `token`; no refresh token, so it cannot renew.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> ChatClientConfig {
        ChatClientConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            refresh_token: None,
            first_connect_base_url: None,
            client_id_prefix: "parley-sim".to_owned(),
            reconnect_backoff: ReconnectBackoff::default(),
            refused_send_backoff: ReconnectBackoff {
                initial_delay: Duration::from_millis(200),
                ..ReconnectBackoff::default()
            },
            connect_timeout: Duration::from_secs(5),
            received_report_interval: Duration::from_millis(50),
            received_report_every_messages: 50,
            max_in_flight: None,
            max_messages_per_frame: 100,
            keepalive_interval: Duration::from_secs(2),
            silence_timeout: Duration::from_secs(8),
        }
    }
}

/// A message the application receives, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The chat (UUID) the message belongs to.
    pub chat_id: String,
    /// The server's global message id (UUID); the client hands each id over once.
    pub id: String,
    /// The message's per-chat sequence number (from 1).
    pub seq: u64,
    /// The sender's user id (UUID); may be this client's own user (sent from another device).
    pub sender_user_id: String,
    /// The message text.
    pub text: String,
    /// The status as delivered (`created`).
    pub status: String,
    /// Commit time on the master, as the server wrote it (RFC 3339, UTC, microseconds).
    pub create_time: String,
    /// The sender's client id, when it sent one.
    pub client_id: Option<String>,
    /// When this client read the delivery (local monotonic clock).
    pub received_at: Instant,
    /// Which connection of this client brought it (1 is the first).
    pub connection_number: u64,
}

/// The server committed a message this client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessageAck {
    /// The id this client gave the message (returned by `send`).
    pub client_id: String,
    /// The chat (UUID) it was sent to.
    pub chat_id: String,
    /// The stored message's global id (UUID).
    pub id: String,
    /// The message's per-chat sequence number.
    pub seq: u64,
    /// Commit time on the master (RFC 3339, UTC, microseconds).
    pub create_time: String,
    /// When the ack was read (local monotonic clock).
    pub acked_at: Instant,
    /// How many copies were written before the ack (more than one: it was resent).
    pub times_written: u32,
}

/// The server refused a message for good; it left the unacked set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRefusal {
    /// The id this client gave the message.
    pub client_id: String,
    /// The chat (UUID) it was sent to.
    pub chat_id: String,
    /// The server's error code (e.g. `chat_not_found`, `text_too_long`); never a passing one,
    /// those are retried.
    pub code: String,
    /// The server's explanation.
    pub message: String,
}

/// What the application hears from its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatClientEvent {
    /// A connection finished its replay (`replay-complete`); live traffic follows.
    Live {
        /// Which connection of this client (1 is the first).
        connection_number: u64,
        /// The node serving it.
        node: String,
        /// Messages the server replayed before live traffic (duplicates included).
        replayed: u64,
    },
    /// A connection ended; the client reconnects by itself.
    Disconnected {
        /// Which connection of this client ended.
        connection_number: u64,
        /// Why it ended (for logs).
        reason: String,
    },
    /// A message not handed over before (de-duplicated by id across connections).
    Message(ReceivedMessage),
    /// A message this client sent is committed.
    Acked(SentMessageAck),
    /// A message this client sent was refused for good.
    SendRefused(SendRefusal),
    /// A chat member's `received` or `read` cursor moved.
    Status(StatusPayload),
    /// A companion went online or offline.
    Presence(PresencePayload),
    /// The sign-in was signed out (the server closed with 4403, or the refresh token was
    /// refused): the client has stopped; unacked messages stay unacked.
    SignedOut {
        /// Why (for logs).
        reason: String,
    },
    /// The access token was renewed over the open socket (`renewed`).
    TokenRenewed {
        /// When the socket's new token expires (Unix time, milliseconds).
        expires_at_ms: u64,
    },
    /// An `error` frame that named no message of this client.
    ServerError {
        /// The server's error code.
        code: String,
        /// The server's explanation.
        message: String,
        /// The `ref` of the frame it answers, when the server could read one.
        reference: Option<String>,
    },
}

/// One reconnect, from the moment the old connection was found dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    /// The new connection's number (1 is the first).
    pub connection_number: u64,
    /// The node that served the new connection.
    pub node: String,
    /// When the old connection was found dead (or the first attempt to replace it failed).
    pub disconnected_at: Instant,
    /// The websocket upgrade of the new connection succeeded.
    pub reconnected_at: Instant,
    /// The first delivery or `replay-complete` on the new connection.
    pub first_traffic_at: Instant,
    /// `replay-complete` on the new connection: live traffic from here.
    pub live_at: Instant,
    /// Messages the server replayed on the new connection.
    pub replayed: u64,
}

impl ResumeRecord {
    /// Disconnect to first traffic on the new connection.
    pub fn resume_time(&self) -> Duration {
        self.first_traffic_at.saturating_duration_since(self.disconnected_at)
    }
}

/// Counters, for tests and tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatClientStats {
    /// Messages the application queued with `send`.
    pub messages_queued: u64,
    /// Message copies written on a socket, resends included.
    pub messages_written: u64,
    /// Copies written again (after a reconnect or a passing refusal).
    pub messages_resent: u64,
    /// Queued messages the server acked (each counted once, however many copies were written).
    pub messages_acked: u64,
    /// Queued messages the server refused for good.
    pub messages_refused: u64,
    /// Queued and neither acked nor refused.
    pub messages_unacked: u64,
    /// Copies written on the current connection and not yet answered.
    pub messages_in_flight: u64,
    /// Messages handed to the application (new ids only; own echoes not included).
    pub messages_delivered_to_app: u64,
    /// Deliveries of ids already handed over (replays, at-least-once delivery).
    pub duplicates_dropped: u64,
    /// This client's own messages coming back in a replay.
    pub own_echoes_absorbed: u64,
    /// Different ids at one seq: a server bug if ever non-zero.
    pub sequence_conflicts: u64,
    /// Acks for client ids not (or no longer) unacked.
    pub unexpected_acks: u64,
    /// `received` frames written.
    pub received_reports_sent: u64,
    /// Websocket connections opened, the first included.
    pub connections_opened: u64,
    /// Connections opened after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed (refused, timed out, or answered with an HTTP error).
    pub connect_failures: u64,
    /// The current connection finished its replay.
    pub live: bool,
    /// The node of the current (or last) live connection.
    pub current_node: Option<String>,
    /// One record per reconnect that reached `replay-complete`, oldest first.
    pub resume_records: Vec<ResumeRecord>,
}

enum ClientCommand {
    Send {
        client_id: String,
        chat_id: String,
        text: String,
    },
    Shutdown,
}

/// A handle to one user's connection, running in a background task.
pub struct ChatClient {
    commands: mpsc::UnboundedSender<ClientCommand>,
    stats: watch::Receiver<ChatClientStats>,
    client_id_prefix: String,
    next_client_number: AtomicU64,
    /// Counted here too, so a wait right after `send` cannot miss a message the task
    /// has not picked up yet.
    queued_through_this_handle: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl ChatClient {
    /// Starts connecting in the background (needs a tokio runtime). The events receiver
    /// may be dropped when only the counters matter; events are then discarded.
    pub fn start(config: ChatClientConfig) -> (ChatClient, mpsc::UnboundedReceiver<ChatClientEvent>) {
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (events, event_receiver) = mpsc::unbounded_channel();
        let (stats_sender, stats) = watch::channel(ChatClientStats::default());
        let instance_part: u32 = rand::thread_rng().gen();
        let client_id_prefix = format!("{}-{instance_part:08x}", config.client_id_prefix);
        let task = tokio::spawn(connection::run_client(config, command_receiver, events, stats_sender));
        let client = ChatClient {
            commands,
            stats,
            client_id_prefix,
            next_client_number: AtomicU64::new(1),
            queued_through_this_handle: AtomicU64::new(0),
            task,
        };
        (client, event_receiver)
    }

    /// Queues a message and returns its client id. It is written as soon as a connection
    /// is live and kept until acked. Fails only once the client has stopped.
    pub fn send(&self, chat_id: &str, text: impl Into<String>) -> Result<String, ClientError> {
        let number = self.next_client_number.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("{}-{number}", self.client_id_prefix);
        self.commands
            .send(ClientCommand::Send {
                client_id: client_id.clone(),
                chat_id: chat_id.to_owned(),
                text: text.into(),
            })
            .map_err(|_| ClientError::Stopped)?;
        self.queued_through_this_handle.fetch_add(1, Ordering::Relaxed);
        Ok(client_id)
    }

    /// The counters as of the client task's last update.
    pub fn stats(&self) -> ChatClientStats {
        self.stats.borrow().clone()
    }

    /// Waits until `condition` holds for the counters, or fails after `timeout` saying
    /// what it waited for and where the counters stood.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&ChatClientStats) -> bool,
    ) -> Result<ChatClientStats, ClientError> {
        let mut stats = self.stats.clone();
        let outcome = tokio::time::timeout(timeout, stats.wait_for(|current| condition(current)))
            .await
            .map(|reached| reached.map(|stats| stats.clone()));
        match outcome {
            Ok(Ok(reached)) => Ok(reached),
            Ok(Err(_)) => Err(ClientError::StoppedBefore {
                what: what.to_owned(),
                stats: format!("{:?}", self.stats()),
            }),
            Err(_) => Err(ClientError::WaitTimedOut {
                what: what.to_owned(),
                timeout,
                stats: format!("{:?}", self.stats()),
            }),
        }
    }

    /// Waits until a connection has finished its replay.
    pub async fn wait_until_live(&self, timeout: Duration) -> Result<ChatClientStats, ClientError> {
        self.wait_for("a live connection", timeout, |stats| stats.live).await
    }

    /// Waits until every message queued so far was acked (or refused for good).
    pub async fn wait_all_acked(&self, timeout: Duration) -> Result<ChatClientStats, ClientError> {
        let queued = self.queued_through_this_handle.load(Ordering::Relaxed);
        self.wait_for(&format!("acks for all {queued} messages"), timeout, |stats| {
            stats.messages_acked + stats.messages_refused >= queued
        })
        .await
    }

    /// Waits until `count` messages were handed to the application.
    pub async fn wait_delivered(&self, count: u64, timeout: Duration) -> Result<ChatClientStats, ClientError> {
        self.wait_for(&format!("{count} messages delivered"), timeout, |stats| {
            stats.messages_delivered_to_app >= count
        })
        .await
    }

    /// Reports what was received, closes the socket normally and stops the task. The
    /// events channel ends after the last event.
    pub async fn shutdown(self) -> Result<ChatClientStats, ClientError> {
        // An already stopped task is no error: there is nothing left to close.
        let _ = self.commands.send(ClientCommand::Shutdown);
        let final_stats = self.stats.clone();
        let shutdown_timeout = Duration::from_secs(5);
        tokio::time::timeout(shutdown_timeout, self.task)
            .await
            .map_err(|_| ClientError::ShutdownTimedOut(shutdown_timeout))?
            .map_err(ClientError::TaskFailed)?;
        let stats = final_stats.borrow().clone();
        Ok(stats)
    }
}
