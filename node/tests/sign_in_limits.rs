//! Per-email and per-address sign-in limits against a real node: past a burst, 429 with
//! `Retry-After`; other emails and addresses are unaffected.
//!
//! A token bucket refills while the test runs, so on a slow machine a refill may let one
//! more attempt through: each check allows exactly the refills the elapsed time earned,
//! never more, and still fails if the limit does not bite.

#[path = "support/sign_in.rs"]
mod sign_in;
#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use sign_in::sign_in_status;
use test_app::{shared_servers, TestApp};
use tokio::time::Instant;

const BINARY: &str = "sign_in_limits";

/// Attempts until the first 429 (at most `burst` + 10), each from `address_of(attempt)`
/// for `email_of(attempt)`; the 401s before it, the elapsed time, and the `Retry-After`.
async fn attempts_until_refused(
    client: &reqwest::Client,
    node_url: &str,
    burst: usize,
    email_of: impl Fn(usize) -> String,
    address_of: impl Fn(usize) -> String,
) -> (usize, Duration, u64) {
    let started = Instant::now();
    for attempt in 0..burst + 10 {
        let (status, retry_after) = sign_in_status(client, node_url, &email_of(attempt), &address_of(attempt)).await;
        match status {
            401 => continue,
            429 => {
                let retry_after = retry_after
                    .expect("a 429 says when to retry")
                    .parse()
                    .expect("Retry-After in whole seconds");
                return (attempt, started.elapsed(), retry_after);
            }
            other => panic!("attempt {attempt}: status {other}"),
        }
    }
    panic!("{} attempts and never a 429", burst + 10)
}

fn assert_burst_then_refused(what: &str, allowed: usize, elapsed: Duration, burst: usize, refill_every: Duration) {
    let refills_earned = (elapsed.as_secs_f64() / refill_every.as_secs_f64()).floor() as usize;
    assert!(
        allowed >= burst && allowed <= burst + refills_earned,
        "{what}: {allowed} allowed in {elapsed:?}; a burst of {burst} plus one per {refill_every:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_past_the_per_email_and_per_address_limits_get_429_with_retry_after() {
    let app = TestApp::spawn_with_args(
        shared_servers(BINARY).await,
        1,
        &[
            "--sign-in-per-email-per-minute",
            "3",
            "--sign-in-per-address-per-minute",
            "15",
        ],
    )
    .await;
    let node_url = app.app.node_url("node-1");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Per email: 3 at once, then one every 20 s, whatever the address and however the
    // email is written.
    let (allowed, elapsed, retry_after) = attempts_until_refused(
        &client,
        &node_url,
        3,
        |attempt| match attempt {
            0..=2 => "target@email.com".to_owned(),
            _ => " Target@Email.com ".to_owned(),
        },
        |attempt| format!("10.1.0.{}", attempt + 1),
    )
    .await;
    assert_burst_then_refused("per email", allowed, elapsed, 3, Duration::from_secs(20));
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");

    // Per address: 5 at once (a third of 15 a minute), then one every 4 s, whatever the
    // email.
    let (allowed, elapsed, retry_after) = attempts_until_refused(
        &client,
        &node_url,
        5,
        |attempt| format!("guess{attempt}@email.com"),
        |_| "10.2.0.1".to_owned(),
    )
    .await;
    assert_burst_then_refused("per address", allowed, elapsed, 5, Duration::from_secs(4));
    assert!((1..=4).contains(&retry_after), "Retry-After {retry_after}");

    // Another address is not affected.
    let (status, _) = sign_in_status(&client, &node_url, "guess99@email.com", "10.2.0.2").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_real_ip_is_believed_only_from_the_trusted_proxies() {
    // Loopback is not among the trusted proxies here: this test, on 127.0.0.1, is a
    // client naming a new address in every request's X-Real-IP, as an attacker would.
    let app = TestApp::spawn_with_args(
        shared_servers(BINARY).await,
        1,
        &[
            "--sign-in-per-email-per-minute",
            "0",
            "--sign-in-per-address-per-minute",
            "15",
            "--trusted-proxies",
            "192.0.2.1,10.99.0.0/16",
        ],
    )
    .await;
    let node_url = app.app.node_url("node-1");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Every attempt counts against 127.0.0.1: 5 at once, then one every 4 s.
    let (allowed, elapsed, _) = attempts_until_refused(
        &client,
        &node_url,
        5,
        |attempt| format!("guess{attempt}@email.com"),
        |attempt| format!("10.3.0.{}", attempt + 1),
    )
    .await;
    assert_burst_then_refused("made-up addresses", allowed, elapsed, 5, Duration::from_secs(4));
}
