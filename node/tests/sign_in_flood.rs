//! A sign-in flood against a real node hashing at OWASP cost: the hashing queue is bounded
//! (the excess gets a 429 at once), memory stays bounded, other requests stay fast.
//!
//! Alone in its binary: its hashes fill both cores, which would skew the timing of any
//! test run beside it.

#[path = "support/resident_memory.rs"]
mod resident_memory;
#[path = "support/sign_in.rs"]
mod sign_in;
#[path = "support/test_app.rs"]
mod test_app;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parley_client::http::seed_person;
use resident_memory::PeakMemory;
use sign_in::sign_in_status;
use test_app::{shared_servers, TestApp};
use tokio::time::Instant;

const BINARY: &str = "sign_in_flood";
/// Two hashes at OWASP cost (128 MiB each) plus the node itself, with room to spare.
const RSS_BOUND_MIB: u64 = 512;
const FLOOD: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sign_ins_at_once_get_401_or_429_while_lookups_stay_fast_and_memory_bounded() {
    // OWASP cost (the default), not the tests' cheap hashing: memory is the point.
    let app = TestApp::spawn_with_only_args(shared_servers(BINARY).await, 1, &[]).await;
    let node = app.node("node-1");
    let node_url = app.app.node_url("node-1");
    node.sign_up_ok(&seed_person("Bob", "flood")).await.unwrap();
    let token = node
        .sign_in("bob.flood@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let pid = app.node_pid("node-1");

    let flood_over = Arc::new(AtomicBool::new(false));
    let peak_memory = PeakMemory::watch(pid);
    let lookups = tokio::spawn({
        let (flood_over, node, token) = (flood_over.clone(), node.clone(), token.clone());
        async move {
            let mut slowest = Duration::ZERO;
            let mut answered = 0;
            while !flood_over.load(Ordering::Acquire) {
                let started = Instant::now();
                node.user_id_by_email(&token, "bob.flood@email.com").await.unwrap();
                slowest = slowest.max(started.elapsed());
                answered += 1;
            }
            (answered, slowest)
        }
    });

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Each attempt from its own address and for its own email: only the hashing queue
    // stands in the way, not the per-address or per-email limits.
    let attempts = (0..FLOOD).map(|index| {
        let (client, node_url) = (client.clone(), node_url.clone());
        async move {
            let address = format!("10.0.{}.{}", index / 250, index % 250 + 1);
            sign_in_status(&client, &node_url, &format!("flood{index}@email.com"), &address).await
        }
    });
    let answers = futures::future::join_all(attempts).await;
    flood_over.store(true, Ordering::Release);
    let peak = peak_memory.stop().await;
    let (lookups_answered, slowest_lookup) = lookups.await.unwrap();

    let refused: Vec<&(u16, Option<String>)> = answers.iter().filter(|(status, _)| *status == 429).collect();
    let checked = answers.iter().filter(|(status, _)| *status == 401).count();
    assert_eq!(refused.len() + checked, FLOOD, "only 401 and 429: {answers:?}");
    assert!(
        refused.len() >= FLOOD / 2,
        "a queue of 16 behind 2 hashes must refuse most of {FLOOD}: {} refused",
        refused.len()
    );
    assert!(refused
        .iter()
        .all(|(_, retry_after)| retry_after.as_deref() == Some("1")));
    println!(
        "{checked} checked, {} refused, peak RSS {peak} MiB, {lookups_answered} lookups, slowest {slowest_lookup:?}",
        refused.len()
    );
    assert!(peak > 0 && peak <= RSS_BOUND_MIB, "peak RSS {peak} MiB");
    assert!(lookups_answered > 0, "no lookup ran during the flood");
    assert!(
        slowest_lookup < Duration::from_secs(1),
        "a lookup took {slowest_lookup:?} during the flood"
    );
}
