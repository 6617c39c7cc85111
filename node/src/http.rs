//! The HTTP API: the seed's auth and messenger endpoints, and health.
//!
//! Handlers return `Result<Response, ApiError>`; [`respond`] turns errors into JSON,
//! and [`errors::recover`] does the same for warp's own rejections, so no request ever
//! gets a non-JSON error.

mod auth_routes;
pub mod errors;
pub mod extract;
mod group_routes;
mod health_routes;
mod messenger_routes;
pub mod openapi;
pub mod rate_limits;
mod web_page_routes;

use std::convert::Infallible;
use std::sync::Arc;

use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::app_state::AppState;
use errors::ApiError;

/// Every route of the node, with JSON errors and the serving node's name in a header.
pub fn routes(state: AppState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let node_name = state.node_name.clone();
    let readiness = state.readiness.clone();
    let trace_propagation = Arc::clone(&state.trace_propagation);
    let metrics = Arc::clone(&state.metrics);
    let count_request = warp::log::custom(move |info| {
        let route = route_label(info.path());
        if info.status().is_server_error() && route != "/health/ready" {
            // A node that is not ready answers 503 by design; anything else is a failure.
            tracing::warn!(route, method = %info.method(), status = info.status().as_u16(), "request failed");
        }
        let status = info.status().as_u16().to_string();
        metrics
            .http_requests
            .with_label_values(&[route, info.method().as_str(), &status])
            .inc();
        metrics
            .http_request_seconds
            .with_label_values(&[route])
            .observe(info.elapsed().as_secs_f64());
    });
    // Each group is boxed: the nested filter types otherwise grow past the compiler's
    // recursion limit, and boxing costs one dynamic call per group.
    auth_routes::routes(state.clone())
        .boxed()
        .or(messenger_routes::routes(state.clone()).boxed())
        .unify()
        .or(group_routes::routes(state.clone()).boxed())
        .unify()
        .or(crate::websocket::routes(state.clone()).boxed())
        .unify()
        .or(health_routes::routes(state).boxed())
        .unify()
        .or(openapi::routes().boxed())
        .unify()
        .or(web_page_routes::routes().boxed())
        .unify()
        .recover(errors::recover)
        .unify()
        .with(warp::reply::with::header("x-parley-node", node_name))
        .with(count_request)
        .with(warp::trace(move |info| request_span(&*trace_propagation, &info)))
        .map(warp::reply::Reply::into_response)
        .map(move |response| close_connection_while_draining(&readiness, response))
}

/// One span per request, continuing the caller's trace when it sends `traceparent`.
fn request_span(
    propagation: &dyn actors::trace_context::TracePropagation,
    info: &warp::trace::Info<'_>,
) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "http.request",
        http.method = %info.method(),
        http.route = route_label(info.path()),
    );
    if let Some(traceparent) = info
        .request_headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
    {
        propagation.continue_trace(&span, traceparent);
    }
    span
}

/// A stopping node retires each connection after its response, so nginx never sends a
/// request on a connection the node is about to close.
fn close_connection_while_draining(readiness: &crate::app_state::Readiness, mut response: Response) -> Response {
    if readiness.is_draining() && response.status() != warp::http::StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Every route the node serves, as the `route` label of the HTTP metrics (raw paths
/// would give every chat id its own time series).
const ROUTES: &[&str] = &[
    "/auth/sign-up",
    "/auth/sign-in",
    "/auth/token",
    "/auth/sign-out",
    "/auth/user/get-by-email",
    "/auth/user/get-by-token",
    "/messenger/create-chat",
    "/messenger/chats",
    "/messenger/messages",
    "/messenger/create-group",
    "/messenger/ws",
    "/health/live",
    "/health/ready",
    "/cluster",
    "/metrics",
    "/openapi.json",
    "/",
    "/web/app.js",
    "/web/app.css",
];

fn route_label(path: &str) -> &'static str {
    if let Some(route) = ROUTES.iter().find(|route| **route == path) {
        return route;
    }
    if path == "/swagger" || path.starts_with("/swagger/") {
        return "/swagger";
    }
    // Chat ids in the path are one label each, not one per chat.
    if let Some(rest) = path.strip_prefix("/messenger/chats/") {
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            [_, "members"] => return "/messenger/chats/{chat_id}/members",
            [_, "members", _] => return "/messenger/chats/{chat_id}/members/{user_id}",
            _ => {}
        }
    }
    "other"
}

pub(crate) fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The raw body, read up to the configured size: a larger declared `Content-Length` or
/// a longer (chunked) stream is refused with 413. A request without a body is empty.
pub(crate) fn body_bytes(state: &AppState) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    let limit = state.limits.max_body_bytes;
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, stream| read_body_within(limit, declared, stream))
}

async fn read_body_within<S, B>(limit: u64, declared: Option<u64>, stream: S) -> Result<Bytes, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    use futures::StreamExt;
    if declared.is_some_and(|length| length > limit) {
        return Err(warp::reject::custom(errors::BodyTooLarge));
    }
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| warp::reject::custom(errors::BodyUnreadable))?;
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            if (body.len() + piece.len()) as u64 > limit {
                return Err(warp::reject::custom(errors::BodyTooLarge));
            }
            body.extend_from_slice(piece);
            let read = piece.len();
            chunk.advance(read);
        }
    }
    Ok(Bytes::from(body))
}

/// The raw query string, empty when there is none.
pub(crate) fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The `Authorization` header, if any.
pub(crate) fn authorization() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}

pub(crate) fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

pub(crate) fn json_response<T: serde::Serialize>(status: warp::http::StatusCode, body: &T) -> Response {
    warp::reply::Reply::into_response(warp::reply::with_status(warp::reply::json(body), status))
}
