//! The node's HTTP server loop: accepts connections, serves the warp routes over hyper,
//! and drains gracefully.
//!
//! warp's own `serve` keeps each request's upgrade handle to itself, and its websocket
//! filter cannot size tungstenite's read buffer (128 KiB per socket by default, zero-filled
//! on the first read: most of an idle socket's memory). Serving the routes here lets the
//! websocket endpoint finish the upgrade itself: every request that asks for an upgrade
//! carries its handle as a [`PendingUpgrade`] extension, and every request carries the
//! connection's [`PeerAddress`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;
use warp::hyper;
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::Response;
use warp::Filter;

/// The address of the connection's other end (nginx, for proxied requests).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddress(pub SocketAddr);

/// A request's upgrade handle, for the one route that upgrades to take.
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<OnUpgrade>>>);

impl PendingUpgrade {
    fn new(upgrade: OnUpgrade) -> Self {
        Self(Arc::new(Mutex::new(Some(upgrade))))
    }

    /// The handle, the first time only.
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// How long accepting pauses after a failure that is not about one connection (most
/// likely the open files limit: sockets must close before another can be accepted).
const ACCEPT_FAILURE_PAUSE: Duration = Duration::from_millis(100);

/// Serves `routes` on `listener` until `shutdown` completes, then stops accepting and
/// waits for the requests in flight. Upgraded connections are not waited for: they
/// belong to their websocket tasks from the upgrade on.
pub async fn serve<F>(listener: TcpListener, routes: F, shutdown: impl Future<Output = ()>)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_about_one_connection(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_FAILURE_PAUSE).await;
                continue;
            }
        };
        // Websocket frames are small and latency-bound: no Nagle delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not disable nagle on a connection");
        }
        let routes = warp::service(routes.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            if request.headers().contains_key(hyper::header::UPGRADE) {
                let upgrade = hyper::upgrade::on(&mut request);
                request.extensions_mut().insert(PendingUpgrade::new(upgrade));
            }
            request.extensions_mut().insert(PeerAddress(peer));
            routes.clone().call(request)
        });
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

fn is_about_one_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
