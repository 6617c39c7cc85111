//! The server side of the websocket opening handshake (RFC 6455 section 4.2): checks the
//! request's headers and answers 101 with the accept key. The endpoint does this itself
//! (not warp's `ws` filter) so that it can choose tungstenite's buffer sizes.

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::header::{
    HeaderMap, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use warp::http::StatusCode;
use warp::reply::Response;

/// Why a request to the websocket endpoint is not a websocket handshake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a websocket handshake: the Connection header must include upgrade")]
    NoConnectionUpgrade,
    #[error("not a websocket handshake: the Upgrade header must be websocket")]
    NotWebsocketUpgrade,
    #[error("unsupported websocket version: Sec-WebSocket-Version must be 13")]
    UnsupportedVersion,
    #[error("not a websocket handshake: the Sec-WebSocket-Key header is missing")]
    MissingKey,
}

/// Checks a handshake request and returns the `Sec-WebSocket-Accept` value to answer with.
pub fn accept_key(headers: &HeaderMap) -> Result<String, HandshakeError> {
    let connection_upgrades = headers.get_all(CONNECTION).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    if !connection_upgrades {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let upgrade_is_websocket = headers
        .get(UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"));
    if !upgrade_is_websocket {
        return Err(HandshakeError::NotWebsocketUpgrade);
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|value| value.as_bytes()) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).ok_or(HandshakeError::MissingKey)?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The `101 Switching Protocols` answer; hyper hands over the connection once it is sent.
pub fn switching_protocols(accept_key: &str) -> Response {
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, warp::http::HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, warp::http::HeaderValue::from_static("websocket"));
    if let Ok(value) = warp::http::HeaderValue::from_str(accept_key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        headers.insert(UPGRADE, "WebSocket".parse().unwrap());
        headers.insert(SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        // The example key and answer of RFC 6455 section 1.3.
        headers.insert(SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        headers
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_answer() {
        assert_eq!(
            accept_key(&handshake_headers()),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned())
        );
    }

    #[test]
    fn each_missing_or_wrong_header_is_named() {
        type Spoil = fn(&mut HeaderMap);
        let cases: [(Spoil, HandshakeError); 5] = [
            (
                |headers| {
                    headers.remove(CONNECTION);
                },
                HandshakeError::NoConnectionUpgrade,
            ),
            (
                |headers| {
                    headers.insert(CONNECTION, "keep-alive".parse().unwrap());
                },
                HandshakeError::NoConnectionUpgrade,
            ),
            (
                |headers| {
                    headers.insert(UPGRADE, "h2c".parse().unwrap());
                },
                HandshakeError::NotWebsocketUpgrade,
            ),
            (
                |headers| {
                    headers.insert(SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
                },
                HandshakeError::UnsupportedVersion,
            ),
            (
                |headers| {
                    headers.remove(SEC_WEBSOCKET_KEY);
                },
                HandshakeError::MissingKey,
            ),
        ];
        for (spoil, expected) in cases {
            let mut headers = handshake_headers();
            spoil(&mut headers);
            assert_eq!(accept_key(&headers), Err(expected));
        }
    }
}
