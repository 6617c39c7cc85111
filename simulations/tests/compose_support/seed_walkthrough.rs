//! The seed's walkthrough against the compose stack: its curl commands run verbatim by
//! bash (only the published port may differ from 10000), then its websocket frames, sent
//! as Bob through nginx and received by Alice.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use parley_client::MessengerSocket;
use protocol::websocket::{actions, DeliveryPayload, Envelope, ReplayCompletePayload};
use serde_json::Value;

/// The seed's commands as docs/getting-started.md lists them (the seed's own history command has its
/// example chat id where this has `${CHAT_ID}`). The last line hands the variables back.
const SEED_CURL_COMMANDS: &str = r#"
curl -X POST -H "Content-Type: application/json" \
    -d '{"email": "bob@email.com", "password": "1234567890", "name": "Bob", "surname": "Tallor", "birthday": "1994-04-10T20:21:25+00:00", "sex": "male", "city": "New Yourk", "interests": "programming"}' \
    http://localhost:10000/auth/sign-up
curl -X POST -H "Content-Type: application/json" \
    -d '{"email": "alice@email.com", "password": "1234567890", "name": "Alice", "surname": "Swift", "birthday": "1995-10-10T20:21:25+00:00", "sex": "female", "city": "California", "interests": "running"}' \
    http://localhost:10000/auth/sign-up

export BOB_ACCESS_TOKEN=$(curl -X POST -H "Content-Type: application/json" \
    -d '{"email": "bob@email.com", "password": "1234567890"}' \
    http://localhost:10000/auth/sign-in | jq -r '.access_token')
export ALICE_ID=$(curl -X GET -H "Content-Type: application/json" -H "Authorization: ${BOB_ACCESS_TOKEN}" \
    http://localhost:10000/auth/user/get-by-email?email=alice@email.com | jq -r '.user_id')
export CHAT_ID=$(curl -X POST -H "Content-Type: application/json" -H "Authorization: ${BOB_ACCESS_TOKEN}" \
    -d '{"companion_id": "'"$ALICE_ID"'"}' \
    http://localhost:10000/messenger/create-chat | jq -r '.chat_id')
export ALICE_ACCESS_TOKEN=$(curl -X POST -H "Content-Type: application/json" \
    -d '{"email": "alice@email.com", "password": "1234567890"}' \
    http://localhost:10000/auth/sign-in | jq -r '.access_token')
curl -X GET -H "Content-Type: application/json" -H "Authorization: ${ALICE_ACCESS_TOKEN}" \
    http://localhost:10000/messenger/messages?chat_id=${CHAT_ID}

jq -cn --arg bob "$BOB_ACCESS_TOKEN" --arg alice "$ALICE_ACCESS_TOKEN" --arg alice_id "$ALICE_ID" \
    --arg chat "$CHAT_ID" '{bob_token: $bob, alice_token: $alice, alice_id: $alice_id, chat_id: $chat}'
"#;

/// The seed's three frames, with `{CHAT_ID}` for the chat.
const SEED_FRAMES: [&str; 3] = [
    r#"{"topic":"messenger", "action": "send-message", "payload":"{\"chat_id\":\"{CHAT_ID}\", \"messages\":[{\"text\": \"Hello, Alice!\", \"status\": \"created\"}]}"}"#,
    r#"{"topic":"messenger", "action": "send-message", "payload":"{\"chat_id\":\"{CHAT_ID}\", \"messages\":[{\"text\": \"What is up?\", \"status\": \"created\"}]}"}"#,
    r#"{"topic":"messenger", "action": "send-message", "payload":"{\"chat_id\":\"{CHAT_ID}\", \"messages\":[{\"text\": \"I miss you!\", \"status\": \"created\"}]}"}"#,
];
pub const SEED_TEXTS: [&str; 3] = ["Hello, Alice!", "What is up?", "I miss you!"];

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether Bob and Alice are new (first run) or already signed up (a later run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUps {
    Created,
    AlreadyTaken,
}

/// What the commands left in their variables, and what the history showed.
#[derive(Debug, Clone)]
pub struct CurlWalkthrough {
    pub bob_token: String,
    pub alice_token: String,
    pub alice_id: String,
    pub chat_id: String,
    pub history_texts: Vec<String>,
}

/// Runs the seed's curl commands with bash against `localhost:PORT` and checks every answer.
pub async fn run_seed_curl_commands(port: u16, expected_sign_ups: SignUps) -> anyhow::Result<CurlWalkthrough> {
    let script = SEED_CURL_COMMANDS.replace("http://localhost:10000/", &format!("http://localhost:{port}/"));
    let output = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running the seed's curl commands with bash")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "the seed's commands failed ({}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // curl prints the answers back to back: a stream of JSON documents.
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .with_context(|| format!("the commands printed something that is not JSON: {stdout}"))?;
    let [bob_sign_up, alice_sign_up, history, variables] = answers.as_slice() else {
        bail!("expected two sign-ups, the history and the variables, got: {stdout}");
    };
    for sign_up in [bob_sign_up, alice_sign_up] {
        match expected_sign_ups {
            SignUps::Created => ensure!(sign_up["user_id"].is_string(), "sign-up answered {sign_up}"),
            SignUps::AlreadyTaken => ensure!(sign_up["code"] == "conflict", "second sign-up answered {sign_up}"),
        }
    }
    let variable = |name: &str| -> anyhow::Result<String> {
        let value = variables[name].as_str().unwrap_or_default();
        ensure!(
            !value.is_empty() && value != "null",
            "${name} is empty after the commands: {stdout}"
        );
        Ok(value.to_owned())
    };
    let walkthrough = CurlWalkthrough {
        bob_token: variable("bob_token")?,
        alice_token: variable("alice_token")?,
        alice_id: variable("alice_id")?,
        chat_id: variable("chat_id")?,
        history_texts: history["messages"]
            .as_array()
            .with_context(|| format!("the history has no messages array: {history}"))?
            .iter()
            .map(|message| message["text"].as_str().unwrap_or_default().to_owned())
            .collect(),
    };
    if expected_sign_ups == SignUps::Created {
        ensure!(
            alice_sign_up["user_id"] == walkthrough.alice_id.as_str(),
            "get-by-email found {} for Alice, who signed up as {alice_sign_up}",
            walkthrough.alice_id
        );
    }
    Ok(walkthrough)
}

/// Alice opens her socket, Bob his, and Bob types the seed's three frames: Alice gets the
/// three texts in order, Bob an ack for each. Returns the nodes Alice and Bob landed on.
pub async fn exchange_seed_frames(public_url: &str, walkthrough: &CurlWalkthrough) -> anyhow::Result<(String, String)> {
    let mut alice = MessengerSocket::connect(public_url, &walkthrough.alice_token).await?;
    let (_, alice_ready) = alice.until_action(actions::REPLAY_COMPLETE, FRAME_TIMEOUT).await?;
    let mut bob = MessengerSocket::connect(public_url, &walkthrough.bob_token).await?;
    let (_, bob_ready) = bob.until_action(actions::REPLAY_COMPLETE, FRAME_TIMEOUT).await?;
    for frame in SEED_FRAMES {
        bob.send_text(frame.replace("{CHAT_ID}", &walkthrough.chat_id)).await?;
        bob.until_action(actions::ACK, FRAME_TIMEOUT)
            .await
            .context("Bob waiting for the ack of a seed frame")?;
    }
    let mut received = Vec::new();
    while received.len() < SEED_TEXTS.len() {
        let (_, delivery) = alice
            .until_action(actions::SEND_MESSAGE, FRAME_TIMEOUT)
            .await
            .with_context(|| format!("Alice waiting for Bob's messages (got {received:?})"))?;
        let payload: DeliveryPayload = serde_json::from_str(&delivery.payload)
            .with_context(|| format!("a delivery with a bad payload: {}", delivery.payload))?;
        ensure!(
            payload.chat_id == walkthrough.chat_id,
            "a delivery for another chat: {payload:?}"
        );
        received.extend(payload.messages.into_iter().map(|message| message.text));
    }
    ensure!(received == SEED_TEXTS, "Alice got {received:?}");
    alice.close().await?;
    bob.close().await?;
    Ok((node_of(&alice_ready)?, node_of(&bob_ready)?))
}

fn node_of(replay_complete: &Envelope) -> anyhow::Result<String> {
    let payload: ReplayCompletePayload = serde_json::from_str(&replay_complete.payload)
        .with_context(|| format!("a bad replay-complete: {}", replay_complete.payload))?;
    Ok(payload.node)
}
