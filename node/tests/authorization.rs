//! The authorization audit: every endpoint and every frame that names a chat or a user
//! acts only for a caller entitled to it. Bob is the outsider; Alice and Carol share a
//! chat he is not in. The two nodes of the cluster each host some of them, so a leak
//! through the cluster hop would show too.
//!
//! | endpoint / frame                    | Bob on Alice and Carol's chat              |
//! |-------------------------------------|--------------------------------------------|
//! | GET /messenger/messages             | 404, same body as a chat that never existed |
//! | GET /messenger/chats                | lists only his own chat                     |
//! | POST /messenger/create-chat         | always includes him; self or unknown: 400/404 |
//! | GET /auth/user/get-by-token         | only his own profile                        |
//! | frame send-message                  | error chat_not_found, nothing stored        |
//! | frames received / read              | error chat_not_found, no cursor moves       |
//! | deliveries, statuses, presence      | never reach him                             |

#[path = "support/data_snapshot.rs"]
mod data_snapshot;
#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use data_snapshot::DataSnapshot;
use parley_client::http::seed_person;
use protocol::websocket::{actions, DeliveryPayload, Envelope, ErrorPayload, PresencePayload, StatusPayload};
use reqwest::Method;
use test_app::{connect_live, shared_servers, text_message, Pair, TestApp};

const BINARY: &str = "authorization";
const WAIT: Duration = Duration::from_secs(10);

/// Whether a frame Bob got concerns Alice and Carol's chat or Carol at all.
fn concerns_others(frame: &Envelope, their_chat: &str, carol_id: &str) -> bool {
    match frame.action.as_str() {
        actions::SEND_MESSAGE => frame
            .decode_payload::<DeliveryPayload>()
            .is_ok_and(|delivery| delivery.chat_id == their_chat),
        actions::STATUS => frame
            .decode_payload::<StatusPayload>()
            .is_ok_and(|status| status.chat_id == their_chat),
        actions::PRESENCE => frame
            .decode_payload::<PresencePayload>()
            .is_ok_and(|presence| presence.user_id == carol_id),
        _ => false,
    }
}

#[tokio::test]
async fn every_endpoint_and_frame_acts_only_for_a_caller_entitled_to_it() {
    let servers = shared_servers(BINARY).await;
    let pair = Pair::in_app(TestApp::spawn(servers, 2).await, "audit").await;
    pair.app.wait_cluster_formed().await;
    let http = &pair.app.http;
    let carol_id = http.sign_up_ok(&seed_person("Carol", "audit")).await.unwrap();
    let carol = http
        .sign_in("carol.audit@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let their_chat = http.create_chat(&pair.alice, &carol_id).await.unwrap();
    let (mut bob, _, _) = connect_live(&pair.app.app.node_url("node-1"), &pair.bob).await;
    let (mut alice, _, _) = connect_live(&pair.app.app.node_url("node-2"), &pair.alice).await;
    alice
        .send_messages(&their_chat, vec![text_message("for Carol only")], None)
        .await
        .unwrap();
    alice.until_action(actions::ACK, WAIT).await.unwrap();
    let snapshot = DataSnapshot::take(servers, &pair.app.database).await;

    // HTTP.
    let bob_token = pair.bob.as_str();
    let read_chat = |chat: String| async move {
        http.request(
            Method::GET,
            &format!("/messenger/messages?chat_id={chat}"),
            Some(bob_token),
            None,
        )
        .await
        .unwrap()
    };
    let theirs = read_chat(their_chat.clone()).await;
    let missing = read_chat(uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    assert_eq!(
        theirs.body, missing.body,
        "an outsider cannot tell their chat from none"
    );
    let bobs_chats = http.chats(&pair.bob).await.unwrap();
    assert_eq!(
        bobs_chats
            .chats
            .iter()
            .map(|chat| chat.chat_id.as_str())
            .collect::<Vec<_>>(),
        [pair.chat_id.as_str()]
    );
    let profile = http
        .request(Method::GET, "/auth/user/get-by-token", Some(&pair.bob), None)
        .await
        .unwrap();
    assert_eq!(profile.body["user_id"], pair.bob_id.as_str());
    for (companion, status) in [(pair.bob_id.clone(), 400), (uuid::Uuid::new_v4().to_string(), 404)] {
        let answer = http
            .request(
                Method::POST,
                "/messenger/create-chat",
                Some(&pair.bob),
                Some(&serde_json::json!({ "companion_id": companion }).to_string()),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, status, "{}", answer.body);
    }
    snapshot.assert_unchanged(servers, &pair.app.database, "http").await;

    // Frames naming their chat.
    let frames = [
        (
            actions::SEND_MESSAGE,
            serde_json::json!({"chat_id": their_chat, "messages": [{"text": "intrude"}]}),
        ),
        (actions::RECEIVED, serde_json::json!({"chat_id": their_chat, "seq": 1})),
        (actions::READ, serde_json::json!({"chat_id": their_chat, "seq": 1})),
    ];
    for (action, payload) in frames {
        let frame = serde_json::json!({"topic": "messenger", "action": action, "payload": payload.to_string()});
        bob.send_text(frame.to_string()).await.unwrap();
        // Presence of his own companion may come first; nothing of theirs may.
        let (before, answer) = bob.until_action(actions::ERROR, WAIT).await.unwrap();
        assert!(
            !before
                .iter()
                .any(|frame| concerns_others(frame, &their_chat, &carol_id)),
            "{action}: {before:?}"
        );
        assert_eq!(
            answer.decode_payload::<ErrorPayload>().unwrap().code,
            "chat_not_found",
            "{action}"
        );
        snapshot.assert_unchanged(servers, &pair.app.database, action).await;
    }

    // What happens in their chat never reaches Bob: Carol comes online, gets a message
    // and reads it; then Alice writes to Bob, and nothing of theirs came before it.
    let (mut carol_socket, _, _) = connect_live(&pair.app.app.node_url("node-1"), &carol).await;
    alice
        .send_messages(&their_chat, vec![text_message("second for Carol")], None)
        .await
        .unwrap();
    let (_, delivery) = carol_socket.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    let seq = delivery.decode_payload::<DeliveryPayload>().unwrap().messages[0].seq;
    carol_socket.report(actions::READ, &their_chat, seq).await.unwrap();
    alice.until_action(actions::STATUS, WAIT).await.unwrap();
    alice
        .send_messages(&pair.chat_id, vec![text_message("for Bob")], None)
        .await
        .unwrap();
    let (before, for_bob) = bob.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    assert_eq!(
        for_bob.decode_payload::<DeliveryPayload>().unwrap().chat_id,
        pair.chat_id
    );
    let leaked: Vec<&Envelope> = before
        .iter()
        .filter(|frame| concerns_others(frame, &their_chat, &carol_id))
        .collect();
    assert!(leaked.is_empty(), "Bob saw their chat: {leaked:?}");
}
