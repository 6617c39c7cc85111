//! Thousands of signed-in users for the benchmarks that hold thousands of sockets, and a
//! chat each with a sender.
//!
//! Every sign-up and sign-in hashes a password; each node hashes two at a time and queues
//! sixteen more before it answers 429. Sixteen at once through nginx keeps both nodes
//! busy and neither queue full. The bench cluster's nodes run with a cheap scrypt cost and
//! no per-address sign-in limit (see [`super::BENCH_NODE_ARGS`]); a cluster started
//! without them makes this slow, then refused.

use anyhow::Context;
use futures::{stream, StreamExt, TryStreamExt};

use crate::load::load_users::{sign_up_and_in, SignedInUser};
use parley_client::http::ParleyHttp;

const SIGN_UP_CONCURRENCY: usize = 16;
/// create-chat is one master transaction and no hashing.
const CREATE_CHAT_CONCURRENCY: usize = 32;

/// `count` fresh users named `name`, in index order.
pub async fn sign_up_many(
    http: &ParleyHttp,
    run_tag: &str,
    name: &str,
    count: usize,
) -> anyhow::Result<Vec<SignedInUser>> {
    stream::iter(0..count)
        .map(|index| async move {
            sign_up_and_in(http, name, &format!("{run_tag}-{index}"))
                .await
                .with_context(|| format!("user {index} of {count}"))
        })
        .buffered(SIGN_UP_CONCURRENCY)
        .try_collect()
        .await
}

/// For each `(starter, companion)`: the chat the starter opens with the companion, in
/// order. The starter opens it, so each starter's chat limit is spent once, however many
/// chats the companion is in.
pub async fn create_chats(http: &ParleyHttp, pairs: &[(&SignedInUser, &SignedInUser)]) -> anyhow::Result<Vec<String>> {
    stream::iter(pairs.iter().enumerate())
        .map(|(index, (starter, companion))| async move {
            http.create_chat(&starter.access_token, &companion.user_id)
                .await
                .with_context(|| format!("creating chat {index}"))
        })
        .buffered(CREATE_CHAT_CONCURRENCY)
        .try_collect()
        .await
}
