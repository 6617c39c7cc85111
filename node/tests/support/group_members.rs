//! Group chat test support: the members of a group as the group chat test binaries
//! (`group_chats.rs`, `group_chats_node_kill.rs`) need them. Signed-up users, the HTTP
//! calls of the group API answered whatever the status, a group's whole history and its
//! checks, each member's reconnecting `ChatClient` logged (`MemberLog`) and a member's raw
//! socket (`Watcher`).
//!
//! Included with `#[path = "support/group_members.rs"] mod group_members;` next to
//! `test_app.rs`, whose `connect_live` it uses; not every includer uses every helper.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use parley_client::http::{seed_person, Method, ParleyHttp};
use parley_client::{ApiResponse, ChatClientEvent, MessengerSocket, SocketEvent};
use protocol::messenger::MessageView;
use protocol::websocket::{actions, AckPayload, DeliveredMessage, DeliveryPayload, Envelope, ErrorPayload};
use protocol::websocket::{MessageAck, OutgoingMessage};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::test_app::connect_live;

pub const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "1234567890";
/// Sign-ups and sign-ins hash a password each; more at once only queue on the nodes.
const SIGN_UP_CONCURRENCY: usize = 8;
/// Setup, not the subject: no per-address limits on creating and signing in accounts.
pub const MANY_USERS_ARGS: &[&str] = &[
    "--sign-up-per-address-per-minute",
    "0",
    "--sign-in-per-address-per-minute",
    "0",
    "--max-queued-hashes-per-address",
    "16",
];

/// A signed-up, signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub id: String,
    pub token: String,
}

pub async fn sign_up(http: &ParleyHttp, name: &str, tag: &str) -> User {
    let person = seed_person(name, tag);
    let id = http
        .sign_up_ok(&person)
        .await
        .unwrap_or_else(|error| panic!("signing up {}: {error}", person.email));
    let token = http
        .sign_in(&person.email, PASSWORD)
        .await
        .unwrap_or_else(|error| panic!("signing in {}: {error}", person.email))
        .access_token;
    User {
        name: format!("{name}.{tag}"),
        id,
        token,
    }
}

/// Signs up `(name, tag)` users, a few at a time, in order.
pub async fn sign_up_all(http: &ParleyHttp, people: Vec<(String, String)>) -> Vec<User> {
    stream::iter(people)
        .map(|(name, tag)| async move { sign_up(http, &name, &tag).await })
        .buffered(SIGN_UP_CONCURRENCY)
        .collect()
        .await
}

/// Users named `names`, all with `tag`.
pub async fn sign_up_named(http: &ParleyHttp, names: &[&str], tag: &str) -> Vec<User> {
    let people = names.iter().map(|name| (name.to_string(), tag.to_owned())).collect();
    sign_up_all(http, people).await
}

pub fn ids(users: &[&User]) -> Vec<String> {
    users.iter().map(|user| user.id.clone()).collect()
}

/// Any request with an optional JSON body.
pub async fn call(
    http: &ParleyHttp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> ApiResponse {
    let body = body.map(|body| body.to_string());
    http.request(method.clone(), path, Some(token), body.as_deref())
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

/// A refusal with this status and code, and a message for people.
#[track_caller]
pub fn assert_refused(answer: &ApiResponse, status: u16, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    assert_eq!(answer.body["code"], code, "{what}: {}", answer.body);
    assert!(
        !answer.message().trim().is_empty(),
        "{what}: a refusal explains itself in `message`: {}",
        answer.body
    );
}

pub async fn create_group_raw(http: &ParleyHttp, creator: &User, title: &str, members: &[String]) -> ApiResponse {
    let body = serde_json::json!({ "title": title, "member_ids": members });
    call(
        http,
        Method::POST,
        "/messenger/create-group",
        &creator.token,
        Some(body),
    )
    .await
}

pub async fn add_member_raw(http: &ParleyHttp, adder: &User, chat_id: &str, user_id: &str) -> ApiResponse {
    let path = format!("/messenger/chats/{chat_id}/members");
    let body = serde_json::json!({ "user_id": user_id });
    call(http, Method::POST, &path, &adder.token, Some(body)).await
}

pub async fn remove_member_raw(http: &ParleyHttp, remover: &User, chat_id: &str, user_id: &str) -> ApiResponse {
    let path = format!("/messenger/chats/{chat_id}/members/{user_id}");
    call(http, Method::DELETE, &path, &remover.token, None).await
}

/// The member ids of a group, sorted, as `viewer` sees them.
pub async fn member_ids(http: &ParleyHttp, viewer: &User, chat_id: &str) -> Vec<String> {
    let members = http.group_members(&viewer.token, chat_id).await.unwrap();
    assert_eq!(members.chat_id, chat_id);
    let mut ids: Vec<String> = members.members.into_iter().map(|member| member.user_id).collect();
    ids.sort();
    ids
}

pub fn sorted_ids(users: &[&User]) -> Vec<String> {
    let mut ids = ids(users);
    ids.sort();
    ids
}

/// A chat's whole history as `viewer` may read it (pages of 1,000).
pub async fn history(http: &ParleyHttp, viewer: &User, chat_id: &str) -> Vec<MessageView> {
    let mut messages: Vec<MessageView> = Vec::new();
    loop {
        let offset = messages.last().map_or(0, |message| message.seq);
        let page = http.messages(&viewer.token, chat_id, offset, 1000).await.unwrap();
        let got = page.messages.len();
        messages.extend(page.messages);
        if got < 1000 {
            return messages;
        }
    }
}

pub fn event_kind(message: &MessageView) -> Option<&str> {
    message.event.as_ref().map(|event| event.kind.as_str())
}

/// The history is gap-free from seq 1, and seq 1 is the group's `created` event.
#[track_caller]
pub fn assert_history_gap_free_from_created(messages: &[MessageView], creator: &User) {
    let seqs: Vec<u64> = messages.iter().map(|message| message.seq).collect();
    let expected: Vec<u64> = (1..=messages.len() as u64).collect();
    assert_eq!(seqs, expected, "the group's seqs are gap-free from 1");
    assert_eq!(event_kind(&messages[0]), Some("created"), "seq 1: {:?}", messages[0]);
    assert_eq!(messages[0].user_id, creator.id, "the creator made the group");
}

// ---------------------------------------------------------------------------------------
// Each member's reconnecting client, logged (the 200-member test)
// ---------------------------------------------------------------------------------------

/// What one member's application got of the group.
#[derive(Debug, Default)]
pub struct MemberLog {
    /// Messages handed over, in arrival order: (seq, id).
    pub delivered: Vec<(u64, String)>,
    /// The member's own messages as acked: (client id, seq, id).
    pub acked: Vec<(String, u64, String)>,
    /// When each own message was acked, by client id; how many were written more than once.
    pub acked_at: HashMap<String, Instant>,
    pub acked_after_a_resend: usize,
    /// Every seq held: delivered or own and acked.
    pub held: BTreeSet<u64>,
    /// Refusals and error frames (none expected).
    pub errors: Vec<String>,
}

pub fn collect_member_events(
    chat_id: String,
    mut events: UnboundedReceiver<ChatClientEvent>,
) -> (Arc<Mutex<MemberLog>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(MemberLog::default()));
    let task = tokio::spawn({
        let log = Arc::clone(&log);
        async move {
            while let Some(event) = events.recv().await {
                let mut log = log.lock().unwrap();
                match event {
                    ChatClientEvent::Message(message) if message.chat_id == chat_id => {
                        log.held.insert(message.seq);
                        log.delivered.push((message.seq, message.id));
                    }
                    ChatClientEvent::Message(message) => {
                        log.errors.push(format!("a message of another chat: {message:?}"));
                    }
                    ChatClientEvent::Acked(ack) => {
                        log.held.insert(ack.seq);
                        log.acked_at.insert(ack.client_id.clone(), ack.acked_at);
                        log.acked_after_a_resend += usize::from(ack.times_written > 1);
                        log.acked.push((ack.client_id, ack.seq, ack.id));
                    }
                    ChatClientEvent::SendRefused(refusal) => log.errors.push(format!("{refusal:?}")),
                    ChatClientEvent::ServerError { code, message, .. } => {
                        log.errors.push(format!("error frame {code}: {message}"));
                    }
                    _ => {}
                }
            }
        }
    });
    (log, task)
}

// ---------------------------------------------------------------------------------------
// Raw sockets for the smaller tests
// ---------------------------------------------------------------------------------------

/// One member's raw socket and what it read.
pub struct Watcher {
    pub name: String,
    pub socket: MessengerSocket,
    pub chat_id: String,
    /// Deliveries of the group, in arrival order.
    pub group: Vec<DeliveredMessage>,
    /// Deliveries of other chats.
    pub other_chats: Vec<DeliveredMessage>,
    pub acks: Vec<MessageAck>,
    pub errors: Vec<ErrorPayload>,
}

impl Watcher {
    pub async fn connect(node_url: &str, user: &User, chat_id: &str) -> Watcher {
        let (socket, _, before) = connect_live(node_url, &user.token).await;
        let mut watcher = Watcher {
            name: user.name.clone(),
            socket,
            chat_id: chat_id.to_owned(),
            group: Vec::new(),
            other_chats: Vec::new(),
            acks: Vec::new(),
            errors: Vec::new(),
        };
        for envelope in before {
            watcher.take(envelope);
        }
        watcher
    }

    fn take(&mut self, envelope: Envelope) {
        match envelope.action.as_str() {
            actions::SEND_MESSAGE => {
                let delivery: DeliveryPayload = envelope.decode_payload().unwrap();
                if delivery.chat_id == self.chat_id {
                    self.group.extend(delivery.messages);
                } else {
                    self.other_chats.extend(delivery.messages);
                }
            }
            actions::ACK => self.acks.extend(envelope.decode_payload::<AckPayload>().unwrap().acks),
            actions::ERROR => self.errors.push(envelope.decode_payload().unwrap()),
            _ => {}
        }
    }

    /// Reads until `condition` holds, failing after `WAIT`.
    pub async fn read_until(&mut self, what: &str, condition: impl Fn(&Watcher) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !condition(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.socket.next_event(left).await {
                Ok(SocketEvent::Envelope(envelope)) => self.take(envelope),
                Ok(SocketEvent::Closed(code)) => panic!("{}: closed ({code:?}) while waiting for {what}", self.name),
                Err(error) => panic!(
                    "{}: waiting for {what}: {error}; group seqs so far {:?}, errors {:?}",
                    self.name,
                    self.seqs(),
                    self.errors
                ),
            }
        }
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.group.iter().map(|message| message.seq).collect()
    }

    pub fn holds(&self, seq: u64) -> bool {
        self.group.iter().any(|message| message.seq == seq)
    }

    pub fn at(&self, seq: u64) -> &DeliveredMessage {
        self.group
            .iter()
            .find(|message| message.seq == seq)
            .unwrap_or_else(|| panic!("{} holds no seq {seq}", self.name))
    }

    /// Sends messages into the group and waits for their ack: their seqs.
    pub async fn send_acked(&mut self, texts: &[String]) -> Vec<u64> {
        let messages = texts
            .iter()
            .enumerate()
            .map(|(index, text)| OutgoingMessage {
                text: text.clone(),
                status: None,
                client_id: Some(format!("{}-{}-{index}", self.name, self.acks.len())),
            })
            .collect();
        let acked_before = self.acks.len();
        let chat_id = self.chat_id.clone();
        self.socket.send_messages(&chat_id, messages, None).await.unwrap();
        let wanted = acked_before + texts.len();
        self.read_until("acks", |watcher| watcher.acks.len() >= wanted).await;
        self.acks[acked_before..].iter().map(|ack| ack.seq).collect()
    }

    /// Sends a message the server must refuse; its error frame.
    pub async fn send_refused(&mut self, chat_id: &str, client_id: &str) -> ErrorPayload {
        let message = OutgoingMessage {
            text: format!("{} should not get through", self.name),
            status: None,
            client_id: Some(client_id.to_owned()),
        };
        self.socket.send_messages(chat_id, vec![message], None).await.unwrap();
        self.read_until("the refusal", |watcher| {
            watcher
                .errors
                .iter()
                .any(|error| error.client_ids.iter().any(|id| id == client_id))
        })
        .await;
        self.errors
            .iter()
            .find(|error| error.client_ids.iter().any(|id| id == client_id))
            .cloned()
            .unwrap()
    }

    pub async fn close(self) {
        let _ = self.socket.close().await;
    }
}

pub fn is_event(message: &DeliveredMessage, kind: &str, subject: &User, actor: &User) -> bool {
    message
        .event
        .as_ref()
        .is_some_and(|event| event.kind == kind && event.subject_id == subject.id && message.user_id == actor.id)
}
