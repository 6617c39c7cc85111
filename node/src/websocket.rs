//! `GET /messenger/ws`: the websocket endpoint. Authenticates before the upgrade, then
//! bridges the socket to a `Session` actor: a reader loop feeding it frames and a writer
//! task draining its bounded outbound queue. The reader's loop also keeps the socket's
//! heartbeat ([`liveness`]): it queues a ping every interval and closes the socket with
//! 1001 once nothing has arrived from the client within the idle timeout. And it closes
//! the socket with 4401 when its access token expires, unless the client renewed it
//! over the socket (`renew`, handled by the session, which moves the expiry).

mod handshake;
mod liveness;
mod open_sockets;

use std::sync::Arc;

use actors::messaging::device_access::{unix_now_ms, AccessGrant, SocketExpiry, SocketGrant};
use actors::messaging::outbound::{close_codes, OutboundFrame, OutboundQueue, OutboundReceiver};
use actors::messaging::session::{FrameInFlight, Session, SessionArguments, SessionMessage};
use actors::messaging::MessagingServices;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use protocol::errors::codes;
use ractor::ActorRef;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

pub use liveness::SocketHeartbeat;
use open_sockets::OpenSocketGuard;
pub use open_sockets::OpenSockets;

use crate::app_state::AppState;
use crate::http::errors::{ApiError, ApiRejection};
use crate::http::extract::{access_grant, require_existing_user, QueryParameters};
use crate::http::{authorization, raw_query, with_state};
use crate::http_server::{take_upgraded_stream, PendingUpgrade};
use liveness::{LivenessDue, SocketLiveness};

/// The socket as the node serves it: tungstenite over the TCP stream taken back from
/// hyper after the upgrade.
type ServerSocket = WebSocketStream<TcpStream>;

/// `GET /messenger/ws?token=`: checks the access token (401 before any upgrade), then
/// upgrades to the messenger websocket served by a `Session` actor.
pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // The token is checked before the upgrade headers, so a bad token is a 401 whether
    // or not the request is a websocket handshake.
    let authenticated = with_state(state)
        .and(authorization())
        .and(raw_query())
        .and_then(
            |state: AppState, authorization: Option<String>, query: String| async move {
                let grant = async {
                    let grant = token_grant(&state, authorization, &query)?;
                    require_existing_user(&state, grant.user_id.clone()).await?;
                    Ok::<_, ApiError>(grant)
                };
                match grant.await {
                    Ok(grant) => Ok((state, grant)),
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
        (status = 101, description = "websocket of Envelope text frames: client actions send-message (SendMessagePayload), received and read (CursorPayload), heartbeat (HeartbeatPayload, optional: the payload may be absent or empty), renew (RenewPayload: a fresh access token of the same user); server actions send-message (DeliveryPayload), ack (AckPayload), status (StatusPayload), presence (PresencePayload), replay-complete (ReplayCompletePayload), heartbeat (HeartbeatAnswerPayload, sent at once in answer to each client heartbeat, echoing its ref), renewed (RenewedPayload, in answer to renew), error (ErrorPayload; a bad heartbeat payload is invalid_payload, a refused renew token invalid_token). Heartbeat: the server sends a websocket ping every --websocket-ping-interval-ms (default 5 s) and closes with 1001 \"client silent\" a socket from which nothing at all (pong, frame) arrived within --websocket-idle-timeout-ms (default 15 s). Clients that cannot ping (browsers) send a heartbeat every few seconds and reconnect when nothing arrives for about 10 s. Other closes: 1001 node stopping, 1007 text not UTF-8, 1008 client too slow, 1009 frame too large, 1011 session could not start, 4401 the access token expired and none came over the socket (renew), 4403 the sign-in was signed out"),
        (status = 400, description = "not a websocket handshake (the message names the header missing or wrong)", body = protocol::ErrorBody),
        (status = 401, description = "missing, invalid, expired or signed-out access token", body = protocol::ErrorBody),
        (status = 429, description = "the user has the most websockets allowed open on this node", body = protocol::ErrorBody),
        (status = 503, description = "this node is shutting down; connect again (nginx does)", body = protocol::ErrorBody)))]
pub(crate) fn upgrade_to_session(
    state: AppState,
    grant: AccessGrant,
    headers: HeaderMap,
    pending_upgrade: Option<PendingUpgrade>,
) -> Response {
    let AccessGrant {
        user_id,
        family_id,
        expires_at_ms,
    } = grant;
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
    // Taken before the upgrade, in one step with the check: upgrades racing cannot
    // pass the limit together. The place is held until the socket ends.
    let open_socket = match state.open_sockets.open_for(&user_id, state.limits.max_sockets_per_user) {
        Ok(open_socket) => open_socket,
        Err(open) => {
            return ApiError::too_many_requests(
                format!("you have {open} websockets open on this node, the most allowed; close one first"),
                1,
            )
            .into_response()
        }
    };
    let frame_limit = state.limits.max_frame_bytes;
    let heartbeat = state.limits.websocket_heartbeat;
    let frames_in_flight = state.limits.max_frames_in_flight;
    let services = Arc::clone(&state.messaging);
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
        let limits = SocketLimits {
            frame_limit,
            frames_in_flight,
            heartbeat,
        };
        let grant = SocketGrant {
            family_id,
            expiry: SocketExpiry::at(expires_at_ms),
        };
        serve_socket(Box::new(socket), user_id, grant, services, limits, open_socket).await;
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
fn token_grant(state: &AppState, authorization: Option<String>, query: &str) -> Result<AccessGrant, ApiError> {
    let query = QueryParameters::parse(query)?;
    let grant = match query.required("token") {
        Ok(token) => access_grant(&state.tokens, Some(token))?,
        Err(_) => access_grant(&state.tokens, authorization.as_deref())?,
    };
    // Requests take a token a few seconds past its expiry (clock leeway); a socket
    // opened with one would be closed with 4401 at once.
    if grant.expires_at_ms <= unix_now_ms() {
        return Err(ApiError::unauthorized(
            "the access token has expired; refresh it (PUT /auth/token) and connect again",
        ));
    }
    Ok(grant)
}

/// What one socket is held to.
#[derive(Debug, Clone, Copy)]
struct SocketLimits {
    /// Largest text or binary frame; a larger one closes the socket with 1009.
    frame_limit: usize,
    /// Client frames in the node at once (read, not yet answered); past it the socket
    /// is not read until one is answered.
    frames_in_flight: usize,
    heartbeat: SocketHeartbeat,
}

/// The close reason of a socket given up for silence (at most 123 bytes).
const SILENT_CLIENT_REASON: &str = "client silent: nothing received within the idle timeout; reconnect to resume";

/// How long a socket given up for silence waits for its writer to send the close frame:
/// a frozen client may have stopped reading, and the writer would wait on it forever.
const SILENT_CLIENT_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderEnd {
    /// The client closed, the connection failed, or the session ended.
    Finished,
    /// Nothing arrived within the idle timeout.
    ClientSilent,
}

/// The socket comes boxed and the session's start is boxed: this future lives as long
/// as the socket, sized for the largest state it ever had, and both would otherwise stay
/// in every idle socket's task (about 1 KB).
async fn serve_socket(
    socket: Box<ServerSocket>,
    user_id: String,
    grant: SocketGrant,
    services: Arc<MessagingServices>,
    limits: SocketLimits,
    open_socket: OpenSocketGuard,
) {
    let _open = open_socket;
    let (sink, stream) = (*socket).split();
    let (queue, receiver) = OutboundQueue::new(services.outbound_capacity);
    let services_metrics = Arc::clone(&services.metrics);
    let mut writer = tokio::spawn(write_frames(sink, receiver, Arc::clone(&services_metrics)));
    let expiry = grant.expiry.clone();
    let services_for_spawn = Arc::clone(&services);
    let arguments = SessionArguments {
        user_id: user_id.clone(),
        outbound: queue.clone(),
        services,
        grant,
    };
    let session = match Box::pin(services_for_spawn.spawn_supervised(Session, arguments)).await {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%user_id, %error, "could not start a session");
            queue.close(close_codes::INTERNAL_ERROR, "could not start the session");
            let _ = writer.await;
            return;
        }
    };
    tracing::debug!(%user_id, "websocket session started");
    let socket_end = SocketEnd {
        liveness: SocketLiveness::new(limits.heartbeat, Instant::now()),
        expiry,
    };
    let end = read_frames(
        stream,
        &session,
        &queue,
        limits,
        socket_end,
        &services_metrics,
        &user_id,
    )
    .await;
    session.stop(Some("socket closed".to_owned()));
    drop(queue);
    if end == ReaderEnd::ClientSilent {
        services_metrics.websocket_silent_closes.inc();
        tracing::info!(%user_id, idle_timeout_ms = limits.heartbeat.idle_timeout.as_millis() as u64, "websocket closed: client silent");
        if tokio::time::timeout(SILENT_CLIENT_CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            // Dropping both halves closes the TCP connection.
            writer.abort();
        }
    }
    let _ = writer.await;
    tracing::debug!(%user_id, "websocket session ended");
}

/// What ends a socket besides its client: silence, and its access token's expiry.
struct SocketEnd {
    liveness: SocketLiveness,
    expiry: SocketExpiry,
}

impl SocketEnd {
    /// The earlier of the heartbeat's next due action and the token's expiry.
    fn next_wake(&self) -> Instant {
        let heartbeat_due = self.liveness.next_wake();
        match Instant::now().checked_add(self.expiry.remaining(unix_now_ms())) {
            Some(expires) => heartbeat_due.min(expires),
            // Never, as far as the clock goes.
            None => heartbeat_due,
        }
    }
}

/// Feeds the client's frames to the session until the socket ends, and keeps the
/// heartbeat: pings queued every interval, the socket given up once the client has been
/// silent for the idle timeout, or once its access token expired. One timer, re-armed
/// only when it fires.
async fn read_frames(
    mut stream: SplitStream<ServerSocket>,
    session: &ActorRef<SessionMessage>,
    queue: &OutboundQueue,
    limits: SocketLimits,
    mut end: SocketEnd,
    metrics: &actors::metrics::Metrics,
    user_id: &str,
) -> ReaderEnd {
    let wake = tokio::time::sleep_until(end.next_wake());
    tokio::pin!(wake);
    let frames_in_flight = Arc::new(Semaphore::new(limits.frames_in_flight.max(1)));
    loop {
        // A place for the next frame first: while the session has the most frames
        // allowed in hand, the socket is not read, and a flooding client's frames wait
        // in TCP's buffers (then its own), not in the node's memory.
        let in_flight = match Arc::clone(&frames_in_flight).try_acquire_owned() {
            Ok(place) => place,
            Err(_) => tokio::select! {
                place = Arc::clone(&frames_in_flight).acquire_owned() => match place {
                    Ok(place) => place,
                    Err(_) => return ReaderEnd::Finished,
                },
                () = &mut wake => {
                    // Not the client's silence: the node is the one not reading.
                    end.liveness.heard(Instant::now());
                    if let Some(reader_end) = keep_alive(&mut end, queue) {
                        return reader_end;
                    }
                    wake.as_mut().reset(end.next_wake());
                    continue;
                }
            },
        };
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = &mut wake => {
                if let Some(reader_end) = keep_alive(&mut end, queue) {
                    return reader_end;
                }
                wake.as_mut().reset(end.next_wake());
                continue;
            }
        };
        let Some(frame) = frame else {
            return ReaderEnd::Finished;
        };
        // Anything at all, a pong, a control frame or even a refused frame, shows the
        // client is there.
        end.liveness.heard(Instant::now());
        let delivered = match frame {
            Ok(message) if (message.is_text() || message.is_binary()) && message.len() > limits.frame_limit => {
                queue.close(close_codes::MESSAGE_TOO_BIG, "frame too large");
                return ReaderEnd::Finished;
            }
            Ok(Message::Text(text)) => {
                metrics.websocket_frames_in.inc();
                let in_flight = FrameInFlight(Some(in_flight));
                session.cast(SessionMessage::ClientText(text.as_str().to_owned(), in_flight))
            }
            Ok(Message::Binary(_)) => {
                metrics.websocket_frames_in.inc();
                session.cast(SessionMessage::ClientBinary)
            }
            Ok(Message::Close(_)) => return ReaderEnd::Finished,
            // Pings are answered by the protocol layer; pongs need nothing more.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Ok(()),
            Err(WsError::Capacity(_)) => {
                queue.close(close_codes::MESSAGE_TOO_BIG, "frame too large");
                return ReaderEnd::Finished;
            }
            Err(WsError::Utf8(_)) => {
                queue.close(close_codes::INVALID_FRAME_PAYLOAD, "a text frame must be UTF-8");
                return ReaderEnd::Finished;
            }
            Err(error) => {
                tracing::debug!(%user_id, %error, "websocket read failed");
                return ReaderEnd::Finished;
            }
        };
        if delivered.is_err() {
            // The session stopped (closed by the server); stop reading.
            return ReaderEnd::Finished;
        }
    }
}

/// The close reason of a socket whose access token expired (at most 123 bytes).
const TOKEN_EXPIRED_REASON: &str = "access token expired: renew it over the socket, or reconnect with a fresh one";

/// The due action when the reader's timer fires: the socket closed (`Some`) when its
/// token expired or its client has been silent for the idle timeout, else a ping queued
/// when one is due.
fn keep_alive(end: &mut SocketEnd, queue: &OutboundQueue) -> Option<ReaderEnd> {
    if end.expiry.remaining(unix_now_ms()).is_zero() {
        queue.close(close_codes::ACCESS_TOKEN_EXPIRED, TOKEN_EXPIRED_REASON);
        return Some(ReaderEnd::Finished);
    }
    match end.liveness.on_wake(Instant::now()) {
        LivenessDue::GiveUp => {
            queue.close(close_codes::GOING_AWAY, SILENT_CLIENT_REASON);
            return Some(ReaderEnd::ClientSilent);
        }
        LivenessDue::Ping => queue.ping(),
        LivenessDue::Nothing => {}
    }
    None
}

/// Most frames written before one flush: under load a session's queue holds many, and
/// one write of them all costs one system call instead of one each.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// The websocket message an outbound item is written as.
fn outbound_message(frame: OutboundFrame) -> Message {
    match frame {
        OutboundFrame::Text(text) | OutboundFrame::Replay(text) => Message::text(text),
        OutboundFrame::Ping => Message::Ping(Default::default()),
    }
}

/// Drains the outbound queue into the socket. A close request is honoured after the
/// frames already queued (except for a too-slow client, whose backlog is the problem).
async fn write_frames(
    mut sink: SplitSink<ServerSocket, Message>,
    receiver: OutboundReceiver,
    metrics: Arc<actors::metrics::Metrics>,
) {
    let OutboundReceiver {
        mut frames,
        mut close,
        owed_ping,
        replay_pacing,
    } = receiver;
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
                    while let Some(frame) = frames.try_recv() {
                        if sink.feed(outbound_message(frame)).await.is_err() {
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
                Some(frame) => {
                    let mut batch = 1;
                    let mut texts = u64::from(!matches!(frame, OutboundFrame::Ping));
                    let mut replay_frames = usize::from(matches!(frame, OutboundFrame::Replay(_)));
                    if sink.feed(outbound_message(frame)).await.is_err() {
                        return;
                    }
                    while batch < MAX_FRAMES_PER_FLUSH {
                        let Some(frame) = frames.try_recv() else { break };
                        texts += u64::from(!matches!(frame, OutboundFrame::Ping));
                        replay_frames += usize::from(matches!(frame, OutboundFrame::Replay(_)));
                        if sink.feed(outbound_message(frame)).await.is_err() {
                            return;
                        }
                        batch += 1;
                    }
                    if owed_ping.take() && sink.feed(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                    // Only now, written to the socket, do they make room for the replay.
                    replay_pacing.flushed(replay_frames);
                    metrics.websocket_frames_out.inc_by(texts);
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
        }
    }
}
