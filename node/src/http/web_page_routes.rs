//! The web chat page: `/` (index.html), `/web/app.js` and `/web/app.css`.
//!
//! The files live in `node/web/` and are compiled into the binary, so a node serves the
//! page from any working directory and every node serves the same version. The page is
//! a plain client of the public API (HTTP endpoints and the messenger websocket); it
//! needs no build step and nothing from the internet.

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// Short enough that a restarted node with a new page version is picked up within
/// a minute, long enough that reconnect storms do not re-download the files.
const CACHE_POLICY: &str = "public, max-age=60";

/// `'self'` in `connect-src` covers the same origin's `ws:`/`wss:` URLs as well.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| static_file(INDEX_HTML, "text/html; charset=utf-8"));
    let script = warp::path!("web" / "app.js")
        .and(warp::get())
        .map(|| static_file(APP_JS, "text/javascript; charset=utf-8"));
    let style = warp::path!("web" / "app.css")
        .and(warp::get())
        .map(|| static_file(APP_CSS, "text/css; charset=utf-8"));
    index.or(script).unify().or(style).unify()
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_POLICY));
    // The page loads and talks to its own origin only (no CDN, no external font), and
    // nothing may load it into a frame.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
