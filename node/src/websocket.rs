//! `GET /messenger/ws`: the websocket endpoint. Authenticates before the upgrade, then
//! bridges the socket to a `Session` actor: a reader loop feeding it frames and a writer
//! task draining its bounded outbound queue.

mod handshake;
mod open_sockets;

use std::sync::Arc;

use actors::messaging::outbound::{close_codes, OutboundQueue, OutboundReceiver};
use actors::messaging::session::{Session, SessionArguments, SessionMessage};
use actors::messaging::MessagingServices;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use protocol::errors::codes;
use ractor::Actor;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

pub use open_sockets::OpenSockets;

use crate::app_state::AppState;
use crate::http::errors::{ApiError, ApiRejection};
use crate::http::extract::{authenticated_user, require_existing_user, QueryParameters};
use crate::http::{authorization, raw_query, with_state};
use crate::http_server::{take_upgraded_stream, PendingUpgrade};

/// The socket as the node serves it: tungstenite over the TCP stream taken back from
/// hyper after the upgrade.
type ServerSocket = WebSocketStream<TcpStream>;

pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // The token is checked before the upgrade headers, so a bad token is a 401 whether
    // or not the request is a websocket handshake.
    let authenticated = with_state(state)
        .and(authorization())
        .and(raw_query())
        .and_then(
            |state: AppState, authorization: Option<String>, query: String| async move {
                let user_id = async {
                    let user_id = token_user(&state, authorization, &query)?;
                    require_existing_user(&state, user_id).await
                };
                match user_id.await {
                    Ok(user_id) => Ok((state, user_id)),
                    Err(error) => Err(warp::reject::custom(ApiRejection(error))),
                }
            },
        )
        .untuple_one();
    warp::path!("messenger" / "ws")
        .and(warp::get())
        .and(authenticated)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PendingUpgrade>())
        .map(upgrade_to_session)
}

/// Upgrades an authenticated request to the messenger websocket.
#[utoipa::path(get, path = "/messenger/ws", tag = "messenger",
    params(("token" = String, Query, description = "access token (or send it in Authorization)")),
    responses(
        (status = 101, description = "websocket of Envelope text frames: client actions send-message (SendMessagePayload), received and read (CursorPayload); server actions send-message (DeliveryPayload), ack (AckPayload), status (StatusPayload), presence (PresencePayload), replay-complete (ReplayCompletePayload), error (ErrorPayload)"),
        (status = 400, description = "not a websocket handshake (the message names the header missing or wrong)", body = protocol::ErrorBody),
        (status = 401, description = "missing, invalid or expired access token", body = protocol::ErrorBody),
        (status = 429, description = "the user has the most websockets allowed open on this node", body = protocol::ErrorBody),
        (status = 503, description = "this node is shutting down; connect again (nginx does)", body = protocol::ErrorBody)))]
pub(crate) fn upgrade_to_session(
    state: AppState,
    user_id: String,
    headers: HeaderMap,
    pending_upgrade: Option<PendingUpgrade>,
) -> Response {
    let accept_key = match handshake::accept_key(&headers) {
        Ok(accept_key) => accept_key,
        Err(error) => return ApiError::bad_request(codes::INVALID_PARAMETER, error.to_string()).into_response(),
    };
    let Some(on_upgrade) = pending_upgrade.as_ref().and_then(PendingUpgrade::take) else {
        // HTTP/2 has no upgrade; nginx and websocket clients speak HTTP/1.1.
        return ApiError::bad_request(
            codes::INVALID_PARAMETER,
            "this connection cannot be upgraded (use HTTP/1.1)",
        )
        .into_response();
    };
    if state.readiness.is_draining() {
        // nginx retries a refused upgrade (a GET) on the next node.
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::NOT_READY,
            "this node is shutting down, connect again",
        )
        .into_response();
    }
    // Counted before the upgrade: two upgrades racing may both pass, by one socket.
    let open = state.messaging.sessions.sessions_of(&user_id).len();
    if open >= state.limits.max_sockets_per_user {
        return ApiError::too_many_requests(
            format!("you have {open} websockets open on this node, the most allowed; close one first"),
            1,
        )
        .into_response();
    }
    let frame_limit = state.limits.max_frame_bytes;
    let services = Arc::clone(&state.messaging);
    let open_sockets = Arc::clone(&state.open_sockets);
    tokio::spawn(async move {
        // Resolves once hyper has written the 101 below and handed over the connection.
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%user_id, %error, "websocket upgrade failed"),
        };
        let Ok((stream, read_ahead)) = take_upgraded_stream(upgraded) else {
            return tracing::error!(%user_id, "an upgraded connection was not the tcp stream the server accepted");
        };
        let config = socket_config(frame_limit);
        let socket = WebSocketStream::from_partially_read(stream, read_ahead, Role::Server, Some(config)).await;
        serve_socket(Box::new(socket), user_id, services, frame_limit, open_sockets).await;
    });
    handshake::switching_protocols(&accept_key)
}

/// Frames up to this many times the configured limit are read, then refused with 1009.
const PROTOCOL_LIMIT_FACTOR: usize = 4;

/// Bytes read from the socket at a time. Client frames are small (a send-message frame is
/// a few hundred bytes); a larger one grows the buffer for itself. tungstenite's default
/// (128 KiB, zero-filled on the first read) was most of an idle socket's memory.
const READ_BUFFER_BYTES: usize = 512;

fn socket_config(frame_limit: usize) -> WebSocketConfig {
    // The protocol layer stops only absurd frames; ours are checked after reading so
    // the socket can still be closed cleanly with 1009 (a frame refused unread
    // leaves bytes behind and the close would turn into a connection reset).
    let hard_limit = frame_limit.saturating_mul(PROTOCOL_LIMIT_FACTOR);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit))
}

/// The token comes as `?token=` (the seed's websocat command) or in `Authorization`.
fn token_user(state: &AppState, authorization: Option<String>, query: &str) -> Result<String, ApiError> {
    let query = QueryParameters::parse(query)?;
    match query.required("token") {
        Ok(token) => authenticated_user(&state.tokens, Some(token)),
        Err(_) => authenticated_user(&state.tokens, authorization.as_deref()),
    }
}

/// The socket comes boxed and the session's start is boxed: this future lives as long
/// as the socket, sized for the largest state it ever had, and both would otherwise stay
/// in every idle socket's task (about 1 KB).
async fn serve_socket(
    socket: Box<ServerSocket>,
    user_id: String,
    services: Arc<MessagingServices>,
    frame_limit: usize,
    open_sockets: Arc<OpenSockets>,
) {
    let _open = open_sockets.opened();
    let (sink, mut stream) = (*socket).split();
    let (queue, receiver) = OutboundQueue::new(services.outbound_capacity);
    let services_metrics = Arc::clone(&services.metrics);
    let writer = tokio::spawn(write_frames(sink, receiver, Arc::clone(&services_metrics)));
    let arguments = SessionArguments {
        user_id: user_id.clone(),
        outbound: queue.clone(),
        services,
    };
    let session = match Box::pin(Actor::spawn(None, Session, arguments)).await {
        Ok((session, _)) => session,
        Err(error) => {
            tracing::error!(%user_id, %error, "could not start a session");
            queue.close(close_codes::INTERNAL_ERROR, "could not start the session");
            let _ = writer.await;
            return;
        }
    };
    tracing::debug!(%user_id, "websocket session started");
    while let Some(frame) = stream.next().await {
        let delivered = match frame {
            Ok(message) if (message.is_text() || message.is_binary()) && message.len() > frame_limit => {
                queue.close(close_codes::MESSAGE_TOO_BIG, "frame too large");
                break;
            }
            Ok(Message::Text(text)) => {
                services_metrics.websocket_frames_in.inc();
                session.cast(SessionMessage::ClientText(text.as_str().to_owned()))
            }
            Ok(Message::Binary(_)) => {
                services_metrics.websocket_frames_in.inc();
                session.cast(SessionMessage::ClientBinary)
            }
            Ok(Message::Close(_)) => break,
            // Pings are answered by the protocol layer; pongs need nothing.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Ok(()),
            Err(WsError::Capacity(_)) => {
                queue.close(close_codes::MESSAGE_TOO_BIG, "frame too large");
                break;
            }
            Err(WsError::Utf8(_)) => {
                queue.close(close_codes::INVALID_FRAME_PAYLOAD, "a text frame must be UTF-8");
                break;
            }
            Err(error) => {
                tracing::debug!(%user_id, %error, "websocket read failed");
                break;
            }
        };
        if delivered.is_err() {
            // The session stopped (closed by the server); stop reading.
            break;
        }
    }
    session.stop(Some("socket closed".to_owned()));
    drop(queue);
    let _ = writer.await;
    tracing::debug!(%user_id, "websocket session ended");
}

/// Most frames written before one flush: under load a session's queue holds many, and
/// one write of them all costs one system call instead of one each.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// Drains the outbound queue into the socket. A close request is honoured after the
/// frames already queued (except for a too-slow client, whose backlog is the problem).
async fn write_frames(
    mut sink: SplitSink<ServerSocket, Message>,
    receiver: OutboundReceiver,
    metrics: Arc<actors::metrics::Metrics>,
) {
    let OutboundReceiver { mut frames, mut close } = receiver;
    let mut close_pending = true;
    loop {
        tokio::select! {
            biased;
            request = &mut close, if close_pending => {
                close_pending = false;
                let Ok(request) = request else {
                    // Every producer is gone without asking to close: drain and finish.
                    continue;
                };
                if request.code != close_codes::POLICY_VIOLATION {
                    while let Ok(text) = frames.try_recv() {
                        if sink.feed(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
                let close_frame = CloseFrame { code: CloseCode::from(request.code), reason: request.reason.into() };
                let _ = sink.send(Message::Close(Some(close_frame))).await;
                let _ = sink.close().await;
                return;
            }
            frame = frames.recv() => match frame {
                Some(text) => {
                    let mut written = 1;
                    if sink.feed(Message::text(text)).await.is_err() {
                        return;
                    }
                    while written < MAX_FRAMES_PER_FLUSH {
                        let Ok(text) = frames.try_recv() else { break };
                        if sink.feed(Message::text(text)).await.is_err() {
                            return;
                        }
                        written += 1;
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                    metrics.websocket_frames_out.inc_by(written as u64);
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
        }
    }
}
