//! Floods of sign-ups and sign-ins through nginx, against two nodes hashing at OWASP
//! cost with the default limits: one address's flood starves no other address's
//! sign-in, and every answer is a quick 201, 401 or 429, never nginx's 503 (a node that
//! answered late would be taken out of rotation).
//!
//! Alone in its binary: its hashes fill both cores, which would skew the timing of any
//! test run beside it. Clients are told apart by their source address on loopback
//! (127.0.0.2, …), which nginx passes on as `X-Real-IP`.

#[allow(dead_code)]
#[path = "support/sign_in.rs"]
mod sign_in;
#[path = "support/test_app.rs"]
mod test_app;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use parley_client::http::seed_person;
use test_app::{shared_servers, TestApp};
use tokio::time::Instant;

const BINARY: &str = "sign_up_flood";
/// A sign-in from a quiet address must be answered within this during a flood.
const QUIET_SIGN_IN_BOUND: Duration = Duration::from_secs(3);

/// The floods share two cores; one at a time.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An HTTP client whose connections come from `address`.
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(address.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Status and `Retry-After` of a POST of `body` to `path`.
async fn post(client: &reqwest::Client, url: &str, body: serde_json::Value) -> (u16, Option<String>) {
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("every request gets an answer");
    (response.status().as_u16(), sign_in::retry_after(&response))
}

fn count_by_status(answers: &[(u16, Option<String>)]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for (status, _) in answers {
        *counts.entry(*status).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sign_ups_from_one_address_do_not_keep_another_from_signing_in() {
    let _serial = ONE_FLOOD_AT_A_TIME.lock().await;
    // OWASP cost and the default limits (no test flags): they are the point.
    let app = TestApp::spawn_with_only_args(shared_servers(BINARY).await, 2, &[]).await;
    let public = app.app.public_url().clone();
    let quiet = client_from("127.0.0.3");
    let carol = seed_person("Carol", "quiet");
    let body = serde_json::to_value(&carol).unwrap();
    assert_eq!(post(&quiet, &format!("{public}/auth/sign-up"), body).await.0, 201);

    let flooder = client_from("127.0.0.2");
    let flood: Vec<_> = (0..100)
        .map(|index| {
            let (client, url) = (flooder.clone(), format!("{public}/auth/sign-up"));
            let person = serde_json::to_value(seed_person("Mallory", &format!("flood{index}"))).unwrap();
            tokio::spawn(async move { post(&client, &url, person).await })
        })
        .collect();
    // The flood is on once its first refusals are back.
    let started = Instant::now();
    while !flood.iter().any(|answer| answer.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no sign-up of the flood was answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sign_in = serde_json::json!({ "email": carol.email, "password": carol.password });
    let asked = Instant::now();
    let (status, _) = post(&quiet, &format!("{public}/auth/sign-in"), sign_in).await;
    let took = asked.elapsed();

    let mut answers = Vec::new();
    for answer in flood {
        answers.push(answer.await.unwrap());
    }
    let counts = count_by_status(&answers);
    println!("quiet sign-in: {status} in {took:?}; flood: {counts:?}");
    assert_eq!(status, 200, "the quiet address's sign-in");
    assert!(took < QUIET_SIGN_IN_BOUND, "the quiet sign-in took {took:?}");
    assert!(
        counts.keys().all(|status| [201, 429].contains(status)),
        "only 201 and 429: {counts:?}"
    );
    assert!(
        counts.get(&429).copied().unwrap_or(0) >= 50,
        "one address's flood is mostly refused: {counts:?}"
    );
    assert!(answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .all(|(_, retry_after)| retry_after.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_wrong_sign_ins_through_nginx_get_only_401_and_429() {
    let _serial = ONE_FLOOD_AT_A_TIME.lock().await;
    let app = TestApp::spawn_with_only_args(shared_servers(BINARY).await, 2, &[]).await;
    let public = app.app.public_url().clone();
    let client = client_from("127.0.0.4");
    let attempts = (0..200).map(|index| {
        let (client, url) = (client.clone(), format!("{public}/auth/sign-in"));
        let body = serde_json::json!({ "email": format!("nobody{index}@email.com"), "password": "wrong password" });
        async move { post(&client, &url, body).await }
    });
    let answers = futures::future::join_all(attempts).await;
    let counts = count_by_status(&answers);
    println!("sign-in flood: {counts:?}");
    assert!(
        counts.keys().all(|status| [401, 429].contains(status)),
        "only 401 and 429, never nginx's 503: {counts:?}"
    );
    assert!(
        counts.get(&401).copied().unwrap_or(0) > 0,
        "some were checked: {counts:?}"
    );
}
