//! Sign-out ends the device: its sockets close on every node within a second (4403), its
//! access tokens are refused everywhere, also by a node that was down at the time; a
//! socket lives as long as its access token unless the client renews it over the socket
//! (4401 otherwise). Two nodes, nginx, real MariaDB replication.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use nix::sys::signal::Signal;
use parley_client::http::seed_person;
use parley_client::{MessengerSocket, SocketEvent};
use protocol::auth::TokenPair;
use protocol::websocket::{actions, close_codes, Envelope, ErrorPayload, RenewPayload, RenewedPayload};
use reqwest::Method;
use test_app::{connect_live, shared_servers, TestApp};
use tokio::time::Instant;

const BINARY: &str = "sign_out";

async fn sign_in(app: &TestApp, tag: &str) -> TokenPair {
    app.http
        .sign_in(&format!("bob.{tag}@email.com"), "1234567890")
        .await
        .unwrap()
}

/// The status `GET /auth/user/get-by-token` answers `token` with on `node`.
async fn token_status(app: &TestApp, node: &str, token: &str) -> u16 {
    app.node(node)
        .request(Method::GET, "/auth/user/get-by-token", Some(token), None)
        .await
        .unwrap()
        .status
}

fn renew_frame(token: &str, reference: &str) -> String {
    Envelope::messenger(
        actions::RENEW,
        &RenewPayload {
            access_token: token.to_owned(),
        },
        Some(reference.to_owned()),
    )
    .to_text()
}

/// Frames until the answer to `reference` (a `renewed` or an `error`).
async fn answer_to(socket: &mut MessengerSocket, reference: &str) -> Envelope {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match socket.next_event(left).await.expect("an answer to the renew") {
            SocketEvent::Envelope(envelope) if envelope.reference.as_deref() == Some(reference) => return envelope,
            SocketEvent::Envelope(_) => continue,
            SocketEvent::Closed(code) => panic!("closed with {code:?} before answering {reference}"),
        }
    }
}

/// The socket answers a heartbeat: it is open and served.
async fn assert_served(socket: &mut MessengerSocket, what: &str) {
    socket
        .send_text(r#"{"topic":"messenger","action":"heartbeat","payload":"","ref":"alive"}"#)
        .await
        .unwrap();
    let answer = answer_to(socket, "alive").await;
    assert_eq!(answer.action, actions::HEARTBEAT, "{what}: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_closes_that_devices_sockets_on_every_node_within_a_second_and_refuses_its_tokens() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    app.http.sign_up_ok(&seed_person("Bob", "out")).await.unwrap();
    let phone = sign_in(&app, "out").await;
    let laptop = sign_in(&app, "out").await;
    let (mut phone_on_1, _, _) = connect_live(&app.app.node_url("node-1"), &phone.access_token).await;
    let (mut phone_on_2, _, _) = connect_live(&app.app.node_url("node-2"), &phone.access_token).await;
    let (mut laptop_on_2, _, _) = connect_live(&app.app.node_url("node-2"), &laptop.access_token).await;

    let signed_out_at = Instant::now();
    sign_out_through(&app, "node-1", &phone.refresh_token).await;
    // On the node that took the sign-out and on its peer, within a second of the answer.
    for (node, socket) in [("node-1", &mut phone_on_1), ("node-2", &mut phone_on_2)] {
        let left = Duration::from_secs(1).saturating_sub(signed_out_at.elapsed());
        assert_eq!(
            socket.until_closed(left).await,
            Some(close_codes::SIGNED_OUT),
            "the signed-out device's socket on {node} within a second"
        );
    }

    for node in ["node-1", "node-2"] {
        assert_eq!(
            token_status(&app, node, &phone.access_token).await,
            401,
            "the signed-out access token on {node}"
        );
        assert!(
            MessengerSocket::connect(&app.app.node_url(node), &phone.access_token)
                .await
                .is_err(),
            "a socket with the signed-out token on {node}"
        );
        assert_eq!(
            token_status(&app, node, &laptop.access_token).await,
            200,
            "the other device on {node}"
        );
    }
    let refresh = serde_json::json!({ "refresh_token": phone.refresh_token }).to_string();
    let refreshed = app
        .http
        .request(Method::PUT, "/auth/token", None, Some(&refresh))
        .await
        .unwrap();
    assert_eq!(refreshed.status, 401, "{}", refreshed.body);
    // The same user's other sign-in keeps its socket.
    assert_served(&mut laptop_on_2, "the other device's socket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_down_during_the_sign_out_refuses_the_token_once_ready() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    app.http.sign_up_ok(&seed_person("Bob", "down")).await.unwrap();
    let phone = sign_in(&app, "down").await;
    assert_eq!(token_status(&app, "node-2", &phone.access_token).await, 200);

    app.app.kill("node-2", Signal::SIGKILL).unwrap();
    sign_out_through(&app, "node-1", &phone.refresh_token).await;
    // Nothing told node-2: it reads the sign-out from the database before it is ready.
    app.app.start_component("node-2").await.unwrap();
    assert_eq!(token_status(&app, "node-2", &phone.access_token).await, 401);
    assert!(
        MessengerSocket::connect(&app.app.node_url("node-2"), &phone.access_token)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires_unless_a_fresh_one_comes_over_it() {
    // Tokens of 5 s: long enough to connect and renew, short enough to wait out.
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--access-token-ttl-seconds", "5"]).await;
    app.http.sign_up_ok(&seed_person("Bob", "ttl")).await.unwrap();
    app.http.sign_up_ok(&seed_person("Alice", "ttl")).await.unwrap();
    let bob = sign_in(&app, "ttl").await;
    let alice = app.http.sign_in("alice.ttl@email.com", "1234567890").await.unwrap();
    let node = app.app.node_url("node-1");
    let (mut kept, _, _) = connect_live(&node, &bob.access_token).await;
    let (mut left_alone, _, _) = connect_live(&node, &bob.access_token).await;

    // Refused renewals leave the socket as it was.
    for (token, what) in [
        ("not-a-token", "garbage"),
        (alice.access_token.as_str(), "another user's token"),
        (bob.refresh_token.as_str(), "a refresh token"),
    ] {
        kept.send_text(renew_frame(token, what)).await.unwrap();
        let answer = answer_to(&mut kept, what).await;
        assert_eq!(answer.action, actions::ERROR, "{what}: {answer:?}");
        let error: ErrorPayload = answer.decode_payload().unwrap();
        assert_eq!(error.code, "invalid_token", "{what}");
    }

    // A token issued within the same second as the first has the same expiry: refresh
    // until the clock has moved past it (at most a second), so the renewal is later.
    let first_expiry_ms = expiry_ms(&bob.access_token);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut fresh = refreshed(&app, &bob.refresh_token).await;
    while expiry_ms(&fresh.access_token) <= first_expiry_ms {
        assert!(Instant::now() < deadline, "the token's expiry never moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
        fresh = refreshed(&app, &fresh.refresh_token).await;
    }
    kept.send_text(renew_frame(&fresh.access_token, "renew")).await.unwrap();
    let renewed = answer_to(&mut kept, "renew").await;
    assert_eq!(renewed.action, actions::RENEWED, "{renewed:?}");
    let renewed: RenewedPayload = renewed.decode_payload().unwrap();
    assert_eq!(renewed.expires_at_ms, expiry_ms(&fresh.access_token));

    // The socket left alone closes at its token's expiry, with 4401.
    let until_first_expiry = Duration::from_millis(first_expiry_ms.saturating_sub(now_ms()));
    assert_eq!(
        left_alone
            .until_closed(until_first_expiry + Duration::from_secs(2))
            .await,
        Some(close_codes::ACCESS_TOKEN_EXPIRED)
    );
    assert!(now_ms() >= first_expiry_ms, "closed before its token expired");
    // The renewed one outlives it, then closes at the fresh token's expiry.
    assert_served(&mut kept, "the renewed socket past the first expiry").await;
    let until_fresh_expiry = Duration::from_millis(renewed.expires_at_ms.saturating_sub(now_ms()));
    assert_eq!(
        kept.until_closed(until_fresh_expiry + Duration::from_secs(2)).await,
        Some(close_codes::ACCESS_TOKEN_EXPIRED)
    );
    assert!(
        now_ms() >= renewed.expires_at_ms,
        "closed before its renewed token expired"
    );
}

/// Signs the sign-in of `refresh_token` out through `node` (answered 204).
async fn sign_out_through(app: &TestApp, node: &str, refresh_token: &str) {
    let body = serde_json::json!({ "refresh_token": refresh_token }).to_string();
    let answer = app
        .node(node)
        .request(Method::POST, "/auth/sign-out", None, Some(&body))
        .await
        .unwrap();
    assert_eq!(answer.status, 204, "{}", answer.body);
}

/// A new pair for `refresh_token` (which stops working).
async fn refreshed(app: &TestApp, refresh_token: &str) -> TokenPair {
    let body = serde_json::json!({ "refresh_token": refresh_token }).to_string();
    let pair = app
        .http
        .request(Method::PUT, "/auth/token", None, Some(&body))
        .await
        .unwrap();
    assert_eq!(pair.status, 200, "{}", pair.body);
    serde_json::from_value(pair.body).unwrap()
}

fn now_ms() -> u64 {
    actors::messaging::device_access::unix_now_ms()
}

/// The `exp` claim of a JWT, in Unix milliseconds (read without checking: the test's
/// own tokens).
fn expiry_ms(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["exp"].as_u64().expect("exp") * 1000
}
