//! A plain websocket client of Parley's messenger socket, for tests and tools: frames in,
//! envelopes out, every wait bounded.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use protocol::websocket::{actions, CursorPayload, Envelope, OutgoingMessage, SendMessagePayload};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One open messenger socket.
pub struct WsConnection {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What ended a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    Envelope(Envelope),
    /// The server closed the socket with this code.
    Closed(Option<u16>),
}

impl WsConnection {
    /// Connects to `GET /messenger/ws?token=` under `http_base_url` (http:// becomes ws://).
    pub async fn connect(http_base_url: &str, token: &str) -> anyhow::Result<WsConnection> {
        let url = format!("{}/messenger/ws?token={token}", http_base_url.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connecting {}", http_base_url))?;
        Ok(WsConnection { stream })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.stream
            .send(Message::text(text.into()))
            .await
            .context("sending a frame")
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.stream
            .send(Message::binary(bytes))
            .await
            .context("sending a frame")
    }

    /// A text frame carrying exactly `bytes`, valid UTF-8 or not: what a broken or hostile
    /// client may put on the wire, which the normal API cannot produce.
    pub async fn send_raw_text_frame(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
        self.stream
            .send(Message::Frame(frame))
            .await
            .context("sending a raw frame")
    }

    /// Sends messages in one `send-message` frame.
    pub async fn send_messages(
        &mut self,
        chat_id: &str,
        messages: Vec<OutgoingMessage>,
        reference: Option<&str>,
    ) -> anyhow::Result<()> {
        let payload = SendMessagePayload {
            chat_id: chat_id.to_owned(),
            messages,
        };
        let envelope = Envelope::messenger(actions::SEND_MESSAGE, &payload, reference.map(str::to_owned));
        self.send_text(envelope.to_text()).await
    }

    /// Reports `received` or `read` up to `seq`.
    pub async fn report(&mut self, action: &str, chat_id: &str, seq: u64) -> anyhow::Result<()> {
        let payload = CursorPayload {
            chat_id: chat_id.to_owned(),
            seq,
        };
        self.send_text(Envelope::messenger(action, &payload, None).to_text())
            .await
    }

    /// The next envelope or close, within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<WsEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| anyhow!("no frame within {timeout:?}"))?;
            match frame {
                None => return Ok(WsEvent::Closed(None)),
                Some(Err(error)) => return Err(error).context("reading a frame"),
                Some(Ok(Message::Text(text))) => {
                    let envelope: Envelope = serde_json::from_str(text.as_str())
                        .with_context(|| format!("the server sent a frame that is not an envelope: {text}"))?;
                    return Ok(WsEvent::Envelope(envelope));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(WsEvent::Closed(frame.map(|frame| u16::from(frame.code))));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next envelope; a close is an error.
    pub async fn next_envelope(&mut self, timeout: Duration) -> anyhow::Result<Envelope> {
        match self.next_event(timeout).await? {
            WsEvent::Envelope(envelope) => Ok(envelope),
            WsEvent::Closed(code) => bail!("the server closed the socket ({code:?})"),
        }
    }

    /// Reads past envelopes until the server closes the socket: its close code, or `None`
    /// when the socket ended without one or `timeout` passed first.
    pub async fn until_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Ok(WsEvent::Closed(code)) => return code,
                Ok(WsEvent::Envelope(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Envelopes until one with `action`, which is returned after the ones before it.
    pub async fn until_action(&mut self, action: &str, timeout: Duration) -> anyhow::Result<(Vec<Envelope>, Envelope)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let envelope = self
                .next_envelope(left)
                .await
                .with_context(|| format!("waiting for {action} (seen: {before:?})"))?;
            if envelope.action == action {
                return Ok((before, envelope));
            }
            before.push(envelope);
        }
    }

    /// Closes the socket normally.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = self.stream.close(Some(frame)).await;
        Ok(())
    }
}
