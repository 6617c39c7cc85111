//! Arbitrary bytes as a client's websocket text frame, through the node's frame parser.
//!
//! A session hands every text frame to `parse_client_frame` before anything else, so
//! whatever a client sends must come back as a command or as an error frame, never as
//! a panic that kills the session actor. Beyond not panicking, the parser's contract:
//! an error carries one of the parser's own codes and a message; an accepted frame
//! respects every limit and names its chat by a canonical UUID.

#![no_main]

use checks::frames::{codes, parse_client_frame, ClientCommand, FrameLimits};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// The codes the parser itself may answer with; the others (`chat_not_found`,
/// `database_unavailable`, ...) come from later stages and must never come from here.
const PARSER_ERROR_CODES: &[&str] = &[
    codes::NOT_JSON,
    codes::INVALID_ENVELOPE,
    codes::UNKNOWN_TOPIC,
    codes::UNKNOWN_ACTION,
    codes::INVALID_PAYLOAD,
    codes::EMPTY_TEXT,
    codes::TEXT_TOO_LONG,
    codes::TOO_MANY_MESSAGES,
];

/// Small limits as well as the defaults, so inputs of a few hundred bytes reach the
/// "too long" and "too many" branches and their boundaries.
const SMALL_LIMITS: FrameLimits = FrameLimits {
    max_text_chars: 8,
    max_messages_per_frame: 3,
    max_client_id_chars: 4,
};

fuzz_target!(|bytes: &[u8]| {
    // A websocket text frame is UTF-8 by the protocol (tungstenite refuses anything
    // else before the session sees it), so only valid UTF-8 reaches the parser.
    let Ok(frame_text) = std::str::from_utf8(bytes) else {
        return;
    };
    check_frame(frame_text, &FrameLimits::default());
    check_frame(frame_text, &SMALL_LIMITS);
});

fn check_frame(frame_text: &str, limits: &FrameLimits) {
    let outcome = parse_client_frame(frame_text, limits);
    // The client matches answers to frames by `ref`: whatever the outcome, a frame that
    // is a JSON object with a string `ref` gets it back, and no other frame gets one.
    let sent_reference = serde_json::from_str::<serde_json::Value>(frame_text)
        .ok()
        .and_then(|frame| frame.get("ref")?.as_str().map(str::to_owned));
    let echoed_reference = match &outcome {
        Err(error) => &error.reference,
        Ok(
            ClientCommand::Send { reference, .. }
            | ClientCommand::MoveCursor { reference, .. }
            | ClientCommand::Heartbeat { reference, .. }
            | ClientCommand::Renew { reference, .. },
        ) => reference,
    };
    // A frame repeating a key is refused before any field is read: which `ref` it meant
    // is exactly what cannot be told.
    let repeats_a_key = matches!(&outcome, Err(error) if error.message.contains("appears twice"));
    if !repeats_a_key {
        assert_eq!(echoed_reference, &sent_reference, "ref not echoed for {frame_text:?}");
    }
    match outcome {
        Err(error) => {
            assert!(
                PARSER_ERROR_CODES.contains(&error.code),
                "unknown error code {:?} for {frame_text:?}",
                error.code
            );
            assert!(
                !error.message.is_empty(),
                "an error without a message for {frame_text:?}"
            );
        }
        Ok(ClientCommand::Send { chat_id, messages, .. }) => {
            assert_canonical_uuid(&chat_id);
            assert!(!messages.is_empty(), "an accepted send without messages");
            assert!(
                messages.len() <= limits.max_messages_per_frame,
                "{} messages accepted, limit {}",
                messages.len(),
                limits.max_messages_per_frame
            );
            for message in &messages {
                assert!(!message.text.trim().is_empty(), "a blank text accepted");
                assert!(
                    message.text.chars().count() <= limits.max_text_chars,
                    "a text of {} characters accepted, limit {}",
                    message.text.chars().count(),
                    limits.max_text_chars
                );
                if let Some(client_id) = &message.client_id {
                    let length = client_id.chars().count();
                    assert!(
                        (1..=limits.max_client_id_chars).contains(&length) && client_id.is_ascii(),
                        "client_id {client_id:?} accepted"
                    );
                }
            }
        }
        Ok(ClientCommand::MoveCursor { chat_id, .. }) => assert_canonical_uuid(&chat_id),
        Ok(ClientCommand::Heartbeat { .. }) => {}
        Ok(ClientCommand::Renew { access_token, .. }) => {
            assert!(
                !access_token.is_empty() && access_token.trim() == access_token,
                "renew accepted with a blank or untrimmed token {access_token:?}"
            );
        }
    }
}

/// The chat id the store and the chat directory key by: lowercase, hyphenated, and
/// unchanged by canonicalising it again.
fn assert_canonical_uuid(chat_id: &str) {
    let reparsed = Uuid::parse_str(chat_id).unwrap_or_else(|_| panic!("accepted chat_id {chat_id:?} is not a UUID"));
    assert_eq!(reparsed.hyphenated().to_string(), chat_id, "chat_id is not canonical");
}
