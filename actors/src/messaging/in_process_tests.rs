//! The messaging actors in-process, on the in-memory storage: sessions with their
//! outbound queues read by a test writer instead of a socket, chats committing to memory.
//! No database server, no node, no network: `cargo test -p parley-actors` runs these.
//! The real-process tests (node/tests, simulations/tests) remain the proof.

use std::sync::Arc;
use std::time::Duration;

use protocol::websocket::{
    actions, close_codes, AckPayload, DeliveryPayload, Envelope, ErrorPayload, OutgoingMessage, PresencePayload,
    SendMessagePayload,
};
use ractor::{Actor, ActorRef};

use super::messaging_supervisor::MessagingSupervisor;
use tokio::sync::mpsc;

use super::device_access::{
    unix_now_ms, AccessGrant, AccessRefused, AccessTokenCheck, RevokedFamilies, SocketExpiry, SocketGrant,
};
use super::frames::FrameLimits;
use super::outbound::{OutboundFrame, OutboundQueue, OutboundReceiver};
use super::session::{FrameInFlight, Session, SessionArguments, SessionMessage};
use super::storage::in_memory::InMemoryStorage;
use super::{MessagingLimits, MessagingServices};
use crate::cluster::peer_network::in_process::InProcessNetwork;
use crate::cluster::peers::Peers;
use crate::metrics::Metrics;
use crate::rate_limits::KeyedRateLimiter;
use crate::trace_context::NoTracePropagation;

mod delivery_gaps;
mod groups;
mod paused_time;
mod two_nodes;

const WAIT: Duration = Duration::from_secs(5);
const PEER_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);
const CHAT: &str = "6a3b2f50-7d0c-4a4e-9f0e-0d1f8c2b3a41";

/// Takes `good-token-<user>-<family>` for that user and family; refuses anything else.
struct TestTokens;

impl AccessTokenCheck for TestTokens {
    fn check_access(&self, token: &str) -> Result<AccessGrant, AccessRefused> {
        // A bug in the token check, for the supervision test.
        assert_ne!(token, "panic", "the test made this token check panic");
        let mut parts = token
            .strip_prefix("good-token-")
            .ok_or(AccessRefused::Invalid)?
            .split('-');
        let (Some(user), Some(family)) = (parts.next(), parts.next()) else {
            return Err(AccessRefused::Invalid);
        };
        Ok(AccessGrant {
            user_id: user.to_owned(),
            family_id: Some(family.to_owned()),
            expires_at_ms: unix_now_ms() + 60_000,
        })
    }
}

/// One node's messaging services on `storage`, no send limit, alone on its network.
fn services_on(storage: Arc<InMemoryStorage>) -> Arc<MessagingServices> {
    node_on(storage, &InProcessNetwork::new())
}

/// One node's messaging services on `storage`, joined to `network`; peers are declared
/// dead after 5 s of silence.
fn node_on(storage: Arc<InMemoryStorage>, network: &Arc<InProcessNetwork>) -> Arc<MessagingServices> {
    let node = format!("node-{}", uuid::Uuid::new_v4().simple());
    let incarnation = format!("{node}#test");
    let services = MessagingServices::new(
        node,
        Peers::new(incarnation.clone(), PEER_FAILURE_TIMEOUT),
        network.endpoint(&incarnation),
        storage,
        MessagingLimits {
            frame_limits: FrameLimits::default(),
            outbound_capacity: 10_000,
            send_limit: KeyedRateLimiter::new(0, 0),
            revoked_families: Arc::new(RevokedFamilies::default()),
            access_check: Arc::new(TestTokens),
        },
        Arc::new(Metrics::new()),
        Arc::new(NoTracePropagation),
    );
    network.attach(&services);
    services
}

/// Bob and Alice's chat in fresh storage, and one node's services on it.
fn bob_and_alice() -> (Arc<InMemoryStorage>, Arc<MessagingServices>) {
    let storage = Arc::new(InMemoryStorage::default());
    storage.create_chat(CHAT, &["bob", "alice"]);
    let services = services_on(Arc::clone(&storage));
    (storage, services)
}

/// A session with a test writer in place of the socket.
struct TestSocket {
    session: ActorRef<SessionMessage>,
    frames: mpsc::UnboundedReceiver<Envelope>,
    closed: tokio::sync::oneshot::Receiver<u16>,
}

impl TestSocket {
    async fn open(services: &Arc<MessagingServices>, user: &str, grant: SocketGrant) -> TestSocket {
        let (queue, receiver) = OutboundQueue::new(services.outbound_capacity);
        let (frames, closed) = write_frames(receiver);
        let arguments = SessionArguments {
            user_id: user.to_owned(),
            outbound: queue,
            services: Arc::clone(services),
            grant,
        };
        let session = services
            .spawn_supervised(Session, arguments)
            .await
            .expect("session starts");
        TestSocket {
            session,
            frames,
            closed,
        }
    }

    /// Opened and past its replay: the frames before `replay-complete`.
    async fn live(services: &Arc<MessagingServices>, user: &str) -> (TestSocket, Vec<Envelope>) {
        let mut socket = TestSocket::open(services, user, SocketGrant::unlimited()).await;
        let replayed = socket.until(actions::REPLAY_COMPLETE).await;
        (socket, replayed)
    }

    fn send_text(&self, text: String) {
        self.session
            .cast(SessionMessage::ClientText(text, FrameInFlight::unbounded()))
            .expect("session alive");
    }

    /// Sends `texts` in one frame to Bob and Alice's chat.
    fn send(&self, texts: &[&str], client_id: Option<&str>) {
        self.send_to(CHAT, texts, client_id);
    }

    fn send_to(&self, chat_id: &str, texts: &[&str], client_id: Option<&str>) {
        let payload = SendMessagePayload {
            chat_id: chat_id.to_owned(),
            messages: texts
                .iter()
                .map(|text| OutgoingMessage {
                    text: text.to_string(),
                    status: None,
                    client_id: client_id.map(str::to_owned),
                })
                .collect(),
        };
        self.send_text(Envelope::messenger(actions::SEND_MESSAGE, &payload, None).to_text());
    }

    async fn next(&mut self) -> Envelope {
        self.next_within(WAIT).await
    }

    async fn next_within(&mut self, within: Duration) -> Envelope {
        tokio::time::timeout(within, self.frames.recv())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
    }

    /// Frames until one of `action`, which is returned last.
    async fn until(&mut self, action: &str) -> Vec<Envelope> {
        self.until_within(action, WAIT).await
    }

    /// Frames until one of `action`, each within `within` of the one before.
    async fn until_within(&mut self, action: &str, within: Duration) -> Vec<Envelope> {
        let mut seen = Vec::new();
        loop {
            let frame = self.next_within(within).await;
            let done = frame.action == action;
            seen.push(frame);
            if done {
                return seen;
            }
        }
    }

    /// The payload of the next frame of `action` (frames before it are skipped).
    async fn payload_of<T: serde::de::DeserializeOwned>(&mut self, action: &str) -> T {
        self.payload_within(action, WAIT).await
    }

    /// [`TestSocket::payload_of`], each frame within `within` of the one before.
    async fn payload_within<T: serde::de::DeserializeOwned>(&mut self, action: &str, within: Duration) -> T {
        let frame = self
            .until_within(action, within)
            .await
            .pop()
            .expect("the awaited frame");
        frame
            .decode_payload()
            .unwrap_or_else(|error| panic!("a {action} payload: {error}"))
    }

    async fn close_code(self) -> u16 {
        tokio::time::timeout(WAIT, self.closed)
            .await
            .expect("closed in time")
            .expect("a close code")
    }
}

/// Drains the outbound queue as the node's writer does (replay frames count as flushed
/// once taken), decoding each frame; the close code arrives on the second channel.
fn write_frames(
    receiver: OutboundReceiver,
) -> (mpsc::UnboundedReceiver<Envelope>, tokio::sync::oneshot::Receiver<u16>) {
    let (frames_out, frames) = mpsc::unbounded_channel();
    let (close_out, closed) = tokio::sync::oneshot::channel();
    let OutboundReceiver {
        frames: mut queued,
        close,
        replay_pacing,
        ..
    } = receiver;
    tokio::spawn(async move {
        let mut close = close;
        loop {
            tokio::select! {
                biased;
                frame = queued.recv() => match frame {
                    Some(OutboundFrame::Text(text)) => {
                        let _ = frames_out.send(serde_json::from_str(&text).expect("an envelope"));
                    }
                    Some(OutboundFrame::Replay(text)) => {
                        let _ = frames_out.send(serde_json::from_str(&text).expect("an envelope"));
                        replay_pacing.flushed(1);
                    }
                    Some(OutboundFrame::Ping) => {}
                    None => {
                        // Every producer is gone; a close asked for before still counts.
                        if let Ok(request) = close.try_recv() {
                            let _ = close_out.send(request.code);
                        }
                        return;
                    }
                },
                request = &mut close => {
                    if let Ok(request) = request {
                        let _ = close_out.send(request.code);
                    }
                    return;
                }
            }
        }
    });
    (frames, closed)
}

fn deliveries(frames: &[Envelope]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter(|frame| frame.action == actions::SEND_MESSAGE)
        .flat_map(|frame| frame.decode_payload::<DeliveryPayload>().expect("a delivery").messages)
        .map(|message| (message.seq, message.text))
        .collect()
}

#[tokio::test]
async fn a_reconnect_during_a_stream_of_commits_gets_every_message_once_in_order() {
    let (storage, services) = bob_and_alice();
    let (mut bob, _) = TestSocket::live(&services, "bob").await;
    // Half before Alice connects (the replay), half while she registers and replays
    // (held back and released after it, without the ones the replay had).
    for index in 0..100 {
        bob.send(&[&format!("m{index}")], None);
    }
    let mut alice = TestSocket::open(&services, "alice", SocketGrant::unlimited()).await;
    for index in 100..200 {
        bob.send(&[&format!("m{index}")], None);
    }
    let mut acked = 0;
    while acked < 200 {
        if bob.next().await.action == actions::ACK {
            acked += 1;
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.extend(deliveries(&[alice.next().await]));
    }
    let expected: Vec<(u64, String)> = (0..200).map(|index| (index + 1, format!("m{index}"))).collect();
    assert_eq!(
        seen, expected,
        "every message once, in seq order, across the replay's seam"
    );
    assert_eq!(storage.messages(CHAT).len(), 200);
}

#[tokio::test]
async fn frames_are_acked_in_order_and_a_resend_is_stored_once_with_the_original_ack() {
    let (storage, services) = bob_and_alice();
    let (mut bob, _) = TestSocket::live(&services, "bob").await;
    for index in 0..20 {
        bob.send(&[&format!("a{index}"), &format!("b{index}")], None);
    }
    let mut seqs = Vec::new();
    while seqs.len() < 40 {
        let frame = bob.next().await;
        if frame.action == actions::ACK {
            let ack: AckPayload = frame.decode_payload().unwrap();
            seqs.extend(ack.acks.iter().map(|ack| ack.seq));
        }
    }
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>(), "acks in frame order, gap-free");

    bob.send(&["once"], Some("client-1"));
    bob.send(&["once"], Some("client-1"));
    let first = bob.until(actions::ACK).await.pop().unwrap();
    let second = bob.until(actions::ACK).await.pop().unwrap();
    let first: AckPayload = first.decode_payload().unwrap();
    let second: AckPayload = second.decode_payload().unwrap();
    assert_eq!(
        first.acks, second.acks,
        "the resend is acked with the original id and seq"
    );
    assert_eq!(storage.messages(CHAT).len(), 41, "stored once");
}

#[tokio::test]
async fn a_send_while_the_database_is_down_is_refused_and_stored_once_when_resent() {
    let (storage, services) = bob_and_alice();
    let (mut bob, _) = TestSocket::live(&services, "bob").await;
    storage.set_unavailable(true);
    bob.send(&["hello"], Some("client-7"));
    let refused = bob.until(actions::ERROR).await.pop().unwrap();
    let error: ErrorPayload = refused.decode_payload().unwrap();
    assert_eq!(error.code, "database_unavailable");
    assert_eq!(error.client_ids, vec!["client-7".to_owned()]);
    storage.set_unavailable(false);
    bob.send(&["hello"], Some("client-7"));
    bob.until(actions::ACK).await;
    assert_eq!(storage.messages(CHAT).len(), 1);
}

#[tokio::test]
async fn companions_hear_presence_and_a_non_member_cannot_send() {
    let (storage, services) = bob_and_alice();
    let (mut bob, _) = TestSocket::live(&services, "bob").await;
    let (alice, _) = TestSocket::live(&services, "alice").await;
    let online: PresencePayload = bob.payload_of(actions::PRESENCE).await;
    assert_eq!((online.user_id.as_str(), online.online), ("alice", true));
    alice.session.stop(None);
    let offline: PresencePayload = bob.payload_of(actions::PRESENCE).await;
    assert_eq!((offline.user_id.as_str(), offline.online), ("alice", false));

    let (mut mallory, _) = TestSocket::live(&services, "mallory").await;
    mallory.send(&["let me in"], None);
    let refused: ErrorPayload = mallory.payload_of(actions::ERROR).await;
    assert_eq!(refused.code, "chat_not_found");
    assert!(storage.messages(CHAT).is_empty());
}

#[tokio::test]
async fn a_sign_out_closes_that_sign_ins_sockets_only_and_a_renewal_moves_a_socket_to_its_sign_in() {
    let (_storage, services) = bob_and_alice();
    let grant = |family: &str| SocketGrant {
        family_id: Some(family.to_owned()),
        expiry: SocketExpiry::at(unix_now_ms() + 60_000),
    };
    let mut phone = TestSocket::open(&services, "bob", grant("phone")).await;
    phone.until(actions::REPLAY_COMPLETE).await;
    let mut laptop = TestSocket::open(&services, "bob", grant("laptop")).await;
    laptop.until(actions::REPLAY_COMPLETE).await;
    let mut moved = TestSocket::open(&services, "bob", grant("phone")).await;
    moved.until(actions::REPLAY_COMPLETE).await;

    // Refused renewals change nothing; a good one moves the socket to the laptop's sign-in.
    for (token, what) in [("nonsense", "garbage"), ("good-token-alice-x", "another user's")] {
        moved.send_text(renew(token));
        let refused: ErrorPayload = moved.payload_of(actions::ERROR).await;
        assert_eq!(refused.code, "invalid_token", "{what}");
    }
    moved.send_text(renew("good-token-bob-laptop"));
    moved.until(actions::RENEWED).await;

    services.sign_out_device("bob", "phone", unix_now_ms() + 60_000, false);
    assert_eq!(phone.close_code().await, close_codes::SIGNED_OUT);
    assert!(services.revoked_families.is_revoked("phone"));
    // Still served: a heartbeat is answered.
    for socket in [&mut laptop, &mut moved] {
        socket.send_text(r#"{"topic":"messenger","action":"heartbeat","payload":""}"#.to_owned());
        socket.until(actions::HEARTBEAT).await;
    }
    // A socket opened on a revoked sign-in (it raced the sign-out) closes at once.
    let late = TestSocket::open(&services, "bob", grant("phone")).await;
    assert_eq!(late.close_code().await, close_codes::SIGNED_OUT);
}

fn renew(token: &str) -> String {
    Envelope::messenger(
        actions::RENEW,
        &protocol::websocket::RenewPayload {
            access_token: token.to_owned(),
        },
        None,
    )
    .to_text()
}

#[tokio::test]
async fn a_failing_session_or_chat_takes_no_one_else_down() {
    const OTHER_CHAT: &str = "7b4c3061-8e1d-4b5f-a01f-1e2f9d3c4b52";
    let storage = Arc::new(InMemoryStorage::default());
    storage.create_chat(CHAT, &["bob", "alice"]);
    storage.create_chat(OTHER_CHAT, &["carol", "dave"]);
    let services = services_on(Arc::clone(&storage));
    let (supervisor, _) = Actor::spawn(None, MessagingSupervisor, Arc::clone(&services))
        .await
        .unwrap();
    let (mut bob, _) = TestSocket::live(&services, "bob").await;
    let (alice_phone, _) = TestSocket::live(&services, "alice").await;
    let (mut alice_laptop, _) = TestSocket::live(&services, "alice").await;
    let (mut carol, _) = TestSocket::live(&services, "carol").await;

    // A session fails: its socket is closed with 1011 and it leaves the registry; the
    // same user's other socket and everyone else go on.
    alice_phone.send_text(renew("panic"));
    assert_eq!(alice_phone.close_code().await, 1011);
    assert_eq!(services.sessions.sessions_of("alice").len(), 1);
    bob.send(&["after the session failed"], None);
    bob.until(actions::ACK).await;
    let delivered = alice_laptop.until(actions::SEND_MESSAGE).await;
    assert_eq!(deliveries(&delivered), vec![(1, "after the session failed".to_owned())]);

    // A chat fails mid-commit: its sender is told to resend, another chat commits
    // meanwhile, and the resend starts a fresh chat actor and is stored once.
    storage.panic_on_next_commit(CHAT);
    bob.send(&["doomed"], Some("client-doomed"));
    let refused: ErrorPayload = bob.payload_of(actions::ERROR).await;
    assert_eq!(refused.client_ids, vec!["client-doomed".to_owned()], "{refused:?}");
    carol.send_to(OTHER_CHAT, &["unaffected"], None);
    carol.until(actions::ACK).await;
    bob.send(&["doomed"], Some("client-doomed"));
    bob.until(actions::ACK).await;
    let delivered = alice_laptop.until(actions::SEND_MESSAGE).await;
    assert_eq!(deliveries(&delivered), vec![(2, "doomed".to_owned())]);
    assert_eq!(storage.messages(CHAT).len(), 2);

    let failures = ractor::call!(
        supervisor,
        super::messaging_supervisor::MessagingSupervisorMessage::Failures
    )
    .unwrap();
    assert_eq!(failures, 2);
    let counted = |kind: &str| services.metrics.actor_failures.with_label_values(&[kind]).get();
    assert_eq!((counted("session"), counted("chat")), (1, 1));
}
