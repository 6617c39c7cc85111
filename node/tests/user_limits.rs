//! Per-user limits: chats a user may start and websockets a user may hold open on a node.
//! Each refusal is a clear JSON answer and changes nothing.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use parley_client::http::seed_person;
use parley_client::MessengerSocket;
use test_app::{shared_servers, TestApp};
use tokio::time::Instant;

const BINARY: &str = "user_limits";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_the_chat_limit_cannot_start_another_but_keeps_and_receives_chats() {
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--max-chats-per-user", "2"]).await;
    let http = &app.http;
    let bob = http.sign_up_ok(&seed_person("Bob", "chats")).await.unwrap();
    let mut others = Vec::new();
    for name in ["Alice", "Carol", "Dave"] {
        others.push(http.sign_up_ok(&seed_person(name, "chats")).await.unwrap());
    }
    let bob_token = http
        .sign_in("bob.chats@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let first = http.create_chat(&bob_token, &others[0]).await.unwrap();
    http.create_chat(&bob_token, &others[1]).await.unwrap();

    let body = serde_json::json!({ "companion_id": others[2] }).to_string();
    let refused = http
        .request(
            reqwest::Method::POST,
            "/messenger/create-chat",
            Some(&bob_token),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["code"], "limit_reached", "{}", refused.body);
    assert_eq!(
        http.chats(&bob_token).await.unwrap().chats.len(),
        2,
        "nothing was created"
    );

    // An existing chat is found as before, and others may still start chats with him.
    assert_eq!(http.create_chat(&bob_token, &others[0]).await.unwrap(), first);
    let dave_token = http
        .sign_in("dave.chats@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    http.create_chat(&dave_token, &bob).await.unwrap();
    assert_eq!(http.chats(&bob_token).await.unwrap().chats.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_the_socket_limit_is_refused_another_until_one_closes() {
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--max-sockets-per-user", "2"]).await;
    let http = &app.http;
    http.sign_up_ok(&seed_person("Bob", "sockets")).await.unwrap();
    http.sign_up_ok(&seed_person("Alice", "sockets")).await.unwrap();
    let bob = http
        .sign_in("bob.sockets@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let alice = http
        .sign_in("alice.sockets@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let node = app.app.node_url("node-1");

    let first = MessengerSocket::connect(&node, &bob).await.unwrap();
    let _second = MessengerSocket::connect(&node, &bob).await.unwrap();
    let Err(refused) = MessengerSocket::connect(&node, &bob).await else {
        panic!("a third socket must be refused");
    };
    assert!(format!("{refused:#}").contains("429"), "{refused:#}");
    // Other users are not affected.
    let _alice = MessengerSocket::connect(&node, &alice).await.unwrap();

    first.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match MessengerSocket::connect(&node, &bob).await {
            Ok(_third) => break,
            Err(error) => assert!(
                Instant::now() < deadline,
                "a socket was closed but a new one is still refused: {error:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_connects_of_one_user_never_pass_the_socket_limit() {
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--max-sockets-per-user", "3"]).await;
    let http = &app.http;
    http.sign_up_ok(&seed_person("Bob", "parallel")).await.unwrap();
    let bob = http
        .sign_in("bob.parallel@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let node = app.app.node_url("node-1");
    // All at once: a check made before the session registers let several through.
    let attempts = (0..20).map(|_| MessengerSocket::connect(&node, &bob));
    let outcomes = futures::future::join_all(attempts).await;
    let refusals: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err().map(|error| format!("{error:#}")))
        .collect();
    let opened = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(opened, 3, "exactly the limit opened; refusals: {refusals:?}");
    assert!(refusals.iter().all(|refusal| refusal.contains("429")), "{refusals:?}");
}
