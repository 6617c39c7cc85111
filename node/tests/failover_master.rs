//! Master down: writes fail fast with a JSON 503, reads keep working from replicas, and
//! writes work again once the master is back.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use nix::sys::signal::Signal;
use parley_client::http::seed_person;
use test_app::{own_servers, TestApp};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_fast_and_reads_go_on_while_the_master_is_down() {
    let servers = own_servers("failover_master").await;
    let app = TestApp::spawn(&servers, 2).await;
    let bob_id = app.http.sign_up_ok(&seed_person("Bob", "master")).await.unwrap();
    let token = app
        .http
        .sign_in("bob.master@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    servers.wait_replicas_caught_up(Duration::from_secs(10)).await.unwrap();

    servers.kill("master", Signal::SIGKILL).unwrap();

    for attempt in 0..4 {
        let started = Instant::now();
        let answer = app
            .http
            .sign_up(&seed_person("Carol", &format!("down{attempt}")))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(answer.status, 503, "{:?}", answer.body);
        assert!(!answer.message().is_empty());
        assert!(took < Duration::from_secs(2), "a write took {took:?} to fail");
        // Reads keep working from the replicas, on both nodes.
        assert_eq!(
            app.http.user_id_by_email(&token, "bob.master@email.com").await.unwrap(),
            bob_id
        );
    }

    servers.start_component("master").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let carol = seed_person("Carol", "after");
    let status = loop {
        let answer = app.http.sign_up(&carol).await.unwrap();
        if answer.status != 503 || Instant::now() > deadline {
            break answer.status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 201, "writes work again once the master is back");
    let carol_token = app
        .http
        .sign_in("carol.after@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        app.http
            .user_id_by_email(&carol_token, "bob.master@email.com")
            .await
            .unwrap(),
        bob_id
    );
}
