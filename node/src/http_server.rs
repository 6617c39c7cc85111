//! The node's HTTP server loop: accepts connections, serves the warp routes over hyper's
//! HTTP/1.1, and drains gracefully.
//!
//! warp's own `serve` keeps each request's upgrade handle to itself, and its websocket
//! filter cannot size tungstenite's read buffer (128 KiB per socket by default, zero-filled
//! on the first read: most of an idle socket's memory). Serving the routes here lets the
//! websocket endpoint finish the upgrade itself: every request that asks for an upgrade
//! carries its handle as a [`PendingUpgrade`] extension, and every request carries the
//! connection's [`PeerAddress`].
//!
//! Only HTTP/1.1 is spoken (nginx proxies to nodes with it, and websockets need it): the
//! connection's type is then exactly `TokioIo<TcpStream>`, so an upgraded socket can be
//! taken back from hyper whole ([`take_upgraded_stream`]) and nothing of hyper (its read
//! buffer, its boxed connection) stays alive for the life of the websocket.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service;
use warp::hyper;
use warp::hyper::server::conn::http1;
use warp::hyper::upgrade::{OnUpgrade, Upgraded};
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

/// Serves `routes` on `listener` until `shutdown` completes. Then it stops listening
/// (after taking every connection already queued, so none is reset), runs `lame_duck`
/// while the connections it has go on being served, and finally waits for the requests
/// in flight. Upgraded connections are not waited for: they belong to their websocket
/// tasks from the upgrade on.
///
/// Why the listener closes first: a connect that the node refuses is retried by nginx on
/// the next node whatever the method, while a request already sent on a connection that
/// the node then resets is not retried when it is a POST. `lame_duck` is not polled
/// before the listener is closed, so whatever it does (closing websockets, whose clients
/// reconnect at once) happens when new connections can only go elsewhere.
pub async fn serve<F>(
    listener: TcpListener,
    routes: F,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    lame_duck: impl Future<Output = ()>,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    // Every connection task holds a receiver; the drain is over when all are dropped.
    let (drain_signal, drain_watch) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        serve_accepted(accepted, &routes, header_read_timeout, &drain_watch).await;
    }
    // Connections whose handshake completed before now wait in the accept queue; closing
    // the listener would reset them. Take them all, then close. Asked of the socket
    // itself, not of tokio's cached readiness, which may not have seen the last arrivals.
    let mut queued = 0_usize;
    match listener.into_std() {
        Ok(listener) => {
            while let Some(accepted) = accept_queued(&listener) {
                queued += 1;
                serve_accepted(accepted, &routes, header_read_timeout, &drain_watch).await;
            }
        }
        Err(error) => tracing::warn!(%error, "could not take the queued connections before closing"),
    }
    tracing::info!(queued, "listener closed");
    lame_duck.await;
    drop(drain_watch);
    let _ = drain_signal.send(true);
    drain_signal.closed().await;
}

/// The next connection already in `listener`'s accept queue, without waiting (`None`
/// when the queue is empty).
fn accept_queued(listener: &std::net::TcpListener) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
    match listener.accept() {
        Ok((stream, peer)) => {
            let stream = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream));
            Some(stream.map(|stream| (stream, peer)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(error) if is_about_one_connection(&error) => Some(Err(error)),
        Err(error) => {
            tracing::warn!(%error, "taking the queued connections failed");
            None
        }
    }
}

/// Serves one accepted connection in its own task (or notes why accepting failed).
async fn serve_accepted<F>(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    routes: &F,
    header_read_timeout: Duration,
    drain_watch: &watch::Receiver<bool>,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let (stream, peer) = match accepted {
        Ok(accepted) => accepted,
        Err(error) if is_about_one_connection(&error) => return,
        Err(error) => {
            tracing::error!(%error, "accepting a connection failed");
            tokio::time::sleep(ACCEPT_FAILURE_PAUSE).await;
            return;
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
    // A client that opens a connection and sends its request head slowly, or not at all,
    // holds a socket and a task: it gets this long for the whole head, then the
    // connection is closed (slowloris).
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::spawn(serve_connection(connection, drain_watch.clone(), peer));
}

/// Runs one connection; once the drain starts, hyper finishes the request in flight and
/// closes the connection instead of waiting for another.
async fn serve_connection<S, B>(
    connection: http1::UpgradeableConnection<TokioIo<TcpStream>, S>,
    mut drain_watch: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = std::pin::pin!(connection);
    let finished = tokio::select! {
        finished = connection.as_mut() => finished,
        // The value only ever changes once, to "draining" (or the server is gone).
        _ = drain_watch.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = finished {
        tracing::debug!(%error, %peer, "http connection ended with an error");
    }
}

/// The TCP stream of an upgraded connection and any bytes hyper read past the request,
/// with hyper's wrappers dropped.
pub fn take_upgraded_stream(upgraded: Upgraded) -> Result<(TcpStream, Vec<u8>), Upgraded> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>()?;
    Ok((parts.io.into_inner(), parts.read_buf.to_vec()))
}

fn is_about_one_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
