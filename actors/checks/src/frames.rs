//! Parsing and checking client frames. Pure logic: every way a frame can be wrong has
//! its own error code, and the error echoes the frame's `ref` and `client_id`s.

use protocol::messenger::status;
use protocol::websocket::{
    actions, CursorPayload, HeartbeatPayload, OutgoingMessage, RenewPayload, SendMessagePayload, TOPIC_MESSENGER,
};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Error codes of websocket `error` frames.
pub mod codes {
    /// The frame is not JSON at all; nothing of it was understood (no `ref` echoed).
    pub const NOT_JSON: &str = "not_json";
    /// JSON, but not an object with `topic`, `action` and `payload` as strings, each key once.
    pub const INVALID_ENVELOPE: &str = "invalid_envelope";
    /// A `topic` other than `messenger`.
    pub const UNKNOWN_TOPIC: &str = "unknown_topic";
    /// An `action` this server does not know (a client newer than the server, or a typo).
    pub const UNKNOWN_ACTION: &str = "unknown_action";
    /// The payload does not decode as the action's payload, or a field breaks a rule
    /// (`chat_id` not a UUID, no messages, a bad `client_id`, control characters in a text).
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    /// A message text that is empty or only whitespace; nothing of the frame was stored.
    pub const EMPTY_TEXT: &str = "empty_text";
    /// A message text over [`super::FrameLimits::max_text_chars`]; nothing of the frame was stored.
    pub const TEXT_TOO_LONG: &str = "text_too_long";
    /// More messages in one frame than [`super::FrameLimits::max_messages_per_frame`]: split them.
    pub const TOO_MANY_MESSAGES: &str = "too_many_messages";
    /// No such chat, or the sender is not a member (one answer for both, so chat ids cannot
    /// be probed).
    pub const CHAT_NOT_FOUND: &str = "chat_not_found";
    /// A binary websocket frame: the protocol is text frames only.
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    /// No database could take the send (e.g. during a failover): send again shortly; a
    /// resend with the same `client_id` is stored once.
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    /// The sender passed its send rate; nothing of the frame was stored.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A `renew` token that is invalid, expired, revoked or another user's; the socket
    /// keeps its old token (and closes when that one expires).
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// An unexpected server-side failure; sending again with the same `client_id` is safe.
    pub const INTERNAL: &str = "internal";
}

/// Limits on what one frame may carry.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Most characters (Unicode scalar values, not bytes) in one message text; 4096 by default.
    pub max_text_chars: usize,
    /// Most messages in one `send-message` frame; 100 by default.
    pub max_messages_per_frame: usize,
    /// Most characters of a `client_id` (which must also be ASCII and not empty); 64 by default.
    pub max_client_id_chars: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_text_chars: 4096,
            max_messages_per_frame: 100,
            max_client_id_chars: 64,
        }
    }
}

/// Which cursor a client report moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// The client's `received` cursor: messages that reached the device.
    Received,
    /// The client's `read` cursor: messages the user has seen (also moves `received`).
    Read,
}

impl CursorKind {
    /// The status name this cursor reports (`received` or `read`), as used in `status` frames.
    pub fn status(self) -> &'static str {
        match self {
            CursorKind::Received => status::RECEIVED,
            CursorKind::Read => status::READ,
        }
    }
}

/// A JSON object whose keys are all distinct. serde_json keeps the last of repeated keys
/// silently; a frame saying `"topic"` twice means two things to two readers, so it is
/// refused instead.
struct UniqueKeyObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueKeyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueKeyObject;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<UniqueKeyObject, A::Error> {
                let mut object = Map::new();
                while let Some(key) = entries.next_key::<String>()? {
                    if object.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("the key {key:?} appears twice")));
                    }
                    let value = entries.next_value::<Value>()?;
                    object.insert(key, value);
                }
                Ok(UniqueKeyObject(object))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// What a valid client frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Store `messages` in `chat_id`, in order, and `ack` them (a `send-message` frame).
    Send {
        /// The frame's `ref`, echoed in the `ack` or `error` answer.
        reference: Option<String>,
        /// The chat, as a canonical lowercase hyphenated UUID whatever form the client wrote.
        chat_id: String,
        /// The messages, already checked: 1 to `max_messages_per_frame`, texts not blank and
        /// within `max_text_chars`, `client_id`s within `max_client_id_chars` ASCII.
        messages: Vec<OutgoingMessage>,
    },
    /// Move the sender's `received` or `read` cursor in a chat (a `received` or `read` frame).
    MoveCursor {
        /// The frame's `ref`, echoed in an `error` answer.
        reference: Option<String>,
        /// The chat, as a canonical lowercase hyphenated UUID.
        chat_id: String,
        /// Which cursor moves.
        kind: CursorKind,
        /// The new cursor value as the client sent it (not checked against the chat here).
        seq: u64,
    },
    /// Answer at once with a `heartbeat` frame: the client is checking that its node is
    /// alive.
    Heartbeat {
        /// The frame's `ref`, echoed in the answer.
        reference: Option<String>,
        /// The client's own number, echoed in the answer.
        sent_at_ms: Option<u64>,
    },
    /// A fresh access token for the socket (checked by the session, not here).
    Renew {
        /// The frame's `ref`, echoed in the `renewed` or `error` answer.
        reference: Option<String>,
        /// The fresh access token, not yet verified.
        access_token: String,
    },
}

/// A refused frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The `error` frame's code: one of [`codes`].
    pub code: &'static str,
    /// Human-readable explanation for the client developer.
    pub message: String,
    /// The frame's `ref` when it could be read, so the client can match the error to its frame.
    pub reference: Option<String>,
    /// The `client_id`s found in the payload even when it was otherwise wrong, so the client
    /// knows which of its pending messages were refused (empty when there were none).
    pub client_ids: Vec<String>,
}

/// Parses one text frame.
pub fn parse_client_frame(text: &str, limits: &FrameLimits) -> Result<ClientCommand, FrameError> {
    let fail = |code, message: String, reference: Option<String>, client_ids| FrameError {
        code,
        message,
        reference,
        client_ids,
    };
    let envelope = match serde_json::from_str::<UniqueKeyObject>(text) {
        Ok(UniqueKeyObject(envelope)) => envelope,
        Err(error) if error.is_data() => {
            return Err(fail(
                codes::INVALID_ENVELOPE,
                format!("the frame must be a JSON object with each key once: {error}"),
                None,
                Vec::new(),
            ))
        }
        Err(error) => {
            return Err(fail(
                codes::NOT_JSON,
                format!("the frame is not JSON: {error}"),
                None,
                Vec::new(),
            ))
        }
    };
    let reference = envelope.get("ref").and_then(Value::as_str).map(str::to_owned);
    let string_field = |name: &str| -> Result<&str, FrameError> {
        match envelope.get(name) {
            Some(Value::String(value)) => Ok(value),
            Some(_) => Err(fail(
                codes::INVALID_ENVELOPE,
                format!("{name} must be a string (payload is a JSON document inside a string)"),
                reference.clone(),
                Vec::new(),
            )),
            None => Err(fail(
                codes::INVALID_ENVELOPE,
                format!("{name} is missing"),
                reference.clone(),
                Vec::new(),
            )),
        }
    };
    let topic = string_field("topic")?;
    let action = string_field("action")?;
    // A heartbeat carries nothing that matters, so its payload may be left out.
    let payload = match envelope.get("payload") {
        None if action == actions::HEARTBEAT => "",
        _ => string_field("payload")?,
    };
    if topic != TOPIC_MESSENGER {
        return Err(fail(
            codes::UNKNOWN_TOPIC,
            format!("unknown topic {topic:?}"),
            reference,
            Vec::new(),
        ));
    }
    match action {
        actions::SEND_MESSAGE => parse_send(payload, reference, limits),
        actions::RECEIVED => parse_cursor(payload, reference, CursorKind::Received),
        actions::READ => parse_cursor(payload, reference, CursorKind::Read),
        actions::HEARTBEAT => parse_heartbeat(payload, reference),
        actions::RENEW => parse_renew(payload, reference),
        other => Err(fail(
            codes::UNKNOWN_ACTION,
            format!("unknown action {other:?}; expected send-message, received, read, heartbeat or renew"),
            reference,
            Vec::new(),
        )),
    }
}

fn invalid_payload(message: String, reference: Option<String>, client_ids: Vec<String>) -> FrameError {
    FrameError {
        code: codes::INVALID_PAYLOAD,
        message,
        reference,
        client_ids,
    }
}

/// The `client_id`s a payload carries, even when the payload is otherwise wrong.
fn client_ids_in(payload: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<Value>(payload) else {
        return Vec::new();
    };
    value
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| message.get("client_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn canonical_chat_id(raw: &str, reference: &Option<String>, client_ids: &[String]) -> Result<String, FrameError> {
    Uuid::parse_str(raw.trim())
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| invalid_payload("chat_id must be a UUID".into(), reference.clone(), client_ids.to_vec()))
}

fn parse_send(payload: &str, reference: Option<String>, limits: &FrameLimits) -> Result<ClientCommand, FrameError> {
    let client_ids = client_ids_in(payload);
    let parsed: SendMessagePayload = serde_json::from_str(payload).map_err(|error| {
        invalid_payload(
            format!("send-message payload must be {{\"chat_id\", \"messages\": [{{\"text\"}}]}}: {error}"),
            reference.clone(),
            client_ids.clone(),
        )
    })?;
    let chat_id = canonical_chat_id(&parsed.chat_id, &reference, &client_ids)?;
    if parsed.messages.is_empty() {
        return Err(invalid_payload(
            "messages must not be empty".into(),
            reference,
            client_ids,
        ));
    }
    if parsed.messages.len() > limits.max_messages_per_frame {
        return Err(FrameError {
            code: codes::TOO_MANY_MESSAGES,
            message: format!("at most {} messages per frame", limits.max_messages_per_frame),
            reference,
            client_ids,
        });
    }
    for message in &parsed.messages {
        if message.text.trim().is_empty() {
            return Err(FrameError {
                code: codes::EMPTY_TEXT,
                message: "a message text must not be empty".into(),
                reference,
                client_ids,
            });
        }
        // Newlines and tabs are text; NUL and the other control characters are not, and
        // would reach every client that renders the message.
        if message
            .text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid_payload(
                "a message text must not contain control characters other than newline and tab".into(),
                reference,
                client_ids,
            ));
        }
        if message.text.chars().count() > limits.max_text_chars {
            return Err(FrameError {
                code: codes::TEXT_TOO_LONG,
                message: format!("a message text must be at most {} characters", limits.max_text_chars),
                reference,
                client_ids,
            });
        }
        if let Some(client_id) = &message.client_id {
            let length = client_id.chars().count();
            if length == 0 || length > limits.max_client_id_chars || !client_id.is_ascii() {
                return Err(invalid_payload(
                    format!("client_id must be 1 to {} ASCII characters", limits.max_client_id_chars),
                    reference,
                    client_ids,
                ));
            }
        }
    }
    Ok(ClientCommand::Send {
        reference,
        chat_id,
        messages: parsed.messages,
    })
}

fn parse_cursor(payload: &str, reference: Option<String>, kind: CursorKind) -> Result<ClientCommand, FrameError> {
    let parsed: CursorPayload = serde_json::from_str(payload).map_err(|error| {
        invalid_payload(
            format!("{} payload must be {{\"chat_id\", \"seq\"}}: {error}", kind.status()),
            reference.clone(),
            Vec::new(),
        )
    })?;
    let chat_id = canonical_chat_id(&parsed.chat_id, &reference, &[])?;
    Ok(ClientCommand::MoveCursor {
        reference,
        chat_id,
        kind,
        seq: parsed.seq,
    })
}

fn parse_heartbeat(payload: &str, reference: Option<String>) -> Result<ClientCommand, FrameError> {
    let parsed = if payload.trim().is_empty() {
        HeartbeatPayload::default()
    } else {
        // Through a Value: serde would also take a struct from a JSON array (`[]`).
        serde_json::from_str::<Value>(payload)
            .and_then(|value| match value {
                Value::Object(_) => serde_json::from_value::<HeartbeatPayload>(value),
                _ => Err(serde::de::Error::custom("not a JSON object")),
            })
            .map_err(|error| {
                invalid_payload(
                    format!("heartbeat payload must be empty or {{\"sent_at_ms\": <non-negative integer>}}: {error}"),
                    reference.clone(),
                    Vec::new(),
                )
            })?
    };
    Ok(ClientCommand::Heartbeat {
        reference,
        sent_at_ms: parsed.sent_at_ms,
    })
}

fn parse_renew(payload: &str, reference: Option<String>) -> Result<ClientCommand, FrameError> {
    match serde_json::from_str::<RenewPayload>(payload) {
        Ok(parsed) if !parsed.access_token.trim().is_empty() => Ok(ClientCommand::Renew {
            reference,
            access_token: parsed.access_token.trim().to_owned(),
        }),
        Ok(_) => Err(invalid_payload(
            "renew payload's access_token is empty".to_owned(),
            reference,
            Vec::new(),
        )),
        Err(error) => Err(invalid_payload(
            format!("renew payload must be {{\"access_token\": <string>}}: {error}"),
            reference,
            Vec::new(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "e8d3dc26-a218-4ca1-ae4b-da38b27ed9b3";

    fn parse(text: &str) -> Result<ClientCommand, FrameError> {
        parse_client_frame(text, &FrameLimits::default())
    }

    fn send_frame(payload: &str) -> String {
        serde_json::json!({"topic": "messenger", "action": "send-message", "payload": payload, "ref": "r7"}).to_string()
    }

    #[test]
    fn the_seeds_frame_is_a_send() {
        let frame = r#"{"topic":"messenger", "action": "send-message", "payload":"{\"chat_id\":\"e8d3dc26-a218-4ca1-ae4b-da38b27ed9b3\", \"messages\":[{\"text\": \"Hello, Alice!\", \"status\": \"created\"}]}"}"#;
        match parse(frame).unwrap() {
            ClientCommand::Send {
                chat_id,
                messages,
                reference,
            } => {
                assert_eq!(chat_id, CHAT);
                assert_eq!(messages[0].text, "Hello, Alice!");
                assert_eq!(reference, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_bad_frame_has_its_own_code_and_echoes_ref_and_client_ids() {
        let long = "x".repeat(5000);
        let many: Vec<_> = (0..101)
            .map(|i| serde_json::json!({"text": "t", "client_id": format!("c{i}")}))
            .collect();
        let cases = [
            ("not json at all".to_owned(), codes::NOT_JSON),
            ("[1, 2]".to_owned(), codes::INVALID_ENVELOPE),
            (
                r#"{"topic":"messenger","action":"send-message"}"#.to_owned(),
                codes::INVALID_ENVELOPE,
            ),
            (
                r#"{"topic":"messenger","action":"send-message","payload":{"chat_id":"x"}}"#.to_owned(),
                codes::INVALID_ENVELOPE,
            ),
            (
                r#"{"topic":"weather","action":"send-message","payload":"{}"}"#.to_owned(),
                codes::UNKNOWN_TOPIC,
            ),
            (
                r#"{"topic":"messenger","action":"dance","payload":"{}"}"#.to_owned(),
                codes::UNKNOWN_ACTION,
            ),
            (send_frame("not json"), codes::INVALID_PAYLOAD),
            (
                send_frame(r#"{"chat_id":"nope","messages":[{"text":"a","client_id":"c1"}]}"#),
                codes::INVALID_PAYLOAD,
            ),
            (
                send_frame(&format!(r#"{{"chat_id":"{CHAT}","messages":[]}}"#)),
                codes::INVALID_PAYLOAD,
            ),
            (
                send_frame(&format!(
                    r#"{{"chat_id":"{CHAT}","messages":[{{"text":"  ","client_id":"c1"}}]}}"#
                )),
                codes::EMPTY_TEXT,
            ),
            (
                send_frame(&format!(r#"{{"chat_id":"{CHAT}","messages":[{{"text":"{long}"}}]}}"#)),
                codes::TEXT_TOO_LONG,
            ),
            (
                send_frame(&serde_json::json!({"chat_id": CHAT, "messages": many}).to_string()),
                codes::TOO_MANY_MESSAGES,
            ),
            (
                send_frame(&format!(r#"{{"chat_id":"{CHAT}","messages":[{{"text":7}}]}}"#)),
                codes::INVALID_PAYLOAD,
            ),
        ];
        for (frame, code) in cases {
            let error = parse(&frame).unwrap_err();
            assert_eq!(error.code, code, "{frame:.80}: {}", error.message);
            assert!(!error.message.is_empty());
        }
        let error = parse(&send_frame(
            r#"{"chat_id":"nope","messages":[{"text":"a","client_id":"c1"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(error.reference.as_deref(), Some("r7"));
        assert_eq!(error.client_ids, ["c1"]);
    }

    #[test]
    fn cursor_reports_parse() {
        let frame = serde_json::json!({"topic": "messenger", "action": "read", "payload": format!(r#"{{"chat_id":"{CHAT}","seq":4}}"#)});
        assert_eq!(
            parse(&frame.to_string()).unwrap(),
            ClientCommand::MoveCursor {
                reference: None,
                chat_id: CHAT.into(),
                kind: CursorKind::Read,
                seq: 4
            }
        );
    }

    #[test]
    fn heartbeats_parse_with_or_without_a_payload_and_bad_payloads_are_refused() {
        let heartbeat = |payload: Option<&str>| {
            let mut frame = serde_json::json!({"topic": "messenger", "action": "heartbeat", "ref": "h1"});
            if let Some(payload) = payload {
                frame["payload"] = payload.into();
            }
            parse(&frame.to_string())
        };
        for payload in [None, Some(""), Some("{}")] {
            assert_eq!(
                heartbeat(payload).unwrap(),
                ClientCommand::Heartbeat {
                    reference: Some("h1".into()),
                    sent_at_ms: None
                },
                "{payload:?}"
            );
        }
        assert_eq!(
            heartbeat(Some(r#"{"sent_at_ms":1700000000000}"#)).unwrap(),
            ClientCommand::Heartbeat {
                reference: Some("h1".into()),
                sent_at_ms: Some(1_700_000_000_000)
            }
        );
        for payload in [
            "nope",
            "[]",
            r#"{"sent_at_ms":-1}"#,
            r#"{"sent_at_ms":"soon"}"#,
            r#"{"pong":1}"#,
        ] {
            let error = heartbeat(Some(payload)).unwrap_err();
            assert_eq!(error.code, codes::INVALID_PAYLOAD, "{payload}");
            assert_eq!(error.reference.as_deref(), Some("h1"));
        }
        // Only a heartbeat may leave its payload out.
        let cursor = serde_json::json!({"topic": "messenger", "action": "read"}).to_string();
        assert_eq!(parse(&cursor).unwrap_err().code, codes::INVALID_ENVELOPE);
    }

    #[test]
    fn renew_frames_carry_a_token_and_bad_ones_are_refused() {
        let renew =
            r#"{"topic":"messenger","action":"renew","payload":"{\"access_token\":\" abc.def.ghi \"}","ref":"r1"}"#;
        assert_eq!(
            parse(renew).unwrap(),
            ClientCommand::Renew {
                reference: Some("r1".to_owned()),
                access_token: "abc.def.ghi".to_owned()
            }
        );
        for payload in [
            r#"{}"#,
            r#"{\"access_token\":\"  \"}"#,
            r#"{\"access_token\":7}"#,
            "nope",
        ] {
            let frame = format!(r#"{{"topic":"messenger","action":"renew","payload":"{payload}"}}"#);
            assert_eq!(parse(&frame).unwrap_err().code, codes::INVALID_PAYLOAD, "{frame}");
        }
    }

    #[test]
    fn control_characters_are_refused_but_newlines_tabs_and_emoji_are_text() {
        let with_text = |text: &str| {
            let payload = serde_json::json!({"chat_id": CHAT, "messages": [{"text": text}]}).to_string();
            parse(&send_frame(&payload))
        };
        for text in ["a\0b", "bell\u{7}", "esc\u{1b}[31m", "del\u{7f}"] {
            let error = with_text(text).unwrap_err();
            assert_eq!(error.code, codes::INVALID_PAYLOAD, "{text:?}");
        }
        for text in ["line one\nline two\ttabbed\r\n", "héllo 👋 мир", "' OR 1=1 --"] {
            assert!(with_text(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn an_envelope_repeating_a_key_is_refused_whatever_the_order() {
        let frame = r#"{"topic":"messenger","action":"send-message","topic":"weather","payload":"{}"}"#;
        let error = parse(frame).unwrap_err();
        assert_eq!(error.code, codes::INVALID_ENVELOPE);
        assert!(error.message.contains("topic"), "{}", error.message);
        assert_eq!(parse("[1]").unwrap_err().code, codes::INVALID_ENVELOPE);
        assert_eq!(parse("{\"topic\":").unwrap_err().code, codes::NOT_JSON);
    }
}
