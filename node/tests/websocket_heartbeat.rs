//! The websocket heartbeat, on one node reached directly (nginx would pass the pings
//! through; the node is what decides): the node pings a quiet socket every interval and
//! keeps it open while it answers, closes with 1001 a client that sends nothing at all,
//! and answers the browsers' application-level `heartbeat` at once.
//!
//! The node runs with short intervals so that each test takes a few seconds.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::websocket::{actions, Envelope, ErrorPayload, HeartbeatAnswerPayload};
use test_app::{node_metric, shared_servers, Pair, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = "websocket_heartbeat";
type ClientSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;
const PING_INTERVAL: Duration = Duration::from_millis(300);
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Room for a loaded 2-core machine on top of each expected moment.
const SLACK: Duration = Duration::from_secs(2);

async fn pair(tag: &str) -> Pair {
    let ping = PING_INTERVAL.as_millis().to_string();
    let idle = IDLE_TIMEOUT.as_millis().to_string();
    let flags = [
        "--websocket-ping-interval-ms",
        ping.as_str(),
        "--websocket-idle-timeout-ms",
        idle.as_str(),
    ];
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &flags).await;
    Pair::in_app(app, tag).await
}

/// node-1's `host:port`.
fn node_address(pair: &Pair) -> String {
    let url = pair.app.app.node_url("node-1");
    url.trim_start_matches("http://").to_owned()
}

/// One sample of node-1's Prometheus counter `name`.
async fn node_counter(pair: &Pair, name: &str) -> u64 {
    node_metric(&pair.app.app.node_url("node-1"), name).await as u64
}

#[tokio::test]
async fn a_quiet_socket_is_pinged_each_interval_and_kept_open_while_it_answers() {
    let pair = pair("pinged").await;
    let url = format!("ws://{}/messenger/ws?token={}", node_address(&pair), pair.alice);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let opened = Instant::now();
    // Reading is all it takes to answer: tungstenite queues the pong and flushes it on
    // the next read. Nothing else is sent, so only the pongs keep the socket open.
    let mut pings = Vec::new();
    let watch_until = opened + IDLE_TIMEOUT * 2;
    while Instant::now() < watch_until {
        match tokio::time::timeout_at(watch_until, socket.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings.push(opened.elapsed()),
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed while answering pings: {frame:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the socket ended while answering pings: {other:?}"),
        }
    }
    let first = *pings.first().expect("no ping at all");
    assert!(first <= PING_INTERVAL + SLACK, "first ping only after {first:?}");
    // Two idle timeouts hold ten intervals; a loaded machine may lose a few.
    assert!(
        pings.len() >= 5,
        "only {} pings in {:?}: {pings:?}",
        pings.len(),
        IDLE_TIMEOUT * 2
    );
    // And no more often than each interval.
    let at_most = (IDLE_TIMEOUT * 2).as_millis() / PING_INTERVAL.as_millis() + 1;
    assert!(pings.len() as u128 <= at_most, "{} pings: {pings:?}", pings.len());
    socket.close(None).await.unwrap();
    assert_eq!(node_counter(&pair, "parley_websocket_silent_closes_total").await, 0);
}

#[tokio::test]
async fn a_heartbeat_is_answered_at_once_and_a_bad_one_gets_an_error_frame() {
    let pair = pair("heartbeat").await;
    let url = format!("ws://{}/messenger/ws?token={}", node_address(&pair), pair.bob);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    // The browsers' frame: no payload at all.
    let bare = r#"{"topic":"messenger","action":"heartbeat","ref":"h1"}"#;
    socket.send(Message::text(bare)).await.unwrap();
    let answer = next_answer(&mut socket).await;
    assert_eq!(
        (answer.action.as_str(), answer.reference.as_deref()),
        (actions::HEARTBEAT, Some("h1"))
    );
    let payload: HeartbeatAnswerPayload = answer.decode_payload().unwrap();
    assert_eq!(payload.sent_at_ms, None);
    assert_eq!(payload.node, "node-1");

    let timed = r#"{"topic":"messenger","action":"heartbeat","payload":"{\"sent_at_ms\":42}","ref":"h2"}"#;
    socket.send(Message::text(timed)).await.unwrap();
    let answer = next_answer(&mut socket).await;
    assert_eq!(answer.reference.as_deref(), Some("h2"));
    assert_eq!(
        answer.decode_payload::<HeartbeatAnswerPayload>().unwrap().sent_at_ms,
        Some(42)
    );

    let bad = r#"{"topic":"messenger","action":"heartbeat","payload":"{\"sent_at\":\"now\"}","ref":"h3"}"#;
    socket.send(Message::text(bad)).await.unwrap();
    let refusal = next_answer(&mut socket).await;
    assert_eq!(
        (refusal.action.as_str(), refusal.reference.as_deref()),
        (actions::ERROR, Some("h3"))
    );
    assert_eq!(
        refusal.decode_payload::<ErrorPayload>().unwrap().code,
        "invalid_payload"
    );

    // The socket is still open and answering after the refusal.
    socket.send(Message::text(bare)).await.unwrap();
    assert_eq!(next_answer(&mut socket).await.action, actions::HEARTBEAT);
}

/// The next `heartbeat` or `error` frame: the replay's end and presence may come first,
/// and are not answers.
async fn next_answer(socket: &mut ClientSocket) -> Envelope {
    loop {
        match tokio::time::timeout(SLACK, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let envelope: Envelope = serde_json::from_str(text.as_str()).unwrap();
                if [actions::HEARTBEAT, actions::ERROR].contains(&envelope.action.as_str()) {
                    return envelope;
                }
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no answer: {other:?}"),
        }
    }
}

/// A websocket client that completes the handshake and then never writes a byte: not
/// even a pong, which any websocket library would send for it. It reads, raw, what the
/// node sends.
struct SilentClient {
    tcp: TcpStream,
    /// Bytes read past the handshake's response, not yet parsed into frames.
    unparsed: Vec<u8>,
}

/// A frame from the server (unmasked): its opcode and payload.
#[derive(Debug)]
struct RawFrame {
    opcode: u8,
    payload: Vec<u8>,
}

const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;

impl SilentClient {
    async fn connect(address: &str, token: &str) -> SilentClient {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET /messenger/ws?token={token} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let header_end = loop {
            if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(SLACK, tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(read > 0, "the node closed during the handshake");
            received.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&received[..header_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        SilentClient {
            tcp,
            unparsed: received[header_end..].to_vec(),
        }
    }

    /// The next frame, or None when the node closed the connection; by `deadline`.
    async fn next_frame(&mut self, deadline: Instant) -> Option<RawFrame> {
        loop {
            if let Some(frame) = self.parse_one() {
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("the node neither sent a frame nor closed the connection in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.unparsed.extend_from_slice(&chunk[..read]),
            }
        }
    }

    fn parse_one(&mut self) -> Option<RawFrame> {
        let bytes = &self.unparsed;
        if bytes.len() < 2 {
            return None;
        }
        let (length, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            short => (short as usize, 2),
        };
        if bytes.len() < header + length {
            return None;
        }
        let frame = RawFrame {
            opcode: bytes[0] & 0x0f,
            payload: bytes[header..header + length].to_vec(),
        };
        self.unparsed.drain(..header + length);
        Some(frame)
    }
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_with_1001_after_the_idle_timeout() {
    let pair = pair("silent").await;
    let mut client = SilentClient::connect(&node_address(&pair), &pair.alice).await;
    let opened = Instant::now();
    let deadline = opened + IDLE_TIMEOUT + SLACK;
    let mut pings = 0;
    let close = loop {
        let frame = client
            .next_frame(deadline)
            .await
            .expect("the connection ended without a close frame");
        match frame.opcode {
            OPCODE_PING => pings += 1,
            OPCODE_CLOSE => break frame,
            _ => continue,
        }
    };
    let closed_after = opened.elapsed();
    let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
    let reason = String::from_utf8_lossy(&close.payload[2..]).into_owned();
    assert_eq!(code, 1001, "closed with {code} {reason}");
    assert!(reason.contains("silent"), "{reason}");
    // Pinged in the meantime, and given up no earlier than the idle timeout: the
    // handshake counts as heard.
    assert!(pings >= 2, "only {pings} pings before the close");
    assert!(
        closed_after + Duration::from_millis(50) >= IDLE_TIMEOUT,
        "closed after {closed_after:?}"
    );
    // The node does not wait for a close answer that will never come: the connection
    // ends too.
    assert!(client.next_frame(opened + IDLE_TIMEOUT + SLACK * 2).await.is_none());
    assert_eq!(node_counter(&pair, "parley_websocket_silent_closes_total").await, 1);
}
