//! Bob and Alice of the seed in two browsers: who they are, signing them up and in, and
//! telling which node a page's socket is on. Shared by the browser test binaries.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use protocol::auth::SignUpRequest;

use crate::chat_page::{ChatPage, PageSnapshot};

/// Generous for a loaded 2-core CI machine; every wait is a poll that ends as soon as
/// the page shows what is expected.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);
pub const PASSWORD: &str = "1234567890";

pub fn person(name: &str, surname: &str, sex: &str, city: &str, interests: &str) -> SignUpRequest {
    SignUpRequest {
        email: format!("{}@email.com", name.to_lowercase()),
        password: PASSWORD.to_owned(),
        name: name.to_owned(),
        surname: surname.to_owned(),
        birthday: "1994-04-10T20:21:25+00:00".to_owned(),
        sex: sex.to_owned(),
        city: city.to_owned(),
        interests: interests.to_owned(),
    }
}

pub fn bob() -> SignUpRequest {
    person("Bob", "Tallor", "male", "New Yourk", "programming")
}

pub fn alice() -> SignUpRequest {
    person("Alice", "Swift", "female", "California", "running")
}

/// `<target>/tmp/browser-screenshots/run-<pid>/`, created.
pub fn screenshots_dir() -> anyhow::Result<PathBuf> {
    let run = format!("run-{}", std::process::id());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-screenshots")
        .join(run);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The node in the page's status line, checked against its visible text.
pub fn serving_node(page: &PageSnapshot) -> anyhow::Result<String> {
    ensure!(
        page.status_text.contains(&page.status_node),
        "the status line does not name its node: {page:?}"
    );
    Ok(page.status_node.clone())
}

/// Signs `who` up and in on `page`, until the page is live.
pub async fn sign_up_and_in(page: &ChatPage, who: &SignUpRequest) -> anyhow::Result<()> {
    page.sign_up(who).await?;
    page.wait_until("account created", PAGE_WAIT, |page| {
        page.auth_notice.contains("Account created")
    })
    .await?;
    page.sign_in(&who.email, PASSWORD).await?;
    page.wait_until("signed in and live", PAGE_WAIT, PageSnapshot::is_live)
        .await?;
    Ok(())
}

/// Reloads `page` until nginx puts its socket on a node other than `avoided_node`, with
/// the chat `chat_name` open again showing `messages` messages; returns that node.
pub async fn move_off_node(
    page: &ChatPage,
    avoided_node: &str,
    chat_name: &str,
    messages: usize,
) -> anyhow::Result<String> {
    let mut snapshot = page.snapshot().await?;
    for _ in 0..20 {
        if serving_node(&snapshot)? != avoided_node {
            break;
        }
        page.reload().await?;
        page.wait_until("live again after a reload", PAGE_WAIT, PageSnapshot::is_live)
            .await?;
        page.open_chat(chat_name, PAGE_WAIT).await?;
        snapshot = page
            .wait_until("the chat reopened", PAGE_WAIT, |page| page.messages.len() == messages)
            .await?;
    }
    let node = serving_node(&snapshot)?;
    ensure!(
        node != avoided_node,
        "{} stayed on {avoided_node} through 20 reloads",
        page.who
    );
    Ok(node)
}
