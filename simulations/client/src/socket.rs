//! The messenger websocket (`GET /messenger/ws?token=`): opening it, writing client
//! frames, reading server frames. [`MessengerSocket`] is the plain socket that tests and
//! tools drive frame by frame; [`crate::ChatClient`] opens and reads its sockets with the
//! same functions, so there is one place that knows the URL, the envelope and the close
//! codes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::websocket::{actions, CursorPayload, Envelope, OutgoingMessage, SendMessagePayload};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;

/// An open websocket, as tokio-tungstenite gives it.
pub type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The socket URL for an HTTP base URL: `http://h` becomes `ws://h/messenger/ws?token=…`,
/// `https://h` becomes `wss://…`.
pub fn messenger_socket_url(http_base_url: &str, token: &str) -> String {
    format!(
        "{}/messenger/ws?token={token}",
        http_base_url.trim_end_matches('/').replacen("http", "ws", 1)
    )
}

/// Opens the messenger socket of `http_base_url` with `token`, within `timeout`.
pub async fn open_messenger_socket(
    http_base_url: &str,
    token: &str,
    timeout: Duration,
) -> Result<WebSocket, ClientError> {
    // The token stays out of errors, which end up in logs.
    let url_without_token = messenger_socket_url(http_base_url, "");
    let connecting = tokio_tungstenite::connect_async(messenger_socket_url(http_base_url, token));
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(source)) => Err(ClientError::Connect {
            url: url_without_token,
            source: Box::new(source),
        }),
        Err(_) => Err(ClientError::ConnectTimedOut {
            url: url_without_token,
            timeout,
        }),
    }
}

/// A client frame: `payload` in an envelope of the messenger service, as a text frame.
pub fn envelope_message(action: &str, payload: &impl Serialize, reference: Option<String>) -> Message {
    Message::text(Envelope::messenger(action, payload, reference).to_text())
}

/// A normal close (1000), as a client ends a socket it no longer needs.
pub fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }
}

/// What one frame from the server means to a client.
#[derive(Debug)]
pub enum ServerFrame {
    /// A text frame holding an envelope.
    Envelope(Envelope),
    /// The server closed the socket, with this code if it sent one.
    Closed(Option<u16>),
    /// A text frame that is not an envelope (never sent by a correct server).
    NotAnEnvelope(ClientError),
    /// A ping, a pong or a binary frame: proof of life, nothing to act on.
    Other,
}

/// Reads one frame as the protocol defines it.
pub fn read_server_frame(message: Message) -> ServerFrame {
    match message {
        Message::Text(text) => match serde_json::from_str::<Envelope>(text.as_str()) {
            Ok(envelope) => ServerFrame::Envelope(envelope),
            Err(source) => ServerFrame::NotAnEnvelope(ClientError::NotAnEnvelope {
                frame: text.as_str().to_owned(),
                source,
            }),
        },
        Message::Close(frame) => ServerFrame::Closed(frame.map(|frame| u16::from(frame.code))),
        _ => ServerFrame::Other,
    }
}

/// What ended a read of a [`MessengerSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEvent {
    /// The next envelope.
    Envelope(Envelope),
    /// The server closed the socket with this close code (`None`: without one, or the
    /// connection simply ended).
    Closed(Option<u16>),
}

/// One open messenger socket, driven frame by frame; every wait is bounded.
pub struct MessengerSocket {
    stream: WebSocket,
}

/// How long [`MessengerSocket::connect`] waits for the upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl MessengerSocket {
    /// Opens `GET /messenger/ws?token=` under `http_base_url`.
    pub async fn connect(http_base_url: &str, token: &str) -> Result<MessengerSocket, ClientError> {
        let stream = open_messenger_socket(http_base_url, token, CONNECT_TIMEOUT).await?;
        Ok(MessengerSocket { stream })
    }

    /// Sends one text frame as it is (valid envelope or not).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        Ok(self.stream.send(Message::text(text.into())).await?)
    }

    /// Sends one binary frame (the protocol has none: the server refuses them).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        Ok(self.stream.send(Message::binary(bytes)).await?)
    }

    /// A text frame carrying exactly `bytes`, valid UTF-8 or not: what a broken or hostile
    /// client may put on the wire, which the normal API cannot produce.
    pub async fn send_raw_text_frame(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
        Ok(self.stream.send(Message::Frame(frame)).await?)
    }

    /// Sends `action` with `payload` in an envelope.
    pub async fn send_envelope(
        &mut self,
        action: &str,
        payload: &impl Serialize,
        reference: Option<String>,
    ) -> Result<(), ClientError> {
        Ok(self.stream.send(envelope_message(action, payload, reference)).await?)
    }

    /// Sends messages in one `send-message` frame.
    pub async fn send_messages(
        &mut self,
        chat_id: &str,
        messages: Vec<OutgoingMessage>,
        reference: Option<&str>,
    ) -> Result<(), ClientError> {
        let payload = SendMessagePayload {
            chat_id: chat_id.to_owned(),
            messages,
        };
        self.send_envelope(actions::SEND_MESSAGE, &payload, reference.map(str::to_owned))
            .await
    }

    /// Reports `received` or `read` up to `seq`.
    pub async fn report(&mut self, action: &str, chat_id: &str, seq: u64) -> Result<(), ClientError> {
        let payload = CursorPayload {
            chat_id: chat_id.to_owned(),
            seq,
        };
        self.send_envelope(action, &payload, None).await
    }

    /// The next envelope or close, within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<SocketEvent, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| ClientError::NoFrameWithin(timeout))?;
            let Some(frame) = frame else {
                return Ok(SocketEvent::Closed(None));
            };
            match read_server_frame(frame?) {
                ServerFrame::Envelope(envelope) => return Ok(SocketEvent::Envelope(envelope)),
                ServerFrame::Closed(code) => return Ok(SocketEvent::Closed(code)),
                ServerFrame::NotAnEnvelope(error) => return Err(error),
                ServerFrame::Other => continue,
            }
        }
    }

    /// The next envelope; a close is an error.
    pub async fn next_envelope(&mut self, timeout: Duration) -> Result<Envelope, ClientError> {
        match self.next_event(timeout).await? {
            SocketEvent::Envelope(envelope) => Ok(envelope),
            SocketEvent::Closed(code) => Err(ClientError::Closed(code)),
        }
    }

    /// Reads past envelopes until the server closes the socket: its close code, or `None`
    /// when the socket ended without one or `timeout` passed first.
    pub async fn until_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Ok(SocketEvent::Closed(code)) => return code,
                Ok(SocketEvent::Envelope(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Envelopes until one with `action`, which is returned after the ones before it.
    /// On failure the error says what was seen meanwhile.
    pub async fn until_action(
        &mut self,
        action: &str,
        timeout: Duration,
    ) -> Result<(Vec<Envelope>, Envelope), UntilActionFailed> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let envelope = match self.next_envelope(left).await {
                Ok(envelope) => envelope,
                Err(source) => {
                    return Err(UntilActionFailed {
                        action: action.to_owned(),
                        seen: before,
                        source,
                    })
                }
            };
            if envelope.action == action {
                return Ok((before, envelope));
            }
            before.push(envelope);
        }
    }

    /// Closes the socket normally.
    pub async fn close(mut self) -> Result<(), ClientError> {
        // The server may already be gone; a close that cannot be sent is no failure.
        let _ = self.stream.close(Some(normal_close())).await;
        Ok(())
    }
}

/// [`MessengerSocket::until_action`] did not see the action.
#[derive(Debug, thiserror::Error)]
#[error("waiting for {action}: {source} (seen before: {seen:?})")]
pub struct UntilActionFailed {
    /// The action waited for.
    pub action: String,
    /// The envelopes read before the failure.
    pub seen: Vec<Envelope>,
    /// The error that ended the wait.
    #[source]
    pub source: ClientError,
}
