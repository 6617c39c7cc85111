//! The web page's group chats in real browsers: Bob and Alice, each in their own headless
//! Chromium (through chromedriver), on a real local cluster of two nodes behind nginx,
//! and Carol, who never opens the page (signed up over HTTP).
//!
//! Bob finds Alice by email and creates a group from the sidebar: she is its first
//! member, and her page lists the group without a reload. Bob adds Carol by email from
//! the group bar; both membership changes show as event lines. Bob writes: Alice's page
//! shows his message under his name, and as her page reports it received, then read,
//! Bob's mark summarises how far it got ("received by 1 of 2, read by 1": Carol never
//! reads). Alice leaves: the group disappears from her page, and Bob's shows a `left` line.
//!
//! Screenshots of both pages go to `<target>/tmp/browser-screenshots/<run>/` (printed).
//! Needs the `parley` binary and Debian's `chromium` and `chromium-driver`, like
//! `browser.rs`.

#[path = "browser/chat_page.rs"]
mod chat_page;
#[path = "browser/chromedriver.rs"]
mod chromedriver;
#[path = "browser/two_people.rs"]
mod two_people;

use std::path::Path;

use anyhow::{ensure, Context};
use chat_page::{ChatPage, PageSnapshot};
use chromedriver::ChromeDriver;
use parley_client::http::ParleyHttp;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::{ClusterSpec, LocalCluster};
use two_people::{serving_node, sign_up_and_in, PAGE_WAIT, PASSWORD};

const TITLE: &str = "Weekend trip";
const GREETING: &str = "Hello, everyone!";
/// How Bob's mark reads once Alice read his message: Carol has not even received it.
const READ_BY_ALICE_ONLY: &str = "✓ received by 1 of 2, read by 1";
/// Before Alice opens the group her page has only reported the message received.
const RECEIVED_BY_ALICE_ONLY: &str = "✓ received by 1 of 2, read by 0";

#[tokio::test]
async fn a_group_is_created_joined_read_and_left_in_browsers() -> anyhow::Result<()> {
    resolve_parley_binary(None).context("build the node first: cargo test --workspace, or set PARLEY_BIN")?;
    let state = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state.path().join("cluster"), 2);
    // The cheapest scrypt cost the node accepts: sign-ups are not what is tested here.
    spec.node_extra_args = ["--scrypt-log-n", "10"].map(String::from).to_vec();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    let public_url = cluster.app.public_url();
    let public_port: u16 = public_url.rsplit(':').next().unwrap_or_default().parse()?;
    let screenshots = two_people::screenshots_dir()?;
    println!("browser group test: screenshots in {}", screenshots.display());

    let driver = ChromeDriver::start(state.path()).await?;
    let bob = ChatPage::open("bob", driver.new_session("bob", public_port).await?, &public_url).await?;
    let alice = ChatPage::open("alice", driver.new_session("alice", public_port).await?, &public_url).await?;
    let http = ParleyHttp::new(public_url);
    let outcome = a_group_in_two_browsers(&http, &bob, &alice, &screenshots).await;
    if outcome.is_err() {
        for page in [&bob, &alice] {
            if let Ok(path) = page.screenshot(&screenshots, "at-failure").await {
                println!("browser group test: failure screenshot {}", path.display());
            }
        }
    }
    bob.close().await?;
    alice.close().await?;
    drop(driver);
    cluster.shutdown().await?;
    outcome
}

async fn a_group_in_two_browsers(
    http: &ParleyHttp,
    bob: &ChatPage,
    alice: &ChatPage,
    screenshots: &Path,
) -> anyhow::Result<()> {
    let (bob_person, alice_person) = (two_people::bob(), two_people::alice());
    let carol_person = two_people::person("Carol", "Reed", "female", "Boston", "chess");
    for (page, who) in [(bob, &bob_person), (alice, &alice_person)] {
        sign_up_and_in(page, who).await?;
    }
    http.sign_up_ok(&carol_person).await?;
    let carol = http.sign_in(&carol_person.email, PASSWORD).await?.access_token;
    println!(
        "browser group test: bob on {}, alice on {}",
        serving_node(&bob.snapshot().await?)?,
        serving_node(&alice.snapshot().await?)?
    );

    let (two, three) = (format!("{TITLE} (2)"), format!("{TITLE} (3)"));
    let created_line = (
        "created",
        format!("Bob Tallor created the group \u{201c}{TITLE}\u{201d}"),
    );
    let added_line = ("added", "Bob Tallor added Carol Reed".to_owned());
    let left_line = ("left", "Alice Swift left".to_owned());
    let events_are = |page: &PageSnapshot, expected: &[&(&str, String)]| {
        let expected: Vec<(&str, &str)> = expected.iter().map(|(kind, text)| (*kind, text.as_str())).collect();
        page.events() == expected
    };

    // Bob finds Alice, then creates the group: she is its first member besides him.
    bob.find(&alice_person.email, PAGE_WAIT).await?;
    bob.create_group(TITLE).await?;
    let created = bob
        .wait_until("the group open: 2 members, the `created` line", PAGE_WAIT, |page| {
            page.conversation_title == two
                && page.group_bar_shown
                && page.group_members == "Bob Tallor, Alice Swift"
                && page.chats.len() == 1
                && page.chats[0].name == two
                && page.chats[0].open
                && events_are(page, &[&created_line])
                && page.messages.len() == 1
                && page.messages[0].seq == Some(1)
        })
        .await?;
    let chat_id = created.chats[0]
        .chat_id
        .clone()
        .context("the chat list names no chat id")?;
    bob.screenshot(screenshots, "1-group-created").await?;

    // Alice's page learns of the group from its socket: listed, nothing unread (a
    // membership event is not a message to read).
    alice
        .wait_until("the group listed without a reload", PAGE_WAIT, |page| {
            page.chats.len() == 1
                && page.chats[0].name == two
                && page.chats[0].chat_id.as_deref() == Some(chat_id.as_str())
                && page.chats[0].unread_badge.is_none()
        })
        .await?;
    alice.screenshot(screenshots, "1-group-listed").await?;

    // Bob adds Carol by email from the group bar.
    bob.add_member(&carol_person.email).await?;
    bob.wait_until("Carol added: the `added` line, 3 members", PAGE_WAIT, |page| {
        page.conversation_title == three
            && page.chats[0].name == three
            && page.group_members == "Bob Tallor, Alice Swift, Carol Reed"
            && events_are(page, &[&created_line, &added_line])
    })
    .await?;
    let members = http.group_members(&carol, &chat_id).await?;
    let names: Vec<String> = members
        .members
        .iter()
        .map(|member| format!("{} {}", member.name, member.surname))
        .collect();
    ensure!(
        members.kind == "group"
            && members.title.as_deref() == Some(TITLE)
            && names == ["Bob Tallor", "Alice Swift", "Carol Reed"],
        "Carol reads the group's members as {members:?}"
    );
    bob.screenshot(screenshots, "2-carol-added").await?;

    // Bob writes; Alice's page, the group still closed, counts it unread and reports it
    // received: Bob's mark summarises that.
    bob.send(GREETING).await?;
    bob.wait_until("his message acked", PAGE_WAIT, |page| {
        let mine = page.chat_messages();
        mine.len() == 1 && mine[0].mine && mine[0].text == GREETING && mine[0].seq == Some(3)
    })
    .await?;
    let unread = alice
        .wait_until("the group with Bob's message unread", PAGE_WAIT, |page| {
            page.chats.len() == 1
                && page.chats[0].name.starts_with(&format!("{TITLE} ("))
                && page.chats[0].unread_badge.as_deref() == Some("1")
        })
        .await?;
    println!(
        "browser group test: alice's list, the group closed, after Carol was added: {:?}",
        unread.chats[0].name
    );
    alice.screenshot(screenshots, "2-message-unread").await?;
    let mark_is = |page: &PageSnapshot, summary: &str| {
        let mine = page.chat_messages();
        mine.len() == 1
            && mine[0].mine
            && mine[0].mark.as_deref() == Some("created")
            && mine[0].mark_text.as_deref() == Some(summary)
    };
    bob.wait_until("received by Alice, read by no one", PAGE_WAIT, |page| {
        mark_is(page, RECEIVED_BY_ALICE_ONLY)
    })
    .await?;

    // Alice opens the group: every line in order, Bob's message under his name; her page
    // reports it read, and Bob's mark says so (Carol has received nothing).
    alice.open_group(TITLE, PAGE_WAIT).await?;
    alice
        .wait_until("the group open: its events and Bob's message", PAGE_WAIT, |page| {
            let shown = page.chat_messages();
            let seqs: Vec<Option<u64>> = page.messages.iter().map(|message| message.seq).collect();
            page.conversation_title == three
                && page.group_bar_shown
                && page.group_members == "Bob Tallor, Alice Swift, Carol Reed"
                && page.chats.len() == 1
                && page.chats[0].name == three
                && page.chats[0].open
                && page.chats[0].unread_badge.is_none()
                && events_are(page, &[&created_line, &added_line])
                && seqs == [Some(1), Some(2), Some(3)]
                && shown.len() == 1
                && shown[0].text == GREETING
                && !shown[0].mine
                && shown[0].sender.as_deref() == Some("Bob Tallor")
                && shown[0].mark.is_none()
        })
        .await?;
    bob.wait_until("read by Alice, not received by Carol", PAGE_WAIT, |page| {
        mark_is(page, READ_BY_ALICE_ONLY)
    })
    .await?;
    bob.screenshot(screenshots, "3-read-by-alice").await?;
    alice.screenshot(screenshots, "3-group-open").await?;

    // Alice leaves: the group is gone from her page; Bob's shows it, with 2 members left.
    alice.leave_group().await?;
    alice
        .wait_until("the group gone from her page", PAGE_WAIT, |page| {
            page.chats.is_empty()
                && !page.group_bar_shown
                && page.conversation_title == "Choose a chat"
                && page.messages.is_empty()
        })
        .await?;
    bob.wait_until("Alice's `left` line, 2 members", PAGE_WAIT, |page| {
        page.conversation_title == two
            && page.chats[0].name == two
            && page.group_members == "Bob Tallor, Carol Reed"
            && events_are(page, &[&created_line, &added_line, &left_line])
            && page.messages.last().and_then(|last| last.event.as_deref()) == Some("left")
    })
    .await?;
    let history = http.messages(&carol, &chat_id, 0, 100).await?;
    let kinds: Vec<Option<&str>> = history
        .messages
        .iter()
        .map(|message| message.event.as_ref().map(|event| event.kind.as_str()))
        .collect();
    ensure!(
        kinds == [Some("created"), Some("added"), None, Some("left")] && history.messages[2].text == GREETING,
        "Carol reads the group's history as {history:?}"
    );
    for page in [bob, alice] {
        let path = page.screenshot(screenshots, "4-after-alice-left").await?;
        println!("browser group test: screenshot {}", path.display());
    }
    let alices = alice.snapshot().await?;
    ensure!(
        alices.chats.is_empty(),
        "the group came back to Alice's page after she left: {alices:?}"
    );
    for page in [bob, alice] {
        let snapshot = page.snapshot().await?;
        ensure!(
            snapshot.error.is_none(),
            "{} sees an error: {:?}",
            page.who,
            snapshot.error
        );
    }
    Ok(())
}
