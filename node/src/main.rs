//! `parley`: one node of a Parley cluster.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use actors::metrics::Metrics;
use parley_node::config::NodeConfig;
use parley_node::telemetry::Telemetry;
use parley_node::Observability;
use tokio::net::{TcpListener, TcpSocket};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = NodeConfig::parse();
    let metrics = Arc::new(Metrics::new());
    let telemetry = Telemetry::install(&config.node_name, config.otlp_endpoint.as_deref(), &metrics)?;
    raise_open_files_limit();
    let listener = bind_listener(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let observability = Observability {
        metrics,
        trace_propagation: telemetry.propagation(),
    };
    let outcome = parley_node::run(listener, config, observability, shutdown_signal()).await;
    telemetry.shutdown().await;
    outcome
}

/// Connections the kernel queues for `accept`. When a node dies its users arrive at the
/// survivors in the same instant; tokio's default (1024) overflowed with 5,000 of them,
/// and each dropped handshake waited for the client's SYN retransmission (1 s, then 3 s,
/// then 7 s). The kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted node binds its port again while the old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Every websocket holds a file descriptor, and the usual soft limit (often 1024) would
/// refuse connections long before memory runs out. The hard limit is as far as an
/// unprivileged process may go; whoever runs the node sets that one.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open files limit"),
            Err(error) => tracing::warn!(%error, soft, hard, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open files limit"),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received"),
        _ = terminate => tracing::info!("sigterm received"),
    }
}
