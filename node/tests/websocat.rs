//! The seed's websocket walkthrough with the real `websocat`, verbatim, through nginx,
//! with Bob and Alice on different nodes.

#[path = "support/test_app.rs"]
mod test_app;

use std::process::Stdio;
use std::time::Duration;

use protocol::websocket::{actions, DeliveryPayload, Envelope, ReplayCompletePayload};
use test_app::{shared_servers, TestApp};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BINARY: &str = "websocat";
const WAIT: Duration = Duration::from_secs(10);

/// `websocat` from PATH or cargo's bin dir (deploy/install.sh installs it).
fn websocat_binary() -> std::path::PathBuf {
    let in_cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin/websocat"));
    match in_cargo_home {
        Some(path) if path.is_file() => path,
        _ => "websocat".into(),
    }
}

/// One terminal running the seed's `websocat ws://localhost:10000/messenger/ws?token=...`.
struct Terminal {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    node: String,
}

impl Terminal {
    async fn open(public_url: &str, token: &str) -> Terminal {
        let url = format!("{}/messenger/ws?token={token}", public_url.replacen("http", "ws", 1));
        let mut child = Command::new(websocat_binary())
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("websocat is installed by deploy/install.sh");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = String::new();
        while node.is_empty() {
            let envelope = next_envelope(&mut lines).await;
            if envelope.action == actions::REPLAY_COMPLETE {
                node = envelope.decode_payload::<ReplayCompletePayload>().unwrap().node;
            }
        }
        Terminal { child, lines, node }
    }

    async fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }
}

async fn next_envelope(lines: &mut Lines<BufReader<ChildStdout>>) -> Envelope {
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("websocat printed nothing in time")
        .unwrap()
        .expect("websocat exited");
    serde_json::from_str(&line).unwrap_or_else(|error| panic!("not an envelope: {line}: {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_websocat_walkthrough_works_verbatim_across_nodes() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    let http = &app.http;
    let bob_request = serde_json::from_str(
        r#"{"email": "bob@email.com", "password": "1234567890", "name": "Bob", "surname": "Tallor", "birthday": "1994-04-10T20:21:25+00:00", "sex": "male", "city": "New Yourk", "interests": "programming"}"#,
    )
    .unwrap();
    let alice_request = serde_json::from_str(
        r#"{"email": "alice@email.com", "password": "1234567890", "name": "Alice", "surname": "Swift", "birthday": "1995-10-10T20:21:25+00:00", "sex": "female", "city": "California", "interests": "running"}"#,
    )
    .unwrap();
    http.sign_up_ok(&bob_request).await.unwrap();
    let alice_id = http.sign_up_ok(&alice_request).await.unwrap();
    let bob_token = http.sign_in("bob@email.com", "1234567890").await.unwrap().access_token;
    let alice_token = http
        .sign_in("alice@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let chat_id = http.create_chat(&bob_token, &alice_id).await.unwrap();

    let mut alice = Terminal::open(http.base_url(), &alice_token).await;
    // nginx balances; make sure Bob lands on the other node, as in the seed's two instances.
    let mut bob = Terminal::open(http.base_url(), &bob_token).await;
    for _ in 0..10 {
        if bob.node != alice.node {
            break;
        }
        bob = Terminal::open(http.base_url(), &bob_token).await;
    }
    assert_ne!(bob.node, alice.node, "Bob and Alice on different nodes");

    let texts = ["Hello, Alice!", "What is up?", "I miss you!"];
    for text in texts {
        bob.type_line(&format!(
            r#"{{"topic":"messenger", "action": "send-message", "payload":"{{\"chat_id\":\"{chat_id}\", \"messages\":[{{\"text\": \"{text}\", \"status\": \"created\"}}]}}"}}"#
        ))
        .await;
    }
    let mut received = Vec::new();
    while received.len() < texts.len() {
        let envelope = next_envelope(&mut alice.lines).await;
        if envelope.action == actions::SEND_MESSAGE {
            let delivery: DeliveryPayload = envelope.decode_payload().unwrap();
            received.extend(delivery.messages.into_iter().map(|message| message.text));
        }
    }
    assert_eq!(received, texts);
    let history = http.messages(&alice_token, &chat_id, 0, 100).await.unwrap();
    let stored: Vec<_> = history.messages.iter().map(|message| message.text.as_str()).collect();
    assert_eq!(stored, texts);
}

/// The node pings every socket and closes one that answers nothing: websocat answers the
/// pings by itself, so the seed's quiet terminal stays open well past the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocat_terminal_answers_the_pings_and_stays_open() {
    const IDLE_TIMEOUT: Duration = Duration::from_millis(1000);
    let flags = [
        "--websocket-ping-interval-ms",
        "200",
        "--websocket-idle-timeout-ms",
        "1000",
    ];
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &flags).await;
    let http = &app.http;
    let carol = parley_client::http::seed_person("Carol", "websocat-quiet");
    http.sign_up_ok(&carol).await.unwrap();
    let token = http.sign_in(&carol.email, &carol.password).await.unwrap().access_token;
    let mut terminal = Terminal::open(http.base_url(), &token).await;
    // Three idle timeouts without typing: the node must not close it (websocat would
    // print nothing more, or exit, and the read below would end early).
    match tokio::time::timeout(IDLE_TIMEOUT * 3, terminal.lines.next_line()).await {
        Err(_) => {}
        Ok(line) => panic!("the quiet terminal printed or ended: {line:?}"),
    }
    terminal
        .type_line(r#"{"topic":"messenger","action":"heartbeat","ref":"still-there"}"#)
        .await;
    let answer = next_envelope(&mut terminal.lines).await;
    assert_eq!(answer.action, actions::HEARTBEAT);
    assert_eq!(answer.reference.as_deref(), Some("still-there"));
}
