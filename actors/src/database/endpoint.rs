//! One database server (or proxy) the node talks to: its pool and its health.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::applied_positions::{IdleReadConnections, PositionedConnection};
use super::errors::DbError;
use super::server_topology::GtidPosition;
use super::DatabaseConfig;

/// Whether an endpoint takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRole {
    /// The master: writes, and reads of last resort.
    Master,
    /// A replica, or a proxy (HAProxy) in front of replicas.
    Read,
}

/// How to reach one endpoint, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Shown in logs, health and traces: `master`, `haproxy-read`, `replica-1`, ...
    pub name: String,
    /// `mysql://user:password@host:port/database`
    pub url: String,
    /// Whether it takes writes (master) or reads.
    pub role: EndpointRole,
}

/// Pool sizes per endpoint.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Connections kept open even when idle.
    pub min_connections: usize,
    /// Most connections at once; a quarter is kept free of reads, for writes and probes.
    pub max_connections: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            min_connections: 1,
            max_connections: 64,
        }
    }
}

/// A live endpoint: its pool plus the health the router and the query path keep.
#[derive(Debug)]
pub struct Endpoint {
    /// The configured name (`master`, `haproxy-read`, `replica-1`, ...).
    pub name: String,
    /// Whether it takes writes (master) or reads.
    pub role: EndpointRole,
    pool: Pool,
    healthy: AtomicBool,
    consecutive_failures: AtomicU64,
    /// Reads let at the pool at once. A burst beyond what the pool serves (thousands of
    /// users reconnecting after a node died) waits here, outside a read attempt's
    /// timeout: that timeout is for a slow or dead endpoint, and a busy pool is neither.
    /// A quarter of the connections stays free of reads, for writes and probes.
    read_admission: Semaphore,
    /// Read connections between reads, with what their servers are known to have
    /// applied (used for read endpoints only: a master's connections serve writes too).
    idle_reads: IdleReadConnections,
}

/// A connection from `connecting` (a pool or a new session) within `timeout`, its failure
/// named after `endpoint`: `Unavailable` when refused, `Timeout` when slow.
pub(crate) async fn connect_within(
    endpoint: &str,
    timeout: Duration,
    connecting: impl std::future::Future<Output = Result<Conn, mysql_async::Error>>,
) -> Result<Conn, DbError> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(DbError::Unavailable {
            endpoint: endpoint.to_owned(),
            reason: error.to_string(),
        }),
        Err(_) => Err(DbError::Timeout {
            endpoint: endpoint.to_owned(),
            timeout,
        }),
    }
}

/// Prepared statements kept per connection: more than the node has distinct statements
/// (the driver's default, 32, is fewer), so none is ever prepared twice.
const STATEMENTS_CACHED_PER_CONNECTION: usize = 256;

impl Endpoint {
    /// Builds the pool; connects lazily, so a dead endpoint does not stop the node starting.
    pub fn open(spec: &EndpointSpec, limits: PoolLimits) -> Result<Endpoint, DbError> {
        Endpoint::open_at(spec, None, limits)
    }

    /// [`Endpoint::open`] at another address (`host`, `port`) than the URL's, with the
    /// URL's user, password and database: the same application at another server.
    pub fn open_at(
        spec: &EndpointSpec,
        address: Option<(String, u16)>,
        limits: PoolLimits,
    ) -> Result<Endpoint, DbError> {
        let opts =
            Opts::from_url(&spec.url).map_err(|error| DbError::Config(format!("endpoint {}: {error}", spec.name)))?;
        let constraints = PoolConstraints::new(limits.min_connections, limits.max_connections)
            .ok_or_else(|| DbError::Config(format!("endpoint {}: bad pool limits", spec.name)))?;
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(30))
            .with_ttl_check_interval(Duration::from_secs(10))
            // The driver's default resets every connection it takes back (one more round
            // trip) and the reset drops the prepared statements, so every statement was
            // prepared again each time. Nothing here leaves session state behind: no
            // session variables or temporary tables, and an unfinished transaction is
            // rolled back by the driver before the connection is pooled.
            .with_reset_connection(false);
        let builder = OptsBuilder::from_opts(opts)
            // Without this the driver silently moves to the server's unix socket after
            // connecting over TCP, bypassing HAProxy (or reaching the wrong local server).
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .stmt_cache_size(STATEMENTS_CACHED_PER_CONNECTION)
            .pool_opts(pool_opts);
        let builder = match address {
            Some((host, port)) => builder.ip_or_hostname(host).tcp_port(port),
            None => builder,
        };
        let read_turns = (limits.max_connections * 3 / 4).max(1);
        Ok(Endpoint {
            name: spec.name.clone(),
            role: spec.role,
            pool: Pool::new(builder),
            // Optimistic until the first probe: a read that fails just moves on.
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU64::new(0),
            read_admission: Semaphore::new(read_turns),
            idle_reads: IdleReadConnections::new(read_turns),
        })
    }

    /// A pooled connection, or `Unavailable`/`Timeout` within `timeout`.
    pub async fn connection(&self, timeout: Duration) -> Result<Conn, DbError> {
        connect_within(&self.name, timeout, self.pool.get_conn()).await
    }

    /// A connection for one read: on a read endpoint an idle one whose server is known to
    /// hold `wanted` if there is one, else any idle one, else a new one from the pool.
    pub(crate) async fn read_connection(
        &self,
        timeout: Duration,
        wanted: Option<&GtidPosition>,
    ) -> Result<PositionedConnection, DbError> {
        if self.role == EndpointRole::Read {
            if let Some(connection) = self.idle_reads.take(wanted) {
                return Ok(connection);
            }
        }
        Ok(PositionedConnection {
            conn: self.connection(timeout).await?,
            applied: None,
        })
    }

    /// Keeps a connection that answered a read for the next read (a read endpoint's) or
    /// returns it to the pool.
    pub(crate) fn finish_read(&self, connection: PositionedConnection) {
        if self.role == EndpointRole::Read {
            self.idle_reads.put_back(connection);
        }
    }

    /// A turn for one read, waiting at most `queue_timeout`; `None` when the pool stayed
    /// busy that long.
    pub async fn admit_read(&self, queue_timeout: Duration) -> Option<SemaphorePermit<'_>> {
        match tokio::time::timeout(queue_timeout, self.read_admission.acquire()).await {
            Ok(Ok(permit)) => Some(permit),
            // Never closed; a closed semaphore would mean no turn either.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Whether queries are routed to it now.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the endpoint down at once; the router's probes bring it back.
    pub fn record_failure(&self) -> bool {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        self.healthy.swap(false, Ordering::Relaxed)
    }

    /// Returns whether the endpoint was down before.
    pub fn record_success(&self) -> bool {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        !self.healthy.swap(true, Ordering::Relaxed)
    }

    /// Failures (probes and requests) since its last success.
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Closes every pooled connection (used at shutdown).
    pub async fn close(&self) {
        self.idle_reads.release_all();
        if let Err(error) = self.pool.clone().disconnect().await {
            tracing::debug!(endpoint = %self.name, %error, "pool disconnect failed");
        }
    }
}

/// The write endpoints and the one writes start at. With failover, one per server,
/// each the configured master's URL (user, password, database) at the server's address,
/// named after the server; writes start at the server the master URL names (or at the
/// master URL itself, a proxy say, until the first reading finds the master).
pub(super) fn write_endpoints_of(config: &DatabaseConfig) -> Result<(Vec<Arc<Endpoint>>, Arc<Endpoint>), DbError> {
    let configured = Arc::new(Endpoint::open(&config.master, config.pool_limits)?);
    if config.failover.servers.is_empty() {
        return Ok((vec![Arc::clone(&configured)], configured));
    }
    let address_of = |name: &str, url: &str| {
        Opts::from_url(url)
            .map(|opts| (opts.ip_or_hostname().to_owned(), opts.tcp_port()))
            .map_err(|error| DbError::Config(format!("{name}: {error}")))
    };
    let master_address = address_of(&config.master.name, &config.master.url)?;
    let mut endpoints = Vec::new();
    let mut start = None;
    for server in &config.failover.servers {
        let (host, port) = address_of(&server.name, &server.admin_url)?;
        let spec = EndpointSpec {
            name: server.name.clone(),
            url: config.master.url.clone(),
            role: EndpointRole::Master,
        };
        let endpoint = Arc::new(Endpoint::open_at(
            &spec,
            Some((host.clone(), port)),
            config.pool_limits,
        )?);
        if (host, port) == master_address {
            start = Some(Arc::clone(&endpoint));
        }
        endpoints.push(endpoint);
    }
    let start = match start {
        Some(start) => start,
        None => {
            endpoints.push(Arc::clone(&configured));
            configured
        }
    };
    Ok((endpoints, start))
}
