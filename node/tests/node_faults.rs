//! Nodes under stress: a frozen peer, a graceful stop, a reader too slow to keep up.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use nix::sys::signal::Signal;
use parley_client::{MessengerSocket, SocketEvent};
use protocol::websocket::{actions, OutgoingMessage, PresencePayload};
use test_app::{connect_live, shared_servers, Pair, TestApp};
use tokio::time::Instant;

const BINARY: &str = "node_faults";
const WAIT: Duration = Duration::from_secs(10);

async fn pair(app: TestApp, tag: &str) -> Pair {
    Pair::in_app(app, tag).await
}

async fn connect_to(url: &str, token: &str) -> MessengerSocket {
    connect_live(url, token).await.0
}

/// Polls until the node's process is gone, failing after `WAIT`.
async fn wait_until_exited(pair: &Pair, node: &str, when: &str) {
    let deadline = Instant::now() + WAIT;
    while pair
        .app
        .app
        .status()
        .iter()
        .any(|component| component.name == node && component.alive)
    {
        assert!(Instant::now() < deadline, "{node} did not exit {when}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alive_members(view: &serde_json::Value) -> Vec<String> {
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|member| member["alive"] == true)
        .map(|member| member["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_is_declared_dead_within_five_seconds_and_its_users_go_offline() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    let pair = pair(app, "frozen").await;
    let mut alice = connect_to(&pair.app.app.node_url("node-1"), &pair.alice).await;
    let _bob = connect_to(&pair.app.app.node_url("node-2"), &pair.bob).await;
    let (_, online) = alice.until_action(actions::PRESENCE, WAIT).await.unwrap();
    assert!(online.decode_payload::<PresencePayload>().unwrap().online);

    // SIGSTOP keeps node-2's TCP connections open: only heartbeats can tell.
    pair.app.app.kill("node-2", Signal::SIGSTOP).unwrap();
    let frozen_at = Instant::now();
    let (_, offline) = alice.until_action(actions::PRESENCE, WAIT).await.unwrap();
    let offline: PresencePayload = offline.decode_payload().unwrap();
    assert_eq!(
        (offline.user_id.as_str(), offline.online),
        (pair.bob_id.as_str(), false)
    );
    assert!(
        frozen_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        frozen_at.elapsed()
    );
    let node_1 = pair.app.node("node-1");
    let view = node_1
        .request(reqwest::Method::GET, "/cluster", None, None)
        .await
        .unwrap();
    assert_eq!(alive_members(&view.body).len(), 1, "{}", view.body);

    // Thawed, it is alive again and its users are back.
    pair.app.app.kill("node-2", Signal::SIGCONT).unwrap();
    let (_, back) = alice
        .until_action(actions::PRESENCE, Duration::from_secs(20))
        .await
        .unwrap();
    let back: PresencePayload = back.decode_payload().unwrap();
    assert_eq!((back.user_id.as_str(), back.online), (pair.bob_id.as_str(), true));
    let deadline = Instant::now() + WAIT;
    loop {
        let view = node_1
            .request(reqwest::Method::GET, "/cluster", None, None)
            .await
            .unwrap();
        if alive_members(&view.body).len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "node-2 never came back: {}", view.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_and_the_node_exits() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    let pair = pair(app, "sigterm").await;
    let mut alice = connect_to(&pair.app.app.node_url("node-1"), &pair.alice).await;
    pair.app.app.kill("node-1", Signal::SIGTERM).unwrap();
    let code = loop {
        match alice.next_event(WAIT).await.unwrap() {
            SocketEvent::Closed(code) => break code,
            SocketEvent::Envelope(_) => continue,
        }
    };
    assert_eq!(code, Some(1001), "going away: reconnect elsewhere");
    wait_until_exited(&pair, "node-1", "after SIGTERM").await;
    // Alice resumes through nginx on the survivor.
    let again = connect_to(pair.app.http.base_url(), &pair.alice).await;
    again.close().await.unwrap();
}

/// One HTTP/1.1 exchange on an open connection: `request` written as is, the answer's
/// status, lowercase headers and body read back (a `Content-Length` body).
async fn exchange(connection: &mut tokio::net::TcpStream, request: String) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let head_end = loop {
        if let Some(end) = read.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0_u8; 4096];
        let count = tokio::time::timeout(WAIT, connection.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            count > 0,
            "the connection closed before an answer: {:?}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&chunk[..count]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |length| length.trim().parse().unwrap());
    while read.len() < head_end + length {
        let mut chunk = [0_u8; 4096];
        let count = tokio::time::timeout(WAIT, connection.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(count > 0, "the connection closed mid-body");
        read.extend_from_slice(&chunk[..count]);
    }
    let body = String::from_utf8_lossy(&read[head_end..head_end + length]).into_owned();
    (status, head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_stops_listening_first_and_answers_its_open_connections_with_connection_close() {
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 2, &["--shutdown-lame-duck-ms", "4000"]).await;
    let pair = pair(app, "lameduck").await;
    let node_1 = pair.app.app.node_url("node-1");
    let address = node_1.trim_start_matches("http://").to_owned();
    let mut alice = connect_to(&node_1, &pair.alice).await;
    // Connections opened before the stop, as nginx's kept-alive ones are.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    pair.app.app.kill("node-1", Signal::SIGTERM).unwrap();
    let code = loop {
        match alice.next_event(WAIT).await.unwrap() {
            SocketEvent::Closed(code) => break code,
            SocketEvent::Envelope(_) => continue,
        }
    };
    assert_eq!(code, Some(1001));

    // The listener is closed before the sockets are: a new connection is refused, which
    // nginx retries on another node whatever the method.
    let refused = tokio::net::TcpStream::connect(&address).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection during the lame duck: {refused:?}"
    );
    // The connections it has are still answered, not ready, each answer retiring its
    // connection.
    let (status, head, body) = exchange(
        &mut open[0],
        "GET /health/ready HTTP/1.1\r\nHost: parley\r\n\r\n".to_owned(),
    )
    .await;
    assert_eq!(status, 503);
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains(r#""draining":true"#), "{body}");
    let (status, head, _) = exchange(
        &mut open[1],
        format!(
            "GET /auth/user/get-by-email?email=alice.lameduck%40email.com HTTP/1.1\r\nHost: parley\r\nAuthorization: {}\r\n\r\n",
            pair.bob
        ),
    )
    .await;
    assert_eq!(status, 200, "requests are still served while draining");
    assert!(head.contains("connection: close"), "{head}");
    // An upgrade on an open connection is refused with a status nginx retries elsewhere.
    let (status, _, _) = exchange(
        &mut open[2],
        format!(
            "GET /messenger/ws?token={} HTTP/1.1\r\nHost: parley\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            pair.alice
        ),
    )
    .await;
    assert_eq!(status, 503, "an upgrade on a draining node");

    wait_until_exited(&pair, "node-1", "after its lame-duck period").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_is_closed_with_1008_and_the_sender_is_not_slowed() {
    // A small queue so the backlog overflows quickly; still room for a burst of acks
    // (a batch of frames is acked at once).
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &["--outbound-queue-frames", "64"]).await;
    let pair = pair(app, "slow").await;
    // Alice connects and then reads nothing at all.
    let mut alice = connect_to(pair.app.http.base_url(), &pair.alice).await;
    let mut bob = connect_to(pair.app.http.base_url(), &pair.bob).await;
    let text = "x".repeat(4000);
    const FRAMES: usize = 300;
    let started = Instant::now();
    for frame in 0..FRAMES {
        let batch = (0..15)
            .map(|index| OutgoingMessage {
                text: text.clone(),
                status: None,
                client_id: Some(format!("f{frame}-{index}")),
            })
            .collect();
        bob.send_messages(&pair.chat_id, batch, None).await.unwrap();
    }
    let mut acked_frames = 0;
    while acked_frames < FRAMES {
        bob.until_action(actions::ACK, WAIT).await.unwrap();
        acked_frames += 1;
    }
    println!("bob's {FRAMES} frames acked in {:?}", started.elapsed());

    // Alice's backlog ends in a 1008 close, not in unbounded memory.
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        assert!(Instant::now() < deadline, "no close for the slow reader");
        match alice.next_event(WAIT).await {
            Ok(SocketEvent::Closed(code)) => break code,
            Ok(SocketEvent::Envelope(_)) => continue,
            Err(error) => panic!("read failed before the close: {error:#}"),
        }
    };
    assert_eq!(code, Some(1008));
    // Nothing is lost: a reconnect replays everything.
    let mut socket = MessengerSocket::connect(pair.app.http.base_url(), &pair.alice)
        .await
        .unwrap();
    let (_, done) = socket
        .until_action(actions::REPLAY_COMPLETE, Duration::from_secs(30))
        .await
        .unwrap();
    let replayed: protocol::websocket::ReplayCompletePayload = done.decode_payload().unwrap();
    assert_eq!(replayed.replayed, (FRAMES * 15) as u64);
}

/// Firewall rules on loopback that cut the cluster link between two nodes (both
/// directions, established connections included); removed on drop, even when the test
/// fails.
struct ClusterPartition {
    rules: Vec<Vec<String>>,
}

impl ClusterPartition {
    fn cut(ports: &[u16]) -> ClusterPartition {
        let tag = format!("parley-test-{}", std::process::id());
        let mut rules = Vec::new();
        for port in ports {
            for direction in ["--dport", "--sport"] {
                let rule: Vec<String> = [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    direction,
                    &port.to_string(),
                    "-m",
                    "comment",
                    "--comment",
                    &tag,
                    "-j",
                    "DROP",
                ]
                .iter()
                .map(|part| part.to_string())
                .collect();
                let status = std::process::Command::new("iptables")
                    .arg("-I")
                    .args(&rule)
                    .status()
                    .expect("iptables runs (the tests run as root)");
                assert!(status.success(), "iptables -I {rule:?} failed");
                rules.push(rule);
            }
        }
        ClusterPartition { rules }
    }
}

impl Drop for ClusterPartition {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let _ = std::process::Command::new("iptables").arg("-D").args(&rule).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_peer_is_declared_dead_within_five_seconds_and_comes_back_when_healed() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    let cluster_ports = app.app.record().cluster_ports;
    let pair = pair(app, "partition").await;
    let mut alice = connect_to(&pair.app.app.node_url("node-1"), &pair.alice).await;
    let _bob = connect_to(&pair.app.app.node_url("node-2"), &pair.bob).await;
    let (_, online) = alice.until_action(actions::PRESENCE, WAIT).await.unwrap();
    assert!(online.decode_payload::<PresencePayload>().unwrap().online);

    let partition = ClusterPartition::cut(&cluster_ports);
    let cut_at = Instant::now();
    let (_, offline) = alice.until_action(actions::PRESENCE, WAIT).await.unwrap();
    let offline: PresencePayload = offline.decode_payload().unwrap();
    assert_eq!(
        (offline.user_id.as_str(), offline.online),
        (pair.bob_id.as_str(), false)
    );
    assert!(cut_at.elapsed() < Duration::from_secs(5), "took {:?}", cut_at.elapsed());

    drop(partition);
    let (_, back) = alice
        .until_action(actions::PRESENCE, Duration::from_secs(20))
        .await
        .unwrap();
    let back: PresencePayload = back.decode_payload().unwrap();
    assert_eq!((back.user_id.as_str(), back.online), (pair.bob_id.as_str(), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_ready_only_once_it_knows_its_peers_and_serves_alone_when_they_are_gone() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    let node_1 = app.node("node-1");

    // Ready means joined: the first answer after the restart already lists node-2.
    app.app.kill("node-1", Signal::SIGKILL).unwrap();
    app.app.start_component("node-1").await.unwrap();
    let view = node_1
        .request(reqwest::Method::GET, "/cluster", None, None)
        .await
        .unwrap();
    assert_eq!(
        alive_members(&view.body).len(),
        2,
        "ready before joining: {}",
        view.body
    );

    // With every peer gone, a restarted node waits out the join grace and serves alone.
    app.app.kill("node-2", Signal::SIGKILL).unwrap();
    app.app.kill("node-1", Signal::SIGKILL).unwrap();
    app.app.start_component("node-1").await.unwrap();
    let ready = node_1
        .request(reqwest::Method::GET, "/health/ready", None, None)
        .await
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["cluster_joined"], true, "{}", ready.body);
    let view = node_1
        .request(reqwest::Method::GET, "/cluster", None, None)
        .await
        .unwrap();
    assert_eq!(alive_members(&view.body).len(), 1, "{}", view.body);
}
