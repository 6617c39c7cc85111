//! The web page in a real browser when its node freezes: Bob and Alice chat in two
//! headless Chromium sessions through nginx on a real local cluster, then the node
//! serving Alice's socket is stopped with SIGSTOP and never killed. Its kernel keeps the
//! socket open, so nothing ever closes it: only the page's heartbeat (node/web/app.js)
//! can tell. Alice's page must move to the other node within [`FROZEN_NODE_LEFT_WITHIN`]
//! and show the messages Bob sent meanwhile exactly once, in order. The node is resumed
//! (SIGCONT) at the end, whatever the outcome.
//!
//! Screenshots go to `<target>/tmp/browser-screenshots/<run>/` (printed). Needs the
//! `parley` binary and Debian's `chromium` and `chromium-driver`, like `browser.rs`.

#[path = "browser/chat_page.rs"]
mod chat_page;
#[path = "browser/chromedriver.rs"]
mod chromedriver;
#[path = "browser/two_people.rs"]
mod two_people;

use std::time::Duration;

use anyhow::{ensure, Context};
use chat_page::ChatPage;
use chromedriver::ChromeDriver;
use nix::sys::signal::Signal;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::{ClusterSpec, LocalCluster};
use tokio::time::Instant;
use two_people::{move_off_node, screenshots_dir, serving_node, sign_up_and_in, PAGE_WAIT};

/// How long after the freeze Alice's page must be live on the other node with every
/// message. The page's own bound (node/web/app.js): 10 s of silence (checked each
/// second), then one more 5 s wait per attempt that lands on the frozen node again (the
/// chat list's GET waits out nginx's 5 s read timeout before nginx retries it on the
/// other node; an upgrade waits out the page's 5 s connect timeout). Two such attempts,
/// plus room for a loaded 2-core machine.
const FROZEN_NODE_LEFT_WITHIN: Duration = Duration::from_secs(35);
/// Sooner than this the page cannot have noticed: its silence timeout is 10 s, and the
/// node's last frame came at most a heartbeat interval (4 s) before the freeze.
const FROZEN_NODE_NOTICED_NO_SOONER_THAN: Duration = Duration::from_secs(6);
const MESSAGES_WHILE_ALICES_NODE_IS_FROZEN: usize = 3;

#[tokio::test]
async fn a_page_leaves_a_frozen_node_by_itself_and_shows_the_missed_messages_once() -> anyhow::Result<()> {
    resolve_parley_binary(None).context("build the node first: cargo build -p parley-node, or set PARLEY_BIN")?;
    let state = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state.path().join("cluster"), 2);
    // The cheapest scrypt cost the node accepts: sign-ups are not what is tested here.
    spec.node_extra_args = ["--scrypt-log-n", "10"].map(String::from).to_vec();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    let public_url = cluster.app.public_url();
    let public_port: u16 = public_url.rsplit(':').next().unwrap_or_default().parse()?;
    let screenshots = screenshots_dir()?;
    println!("frozen node test: screenshots in {}", screenshots.display());

    let driver = ChromeDriver::start(state.path()).await?;
    let bob = ChatPage::open("bob", driver.new_session("bob", public_port).await?, &public_url).await?;
    let alice = ChatPage::open("alice", driver.new_session("alice", public_port).await?, &public_url).await?;
    let mut frozen_node = None;
    let outcome = chat_through_a_frozen_node(&cluster, &bob, &alice, &mut frozen_node).await;
    if let Some(node) = &frozen_node {
        // Resumed before anything else, so that the shutdown below finds it running.
        cluster.kill(node, Signal::SIGCONT)?;
    }
    for page in [&bob, &alice] {
        let moment = if outcome.is_ok() {
            "frozen-node-left"
        } else {
            "frozen-node-at-failure"
        };
        if let Ok(path) = page.screenshot(&screenshots, moment).await {
            println!("frozen node test: screenshot {}", path.display());
        }
    }
    bob.close().await?;
    alice.close().await?;
    drop(driver);
    cluster.shutdown().await?;
    outcome
}

/// Sets `frozen_node` as soon as a node is stopped, so the caller resumes it even when
/// this fails half-way.
async fn chat_through_a_frozen_node(
    cluster: &LocalCluster,
    bob: &ChatPage,
    alice: &ChatPage,
    frozen_node: &mut Option<String>,
) -> anyhow::Result<()> {
    let (bob_person, alice_person) = (two_people::bob(), two_people::alice());
    for (page, who) in [(bob, &bob_person), (alice, &alice_person)] {
        sign_up_and_in(page, who).await?;
    }
    bob.start_chat_with(&alice_person.email, PAGE_WAIT).await?;
    bob.wait_until("the chat with Alice open", PAGE_WAIT, |page| {
        page.conversation_title.starts_with("Alice Swift")
    })
    .await?;
    bob.send("Hello, Alice!").await?;
    alice.open_chat("Bob Tallor", PAGE_WAIT).await?;
    alice
        .wait_until("Bob's first message shown", PAGE_WAIT, |page| {
            page.texts() == ["Hello, Alice!"]
        })
        .await?;
    let alice_node = serving_node(&alice.snapshot().await?)?;
    let bob_node = move_off_node(bob, &alice_node, "Alice Swift", 1).await?;
    println!("frozen node test: alice on {alice_node}, bob on {bob_node}");

    cluster.kill(&alice_node, Signal::SIGSTOP)?;
    *frozen_node = Some(alice_node.clone());
    let frozen_at = Instant::now();
    let mut expected = vec!["Hello, Alice!".to_owned()];
    for number in 1..=MESSAGES_WHILE_ALICES_NODE_IS_FROZEN {
        let text = format!("While your node sleeps, {number}");
        bob.send(&text).await?;
        expected.push(text);
    }
    bob.wait_until("his messages acked while Alice's node is frozen", PAGE_WAIT, |page| {
        page.texts() == expected && page.messages.iter().all(|message| message.seq.is_some())
    })
    .await?;

    let left_in_time = FROZEN_NODE_LEFT_WITHIN.saturating_sub(frozen_at.elapsed());
    let moved = alice
        .wait_until(
            "live on the other node, every message shown once",
            left_in_time,
            |page| page.is_live() && page.status_node != alice_node && shows_each_once_in_order(page, &expected),
        )
        .await
        .with_context(|| {
            format!("alice's page did not leave the frozen {alice_node} within {FROZEN_NODE_LEFT_WITHIN:?}")
        })?;
    let took = frozen_at.elapsed();
    println!(
        "frozen node test: alice left the frozen {alice_node} for {} after {took:?}: {}",
        serving_node(&moved)?,
        moved.status_text
    );
    ensure!(
        took >= FROZEN_NODE_NOTICED_NO_SOONER_THAN,
        "the page moved after {took:?}: sooner than its heartbeat can notice, so something else moved it"
    );
    ensure!(
        moved.replayed >= Some(MESSAGES_WHILE_ALICES_NODE_IS_FROZEN as u64),
        "the missed messages did not come from the replay: {moved:?}"
    );
    // Bob sees Alice's read marks, which went through the new node; then nothing may
    // have changed on her page (a late duplicate would show now).
    bob.wait_until("his messages read by Alice", PAGE_WAIT, |page| {
        page.messages
            .iter()
            .filter(|message| message.mine)
            .all(|message| message.mark.as_deref() == Some("read"))
    })
    .await?;
    let again = alice.snapshot().await?;
    ensure!(
        shows_each_once_in_order(&again, &expected),
        "alice's page changed: {again:?}"
    );
    ensure!(again.error.is_none(), "alice sees an error: {:?}", again.error);
    Ok(())
}

/// Exactly `expected`, in order, with gap-free seqs and distinct ids.
fn shows_each_once_in_order(page: &chat_page::PageSnapshot, expected: &[String]) -> bool {
    let seqs: Vec<Option<u64>> = page.messages.iter().map(|message| message.seq).collect();
    let gap_free: Vec<Option<u64>> = (1..=expected.len() as u64).map(Some).collect();
    let mut ids: Vec<Option<&str>> = page.messages.iter().map(|message| message.id.as_deref()).collect();
    ids.sort_unstable();
    ids.dedup();
    page.texts() == expected && seqs == gap_free && ids.len() == expected.len() && !ids.contains(&None)
}
