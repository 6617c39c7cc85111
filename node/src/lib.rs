//! The `parley` node: HTTP API on warp over the actors of `parley-actors`.
//!
//! [`run`] is the whole server: tests bind a listener on port 0 and call it.

pub mod app_state;
pub mod config;
pub mod http;
pub mod http_server;
pub mod sign_outs;
pub mod telemetry;
pub mod tokens;
pub mod websocket;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actors::accounts::passwords::PasswordVault;
use actors::accounts::Accounts;
use actors::chats::{Chats, GroupLimits};
use actors::cluster::peer_network::RactorPeerNetwork;
use actors::cluster::peers::Peers;
use actors::database::migrations::apply_migrations;
use actors::database::Database;
use actors::messaging::device_access::RevokedFamilies;
use actors::messaging::outbound::close_codes;
use actors::messaging::storage::MariaDbStorage;
use actors::messaging::{MessagingLimits, MessagingServices};
use actors::metrics::Metrics;
use actors::supervisor::{RootSupervisor, RootSupervisorArguments};
use actors::trace_context::TracePropagation;
use anyhow::Context;
use ractor::Actor;
use tokio::net::TcpListener;

use app_state::{AppState, Limits, Readiness};
use config::NodeConfig;
use http::rate_limits::{KeyedRateLimiter, SignInLimits};
use tokens::TokenIssuer;

/// How long a node with seeds waits to hear from a peer before it serves alone: every
/// peer may be down, and a lone survivor that restarts must still serve.
const CLUSTER_JOIN_GRACE: Duration = Duration::from_secs(5);

/// How long a stopping node waits for its websockets to finish closing.
const SOCKET_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the node reports through: its metrics, and how traces cross the cluster hop.
pub struct Observability {
    /// The node's Prometheus metrics (shared with the exporter and `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Writes and reads `traceparent` so traces continue across nodes and from HTTP callers.
    pub trace_propagation: Arc<dyn TracePropagation>,
}

/// Serves the node on `listener` until `shutdown` completes, then drains in-flight
/// requests and stops the actors.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    observability: Observability,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Observability {
        metrics,
        trace_propagation,
    } = observability;
    let jwt_secret = config.jwt_secret()?;
    let websocket_heartbeat = config.websocket_heartbeat()?;
    // The incarnation tells a restarted node apart from its old self in the cluster.
    let incarnation = uuid::Uuid::new_v4().simple().to_string();
    let cluster_name = format!("{}#{}", config.node_name, &incarnation[..8]);
    // Before anything starts: a bad cluster setup (a partial or unreadable TLS one) stops the node.
    let membership = config.membership(&cluster_name).context("cluster configuration")?;
    let database = Database::open(&config.database()?, Arc::clone(&metrics)).context("opening database pools")?;
    let passwords = PasswordVault::new(
        config.scrypt_cost(),
        config.max_concurrent_hashes,
        config.max_queued_hashes,
    )?
    .with_max_wait(Duration::from_millis(config.max_hash_wait_ms))
    .with_max_waiting_per_requester(config.max_queued_hashes_per_address);
    let sign_in_limits = Arc::new(SignInLimits {
        per_email: KeyedRateLimiter::new(config.sign_in_per_email_per_minute, config.sign_in_per_email_per_minute),
        per_address: KeyedRateLimiter::new(
            config.sign_in_per_address_per_minute,
            config.sign_in_per_address_per_minute / 3,
        ),
    });
    let sign_up_limit = Arc::new(KeyedRateLimiter::new(
        config.sign_up_per_address_per_minute,
        config.sign_up_per_address_per_minute / 3,
    ));
    let readiness = Readiness::default();
    let revoked_families = Arc::new(RevokedFamilies::default());
    let tokens = TokenIssuer::new(
        &jwt_secret,
        config.access_token_ttl_seconds,
        config.refresh_token_ttl_seconds,
        Arc::clone(&revoked_families),
    );
    let accounts = Accounts::new(database.clone(), passwords);
    let peers = Peers::new(cluster_name, Duration::from_millis(config.peer_failure_timeout_ms));
    let messaging = MessagingServices::new(
        config.node_name.clone(),
        peers,
        Arc::new(RactorPeerNetwork),
        Arc::new(MariaDbStorage::new(database.clone())),
        MessagingLimits {
            frame_limits: config.frame_limits(),
            outbound_capacity: config.outbound_queue_frames,
            send_limit: KeyedRateLimiter::new(config.send_messages_per_second.saturating_mul(60), config.send_burst),
            revoked_families,
            access_check: Arc::new(tokens.clone()),
        },
        Arc::clone(&metrics),
        Arc::clone(&trace_propagation),
    );
    let migrations = tokio::spawn({
        let (database, readiness, accounts) = (database.clone(), readiness.clone(), accounts.clone());
        let (messaging, access_ttl) = (Arc::clone(&messaging), tokens.access_ttl());
        async move {
            migrate_until_done(database, readiness.clone()).await;
            sign_outs::follow_sign_outs(accounts, messaging, access_ttl, readiness).await;
        }
    });
    let joining = tokio::spawn(wait_for_cluster_join(
        Arc::clone(&messaging),
        readiness.clone(),
        !config.cluster_seeds.is_empty(),
    ));
    let supervisor_arguments = RootSupervisorArguments {
        database: database.clone(),
        messaging: Arc::clone(&messaging),
        membership,
        heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
        metrics: Arc::clone(&metrics),
    };
    let (supervisor, supervisor_task) = Actor::spawn(None, RootSupervisor, supervisor_arguments)
        .await
        .context("starting the root supervisor")?;
    let open_sockets = Arc::new(websocket::OpenSockets::default());
    let state = AppState {
        node_name: config.node_name.clone(),
        accounts,
        chats: Chats::new(
            database.clone(),
            config.max_chats_per_user,
            GroupLimits {
                max_members: config.max_group_members,
                max_groups_per_user: config.max_groups_per_user,
            },
        ),
        member_additions_limit: Arc::new(KeyedRateLimiter::new(
            config.member_additions_per_minute,
            config.member_additions_per_minute,
        )),
        tokens,
        database: database.clone(),
        messaging: Arc::clone(&messaging),
        metrics,
        open_sockets: Arc::clone(&open_sockets),
        readiness: readiness.clone(),
        trace_propagation,
        sign_in_limits,
        sign_up_limit,
        trusted_proxies: Arc::new(config.trusted_proxies()),
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_page_size: config.max_page_size,
            max_frame_bytes: config.max_frame_bytes,
            max_sockets_per_user: config.max_sockets_per_user,
            max_frames_in_flight: config.max_frames_in_flight,
            websocket_heartbeat,
        },
    };
    let address = listener.local_addr().context("reading the listen address")?;
    tracing::info!(node = %config.node_name, %address, "node listening");
    // On shutdown, websockets are closed with 1001 (clients reconnect to another node)
    // so that the graceful drain does not wait on them forever.
    let closing = Arc::clone(&messaging);
    let draining = readiness.clone();
    let lame_duck = Duration::from_millis(config.shutdown_lame_duck_ms);
    let shutdown = async move {
        shutdown.await;
        tracing::info!(?lame_duck, "node draining");
        draining.mark_draining();
    };
    // Runs once the listener is closed: reconnecting clients can only reach other nodes.
    let lame_duck_period = async move {
        closing.close_all(close_codes::GOING_AWAY, "node shutting down").await;
        // A protocol period, not a wait for something: see `shutdown_lame_duck_ms`.
        tokio::time::sleep(lame_duck).await;
    };
    let header_read_timeout = Duration::from_millis(config.http_header_read_timeout_ms);
    http_server::serve(
        listener,
        http::routes(state),
        header_read_timeout,
        shutdown,
        lame_duck_period,
    )
    .await;
    // Closed sockets still have their backlog and close frame to write.
    open_sockets.wait_all_closed(SOCKET_DRAIN_TIMEOUT).await;
    tracing::info!(node = %config.node_name, "node stopping");
    migrations.abort();
    joining.abort();
    supervisor.stop(Some("node stopping".to_owned()));
    let _ = supervisor_task.await;
    database.close().await;
    Ok(())
}

/// Marks the cluster joined once a peer is heard from, or at once without seeds, or
/// after [`CLUSTER_JOIN_GRACE`] when no seed answers.
async fn wait_for_cluster_join(messaging: Arc<MessagingServices>, readiness: Readiness, has_seeds: bool) {
    if has_seeds {
        let deadline = tokio::time::Instant::now() + CLUSTER_JOIN_GRACE;
        let mut checks = tokio::time::interval(Duration::from_millis(50));
        loop {
            checks.tick().await;
            if !messaging.peers.live_peer_names().is_empty() {
                tracing::info!("cluster joined");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(grace = ?CLUSTER_JOIN_GRACE, "no peer answered; serving alone until one does");
                break;
            }
        }
    }
    readiness.mark_cluster_joined();
}

/// Applies migrations, retrying while the master is unreachable; the node reports
/// not-ready until they are in.
async fn migrate_until_done(database: Database, readiness: Readiness) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match apply_migrations(&database).await {
            Ok(applied) => {
                tracing::info!(?applied, "schema up to date");
                readiness.mark_migrations_applied();
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "migrations failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
