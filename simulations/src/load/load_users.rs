//! The accounts an experiment works with, created fresh for each run (emails carry the
//! run's tag, so runs against one long-lived cluster never collide): two users for the
//! HTTP load, and one sender and one recipient per chat pair, with their chat.

use anyhow::Context;
use futures::{stream, StreamExt, TryStreamExt};

use parley_client::http::{seed_person, ParleyHttp};

/// Sign-ups and sign-ins hash a password each; more at once only queue on the nodes'
/// bounded hashing pools.
const ACCOUNT_SETUP_CONCURRENCY: usize = 8;
const PASSWORD: &str = "1234567890";

/// One signed-in user.
#[derive(Debug, Clone)]
pub struct SignedInUser {
    /// The user's id (UUID).
    pub user_id: String,
    /// The email it signed up with.
    pub email: String,
    /// Its access token (expires after the node's access-token lifetime, an hour by default).
    pub access_token: String,
}

/// The users of the HTTP load: `looker` asks for `looked_up`'s id by email, as Bob asks
/// for Alice's in the seed.
#[derive(Debug, Clone)]
pub struct HttpLoadUsers {
    /// The user who asks (Bob in the seed).
    pub looker: SignedInUser,
    /// The user asked for (Alice in the seed).
    pub looked_up: SignedInUser,
}

/// A chat between a sender and a recipient.
#[derive(Debug, Clone)]
pub struct ChatPairAccounts {
    /// The pair's index, from 0.
    pub pair_index: usize,
    /// The user who sends.
    pub sender: SignedInUser,
    /// The user who receives.
    pub recipient: SignedInUser,
    /// Their chat (UUID).
    pub chat_id: String,
}

/// A tag no earlier run used: the clock and a random part.
pub fn fresh_run_tag() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since_epoch| since_epoch.as_secs())
        .unwrap_or_default();
    let random_part: u32 = rand::random();
    format!("{seconds}-{random_part:08x}")
}

pub(crate) async fn sign_up_and_in(http: &ParleyHttp, name: &str, tag: &str) -> anyhow::Result<SignedInUser> {
    let person = seed_person(name, tag);
    let user_id = http
        .sign_up_ok(&person)
        .await
        .with_context(|| format!("signing up {}", person.email))?;
    let tokens = http
        .sign_in(&person.email, PASSWORD)
        .await
        .with_context(|| format!("signing in {}", person.email))?;
    Ok(SignedInUser {
        user_id,
        email: person.email,
        access_token: tokens.access_token,
    })
}

/// Signs up and signs in the two users of the HTTP load; their emails carry `run_tag`.
pub async fn create_http_load_users(http: &ParleyHttp, run_tag: &str) -> anyhow::Result<HttpLoadUsers> {
    let (looker, looked_up) = tokio::try_join!(
        sign_up_and_in(http, "Looker", run_tag),
        sign_up_and_in(http, "Lookedup", run_tag)
    )?;
    Ok(HttpLoadUsers { looker, looked_up })
}

/// Signs up `pairs` senders and recipients (emails carrying `run_tag`) and creates each
/// pair's chat.
pub async fn create_chat_pairs(
    http: &ParleyHttp,
    run_tag: &str,
    pairs: usize,
) -> anyhow::Result<Vec<ChatPairAccounts>> {
    let mut created: Vec<ChatPairAccounts> = stream::iter(0..pairs)
        .map(|pair_index| create_chat_pair(http, run_tag, pair_index))
        // Each pair is two sign-ups; half the budget of pairs keeps the hashing budget.
        .buffer_unordered((ACCOUNT_SETUP_CONCURRENCY / 2).max(1))
        .try_collect()
        .await?;
    created.sort_by_key(|pair| pair.pair_index);
    Ok(created)
}

async fn create_chat_pair(http: &ParleyHttp, run_tag: &str, pair_index: usize) -> anyhow::Result<ChatPairAccounts> {
    let tag = format!("{run_tag}-{pair_index}");
    let (sender, recipient) = tokio::try_join!(
        sign_up_and_in(http, "Sender", &tag),
        sign_up_and_in(http, "Recipient", &tag)
    )?;
    let chat_id = http
        .create_chat(&sender.access_token, &recipient.user_id)
        .await
        .with_context(|| format!("creating the chat of pair {pair_index}"))?;
    Ok(ChatPairAccounts {
        pair_index,
        sender,
        recipient,
        chat_id,
    })
}
