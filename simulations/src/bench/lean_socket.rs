//! A lean messenger websocket for the benchmarks that hold thousands of them at once: a
//! TCP socket bound to a chosen loopback source address before it connects, small
//! tungstenite buffers, and frames decoded only as far as a benchmark needs.
//!
//! Each source address has its own ephemeral ports (about 28,000 in Linux's default
//! range), so spreading connections over 127.0.0.2, 127.0.0.3, … keeps one node's port
//! from running out of four-tuples long before the node does.
//!
//! Why not `parley_client::MessengerSocket`: a client crate has no business binding
//! source addresses or shrinking its buffers below what a real client needs, and
//! decoding every frame in full would make the benchmark measure its own client. Only the
//! benchmarks that hold thousands of sockets in one process use this one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use protocol::websocket::{actions, DeliveryPayload, Envelope};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// 127.0.0.2 … 127.0.0.9.
const SOURCE_ADDRESSES: u8 = 8;
/// The client's side only ever reads small frames; tungstenite's default of 128 KiB per
/// socket would cost the benchmark process gigabytes for nothing.
const CLIENT_READ_BUFFER_BYTES: usize = 4 * 1024;

pub type LeanSocket = WebSocketStream<TcpStream>;

/// The source address of the `index`-th connection: round robin over the eight.
pub fn source_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(SOURCE_ADDRESSES)) as u8)
}

/// `127.0.0.1:PORT` of a node from its `http://127.0.0.1:PORT` URL.
pub fn node_socket_address(node_url: &str) -> anyhow::Result<SocketAddr> {
    let authority = node_url
        .strip_prefix("http://")
        .with_context(|| format!("{node_url} is not an http:// url"))?;
    authority
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("{node_url} does not end in an ip:port"))
}

/// Opens `GET /messenger/ws?token=` on `node` from `source`, within `timeout`.
pub async fn connect_lean(
    source: Ipv4Addr,
    node: SocketAddr,
    token: &str,
    timeout: Duration,
) -> anyhow::Result<LeanSocket> {
    let connecting = async {
        let socket = TcpSocket::new_v4().context("creating a client socket")?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .with_context(|| format!("binding a client socket to {source}"))?;
        let stream = socket
            .connect(node)
            .await
            .with_context(|| format!("connecting {source} → {node}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let config = WebSocketConfig::default()
            .read_buffer_size(CLIENT_READ_BUFFER_BYTES)
            .write_buffer_size(0);
        let url = format!("ws://{node}/messenger/ws?token={token}");
        let (socket, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .with_context(|| format!("upgrading {source} → {node} to a websocket"))?;
        anyhow::Ok(socket)
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .with_context(|| format!("no websocket {source} → {node} within {timeout:?}"))?
}

/// What a benchmark needs to know of one server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeanFrame {
    /// The ids of the delivered messages.
    Delivery(Vec<String>),
    ReplayComplete,
    /// Presence, status, pings: nothing to count.
    Other,
    /// The socket ended (closed, reset, or the node died).
    Ended,
}

/// The next frame, however long it takes (callers bound the wait).
pub async fn next_frame(socket: &mut LeanSocket) -> anyhow::Result<LeanFrame> {
    let text = match socket.next().await {
        None | Some(Err(_) | Ok(Message::Close(_))) => return Ok(LeanFrame::Ended),
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(_)) => return Ok(LeanFrame::Other),
    };
    let envelope: Envelope = serde_json::from_str(text.as_str())
        .with_context(|| format!("the server sent a frame that is not an envelope: {text}"))?;
    Ok(match envelope.action.as_str() {
        actions::SEND_MESSAGE => {
            let delivery: DeliveryPayload = envelope
                .decode_payload()
                .with_context(|| format!("a delivery that does not decode: {text}"))?;
            LeanFrame::Delivery(delivery.messages.into_iter().map(|message| message.id).collect())
        }
        actions::REPLAY_COMPLETE => LeanFrame::ReplayComplete,
        _ => LeanFrame::Other,
    })
}

/// Reads until `replay-complete`; returns the ids replayed before it.
pub async fn read_until_replay_complete(socket: &mut LeanSocket, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let reading = async {
        let mut replayed = Vec::new();
        loop {
            match next_frame(socket).await? {
                LeanFrame::ReplayComplete => return Ok(replayed),
                LeanFrame::Delivery(ids) => replayed.extend(ids),
                LeanFrame::Other => {}
                LeanFrame::Ended => bail!("the socket ended before replay-complete"),
            }
        }
    };
    tokio::time::timeout(timeout, reading)
        .await
        .with_context(|| format!("no replay-complete within {timeout:?}"))?
}
