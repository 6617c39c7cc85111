//! The web page in a real browser: Bob and Alice, each in their own headless Chromium
//! (Debian's, driven through chromedriver), sign up, sign in, find each other by email
//! and chat through nginx on a real local cluster. Then the node serving Alice's socket
//! hangs (SIGSTOP) and is SIGKILLed while Bob keeps writing: Alice's page must reconnect
//! by itself and show every message exactly once, in order, and her read marks must
//! reach Bob's page.
//!
//! Screenshots of both pages go to `<target>/tmp/browser-screenshots/<run>/` (printed).
//! Needs the `parley` binary (built by `cargo test --workspace`) and Debian's
//! `chromium` and `chromium-driver` (installed by `deploy/install.sh`).

#[path = "browser/chat_page.rs"]
mod chat_page;
#[path = "browser/chromedriver.rs"]
mod chromedriver;
#[path = "browser/two_people.rs"]
mod two_people;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use chat_page::{ChatPage, PageSnapshot};
use chromedriver::ChromeDriver;
use nix::sys::signal::Signal;
use parley_client::http::ParleyHttp;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::readiness::{poll_until_ready, Probe};
use parley_launcher::{ClusterSpec, LocalCluster};
use reqwest::Method;
use two_people::{move_off_node, screenshots_dir, serving_node, sign_up_and_in, PAGE_WAIT};

const MESSAGES_WHILE_ALICE_IS_AWAY: usize = 5;
/// The first of them, sent while her node hangs before it dies.
const MESSAGES_WHILE_ALICES_NODE_HANGS: usize = 3;
const ALICES_MESSAGE_TO_A_HUNG_NODE: &str = "Bob, are you there?";
/// Access tokens live this long here: they expire during the test.
const ACCESS_TOKEN_TTL_SECONDS: &str = "6";
/// The 6 s lifetime plus the node's 5 s leeway, with room to spare.
const TOKEN_EXPIRY_WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn two_people_chat_in_browsers_and_a_node_crash_loses_nothing() -> anyhow::Result<()> {
    resolve_parley_binary(None).context("build the node first: cargo test --workspace, or set PARLEY_BIN")?;
    let state = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state.path().join("cluster"), 2);
    // The cheapest scrypt cost the node accepts (sign-ups are not what is tested here),
    // and access tokens that expire during the test (plus the node's 5 s leeway), so
    // the page must renew them with its refresh token, over its socket too.
    spec.node_extra_args = [
        "--scrypt-log-n",
        "10",
        "--access-token-ttl-seconds",
        ACCESS_TOKEN_TTL_SECONDS,
    ]
    .map(String::from)
    .to_vec();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    let public_url = cluster.app.public_url();
    let public_port: u16 = public_url.rsplit(':').next().unwrap_or_default().parse()?;
    let screenshots = screenshots_dir()?;
    println!("browser test: screenshots in {}", screenshots.display());

    let driver = ChromeDriver::start(state.path()).await?;
    let bob = ChatPage::open("bob", driver.new_session("bob", public_port).await?, &public_url).await?;
    let alice = ChatPage::open("alice", driver.new_session("alice", public_port).await?, &public_url).await?;
    let outcome = chat_through_a_node_crash(&cluster, &bob, &alice, &screenshots).await;
    if outcome.is_err() {
        for page in [&bob, &alice] {
            if let Ok(path) = page.screenshot(&screenshots, "at-failure").await {
                println!("browser test: failure screenshot {}", path.display());
            }
        }
    }
    bob.close().await?;
    alice.close().await?;
    drop(driver);
    cluster.shutdown().await?;
    outcome
}

async fn chat_through_a_node_crash(
    cluster: &LocalCluster,
    bob: &ChatPage,
    alice: &ChatPage,
    screenshots: &Path,
) -> anyhow::Result<()> {
    let (bob_person, alice_person) = (two_people::bob(), two_people::alice());
    for (page, who) in [(bob, &bob_person), (alice, &alice_person)] {
        sign_up_and_in(page, who).await?;
    }

    // Bob finds Alice, starts the chat and writes; Alice is online, so her dot is green.
    bob.start_chat_with(&alice_person.email, PAGE_WAIT).await?;
    bob.wait_until("the chat with Alice open, Alice online", PAGE_WAIT, |page| {
        page.conversation_title.starts_with("Alice Swift") && page.chats.iter().any(|chat| chat.open && chat.online)
    })
    .await?;
    bob.send("Hello, Alice!").await?;
    // Acked: it has its seq, and a mark past `sending` (Alice's page may already have
    // reported it received or read).
    bob.wait_until("the first message acked", PAGE_WAIT, |page| {
        page.messages.len() == 1
            && page.messages[0].seq == Some(1)
            && matches!(page.messages[0].mark.as_deref(), Some("created" | "received" | "read"))
    })
    .await?;

    // Alice sees a new chat with one unread message from Bob, who is online.
    let listed = alice
        .wait_until("Bob's chat listed with 1 unread", PAGE_WAIT, |page| {
            page.chats.len() == 1
                && page.chats[0].name == "Bob Tallor"
                && page.chats[0].unread_badge.as_deref() == Some("1")
        })
        .await?;
    ensure!(listed.chats[0].online, "Bob is online but his dot is not: {listed:?}");
    alice.screenshot(screenshots, "1-new-chat-unread").await?;
    alice.open_chat("Bob Tallor", PAGE_WAIT).await?;
    alice
        .wait_until("Bob's message shown, nothing unread", PAGE_WAIT, |page| {
            page.texts() == ["Hello, Alice!"] && page.chats[0].unread_badge.is_none()
        })
        .await?;
    bob.wait_until("Alice's read mark on the first message", PAGE_WAIT, |page| {
        page.messages[0].mark.as_deref() == Some("read")
    })
    .await?;
    alice.send("Hi Bob!").await?;
    bob.wait_until("Alice's answer", PAGE_WAIT, |page| {
        page.texts() == ["Hello, Alice!", "Hi Bob!"]
    })
    .await?;

    // Bob should be on the other node, so his messages are sent while Alice has no
    // node at all; a reload reconnects him through nginx (the session survives it).
    let alice_node = serving_node(&alice.snapshot().await?)?;
    let bob_node = move_off_node(bob, &alice_node, "Alice Swift", 2).await?;
    println!("browser test: alice on {alice_node}, bob on {bob_node}");
    bob.screenshot(screenshots, "2-before-crash").await?;
    alice.screenshot(screenshots, "2-before-crash").await?;

    let recovered = crash_alices_node(cluster, &alice_node, bob, alice).await?;
    println!(
        "browser test: alice reconnected on {}: {}",
        serving_node(&recovered)?,
        recovered.status_text
    );
    renews_an_expired_access_token(cluster, alice).await?;
    for page in [bob, alice] {
        let snapshot = page.snapshot().await?;
        ensure!(
            snapshot.error.is_none(),
            "{} sees an error: {:?}",
            page.who,
            snapshot.error
        );
        let path = page.screenshot(screenshots, "3-after-recovery").await?;
        println!("browser test: screenshot {}", path.display());
    }
    Ok(())
}

/// The page's socket outlives the access token it was opened with: the page sends a
/// fresh one over it in time (else the node would close it with 4401). Once that token
/// has expired, a reload (which reconnects and lists the chats again) still works: the
/// page trades its refresh token for a new pair.
async fn renews_an_expired_access_token(cluster: &LocalCluster, page: &ChatPage) -> anyhow::Result<()> {
    let expired_token = page.access_token().await?;
    let connection_before = page.snapshot().await?.connection;
    let http = ParleyHttp::new(cluster.app.public_url());
    poll_until_ready("the access token expires", TOKEN_EXPIRY_WAIT, || {
        let (http, token) = (http.clone(), expired_token.clone());
        async move {
            let answer = http
                .request(Method::GET, "/auth/user/get-by-token", Some(token.as_str()), None)
                .await?;
            Ok(match answer.status {
                401 => Probe::Ready(()),
                other => Probe::NotYet(anyhow::anyhow!("still accepted: {other}")),
            })
        }
    })
    .await?;
    let before = page.snapshot().await?;
    ensure!(
        before.is_live() && before.connection == connection_before,
        "the page's socket did not outlive its access token: connection {} then {}, {}",
        connection_before,
        before.connection,
        before.status_text
    );
    page.reload().await?;
    page.wait_until("live again with a renewed token", PAGE_WAIT, PageSnapshot::is_live)
        .await?;
    ensure!(
        page.access_token().await? != expired_token,
        "the page kept its expired token"
    );
    page.open_chat("Bob Tallor", PAGE_WAIT).await?;
    page.wait_until("the history shown again", PAGE_WAIT, |page| {
        page.texts() == before.texts()
    })
    .await?;
    Ok(())
}

/// Alice's node first hangs (SIGSTOP): Bob's next messages are committed while nothing
/// can reach her page, and a message she writes reaches only the hung node, which never
/// acks it. Then it dies (SIGKILL) and Bob writes more. Her page must reconnect by
/// itself elsewhere, get the missed messages from the replay, resend hers (stored once),
/// and both pages must show every message once, in the same order. Returns Alice's page.
async fn crash_alices_node(
    cluster: &LocalCluster,
    alice_node: &str,
    bob: &ChatPage,
    alice: &ChatPage,
) -> anyhow::Result<PageSnapshot> {
    let before: Vec<String> = alice
        .snapshot()
        .await?
        .texts()
        .iter()
        .map(|text| text.to_string())
        .collect();
    let mut bob_texts = Vec::new();
    cluster.kill(alice_node, Signal::SIGSTOP)?;
    for number in 1..=MESSAGES_WHILE_ALICE_IS_AWAY {
        if number == MESSAGES_WHILE_ALICES_NODE_HANGS + 1 {
            alice.send(ALICES_MESSAGE_TO_A_HUNG_NODE).await?;
            let waiting = [before.as_slice(), &[ALICES_MESSAGE_TO_A_HUNG_NODE.to_owned()]].concat();
            alice
                .wait_until(
                    "her message waiting for its ack, nothing new shown",
                    PAGE_WAIT,
                    |page| {
                        page.texts() == waiting
                            && page.messages.last().and_then(|last| last.mark.as_deref()) == Some("sending")
                    },
                )
                .await?;
            cluster.kill(alice_node, Signal::SIGKILL)?;
        }
        let text = format!("While you were away, {number}");
        bob.send(&text).await?;
        bob_texts.push(text);
        if number == MESSAGES_WHILE_ALICES_NODE_HANGS {
            let sent = [before.as_slice(), &bob_texts].concat();
            bob.wait_until("his messages acked while Alice's node hangs", PAGE_WAIT, |page| {
                page.texts() == sent && page.messages.iter().all(|message| message.seq.is_some())
            })
            .await?;
        }
    }

    let recovered = alice
        .wait_until("reconnected elsewhere, every message shown once", PAGE_WAIT, |page| {
            page.is_live() && page.status_node != alice_node && holds_every_message_once(page, &before, &bob_texts)
        })
        .await?;
    ensure!(
        recovered.replayed >= Some(MESSAGES_WHILE_ALICES_NODE_HANGS as u64),
        "the missed messages did not come from the replay: {recovered:?}"
    );
    let order = recovered.texts();
    bob.wait_until("the same messages in the same order, his all read", PAGE_WAIT, |page| {
        page.texts() == order
            && page.messages.iter().all(|message| message.seq.is_some())
            && page
                .messages
                .iter()
                .filter(|message| message.mine)
                .all(|message| message.mark.as_deref() == Some("read"))
    })
    .await?;
    bob.wait_until("Alice online again", PAGE_WAIT, |page| page.chats[0].online)
        .await?;
    // Checked again after the read marks' round trip, so a late duplicate would show.
    let again = alice.snapshot().await?;
    ensure!(again.texts() == order, "alice's page changed: {again:?}");
    Ok(recovered)
}

/// `before`, then Bob's messages in order with Alice's one message somewhere among them;
/// each shown once, with gap-free seqs and distinct ids.
fn holds_every_message_once(page: &PageSnapshot, before: &[String], bob_texts: &[String]) -> bool {
    let texts = page.texts();
    let seqs: Vec<Option<u64>> = page.messages.iter().map(|message| message.seq).collect();
    let gap_free: Vec<Option<u64>> = (1..=texts.len() as u64).map(Some).collect();
    let mut ids: Vec<Option<&str>> = page.messages.iter().map(|message| message.id.as_deref()).collect();
    ids.sort_unstable();
    ids.dedup();
    let bobs: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|text| bob_texts.iter().any(|bob| bob == text))
        .collect();
    texts.len() == before.len() + bob_texts.len() + 1
        && texts[..before.len()] == *before
        && bobs == bob_texts
        && texts
            .iter()
            .filter(|text| **text == ALICES_MESSAGE_TO_A_HUNG_NODE)
            .count()
            == 1
        && seqs == gap_free
        && ids.len() == texts.len()
}
