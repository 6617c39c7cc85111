//! ejabberd's memory figure: N idle, signed-in XMPP sessions (SASL, bind, stream
//! management, initial presence) straight to its first node, as `memory` opens Parley's
//! straight to node-1; the node's resident memory growth divided by N.
//!
//! One session per account: an XMPP user's resources see each other's presence, so
//! twenty sessions of one user (as `memory` puts on a Parley user) would also measure
//! presence traffic between them. Each session is held by a task that answers the
//! server's ack requests, so nothing piles up in its stream-management queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use futures::{stream, StreamExt, TryStreamExt};
use tokio::sync::watch;

use super::xmpp_socket::{stop_requested, XmppEvent, XmppSignIn, XmppSocket};
use crate::bench::idle_connections::{resident_bytes_while_held, settled_resident_bytes};
use crate::bench::process_figures::raise_own_open_files_limit;
use parley_launcher::ejabberd_peer::{EjabberdPeer, EJABBERD_DOMAIN};

const CONNECT_CONCURRENCY: usize = 64;
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(30);
const SIGN_IN_ATTEMPTS: u32 = 3;
const MEASURED_NODE_INDEX: usize = 0;

/// `count` accounts `(username, password)` for the idle sessions.
pub(super) fn accounts(tag: &str, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|index| (format!("{tag}-{index}"), format!("pw-{tag}-{index}")))
        .collect()
}

/// The measured node's resident memory growth per idle session of `accounts`.
pub(super) async fn bytes_per_connection(peer: &EjabberdPeer, accounts: &[(String, String)]) -> anyhow::Result<f64> {
    ensure!(!accounts.is_empty(), "the memory phase needs at least one connection");
    raise_own_open_files_limit()?;
    let node_pid = peer.node_pid(MEASURED_NODE_INDEX)?;
    let url = Arc::new(peer.node_websocket_url(MEASURED_NODE_INDEX));
    let rss_before = settled_resident_bytes(node_pid).await?;
    let (stop, stopped) = watch::channel(false);
    let opened = stream::iter(accounts.iter().enumerate())
        .map(|(index, (username, password))| {
            let (url, stopped) = (Arc::clone(&url), stopped.clone());
            async move {
                // A sign-in that stalls is tried again (seen once in 5,000 here: no answer
                // within 30 s); what is measured is the sessions' memory, and a retried
                // one is a session like the others. Each retry is logged.
                let mut attempt = 1;
                let sign_in = XmppSignIn {
                    url: &url,
                    domain: EJABBERD_DOMAIN,
                    username,
                    password,
                    resource: "idle",
                };
                let signed_in = loop {
                    match XmppSocket::sign_in(&sign_in, None, SIGN_IN_TIMEOUT).await {
                        Ok(signed_in) => break signed_in,
                        Err(error) if attempt < SIGN_IN_ATTEMPTS => {
                            tracing::warn!(index, attempt, error = %format!("{error:#}"), "idle xmpp sign-in retried");
                            attempt += 1;
                        }
                        Err(error) => return Err(error.context(format!("idle session {index}"))),
                    }
                };
                anyhow::Ok(tokio::spawn(hold_idle(signed_in.socket, stopped)))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await;
    let rss_after = resident_bytes_while_held(node_pid, opened, &stop, "sessions").await?;
    Ok(rss_after.saturating_sub(rss_before) as f64 / accounts.len() as f64)
}

/// Answers ack requests until told to stop; false if the session ended first.
async fn hold_idle(mut socket: XmppSocket, mut stopped: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            () = stop_requested(&mut stopped) => {
                socket.close().await;
                return true;
            }
            event = socket.next_event() => match event {
                Ok(XmppEvent::AckRequested) => {
                    if socket.answer_ack_request().await.is_err() {
                        return false;
                    }
                }
                Ok(XmppEvent::Ended) | Err(_) => return false,
                Ok(_) => {}
            },
        }
    }
}
