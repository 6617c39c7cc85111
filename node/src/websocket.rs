//! `GET /messenger/ws`: the websocket endpoint. Authenticates before the upgrade, then
//! bridges the socket to a `Session` actor: a reader loop feeding it frames and a writer
//! task draining its bounded outbound queue.

use std::sync::Arc;

use actors::messaging::outbound::{close_codes, OutboundQueue, OutboundReceiver};
use actors::messaging::session::{Session, SessionArguments, SessionMessage};
use actors::messaging::MessagingServices;
use futures::{SinkExt, StreamExt};
use protocol::errors::codes;
use ractor::Actor;
use tokio_tungstenite::tungstenite::Error as WsError;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::app_state::AppState;
use crate::http::errors::{ApiError, ApiRejection};
use crate::http::extract::{authenticated_user, require_existing_user, QueryParameters};
use crate::http::{authorization, raw_query, with_state};

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
        .and(warp::ws())
        .map(upgrade_to_session)
}

/// Upgrades an authenticated request to the messenger websocket.
#[utoipa::path(get, path = "/messenger/ws", tag = "messenger",
    params(("token" = String, Query, description = "access token (or send it in Authorization)")),
    responses(
        (status = 101, description = "websocket of Envelope text frames: client actions send-message (SendMessagePayload), received and read (CursorPayload); server actions send-message (DeliveryPayload), ack (AckPayload), status (StatusPayload), presence (PresencePayload), replay-complete (ReplayCompletePayload), error (ErrorPayload)"),
        (status = 400, description = "not a websocket handshake (no Upgrade header)", body = protocol::ErrorBody),
        (status = 401, description = "missing, invalid or expired access token", body = protocol::ErrorBody),
        (status = 429, description = "the user has the most websockets allowed open on this node", body = protocol::ErrorBody),
        (status = 503, description = "this node is shutting down; connect again (nginx does)", body = protocol::ErrorBody)))]
pub(crate) fn upgrade_to_session(state: AppState, user_id: String, upgrade: Ws) -> Response {
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
    let limit = state.limits.max_frame_bytes;
    let services = Arc::clone(&state.messaging);
    let open_sockets = Arc::clone(&state.open_sockets);
    // The protocol layer stops only absurd frames; ours are checked after reading so
    // the socket can still be closed cleanly with 1009 (a frame refused unread
    // leaves bytes behind and the close would turn into a connection reset).
    let hard_limit = limit.saturating_mul(PROTOCOL_LIMIT_FACTOR);
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| serve_socket(socket, user_id, services, limit, open_sockets))
        .into_response()
}

/// The token comes as `?token=` (the seed's websocat command) or in `Authorization`.
fn token_user(state: &AppState, authorization: Option<String>, query: &str) -> Result<String, ApiError> {
    let query = QueryParameters::parse(query)?;
    match query.required("token") {
        Ok(token) => authenticated_user(&state.tokens, Some(token)),
        Err(_) => authenticated_user(&state.tokens, authorization.as_deref()),
    }
}

/// Frames up to this many times the configured limit are read, then refused with 1009.
const PROTOCOL_LIMIT_FACTOR: usize = 4;

/// Counts open sockets so a stopping node can wait for their close frames to go out:
/// upgraded connections are not part of the HTTP server's graceful drain.
#[derive(Default)]
pub struct OpenSockets {
    count: std::sync::atomic::AtomicUsize,
    all_closed: tokio::sync::Notify,
}

impl OpenSockets {
    fn opened(self: &Arc<Self>) -> OpenSocketGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenSocketGuard(Arc::clone(self))
    }

    /// Waits until every socket has finished, or `timeout` passed.
    pub async fn wait_all_closed(&self, timeout: std::time::Duration) {
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

struct OpenSocketGuard(Arc<OpenSockets>);

impl Drop for OpenSocketGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

async fn serve_socket(
    socket: WebSocket,
    user_id: String,
    services: Arc<MessagingServices>,
    frame_limit: usize,
    open_sockets: Arc<OpenSockets>,
) {
    let _open = open_sockets.opened();
    let (sink, mut stream) = socket.split();
    let (queue, receiver) = OutboundQueue::new(services.outbound_capacity);
    let services_metrics = Arc::clone(&services.metrics);
    let writer = tokio::spawn(write_frames(sink, receiver, Arc::clone(&services_metrics)));
    let arguments = SessionArguments {
        user_id: user_id.clone(),
        outbound: queue.clone(),
        services,
    };
    let session = match Actor::spawn(None, Session, arguments).await {
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
        if frame
            .as_ref()
            .is_ok_and(|message| message.is_text() || message.is_binary())
        {
            services_metrics.websocket_frames_in.inc();
        }
        let delivered = match frame {
            Ok(message) if message.as_bytes().len() > frame_limit => {
                queue.close(close_codes::MESSAGE_TOO_BIG, "frame too large");
                break;
            }
            Ok(message) if message.is_text() => {
                let text = message.to_str().unwrap_or_default().to_owned();
                session.cast(SessionMessage::ClientText(text))
            }
            Ok(message) if message.is_binary() => session.cast(SessionMessage::ClientBinary),
            Ok(message) if message.is_close() => break,
            // Pings are answered by the protocol layer; pongs need nothing.
            Ok(_) => Ok(()),
            Err(error) => {
                if is_oversized(&error) {
                    queue.close(close_codes::MESSAGE_TOO_BIG, "frame too large");
                } else if is_invalid_utf8(&error) {
                    queue.close(close_codes::INVALID_FRAME_PAYLOAD, "a text frame must be UTF-8");
                } else {
                    tracing::debug!(%user_id, %error, "websocket read failed");
                }
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

fn is_oversized(error: &warp::Error) -> bool {
    protocol_error(error).is_some_and(|error| matches!(error, WsError::Capacity(_)))
}

fn is_invalid_utf8(error: &warp::Error) -> bool {
    protocol_error(error).is_some_and(|error| matches!(error, WsError::Utf8(_)))
}

fn protocol_error(error: &warp::Error) -> Option<&WsError> {
    std::error::Error::source(error).and_then(|source| source.downcast_ref::<WsError>())
}

/// Drains the outbound queue into the socket. A close request is honoured after the
/// frames already queued (except for a too-slow client, whose backlog is the problem).
async fn write_frames(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
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
                        if sink.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = sink.send(Message::close_with(request.code, request.reason)).await;
                let _ = sink.close().await;
                return;
            }
            frame = frames.recv() => match frame {
                Some(text) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                    metrics.websocket_frames_out.inc();
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
        }
    }
}
