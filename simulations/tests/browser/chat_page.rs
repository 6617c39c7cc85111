//! One person's browser on Parley's web page: what they type and click (real WebDriver
//! input), and what the page shows them (read from the DOM). Shared by the browser test
//! binaries; not every one of them uses every helper or reads every field.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fantoccini::{Client, Locator};
use parley_launcher::readiness::{poll_until_ready, Probe};
use protocol::auth::SignUpRequest;
use serde::Deserialize;

/// What the page shows, read in one go so every check sees one consistent moment.
const SNAPSHOT_SCRIPT: &str = r##"
const byId = (id) => document.getElementById(id);
const line = byId("status-line");
const text = (element, selector) => { const found = element.querySelector(selector); return found ? found.textContent : null; };
return {
  status_state: line.dataset.state,
  status_node: line.dataset.node,
  replayed: line.dataset.replayed ? Number(line.dataset.replayed) : null,
  connection: Number(line.dataset.connection || 0),
  status_text: line.textContent,
  error: byId("error-banner").hidden ? null : byId("error-text").textContent,
  auth_notice: byId("auth-notice").textContent,
  signed_in: !byId("chat-screen").hidden,
  find_result_shown: !byId("find-result").hidden,
  conversation_title: byId("conversation-title").textContent,
  group_bar_shown: !byId("group-bar").hidden,
  group_members: byId("group-members").textContent,
  chats: [...document.querySelectorAll("#chat-list li.chat")].map((item) => ({
    chat_id: item.dataset.chatId || null,
    name: text(item, ".chat-name"),
    unread_badge: text(item, ".unread-count"),
    online: item.querySelector(".presence-dot").classList.contains("online"),
    open: item.classList.contains("open"),
  })),
  messages: [...document.querySelectorAll("#messages li.message")].map((item) => ({
    text: text(item, ".message-text"),
    seq: item.dataset.seq ? Number(item.dataset.seq) : null,
    id: item.dataset.id || null,
    mine: item.classList.contains("mine"),
    mark: item.querySelector(".mark") ? item.querySelector(".mark").dataset.mark : null,
    mark_text: text(item, ".mark"),
    sender: text(item, ".message-sender"),
    event: item.dataset.event || null,
  })),
};
"##;

#[derive(Debug, Clone, Deserialize)]
pub struct PageSnapshot {
    pub status_state: String,
    pub status_node: String,
    /// Messages the server replayed when the current connection opened.
    pub replayed: Option<u64>,
    /// Which of the page's sockets is the current one (1 is the first).
    pub connection: u64,
    pub status_text: String,
    pub error: Option<String>,
    pub auth_notice: String,
    pub signed_in: bool,
    pub find_result_shown: bool,
    pub conversation_title: String,
    /// The bar above an open group's messages (members, add, leave).
    #[serde(default)]
    pub group_bar_shown: bool,
    /// The group bar's member names, comma-separated.
    #[serde(default)]
    pub group_members: String,
    pub chats: Vec<ChatListEntry>,
    pub messages: Vec<ShownMessage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatListEntry {
    #[serde(default)]
    pub chat_id: Option<String>,
    /// A companion's name, or a group's title and member count: `Title (3)`.
    pub name: String,
    pub unread_badge: Option<String>,
    pub online: bool,
    pub open: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShownMessage {
    pub text: String,
    /// None while the message waits for its ack.
    pub seq: Option<u64>,
    pub id: Option<String>,
    pub mine: bool,
    /// created, received or read on one's own messages; sending before the ack.
    pub mark: Option<String>,
    /// The mark as shown: `✓✓ read`, or in a group a summary such as `✓ received by 1 of
    /// 2, read by 1`.
    #[serde(default)]
    pub mark_text: Option<String>,
    /// A group member's name above their message (none on one's own and on events).
    #[serde(default)]
    pub sender: Option<String>,
    /// A group's membership event (`created`, `added`, `left`, `removed`), shown as a
    /// line of its own whose `text` is the sentence.
    #[serde(default)]
    pub event: Option<String>,
}

impl PageSnapshot {
    pub fn is_live(&self) -> bool {
        self.signed_in && self.status_state == "live" && !self.status_node.is_empty()
    }

    pub fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|message| message.text.as_str()).collect()
    }

    /// The membership event lines shown, in order: (kind, sentence).
    pub fn events(&self) -> Vec<(&str, &str)> {
        self.messages
            .iter()
            .filter_map(|message| Some((message.event.as_deref()?, message.text.as_str())))
            .collect()
    }

    /// The messages shown that are not membership events.
    pub fn chat_messages(&self) -> Vec<&ShownMessage> {
        self.messages.iter().filter(|message| message.event.is_none()).collect()
    }
}

pub struct ChatPage {
    pub who: String,
    client: Client,
}

impl ChatPage {
    pub async fn open(who: &str, client: Client, url: &str) -> anyhow::Result<ChatPage> {
        client
            .goto(url)
            .await
            .with_context(|| format!("{who}: opening {url}"))?;
        Ok(ChatPage {
            who: who.to_owned(),
            client,
        })
    }

    pub async fn snapshot(&self) -> anyhow::Result<PageSnapshot> {
        let value = self
            .client
            .execute(SNAPSHOT_SCRIPT, Vec::new())
            .await
            .with_context(|| format!("{}: reading the page", self.who))?;
        serde_json::from_value(value).with_context(|| format!("{}: decoding the page snapshot", self.who))
    }

    /// Polls the page until `condition` holds; fails after `timeout` showing the page.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&PageSnapshot) -> bool,
    ) -> anyhow::Result<PageSnapshot> {
        let condition = &condition;
        poll_until_ready(&format!("{}: {what}", self.who), timeout, || async move {
            let snapshot = self.snapshot().await?;
            Ok(if condition(&snapshot) {
                Probe::Ready(snapshot)
            } else {
                Probe::NotYet(anyhow::anyhow!("the page shows {snapshot:#?}"))
            })
        })
        .await
    }

    async fn type_into(&self, element_id: &str, text: &str) -> anyhow::Result<()> {
        let element = self.client.find(Locator::Id(element_id)).await?;
        element.clear().await?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("{}: typing into #{element_id}", self.who))
    }

    async fn click(&self, element_id: &str) -> anyhow::Result<()> {
        let element = self.client.find(Locator::Id(element_id)).await?;
        element
            .click()
            .await
            .with_context(|| format!("{}: clicking #{element_id}", self.who))
    }

    pub async fn sign_up(&self, person: &SignUpRequest) -> anyhow::Result<()> {
        self.type_into("sign-up-email", &person.email).await?;
        self.type_into("sign-up-password", &person.password).await?;
        self.type_into("sign-up-name", &person.name).await?;
        self.type_into("sign-up-surname", &person.surname).await?;
        // The seed's RFC 3339 birthday; the form asks for the date part.
        self.type_into("sign-up-birthday", &person.birthday[..10]).await?;
        let sex = self.client.find(Locator::Id("sign-up-sex")).await?;
        sex.select_by_value(&person.sex).await?;
        self.type_into("sign-up-city", &person.city).await?;
        self.type_into("sign-up-interests", &person.interests).await?;
        self.click("sign-up-button").await
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<()> {
        self.type_into("sign-in-email", email).await?;
        self.type_into("sign-in-password", password).await?;
        self.click("sign-in-button").await
    }

    /// Finds `email` with the find form, until the page shows them found.
    pub async fn find(&self, email: &str, timeout: Duration) -> anyhow::Result<()> {
        self.type_into("find-email", email).await?;
        self.click("find-button").await?;
        self.wait_until(&format!("{email} found"), timeout, |page| page.find_result_shown)
            .await?;
        Ok(())
    }

    /// Finds `email` and starts a chat with them (the chat opens).
    pub async fn start_chat_with(&self, email: &str, timeout: Duration) -> anyhow::Result<()> {
        self.find(email, timeout).await?;
        self.click("start-chat-button").await
    }

    /// Creates a group titled `title` with the sidebar's form; the person found last (see
    /// [`ChatPage::find`]) is its first member besides the creator. The group opens.
    pub async fn create_group(&self, title: &str) -> anyhow::Result<()> {
        self.type_into("group-title", title).await?;
        self.click("create-group-button").await
    }

    /// Adds the user with `email` to the open group, with the group bar's form.
    pub async fn add_member(&self, email: &str) -> anyhow::Result<()> {
        self.type_into("add-member-email", email).await?;
        self.click("add-member-button").await
    }

    /// Leaves the open group (the group bar's Leave button).
    pub async fn leave_group(&self) -> anyhow::Result<()> {
        self.click("leave-group-button").await
    }

    /// Clicks the chat whose name is `name` in the chat list, waiting for it to be listed.
    pub async fn open_chat(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let row = format!(r#"//ul[@id="chat-list"]/li[span[@class="chat-name"]="{name}"]"#);
        self.click_chat_row(&row, name, timeout).await
    }

    /// Clicks the group titled `title` in the chat list (listed as `title (members)`,
    /// whatever the count), waiting for it to be listed.
    pub async fn open_group(&self, title: &str, timeout: Duration) -> anyhow::Result<()> {
        let row = format!(r#"//ul[@id="chat-list"]/li[starts-with(span[@class="chat-name"], "{title} (")]"#);
        self.click_chat_row(&row, title, timeout).await
    }

    async fn click_chat_row(&self, row: &str, name: &str, timeout: Duration) -> anyhow::Result<()> {
        poll_until_ready(
            &format!("{}: opening the chat {name}", self.who),
            timeout,
            || async move {
                // The row may not be listed yet, or be rebuilt between finding and clicking.
                let clicked = match self.client.find(Locator::XPath(row)).await {
                    Ok(element) => element.click().await,
                    Err(error) => Err(error),
                };
                Ok(match clicked {
                    Ok(()) => Probe::Ready(()),
                    Err(error) => Probe::NotYet(error.into()),
                })
            },
        )
        .await
    }

    /// Types a message into the open chat and presses Send.
    pub async fn send(&self, text: &str) -> anyhow::Result<()> {
        self.type_into("message-text", text).await?;
        self.click("send-button").await
    }

    /// The access token the page keeps in its session storage.
    pub async fn access_token(&self) -> anyhow::Result<String> {
        let script = r#"return JSON.parse(sessionStorage.getItem("parley.session")).access_token;"#;
        let token = self.client.execute(script, Vec::new()).await?;
        token
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{}: no access token in the session storage: {token}", self.who))
    }

    pub async fn reload(&self) -> anyhow::Result<()> {
        Ok(self.client.refresh().await?)
    }

    /// Writes a PNG of the page as `<dir>/<who>-<moment>.png` and returns its path.
    pub async fn screenshot(&self, dir: &Path, moment: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = dir.join(format!("{}-{moment}.png", self.who));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub async fn close(self) -> anyhow::Result<()> {
        Ok(self.client.close().await?)
    }
}
