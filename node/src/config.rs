//! The node's configuration: flags, each with an environment variable.

mod database_servers;
mod published_secrets;
mod trusted_proxies;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actors::accounts::passwords::ScryptCost;
use actors::cluster::membership::MembershipArguments;
use actors::cluster::tls::{ClusterTls, ClusterTlsError, ClusterTlsFiles, DEFAULT_CLUSTER_SERVER_NAME};
use actors::database::{DatabaseConfig, DatabaseTimeouts, EndpointRole, EndpointSpec, FailoverSettings, PoolLimits};
use actors::messaging::frames::FrameLimits;
use clap::Parser;

use crate::websocket::SocketHeartbeat;
pub use published_secrets::PUBLISHED_SECRETS;
use published_secrets::{database_url_password, is_published_secret};
pub use trusted_proxies::{ProxyNetwork, ProxyNetworkError, TrustedProxies, DEFAULT_TRUSTED_PROXIES};

/// Secrets shorter than this are refused outside dev mode.
pub const MIN_SECRET_BYTES: usize = 32;

/// The JWT secret used with `--dev` when none is given. Refused without `--dev`.
pub const DEV_JWT_SECRET: &str = "parley-dev-secret-do-not-use-in-production";

/// The cluster cookie used with `--dev` when none is given.
pub const DEV_CLUSTER_COOKIE: &str = "parley-dev-cluster-cookie-do-not-use-in-production";

/// A Parley cluster node.
#[derive(Debug, Clone, Parser)]
#[command(name = "parley", version, about = "A Parley chat cluster node")]
pub struct NodeConfig {
    /// Address the HTTP and websocket API listens on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This node's name in logs, traces and the cluster.
    #[arg(long, env = "PARLEY_NODE_NAME", default_value = "node-1")]
    pub node_name: String,

    /// The master, for writes: mysql://user:password@host:port/database
    #[arg(long, env = "PARLEY_MASTER_URL")]
    pub master_url: String,

    /// A read endpoint, `name=mysql://...` (HAProxy's read frontend or a replica);
    /// repeat the flag, or separate with commas in the environment variable. Reads fall
    /// back to the master when every read endpoint fails.
    #[arg(long = "read-url", env = "PARLEY_READ_URLS", value_delimiter = ',')]
    pub read_urls: Vec<String>,

    /// A database server this node watches and may promote to master when the master
    /// dies, `name=mysql://admin:password@host:port/` (an administrative user; it also
    /// serves as the replication user of a server pointed at a new master). Give every
    /// server, the master included: repeat the flag, or separate with commas in the
    /// environment variable. None: no automatic failover, writes always go to --master-url.
    #[arg(long = "database-server", env = "PARLEY_DATABASE_SERVERS", value_delimiter = ',')]
    pub database_servers: Vec<String>,

    /// How long no database server may take writes (and the replicas have lost the
    /// master too) before a replica is promoted, in milliseconds. Short, because the
    /// replicas' own verdict is the slow, careful one: a master that only went silent
    /// loses them after `slave_net_timeout` (2 s) without a heartbeat.
    #[arg(long, env = "PARLEY_FAILOVER_AFTER_MS", default_value_t = 1000)]
    pub failover_after_ms: u64,

    /// With --database-server: how long a write that finds no master (a promotion under
    /// way) waits for one before it is refused with 503, in milliseconds. Keep it below
    /// the proxy's read timeout (nginx: 5 s) less the write timeout.
    #[arg(long, env = "PARLEY_FAILOVER_WRITE_WAIT_MS", default_value_t = 4000)]
    pub failover_write_wait_ms: u64,

    /// HS256 secret for access and refresh tokens, at least 32 bytes.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Access token lifetime in seconds (the seed's: one hour).
    #[arg(long, env = "PARLEY_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 3600)]
    pub access_token_ttl_seconds: u64,

    /// Refresh token lifetime in seconds (the seed's: one day).
    #[arg(long, env = "PARLEY_REFRESH_TOKEN_TTL_SECONDS", default_value_t = 86400)]
    pub refresh_token_ttl_seconds: u64,

    /// Development mode: allows the built-in JWT secret. Never in production.
    #[arg(long, env = "PARLEY_DEV", default_value_t = false)]
    pub dev: bool,

    /// scrypt cost: log2(N). OWASP's minimum is 17.
    #[arg(long, env = "PARLEY_SCRYPT_LOG_N", default_value_t = 17)]
    pub scrypt_log_n: u8,

    /// Password hashes computed at once; more wait their turn.
    #[arg(long, env = "PARLEY_MAX_CONCURRENT_HASHES", default_value_t = 2)]
    pub max_concurrent_hashes: usize,

    /// Chats a user may start; at the limit, create-chat answers 403 `limit_reached`
    /// (chats others start with them still work).
    #[arg(long, env = "PARLEY_MAX_CHATS_PER_USER", default_value_t = 1000)]
    pub max_chats_per_user: u64,

    /// Members one group may have, its creator included; past it create-group and adding
    /// a member answer 403 `limit_reached`.
    #[arg(long, env = "PARLEY_MAX_GROUP_MEMBERS", default_value_t = 1000)]
    pub max_group_members: u64,

    /// Groups one user may be in; past it creating a group with them, or adding them,
    /// answers 403 `limit_reached`.
    #[arg(long, env = "PARLEY_MAX_GROUPS_PER_USER", default_value_t = 500)]
    pub max_groups_per_user: u64,

    /// Members one user may add to groups per minute on this node (a new group's members
    /// count); past it 429 `rate_limited` with `Retry-After`.
    #[arg(long, env = "PARLEY_MEMBER_ADDITIONS_PER_MINUTE", default_value_t = 1000)]
    pub member_additions_per_minute: u32,

    /// Websockets one user may have open on this node; one more is refused with 429.
    #[arg(long, env = "PARLEY_MAX_SOCKETS_PER_USER", default_value_t = 8)]
    pub max_sockets_per_user: usize,

    /// Password hashes waiting for their turn at most; further sign-ins and sign-ups get a
    /// 429 at once instead of a long wait.
    #[arg(long, env = "PARLEY_MAX_QUEUED_HASHES", default_value_t = 16)]
    pub max_queued_hashes: usize,

    /// How long a password hash may wait for its turn before the sign-in or sign-up gets
    /// a 429, in milliseconds. Keep it well under the proxy's read timeout (nginx: 5 s).
    /// a node that answers late is taken out of rotation by nginx, a 429 is not.
    #[arg(long, env = "PARLEY_MAX_HASH_WAIT_MS", default_value_t = 2000)]
    pub max_hash_wait_ms: u64,

    /// Password hashes of one client address waiting at most (of `--max-queued-hashes`):
    /// one address's flood of sign-ups or sign-ins holds at most this share of the queue,
    /// and the others get a 429 at once, so another address's sign-in still finds room.
    #[arg(long, env = "PARLEY_MAX_QUEUED_HASHES_PER_ADDRESS", default_value_t = 4)]
    pub max_queued_hashes_per_address: usize,

    /// Sign-ups per client address and minute on this node (a third of it at once);
    /// behind nginx the address is its `X-Real-IP`. 0: no limit.
    #[arg(long, env = "PARLEY_SIGN_UP_PER_ADDRESS_PER_MINUTE", default_value_t = 60)]
    pub sign_up_per_address_per_minute: u32,

    /// Messages a user may send per second through this node, on average (a frame of
    /// five messages counts five); past it a frame is refused whole with a
    /// `rate_limited` error frame naming its client ids and when to send again, and
    /// nothing of it is stored. Behind nginx a user's sockets may sit on several nodes:
    /// the cluster-wide bound is this times the nodes. 0: no limit.
    #[arg(long, env = "PARLEY_SEND_MESSAGES_PER_SECOND", default_value_t = 20)]
    pub send_messages_per_second: u32,

    /// Messages a user may send at once before the per-second rate applies.
    #[arg(long, env = "PARLEY_SEND_BURST", default_value_t = 100)]
    pub send_burst: u32,

    /// How long a client may take to send a request's head (request line and headers),
    /// in milliseconds; a connection that has not sent it by then is closed. Bounds what
    /// a client opening connections and writing nothing (slowloris) can hold.
    #[arg(long, env = "PARLEY_HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_read_timeout_ms: u64,

    /// Client frames one websocket may have in the node at once, read but not yet
    /// answered (a send is answered by its ack, after the commit). Past it the node stops
    /// reading that socket until an answer goes out, so a client sending faster than its
    /// frames are handled is held back by TCP instead of filling the node's memory: a
    /// socket's unanswered frames cost at most this times `--max-frame-bytes`.
    #[arg(long, env = "PARLEY_MAX_FRAMES_IN_FLIGHT", default_value_t = 16)]
    pub max_frames_in_flight: usize,

    /// Sign-in attempts per email and minute on this node (10 at once); 0: no limit.
    #[arg(long, env = "PARLEY_SIGN_IN_PER_EMAIL_PER_MINUTE", default_value_t = 10)]
    pub sign_in_per_email_per_minute: u32,

    /// Sign-in attempts per client address and minute on this node (a third of it at
    /// once); behind nginx the address is its `X-Real-IP`. 0: no limit.
    #[arg(long, env = "PARLEY_SIGN_IN_PER_ADDRESS_PER_MINUTE", default_value_t = 600)]
    pub sign_in_per_address_per_minute: u32,

    /// The proxies whose `X-Real-IP` header names the client (addresses or CIDR
    /// networks, comma separated): the per-address limits count a request from one of
    /// them against that address, any other request against its peer's address, header
    /// or not. Name your nginx here, and nothing that clients can reach directly.
    #[arg(
        long,
        env = "PARLEY_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = DEFAULT_TRUSTED_PROXIES
    )]
    pub trusted_proxies: Vec<ProxyNetwork>,

    /// Largest HTTP request body accepted, in bytes.
    #[arg(long, env = "PARLEY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: u64,

    /// Largest page of `GET /messenger/messages`.
    #[arg(long, env = "PARLEY_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: u64,

    /// Largest websocket frame in bytes; a larger one closes the socket with 1009.
    #[arg(long, env = "PARLEY_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Longest message text, in characters.
    #[arg(long, env = "PARLEY_MAX_MESSAGE_CHARS", default_value_t = 4096)]
    pub max_message_chars: usize,

    /// Most messages in one send-message frame.
    #[arg(long, env = "PARLEY_MAX_MESSAGES_PER_FRAME", default_value_t = 100)]
    pub max_messages_per_frame: usize,

    /// Frames queued for a slow websocket reader before it is closed with 1008.
    #[arg(long, env = "PARLEY_OUTBOUND_QUEUE_FRAMES", default_value_t = 1024)]
    pub outbound_queue_frames: usize,

    /// Every websocket is pinged this often, in milliseconds. Keep it well below the
    /// websocket read timeout of the proxy in front (nginx: 10 s), which the pings keep
    /// quiet sockets within.
    #[arg(long, env = "PARLEY_WEBSOCKET_PING_INTERVAL_MS", default_value_t = 5000)]
    pub websocket_ping_interval_ms: u64,

    /// A websocket from which nothing at all (pong, frame) arrived for this long is
    /// closed with 1001, in milliseconds; more than the ping interval.
    #[arg(long, env = "PARLEY_WEBSOCKET_IDLE_TIMEOUT_MS", default_value_t = 15000)]
    pub websocket_idle_timeout_ms: u64,

    /// Where this node's cluster server listens (ractor_cluster); unset runs a single
    /// node without a cluster.
    #[arg(long, env = "PARLEY_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,

    /// Other nodes' cluster addresses (`host:port`), repeat or separate with commas;
    /// the node keeps reconnecting to them.
    #[arg(long = "cluster-seed", env = "PARLEY_CLUSTER_SEEDS", value_delimiter = ',')]
    pub cluster_seeds: Vec<String>,

    /// Shared secret authenticating the cluster's nodes. Required with --cluster-listen
    /// unless --dev is given.
    #[arg(long, env = "PARLEY_CLUSTER_COOKIE", hide_env_values = true)]
    pub cluster_cookie: Option<String>,

    /// The host peers use to reach this node; defaults to the cluster listen address.
    #[arg(long, env = "PARLEY_CLUSTER_ADVERTISE_HOST")]
    pub cluster_advertise_host: Option<String>,

    /// This node's cluster TLS certificate (PEM, leaf first). With --cluster-tls-key and
    /// --cluster-tls-ca, every cluster connection is TLS with mutual authentication;
    /// without all three, plain TCP (keep the cluster network private then).
    #[arg(long, env = "PARLEY_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,

    /// This node's cluster TLS private key (PEM).
    #[arg(long, env = "PARLEY_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,

    /// The cluster's CA (PEM): peers' certificates, both ways, must be issued by it. Use a
    /// CA of the cluster's own: any certificate it issued admits a node.
    #[arg(long, env = "PARLEY_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// The DNS name every node certificate carries (subject alternative name) and a node
    /// checks when it dials a peer: peers are dialled by address, which no certificate
    /// names.
    #[arg(long, env = "PARLEY_CLUSTER_TLS_SERVER_NAME", default_value = DEFAULT_CLUSTER_SERVER_NAME)]
    pub cluster_tls_server_name: String,

    /// Where spans go over OTLP/gRPC (e.g. Jaeger's `http://jaeger:4317`); unset or
    /// empty: no spans are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// On SIGTERM, the node stops listening at once (a refused connect is retried by
    /// nginx on another node, whatever the method), then keeps answering on the
    /// connections it already has for this long (every response with `Connection: close`,
    /// readiness 503, websocket upgrades 503) before it closes them, in milliseconds.
    /// nginx reuses idle connections to a node; closed while nginx sends a POST on one,
    /// the POST fails and nginx may not retry it. Answering with `Connection: close` for
    /// a while retires the connections nginx is using, and nginx closes its idle ones
    /// itself before then (its upstream `keepalive_timeout` is shorter).
    #[arg(long, env = "PARLEY_SHUTDOWN_LAME_DUCK_MS", default_value_t = 1000)]
    pub shutdown_lame_duck_ms: u64,

    /// Interval of heartbeats between nodes, in milliseconds.
    #[arg(long, env = "PARLEY_HEARTBEAT_INTERVAL_MS", default_value_t = 500)]
    pub heartbeat_interval_ms: u64,

    /// A peer silent for this long is declared dead (frozen or partitioned), in milliseconds.
    #[arg(long, env = "PARLEY_PEER_FAILURE_TIMEOUT_MS", default_value_t = 3000)]
    pub peer_failure_timeout_ms: u64,

    /// Bound on one read attempt on one endpoint, in milliseconds.
    #[arg(long, env = "PARLEY_DB_READ_TIMEOUT_MS", default_value_t = 800)]
    pub db_read_timeout_ms: u64,

    /// Bound on a whole write transaction, in milliseconds.
    #[arg(long, env = "PARLEY_DB_WRITE_TIMEOUT_MS", default_value_t = 1500)]
    pub db_write_timeout_ms: u64,

    /// Refuse writes (503, database_unavailable) while the master reports no replica
    /// that acknowledges commits (semi-synchronous replication), so that nothing is acked
    /// that only the master holds. `false` accepts asynchronous replication, where a
    /// master's death may lose acked messages.
    #[arg(long, env = "PARLEY_REQUIRE_SEMI_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub require_semi_sync: bool,

    /// Connections per database endpoint pool.
    #[arg(long, env = "PARLEY_DB_POOL_MAX", default_value_t = 64)]
    pub db_pool_max: usize,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No JWT secret given and not in development mode: set one.
    #[error("no JWT secret: set --jwt-secret / PARLEY_JWT_SECRET (at least {MIN_SECRET_BYTES} bytes), or pass --dev for development")]
    MissingJwtSecret,
    /// The JWT secret is too short to resist guessing: use a longer random one.
    #[error("the JWT secret is shorter than {MIN_SECRET_BYTES} bytes")]
    ShortJwtSecret,
    /// The built-in development secret outside development mode.
    #[error("the JWT secret is the well-known development secret; pass --dev to allow it")]
    DevJwtSecret,
    /// A cluster is configured but no cookie authenticates its members: set one.
    #[error("no cluster cookie: set --cluster-cookie / PARLEY_CLUSTER_COOKIE (at least {MIN_SECRET_BYTES} bytes), or pass --dev for development")]
    MissingClusterCookie,
    /// The cluster cookie is too short to resist guessing: use a longer random one.
    #[error("the cluster cookie is shorter than {MIN_SECRET_BYTES} bytes")]
    ShortClusterCookie,
    /// A secret (named in the variant) is one published in the repository: choose another.
    #[error("{0} is a published value (an example of the repository's compose/.env, a development default, or it says `change-me`): anyone who read the repository could use it. Set one of your own (e.g. `openssl rand -hex 32`; compose generates them when the variable is empty), or pass --dev for development")]
    PublishedSecret(String),
    /// A `--database-server` entry (held) is not `name=mysql://...`, or a name repeats.
    #[error("database server {0:?} is not `name=mysql://...` with a name of its own")]
    BadDatabaseServer(String),
    /// A `--read-url` entry (held) is neither `name=mysql://...` nor `mysql://...`.
    #[error("read endpoint {0:?} is not `name=mysql://...` or `mysql://...`")]
    BadReadUrl(String),
    /// Some of the three cluster TLS files are given but not all; holds the missing flags.
    #[error("cluster TLS needs --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca together; missing: {}", .0.join(", "))]
    PartialClusterTls(Vec<&'static str>),
    /// Cluster TLS files without `--cluster-listen`.
    #[error("cluster TLS flags are given but no --cluster-listen: a single node has no cluster to secure")]
    ClusterTlsWithoutCluster,
    /// The cluster TLS files could not be loaded.
    #[error(transparent)]
    ClusterTls(#[from] ClusterTlsError),
    /// The websocket ping interval is 0 or not shorter than the idle timeout, so a quiet
    /// healthy client would be closed.
    #[error("--websocket-idle-timeout-ms ({idle_timeout_ms}) must exceed --websocket-ping-interval-ms ({ping_interval_ms}), which must not be 0: a healthy quiet client must be pinged before it is given up")]
    WebsocketHeartbeat {
        /// The configured ping interval, in milliseconds.
        ping_interval_ms: u64,
        /// The configured idle timeout, in milliseconds.
        idle_timeout_ms: u64,
    },
}

impl NodeConfig {
    /// The JWT secret to use, enforcing the rules above.
    pub fn jwt_secret(&self) -> Result<String, ConfigError> {
        match (&self.jwt_secret, self.dev) {
            (None, true) => Ok(DEV_JWT_SECRET.to_owned()),
            (None, false) => Err(ConfigError::MissingJwtSecret),
            (Some(secret), false) if secret == DEV_JWT_SECRET => Err(ConfigError::DevJwtSecret),
            (Some(secret), false) if is_published_secret(secret) => {
                Err(ConfigError::PublishedSecret("the JWT secret".to_owned()))
            }
            (Some(secret), false) if secret.len() < MIN_SECRET_BYTES => Err(ConfigError::ShortJwtSecret),
            (Some(secret), _) => Ok(secret.clone()),
        }
    }

    /// What one websocket frame may carry, from the message limits given.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_text_chars: self.max_message_chars,
            max_messages_per_frame: self.max_messages_per_frame,
            ..FrameLimits::default()
        }
    }

    /// When websockets are pinged and when a silent one is closed.
    pub fn websocket_heartbeat(&self) -> Result<SocketHeartbeat, ConfigError> {
        let (ping_interval_ms, idle_timeout_ms) = (self.websocket_ping_interval_ms, self.websocket_idle_timeout_ms);
        if ping_interval_ms == 0 || idle_timeout_ms <= ping_interval_ms {
            return Err(ConfigError::WebsocketHeartbeat {
                ping_interval_ms,
                idle_timeout_ms,
            });
        }
        Ok(SocketHeartbeat {
            ping_interval: Duration::from_millis(ping_interval_ms),
            idle_timeout: Duration::from_millis(idle_timeout_ms),
        })
    }

    /// The cluster cookie to use, enforcing the same rules as the JWT secret.
    pub fn cluster_cookie(&self) -> Result<String, ConfigError> {
        match (&self.cluster_cookie, self.dev) {
            (None, true) => Ok(DEV_CLUSTER_COOKIE.to_owned()),
            (None, false) => Err(ConfigError::MissingClusterCookie),
            (Some(cookie), false) if is_published_secret(cookie) => {
                Err(ConfigError::PublishedSecret("the cluster cookie".to_owned()))
            }
            (Some(cookie), false) if cookie.len() < MIN_SECRET_BYTES => Err(ConfigError::ShortClusterCookie),
            (Some(cookie), _) => Ok(cookie.clone()),
        }
    }

    /// How this node joins the cluster, or None for a single node.
    pub fn membership(&self, cluster_name: &str) -> Result<Option<MembershipArguments>, ConfigError> {
        let Some(listen) = self.cluster_listen else {
            return Ok(None);
        };
        Ok(Some(MembershipArguments {
            listen,
            advertise_host: self
                .cluster_advertise_host
                .clone()
                .unwrap_or_else(|| listen.ip().to_string()),
            seeds: self
                .cluster_seeds
                .iter()
                .map(|seed| seed.trim().to_owned())
                .filter(|seed| !seed.is_empty())
                .collect(),
            cookie: self.cluster_cookie()?,
            cluster_name: cluster_name.to_owned(),
            tls: self
                .cluster_tls_files()?
                .map(|files| ClusterTls::load(&files))
                .transpose()?,
        }))
    }

    /// The cluster's TLS files: all three given, or none (plain TCP). A partial set is
    /// refused rather than silently running the cluster in plain text.
    pub fn cluster_tls_files(&self) -> Result<Option<ClusterTlsFiles>, ConfigError> {
        let given = [
            ("--cluster-tls-cert", &self.cluster_tls_cert),
            ("--cluster-tls-key", &self.cluster_tls_key),
            ("--cluster-tls-ca", &self.cluster_tls_ca),
        ];
        let missing: Vec<&'static str> = given
            .iter()
            .filter(|(_, path)| path.is_none())
            .map(|(flag, _)| *flag)
            .collect();
        if missing.len() == given.len() {
            return Ok(None);
        }
        if !missing.is_empty() {
            return Err(ConfigError::PartialClusterTls(missing));
        }
        if self.cluster_listen.is_none() {
            return Err(ConfigError::ClusterTlsWithoutCluster);
        }
        let [Some(certificate), Some(private_key), Some(certificate_authority)] = given.map(|(_, path)| path.clone())
        else {
            unreachable!("every path is present: none is missing");
        };
        Ok(Some(ClusterTlsFiles {
            certificate,
            private_key,
            certificate_authority,
            server_name: self.cluster_tls_server_name.clone(),
        }))
    }

    /// The scrypt cost of new password hashes (`--scrypt-log-n`; r and p are fixed).
    pub fn scrypt_cost(&self) -> ScryptCost {
        ScryptCost {
            log_n: self.scrypt_log_n,
            ..ScryptCost::default()
        }
    }

    /// The proxies whose `X-Real-IP` is believed.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone())
    }

    /// The master and read endpoints with their timeouts and pool size. Fails on a
    /// malformed `--read-url`, and outside `--dev` on a database password published in the
    /// repository.
    pub fn database(&self) -> Result<DatabaseConfig, ConfigError> {
        let reads = self
            .read_urls
            .iter()
            .enumerate()
            .map(|(index, entry)| parse_read_url(index, entry))
            .collect::<Result<Vec<_>, _>>()?;
        let servers = database_servers::parse_database_servers(&self.database_servers)?;
        if !self.dev {
            let urls = std::iter::once(("--master-url".to_owned(), self.master_url.as_str()))
                .chain(
                    reads
                        .iter()
                        .map(|read| (format!("read endpoint {}", read.name), read.url.as_str())),
                )
                .chain(
                    servers
                        .iter()
                        .map(|server| (format!("database server {}", server.name), server.admin_url.as_str())),
                );
            for (endpoint, url) in urls {
                if database_url_password(url).is_some_and(is_published_secret) {
                    return Err(ConfigError::PublishedSecret(format!(
                        "the database password of {endpoint}"
                    )));
                }
            }
        }
        Ok(DatabaseConfig {
            master: EndpointSpec {
                name: "master".to_owned(),
                url: self.master_url.clone(),
                role: EndpointRole::Master,
            },
            reads,
            timeouts: DatabaseTimeouts {
                read_attempt: Duration::from_millis(self.db_read_timeout_ms),
                write: Duration::from_millis(self.db_write_timeout_ms),
                ..DatabaseTimeouts::default()
            },
            pool_limits: PoolLimits {
                max_connections: self.db_pool_max,
                ..PoolLimits::default()
            },
            require_semi_sync: self.require_semi_sync,
            failover: FailoverSettings {
                servers,
                failover_after: Duration::from_millis(self.failover_after_ms),
                write_wait: Duration::from_millis(self.failover_write_wait_ms),
            },
        })
    }
}

fn parse_read_url(index: usize, entry: &str) -> Result<EndpointSpec, ConfigError> {
    let entry = entry.trim();
    let (name, url) = match entry.split_once('=') {
        Some((name, url)) if !name.contains("://") && !name.is_empty() => (name.to_owned(), url.to_owned()),
        _ => (format!("read-{}", index + 1), entry.to_owned()),
    };
    if !url.starts_with("mysql://") {
        return Err(ConfigError::BadReadUrl(entry.to_owned()));
    }
    Ok(EndpointSpec {
        name,
        url,
        role: EndpointRole::Read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> NodeConfig {
        let mut all = vec!["parley", "--master-url", "mysql://u:p@127.0.0.1:3306/parley"];
        all.extend_from_slice(args);
        NodeConfig::try_parse_from(all).unwrap()
    }

    #[test]
    fn refuses_missing_short_and_well_known_secrets_outside_dev_mode() {
        assert!(matches!(config(&[]).jwt_secret(), Err(ConfigError::MissingJwtSecret)));
        assert!(matches!(
            config(&["--jwt-secret", "short"]).jwt_secret(),
            Err(ConfigError::ShortJwtSecret)
        ));
        assert!(matches!(
            config(&["--jwt-secret", DEV_JWT_SECRET]).jwt_secret(),
            Err(ConfigError::DevJwtSecret)
        ));
        assert_eq!(config(&["--dev"]).jwt_secret().unwrap(), DEV_JWT_SECRET);
        let strong = "x".repeat(40);
        assert_eq!(config(&["--jwt-secret", &strong]).jwt_secret().unwrap(), strong);
    }

    #[test]
    fn refuses_the_published_secrets_outside_dev_mode_and_says_why() {
        let placeholder = "my-own-secret-CHANGE-ME-0123456789abcdef";
        for published in PUBLISHED_SECRETS.iter().copied().chain([placeholder]) {
            let jwt = config(&["--jwt-secret", published]).jwt_secret();
            if published == DEV_JWT_SECRET {
                assert!(matches!(jwt, Err(ConfigError::DevJwtSecret)), "{jwt:?}");
            } else {
                assert!(
                    matches!(jwt, Err(ConfigError::PublishedSecret(_))),
                    "{published}: {jwt:?}"
                );
            }
            let cookie = config(&["--cluster-cookie", published]).cluster_cookie();
            assert!(
                matches!(cookie, Err(ConfigError::PublishedSecret(_))),
                "{published}: {cookie:?}"
            );
            // Development mode takes them: parley-sim and the tests run with --dev.
            assert_eq!(
                config(&["--dev", "--jwt-secret", published]).jwt_secret().unwrap(),
                published
            );
            let dev_cookie = config(&["--dev", "--cluster-cookie", published]).cluster_cookie();
            assert_eq!(dev_cookie.unwrap(), published);
        }
        let error = config(&["--jwt-secret", "example-jwt-secret-change-me-4f7d0c2a9b8e61d3"])
            .jwt_secret()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("the JWT secret is a published value") && error.contains("--dev"),
            "{error}"
        );
        let own = "4f7d0c2a9b8e61d34f7d0c2a9b8e61d34f7d0c2a9b8e61d3";
        assert_eq!(config(&["--cluster-cookie", own]).cluster_cookie().unwrap(), own);
    }

    #[test]
    fn refuses_a_published_database_password_outside_dev_mode() {
        let published_url = "mysql://parley:example-app-password-change-me-31c9@master:3306/parley";
        let own_url = "mysql://parley:0a9e8f7c6b5d4e3f2a1b@master:3306/parley";
        let with_master = |master: &str, extra: &[&str]| {
            let mut all = vec!["parley", "--master-url", master];
            all.extend_from_slice(extra);
            NodeConfig::try_parse_from(all).unwrap().database()
        };
        match with_master(published_url, &[]) {
            Err(ConfigError::PublishedSecret(what)) => assert_eq!(what, "the database password of --master-url"),
            other => panic!("the example password was accepted: {other:?}"),
        }
        let read = format!("haproxy-read={published_url}");
        match with_master(own_url, &["--read-url", &read]) {
            Err(ConfigError::PublishedSecret(what)) => {
                assert_eq!(what, "the database password of read endpoint haproxy-read");
            }
            other => panic!("the example password was accepted: {other:?}"),
        }
        assert!(with_master(own_url, &["--read-url", &format!("haproxy-read={own_url}")]).is_ok());
        assert!(with_master(published_url, &["--dev", "--read-url", &read]).is_ok());
    }

    #[test]
    fn trusted_proxies_default_to_loopback_and_take_addresses_and_networks() {
        let default = config(&[]).trusted_proxies();
        assert_eq!(default, TrustedProxies::default());
        assert_eq!(default.to_string(), "127.0.0.1/32,::1/128");
        let compose = config(&["--trusted-proxies", "172.16.200.10, 10.1.0.0/16"]).trusted_proxies();
        assert_eq!(compose.to_string(), "172.16.200.10/32,10.1.0.0/16");
        assert!(compose.contains("172.16.200.10".parse().unwrap()));
        assert!(compose.contains("10.1.255.1".parse().unwrap()));
        assert!(!compose.contains("127.0.0.1".parse().unwrap()));
        let refused = NodeConfig::try_parse_from([
            "parley",
            "--master-url",
            "mysql://u:p@127.0.0.1:3306/parley",
            "--trusted-proxies",
            "10.0.0.5/24",
        ])
        .unwrap_err()
        .to_string();
        assert!(refused.contains("the network is 10.0.0.0/24"), "{refused}");
    }

    #[test]
    fn cluster_tls_takes_all_three_files_or_none() {
        let listen = ["--cluster-listen", "127.0.0.1:4369"];
        let with = |extra: &[&str]| config(&[&listen[..], extra].concat()).cluster_tls_files();
        assert_eq!(with(&[]).unwrap(), None);
        match with(&["--cluster-tls-cert", "node.pem"]) {
            Err(ConfigError::PartialClusterTls(missing)) => {
                assert_eq!(missing, ["--cluster-tls-key", "--cluster-tls-ca"]);
            }
            other => panic!("a lone certificate was accepted: {other:?}"),
        }
        match with(&["--cluster-tls-key", "node.key", "--cluster-tls-ca", "ca.pem"]) {
            Err(ConfigError::PartialClusterTls(missing)) => assert_eq!(missing, ["--cluster-tls-cert"]),
            other => panic!("TLS without a certificate was accepted: {other:?}"),
        }
        let all = [
            "--cluster-tls-cert",
            "node.pem",
            "--cluster-tls-key",
            "node.key",
            "--cluster-tls-ca",
            "ca.pem",
        ];
        let files = with(&all).unwrap().expect("all three files given");
        assert_eq!(files.certificate, PathBuf::from("node.pem"));
        assert_eq!(files.private_key, PathBuf::from("node.key"));
        assert_eq!(files.certificate_authority, PathBuf::from("ca.pem"));
        assert_eq!(files.server_name, DEFAULT_CLUSTER_SERVER_NAME);
        assert!(matches!(
            config(&all).cluster_tls_files(),
            Err(ConfigError::ClusterTlsWithoutCluster)
        ));
    }

    #[test]
    fn a_partial_cluster_tls_setup_stops_the_node_before_any_file_is_read() {
        let partial = config(&[
            "--dev",
            "--cluster-listen",
            "127.0.0.1:4369",
            "--cluster-tls-ca",
            "ca.pem",
        ]);
        let error = partial.membership("node-1#0").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("missing: --cluster-tls-cert, --cluster-tls-key"),
            "{error}"
        );
    }

    #[test]
    fn an_unreadable_cluster_tls_file_is_named_in_the_error() {
        let missing = "/nonexistent/parley-cluster-node.pem";
        let node = config(&[
            "--dev",
            "--cluster-listen",
            "127.0.0.1:4369",
            "--cluster-tls-cert",
            missing,
            "--cluster-tls-key",
            "/nonexistent/node.key",
            "--cluster-tls-ca",
            "/nonexistent/ca.pem",
        ]);
        let error = node.membership("node-1#0").unwrap_err();
        assert!(matches!(error, ConfigError::ClusterTls(_)), "{error:?}");
        assert!(error.to_string().contains(missing), "{error}");
    }

    #[test]
    fn the_websocket_heartbeat_pings_before_it_gives_up() {
        let heartbeat = config(&[]).websocket_heartbeat().unwrap();
        assert_eq!(heartbeat.ping_interval, Duration::from_secs(5));
        assert_eq!(heartbeat.idle_timeout, Duration::from_secs(15));
        let with = |ping: &str, idle: &str| {
            config(&[
                "--websocket-ping-interval-ms",
                ping,
                "--websocket-idle-timeout-ms",
                idle,
            ])
            .websocket_heartbeat()
        };
        assert!(with("100", "300").is_ok());
        assert!(with("0", "300").is_err());
        assert!(with("300", "300").is_err());
    }

    #[test]
    fn read_urls_are_named_or_numbered() {
        let database = config(&[
            "--read-url",
            "haproxy-read=mysql://u:p@127.0.0.1:1/parley",
            "--read-url",
            "mysql://u:p@127.0.0.1:2/parley",
        ])
        .database()
        .unwrap();
        let names: Vec<_> = database.reads.iter().map(|spec| spec.name.as_str()).collect();
        assert_eq!(names, ["haproxy-read", "read-2"]);
        assert!(config(&["--read-url", "nonsense"]).database().is_err());
    }
}
