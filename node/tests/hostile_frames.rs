//! The hostile-input table over the websocket: SQL injection strings, NUL and control
//! characters, lone surrogates, huge, negative and wrongly typed numbers, duplicate keys,
//! wrong JSON types, invalid UTF-8, and tokens a socket may not renew with. Every row asserts its error frame (or close code)
//! and that no table changed; the socket, and every other user's, keeps working.

#[path = "support/data_snapshot.rs"]
mod data_snapshot;
#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use data_snapshot::DataSnapshot;
use protocol::websocket::{actions, AckPayload, DeliveryPayload, ErrorPayload};
use test_app::{connect_live, shared_servers, text_message, Pair, TestApp};

const BINARY: &str = "hostile_frames";
const WAIT: Duration = Duration::from_secs(10);

fn envelope(action: &str, payload: &str) -> String {
    serde_json::json!({"topic": "messenger", "action": action, "payload": payload}).to_string()
}

fn send_payload(chat_id: &str, text: &str) -> String {
    serde_json::json!({"chat_id": chat_id, "messages": [{"text": text}]}).to_string()
}

#[tokio::test]
async fn hostile_frames_get_error_frames_and_change_nothing() {
    let servers = shared_servers(BINARY).await;
    let pair = Pair::in_app(TestApp::spawn(servers, 1).await, "frames").await;
    let chat = pair.chat_id.as_str();
    let (mut bob, _, _) = connect_live(pair.app.http.base_url(), &pair.bob).await;
    let bob_refresh = pair
        .app
        .http
        .sign_in("bob.frames@email.com", "1234567890")
        .await
        .unwrap()
        .refresh_token;
    let snapshot = DataSnapshot::take(servers, &pair.app.database).await;

    let injections = ["' OR '1'='1", "'; DROP TABLE messages; --", "1; SELECT SLEEP(5)"];
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    for injection in injections {
        rows.push((
            format!("send to chat {injection}"),
            envelope(actions::SEND_MESSAGE, &send_payload(injection, "hi")),
            "invalid_payload",
        ));
        rows.push((
            format!("received in chat {injection}"),
            envelope(
                actions::RECEIVED,
                &serde_json::json!({"chat_id": injection, "seq": 1}).to_string(),
            ),
            "invalid_payload",
        ));
        rows.push((
            format!("action {injection}"),
            envelope(injection, "{}"),
            "unknown_action",
        ));
        rows.push((
            format!("renew with token {injection}"),
            envelope(
                actions::RENEW,
                &serde_json::json!({"access_token": injection}).to_string(),
            ),
            "invalid_token",
        ));
    }
    rows.extend([
        (
            "renew with a number for a token".to_owned(),
            envelope(actions::RENEW, r#"{"access_token":12}"#),
            "invalid_payload",
        ),
        (
            "renew with a refresh token".to_owned(),
            envelope(
                actions::RENEW,
                &serde_json::json!({"access_token": bob_refresh}).to_string(),
            ),
            "invalid_token",
        ),
        (
            "renew with another user's token".to_owned(),
            envelope(
                actions::RENEW,
                &serde_json::json!({"access_token": pair.alice}).to_string(),
            ),
            "invalid_token",
        ),
    ]);
    let cursor = |seq: &str| envelope(actions::RECEIVED, &format!(r#"{{"chat_id":"{chat}","seq":{seq}}}"#));
    rows.extend([
        (
            "NUL in a text".to_owned(),
            envelope(actions::SEND_MESSAGE, &send_payload(chat, "a\u{0}b")),
            "invalid_payload",
        ),
        (
            "escape sequence in a text".to_owned(),
            envelope(actions::SEND_MESSAGE, &send_payload(chat, "\u{1b}[2J")),
            "invalid_payload",
        ),
        (
            "lone surrogate in the payload".to_owned(),
            envelope(
                actions::SEND_MESSAGE,
                &send_payload(chat, "x").replace("\"x\"", "\"\\ud800\""),
            ),
            "invalid_payload",
        ),
        (
            "lone surrogate in the envelope".to_owned(),
            r#"{"topic":"messenger","action":"\ud800","payload":"{}"}"#.to_owned(),
            "not_json",
        ),
        (
            "seq past u64".to_owned(),
            cursor("18446744073709551616"),
            "invalid_payload",
        ),
        (
            "seq of 400 digits".to_owned(),
            cursor(&"9".repeat(400)),
            "invalid_payload",
        ),
        ("negative seq".to_owned(), cursor("-1"), "invalid_payload"),
        ("fractional seq".to_owned(), cursor("1.5"), "invalid_payload"),
        ("seq as a string".to_owned(), cursor("\"5\""), "invalid_payload"),
        ("seq as null".to_owned(), cursor("null"), "invalid_payload"),
        (
            "text as a number".to_owned(),
            envelope(
                actions::SEND_MESSAGE,
                &format!(r#"{{"chat_id":"{chat}","messages":[{{"text":42}}]}}"#),
            ),
            "invalid_payload",
        ),
        (
            "messages as a string".to_owned(),
            envelope(
                actions::SEND_MESSAGE,
                &format!(r#"{{"chat_id":"{chat}","messages":"hi"}}"#),
            ),
            "invalid_payload",
        ),
        (
            "topic as a number".to_owned(),
            r#"{"topic":1,"action":"read","payload":"{}"}"#.to_owned(),
            "invalid_envelope",
        ),
        ("frame as an array".to_owned(), "[]".to_owned(), "invalid_envelope"),
        ("frame as null".to_owned(), "null".to_owned(), "invalid_envelope"),
        (
            "duplicate topic".to_owned(),
            format!(
                r#"{{"topic":"weather","topic":"messenger","action":"send-message","payload":{}}}"#,
                serde_json::Value::from(send_payload(chat, "twice"))
            ),
            "invalid_envelope",
        ),
        (
            "duplicate chat_id in the payload".to_owned(),
            envelope(
                actions::SEND_MESSAGE,
                &format!(
                    r#"{{"chat_id":"{}","chat_id":"{chat}","messages":[{{"text":"hi"}}]}}"#,
                    uuid::Uuid::new_v4()
                ),
            ),
            "invalid_payload",
        ),
        (
            "a hundred and one messages".to_owned(),
            envelope(
                actions::SEND_MESSAGE,
                &serde_json::json!({"chat_id": chat, "messages": vec![serde_json::json!({"text": "x"}); 101]})
                    .to_string(),
            ),
            "too_many_messages",
        ),
    ]);
    for (what, frame, code) in rows {
        bob.send_text(frame).await.unwrap();
        let answer = bob.next_envelope(WAIT).await.unwrap();
        assert_eq!(answer.action, actions::ERROR, "{what}");
        let error: ErrorPayload = answer.decode_payload().unwrap();
        assert_eq!(error.code, code, "{what}: {}", error.message);
        assert!(!error.message.is_empty(), "{what}");
        snapshot.assert_unchanged(servers, &pair.app.database, &what).await;
    }

    // Hostile text is a message like any other: stored and delivered verbatim.
    let (mut alice, _, _) = connect_live(pair.app.http.base_url(), &pair.alice).await;
    let verbatim = "'; DROP TABLE messages; -- 👋 мир\nsecond line\t\"quoted\" \\ %_";
    bob.send_messages(chat, vec![text_message(verbatim)], None)
        .await
        .unwrap();
    let (_, ack) = bob.until_action(actions::ACK, WAIT).await.unwrap();
    assert_eq!(ack.decode_payload::<AckPayload>().unwrap().acks.len(), 1);
    let (_, delivery) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    let delivered: DeliveryPayload = delivery.decode_payload().unwrap();
    assert_eq!(delivered.messages[0].text, verbatim);
    let history = pair.app.http.messages(&pair.alice, chat, 0, 10).await.unwrap();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].text, verbatim);
    let snapshot = DataSnapshot::take(servers, &pair.app.database).await;

    // A text frame that is not UTF-8 fails Bob's connection with 1007, nothing else.
    bob.send_raw_text_frame(b"{\"topic\":\"messenger\xff\xfe\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(bob.until_closed(WAIT).await, Some(1007));
    snapshot
        .assert_unchanged(servers, &pair.app.database, "invalid UTF-8")
        .await;
    // Alice's socket on the same node is untouched, and Bob comes back.
    let (mut bob, _, _) = connect_live(pair.app.http.base_url(), &pair.bob).await;
    alice
        .send_messages(chat, vec![text_message("still here")], None)
        .await
        .unwrap();
    let (_, delivery) = bob.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    assert_eq!(
        delivery.decode_payload::<DeliveryPayload>().unwrap().messages[0].text,
        "still here"
    );
}
