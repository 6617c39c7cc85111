//! Websocket messaging: sessions, chats, delivery, resume.
//!
//! ```text
//! MessagingSupervisor (under the RootSupervisor; the whole tree is in crate::supervisor)
//!  ├── Session per websocket (local)   parses frames, writes deliveries, replays on connect
//!  └── Chat per active chat (local)    commits sends, delivers to members' sessions
//!
//! presence task (one per node, beside the tree)   tells companions who came and went
//! ```
//!
//! [`MessagingServices`] is what they share: the database, the node's session registry
//! and its chat directory.

pub mod chat;
pub mod device_access;
#[cfg(test)]
mod in_process_tests;
pub mod messaging_supervisor;
/// Pure parsing, in `parley-checks` so the fuzz targets build it without the runtime.
pub use checks::frames;
pub mod ordered_replies;
pub mod outbound;
pub mod presence;
pub mod receipts;
pub mod replay_turns;
pub mod session;
pub mod session_registry;
pub mod storage;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use protocol::cluster::PeerMessage;
use protocol::websocket::{actions, DeliveryPayload, Envelope, OutgoingMessage, PresencePayload, StatusPayload};

use crate::cluster::peer_network::PeerNetwork;
use crate::cluster::peers::Peers;
use crate::database::DbError;
use crate::metrics::Metrics;
use crate::rate_limits::KeyedRateLimiter;
use crate::trace_context::TracePropagation;
use chat::{ChatDirectory, ChatMessage};
use device_access::{AccessTokenCheck, RevokedFamilies};
use frames::FrameLimits;
use presence::{PresenceAnnouncer, PresenceChange};
use replay_turns::ReplayTurns;
use session::SessionMessage;
use session_registry::{SessionId, SessionRegistry};
use storage::MessagingStorage;
use store::{CommittedMessage, CursorKind, SendError};

/// The outcome of a frame queued on a chat's actor.
pub struct PendingOutcome<T> {
    outcome: ractor::concurrency::OneshotReceiver<Result<T, SendError>>,
}

impl<T> PendingOutcome<T> {
    /// Waits (bounded) for the chat to finish the frame.
    pub async fn wait(self) -> Result<T, SendError> {
        match tokio::time::timeout(CHAT_CALL_TIMEOUT, self.outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(internal("the chat actor stopped before answering".to_owned())),
            Err(_) => Err(SendError::Database(DbError::Timeout {
                endpoint: "chat".to_owned(),
                timeout: CHAT_CALL_TIMEOUT,
            })),
        }
    }
}

/// How long a session waits for its chat to commit a frame.
const CHAT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Shared by every session and chat of the node.
pub struct MessagingServices {
    /// The node's name as users see it (`node-1`).
    pub node_name: String,
    /// The cluster as this node sees it; its name carries the incarnation.
    pub peers: Peers,
    /// How messages reach the other nodes.
    pub peer_network: Arc<dyn PeerNetwork>,
    /// What the actors read and write (MariaDB on a node, in memory in tests).
    pub storage: Arc<dyn MessagingStorage>,
    /// The websocket sessions on this node, by user.
    pub sessions: SessionRegistry,
    /// The `Chat` actors running on this node, by chat id.
    pub chats: ChatDirectory,
    /// What one client frame may carry.
    pub frame_limits: FrameLimits,
    /// The node's Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Frames a session may have queued for a slow client before it is closed.
    pub outbound_capacity: usize,
    /// Carries traces over the cluster hop.
    pub trace_propagation: Arc<dyn TracePropagation>,
    /// Messages each user may send through this node, counted per message.
    pub send_limit: KeyedRateLimiter,
    /// One replay per user at a time.
    pub replay_turns: ReplayTurns,
    /// Signed-out sign-ins whose access tokens are refused (shared with the node's
    /// token checks).
    pub revoked_families: Arc<RevokedFamilies>,
    /// Checks the fresh tokens sockets are renewed with.
    pub access_check: Arc<dyn AccessTokenCheck>,
    presence: PresenceAnnouncer,
    next_session_id: AtomicU64,
    /// The `MessagingSupervisor` that sessions and chats are spawned under (none before
    /// it starts, and in tests that run the actors bare).
    supervisor: std::sync::Mutex<Option<ractor::ActorCell>>,
}

/// What one user or socket may do, for [`MessagingServices::new`].
pub struct MessagingLimits {
    /// What one client frame may carry.
    pub frame_limits: FrameLimits,
    /// Frames a session may have queued for a slow client before it is closed.
    pub outbound_capacity: usize,
    /// Messages each user may send through this node.
    pub send_limit: KeyedRateLimiter,
    /// Signed-out sign-ins, shared with the node's token checks.
    pub revoked_families: Arc<RevokedFamilies>,
    /// What a socket may renew its access token with.
    pub access_check: Arc<dyn AccessTokenCheck>,
}

impl MessagingServices {
    /// The services of one node. `node_name` is the name users see (`node-1`); `peers`
    /// carries the cluster name with incarnation. Must be called inside a tokio runtime
    /// (it starts the presence announcer task).
    pub fn new(
        node_name: String,
        peers: Peers,
        peer_network: Arc<dyn PeerNetwork>,
        storage: Arc<dyn MessagingStorage>,
        limits: MessagingLimits,
        metrics: Arc<Metrics>,
        trace_propagation: Arc<dyn TracePropagation>,
    ) -> Arc<Self> {
        let MessagingLimits {
            frame_limits,
            outbound_capacity,
            send_limit,
            revoked_families,
            access_check,
        } = limits;
        Arc::new_cyclic(|services| MessagingServices {
            node_name,
            peers,
            peer_network,
            storage,
            sessions: SessionRegistry::default(),
            chats: ChatDirectory::default(),
            frame_limits,
            metrics,
            outbound_capacity,
            trace_propagation,
            send_limit,
            replay_turns: ReplayTurns::default(),
            revoked_families,
            access_check,
            presence: PresenceAnnouncer::start(services.clone()),
            next_session_id: AtomicU64::new(1),
            supervisor: std::sync::Mutex::new(None),
        })
    }

    /// Sessions and chats started from now on are children of `supervisor`.
    pub fn adopt_actors_under(&self, supervisor: Option<ractor::ActorCell>) {
        *self.supervisor.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = supervisor;
    }

    /// Forgets `supervisor` if it is still the one (it stopped; a restarted one adopts anew).
    pub fn disown_actors_of(&self, supervisor: &ractor::ActorCell) {
        let mut current = self.supervisor.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current
            .as_ref()
            .is_some_and(|cell| cell.get_id() == supervisor.get_id())
        {
            *current = None;
        }
    }

    /// Spawns `actor` under the messaging supervisor (unsupervised when there is none).
    pub async fn spawn_supervised<A: ractor::Actor>(
        &self,
        actor: A,
        arguments: A::Arguments,
    ) -> Result<ractor::ActorRef<A::Msg>, ractor::SpawnErr> {
        let supervisor = self
            .supervisor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let spawned = match supervisor {
            Some(supervisor) => ractor::Actor::spawn_linked(None, actor, arguments, supervisor).await,
            None => ractor::Actor::spawn(None, actor, arguments).await,
        };
        spawned.map(|(actor, _)| actor)
    }

    /// Cleans up after a session or chat that failed (its `post_stop` did not run): a
    /// session's socket is closed with 1011 and the session leaves the registry; a chat
    /// leaves the directory. Neither is restarted (see `messaging_supervisor`).
    pub async fn actor_failed(&self, actor: ractor::ActorId, error: &str) {
        if let Some((user, session, last_here)) = self.sessions.remove_actor(actor) {
            tracing::error!(user_id = %user, %error, "session failed; its socket is closed and the client resumes on reconnect");
            self.metrics.actor_failures.with_label_values(&["session"]).inc();
            session.outbound.close(
                outbound::close_codes::INTERNAL_ERROR,
                "session failed; reconnect to resume",
            );
            self.session_left(&user, last_here);
            return;
        }
        if let Some(chat_id) = self.chats.forget_actor(actor).await {
            tracing::error!(%chat_id, %error, "chat actor failed; the next send starts a fresh one");
            self.metrics.actor_failures.with_label_values(&["chat"]).inc();
            return;
        }
        tracing::error!(%actor, %error, "a messaging actor failed");
    }

    /// A session of `user` left the registry (stopped, or failed): when it was the user's
    /// last here, peers stop routing to this node for them, and their companions hear
    /// they went offline if they have no session anywhere.
    pub fn session_left(&self, user: &str, last_here: bool) {
        if last_here {
            crate::cluster::node_router::announce_offline(self, user);
            if !self.online_anywhere(user) {
                self.announce_presence(user, false, true);
            }
        }
    }

    /// A fresh id for a websocket session on this node (unique until the node restarts).
    pub fn next_session_id(&self) -> SessionId {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a frame's commit on the chat's actor (started on demand) and returns where
    /// its outcome will arrive. Awaiting this in the session keeps one socket's frames in
    /// the order they were sent; awaiting the outcome elsewhere keeps the session free.
    pub async fn submit_send(
        self: &Arc<Self>,
        chat_id: &str,
        sender: &str,
        messages: Vec<OutgoingMessage>,
        origin: Option<SessionId>,
    ) -> Result<PendingOutcome<Vec<CommittedMessage>>, SendError> {
        // The frame's span (the caller's) follows the messages into the chat's commit.
        let trace = tracing::Span::current();
        self.submit_to_chat(chat_id, |reply| ChatMessage::Send {
            sender: sender.to_owned(),
            messages: messages.clone(),
            origin,
            trace: trace.clone(),
            reply,
        })
        .await
    }

    /// Queues a cursor move on the chat's actor; see [`Self::submit_send`].
    pub async fn submit_cursor_move(
        self: &Arc<Self>,
        chat_id: &str,
        user: &str,
        kind: CursorKind,
        seq: u64,
    ) -> Result<PendingOutcome<u64>, SendError> {
        self.submit_to_chat(chat_id, |reply| ChatMessage::MoveCursor {
            user: user.to_owned(),
            kind,
            seq,
            reply,
        })
        .await
    }

    async fn submit_to_chat<T, F>(self: &Arc<Self>, chat_id: &str, message: F) -> Result<PendingOutcome<T>, SendError>
    where
        T: Send + 'static,
        F: Fn(ractor::RpcReplyPort<Result<T, SendError>>) -> ChatMessage,
    {
        // A chat that just passivated refuses the message: start a fresh one and retry.
        for _ in 0..2 {
            let chat = self
                .chats
                .get_or_start(chat_id, self)
                .await
                .map_err(|error| internal(format!("starting the chat actor: {error}")))?;
            let (reply, outcome) = ractor::concurrency::oneshot();
            if chat.cast(message(reply.into())).is_ok() {
                return Ok(PendingOutcome { outcome });
            }
            self.chats.forget(chat_id, &chat).await;
        }
        Err(internal("the chat actor is unavailable".to_owned()))
    }

    /// Hands committed messages to every session of `members`, except the socket they
    /// came from: local sessions directly, and one hop per peer hosting any of them. The
    /// deliveries continue the trace of `trace`.
    pub fn deliver(
        &self,
        members: &[String],
        delivery: Arc<DeliveryPayload>,
        except: Option<SessionId>,
        trace: &tracing::Span,
    ) {
        let remote = self.peers.nodes_hosting(members);
        // Only a hop needs the trace as text.
        let traceparent = if remote.is_empty() {
            None
        } else {
            self.trace_propagation.traceparent_of(trace)
        };
        for (node, recipients) in remote {
            let message = PeerMessage::Deliver {
                from: self.peers.node_name().to_owned(),
                recipients,
                delivery: delivery.as_ref().clone(),
                traceparent: traceparent.clone(),
            };
            self.peer_network.send_to(&node, &message);
            self.metrics.messages_delivered.with_label_values(&["remote"]).inc();
        }
        self.deliver_locally(members, delivery, except, trace);
    }

    /// Hands committed messages to the local sessions of `members` only.
    pub fn deliver_locally(
        &self,
        members: &[String],
        delivery: Arc<DeliveryPayload>,
        except: Option<SessionId>,
        trace: &tracing::Span,
    ) {
        for member in members {
            for session in self.sessions.sessions_of(member) {
                if Some(session.session_id) != except {
                    let _ = session
                        .actor
                        .cast(SessionMessage::Deliver(Arc::clone(&delivery), trace.clone()));
                    let count = delivery.messages.len() as u64;
                    self.metrics
                        .messages_delivered
                        .with_label_values(&["local"])
                        .inc_by(count);
                }
            }
        }
    }

    /// Tells every session of `members`, here and on peers, that a cursor moved.
    pub fn notify_status(&self, members: &[String], status: Arc<StatusPayload>) {
        for (node, recipients) in self.peers.nodes_hosting(members) {
            let message = PeerMessage::Status {
                from: self.peers.node_name().to_owned(),
                recipients,
                status: status.as_ref().clone(),
            };
            self.peer_network.send_to(&node, &message);
        }
        self.notify_status_locally(members, status);
    }

    /// Hands a cursor move to every session on this node of each of `members`.
    pub fn notify_status_locally(&self, members: &[String], status: Arc<StatusPayload>) {
        for member in members {
            for session in self.sessions.sessions_of(member) {
                let _ = session.actor.cast(SessionMessage::Status(Arc::clone(&status)));
            }
        }
    }

    /// Hands a presence change to every session on this node of each of `members`.
    pub fn notify_presence_locally(&self, members: &[String], presence: Arc<PresencePayload>) {
        for member in members {
            for session in self.sessions.sessions_of(member) {
                let _ = session.actor.cast(SessionMessage::Presence(Arc::clone(&presence)));
            }
        }
    }

    /// `user` is online somewhere in the cluster (here or on a live peer).
    pub fn online_anywhere(&self, user: &str) -> bool {
        self.sessions.is_online(user) || self.peers.online_on_a_peer(user)
    }

    /// Tells `user`'s companions (everyone sharing a chat with them) that the user went
    /// online or offline. `cluster_wide` also tells companions on peers; a peer's death is
    /// seen by every survivor, so each tells only its own sessions then.
    pub fn announce_presence(&self, user: &str, online: bool, cluster_wide: bool) {
        self.presence.announce(PresenceChange {
            user_id: user.to_owned(),
            online,
            cluster_wide,
        });
    }

    /// A peer died with these users on it: whoever is now offline everywhere is
    /// announced offline to the companions connected here.
    pub fn peer_users_gone(&self, users: Vec<String>) {
        for user in users {
            if !self.online_anywhere(&user) {
                self.announce_presence(&user, false, false);
            }
        }
    }

    /// A sign-in (refresh-token family) was revoked: its access tokens are refused here
    /// from now until `until_ms`, and its sockets here close with 4403. `tell_peers`
    /// (the node where it happened) makes every live peer do the same at once; a peer
    /// that misses it learns it from the database (`revoked_families_since`).
    pub fn sign_out_device(&self, user_id: &str, family_id: &str, until_ms: u64, tell_peers: bool) {
        if self.revoked_families.revoke(family_id, until_ms) {
            for session in self.sessions.sessions_of(user_id) {
                let _ = session.actor.cast(SessionMessage::SignedOut {
                    family_id: family_id.to_owned(),
                });
            }
        }
        if tell_peers {
            self.peer_network.tell_every_peer(&PeerMessage::SignedOut {
                from: self.peers.node_name().to_owned(),
                user_id: user_id.to_owned(),
                family_id: family_id.to_owned(),
                until_ms,
            });
        }
    }

    /// Closes every session with `code` (1001 at shutdown) and stops every chat.
    pub async fn close_all(&self, code: u16, reason: &str) {
        for session in self.sessions.all_sessions() {
            let _ = session.actor.cast(SessionMessage::Close {
                code,
                reason: reason.to_owned(),
            });
        }
        self.chats.stop_all().await;
    }
}

fn internal(message: String) -> SendError {
    SendError::Database(DbError::Unavailable {
        endpoint: "chat".to_owned(),
        reason: message,
    })
}

/// The `send-message` envelope a recipient gets.
pub fn delivery_envelope(delivery: &DeliveryPayload) -> Envelope {
    Envelope::messenger(actions::SEND_MESSAGE, delivery, None)
}
