//! Test support: one set of database servers per test binary, and for each test a fresh
//! database with its own `parley` nodes and nginx in front of them.
//!
//! Included by each test file with `#[path = "support/test_app.rs"] mod test_app;`
//! (a file under `tests/support/` is not a test binary of its own).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use parley_client::http::{seed_person, ParleyHttp};
use parley_client::MessengerSocket;
use parley_launcher::{AppTier, AppTierSpec, DatabaseServers, DatabaseServersSpec, EdgeTlsFiles, PortChoice};
use protocol::websocket::{actions, Envelope, OutgoingMessage, ReplayCompletePayload};
use tokio::sync::OnceCell;

/// Cheap password hashing for tests; production keeps OWASP's cost. No send rate limit:
/// several tests send hundreds of messages from one user at once (the limit has its own
/// test, with the default flags).
pub const TEST_NODE_ARGS: &[&str] = &["--scrypt-log-n", "10", "--send-messages-per-second", "0"];

static SHARED_SERVERS: OnceCell<DatabaseServers> = OnceCell::const_new();
static NEXT_APP: AtomicUsize = AtomicUsize::new(0);

/// Where this test binary keeps its state: under cargo's target tmp dir, one folder per
/// run (older runs' folders are removed first).
pub fn binary_state_dir(binary: &str) -> PathBuf {
    parley_launcher::test_watchdog::arm(binary);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("parley-tests");
    let prefix = format!("{binary}-");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix).and_then(|pid| pid.parse::<u32>().ok()) else {
                continue;
            };
            if !parley_launcher::pid_is_alive(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    root.join(format!("{prefix}{}", std::process::id()))
}

/// Starts database servers owned by the caller (for tests that kill one of them).
pub async fn own_servers(binary: &str) -> DatabaseServers {
    DatabaseServers::start(DatabaseServersSpec {
        state_dir: binary_state_dir(binary).join("servers"),
        ports: PortChoice::Free,
        detach: false,
    })
    .await
    .expect("starting the database servers")
}

/// The database servers shared by every test of this binary (started on first use).
pub async fn shared_servers(binary: &str) -> &'static DatabaseServers {
    SHARED_SERVERS.get_or_init(|| own_servers(binary)).await
}

/// A fresh database with its own nodes and nginx.
pub struct TestApp {
    pub app: AppTier,
    /// Through nginx.
    pub http: ParleyHttp,
    pub database: String,
}

impl TestApp {
    pub async fn spawn(servers: &DatabaseServers, nodes: usize) -> TestApp {
        TestApp::spawn_with_args(servers, nodes, &[]).await
    }

    /// Like [`TestApp::spawn`], with extra flags for every node.
    pub async fn spawn_with_args(servers: &DatabaseServers, nodes: usize, extra_args: &[&str]) -> TestApp {
        let all: Vec<&str> = TEST_NODE_ARGS.iter().chain(extra_args).copied().collect();
        TestApp::spawn_with_only_args(servers, nodes, &all).await
    }

    /// Nodes with exactly these flags: not even the tests' cheap password hashing.
    pub async fn spawn_with_only_args(servers: &DatabaseServers, nodes: usize, node_args: &[&str]) -> TestApp {
        TestApp::spawn_with_edge_tls(servers, nodes, node_args, None).await
    }

    /// Nodes with exactly these flags, and nginx serving HTTPS with `edge_tls`. `http`
    /// then trusts only the system's roots: a test with its own CA makes its own client.
    pub async fn spawn_with_edge_tls(
        servers: &DatabaseServers,
        nodes: usize,
        node_args: &[&str],
        edge_tls: Option<EdgeTlsFiles>,
    ) -> TestApp {
        let index = NEXT_APP.fetch_add(1, Ordering::Relaxed);
        let database = format!("parley_t{}_{index}", std::process::id());
        servers
            .create_database(&database)
            .await
            .expect("creating the test database");
        let app = AppTier::start(
            servers,
            AppTierSpec {
                state_dir: servers
                    .state_dir()
                    .parent()
                    .expect("state root")
                    .join(format!("app-{index}")),
                database: database.clone(),
                nodes,
                public_port: None,
                node_ports: PortChoice::Free,
                parley_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_parley"))),
                jwt_secret: "parley-test-secret-0123456789abcdef0123456789".to_owned(),
                cluster_cookie: "parley-test-cookie-0123456789abcdef0123456789".to_owned(),
                node_extra_args: node_args.iter().map(|arg| arg.to_string()).collect(),
                detach: false,
                edge_tls,
            },
        )
        .await
        .expect("starting the app tier");
        let http = ParleyHttp::new(app.public_url());
        TestApp { app, http, database }
    }

    /// Waits until every node sees every other node alive in `GET /cluster`.
    pub async fn wait_cluster_formed(&self) {
        let names = self.app.node_names();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        for name in &names {
            let http = self.node(name);
            loop {
                let view = http
                    .request(reqwest::Method::GET, "/cluster", None, None)
                    .await
                    .unwrap();
                let alive = view.body["members"]
                    .as_array()
                    .map(|members| members.iter().filter(|member| member["alive"] == true).count())
                    .unwrap_or(0);
                if alive == names.len() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never saw the whole cluster: {}",
                    view.body
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }

    /// A client talking to one node directly.
    pub fn node(&self, name: &str) -> ParleyHttp {
        ParleyHttp::new(self.app.node_url(name))
    }

    /// The process id of one node (to watch its memory).
    pub fn node_pid(&self, name: &str) -> u32 {
        self.app
            .status()
            .into_iter()
            .find(|component| component.name == name)
            .unwrap_or_else(|| panic!("no component {name}"))
            .pid
    }
}

/// Bob and Alice of the seed, signed up and signed in, with their chat.
pub struct Pair {
    pub app: TestApp,
    pub bob: String,
    pub alice: String,
    pub bob_id: String,
    pub alice_id: String,
    pub chat_id: String,
}

impl Pair {
    /// Emails are made unique by `tag` (`bob.<tag>@email.com`).
    pub async fn in_app(app: TestApp, tag: &str) -> Pair {
        let bob_id = app.http.sign_up_ok(&seed_person("Bob", tag)).await.unwrap();
        let alice_id = app.http.sign_up_ok(&seed_person("Alice", tag)).await.unwrap();
        let sign_in = |who: &str| {
            let email = format!("{who}.{tag}@email.com");
            let http = app.http.clone();
            async move { http.sign_in(&email, "1234567890").await.unwrap().access_token }
        };
        let bob = sign_in("bob").await;
        let alice = sign_in("alice").await;
        let chat_id = app.http.create_chat(&bob, &alice_id).await.unwrap();
        Pair {
            app,
            bob,
            alice,
            bob_id,
            alice_id,
            chat_id,
        }
    }
}

/// A message with only its text.
pub fn text_message(text: &str) -> OutgoingMessage {
    OutgoingMessage {
        text: text.to_owned(),
        status: None,
        client_id: None,
    }
}

/// A messenger socket to `url` whose replay is done: the socket, the `replay-complete`
/// payload and the frames before it.
pub async fn connect_live(url: &str, token: &str) -> (MessengerSocket, ReplayCompletePayload, Vec<Envelope>) {
    let mut socket = MessengerSocket::connect(url, token).await.unwrap();
    let (before, done) = socket
        .until_action(actions::REPLAY_COMPLETE, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    (socket, done.decode_payload().unwrap(), before)
}

/// A node's Prometheus text, from its own port.
pub async fn node_metrics_text(node_url: &str) -> String {
    reqwest::get(format!("{node_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One sample of a node's Prometheus metric `name` (without labels), from its own port.
pub async fn node_metric(node_url: &str, name: &str) -> f64 {
    let text = node_metrics_text(node_url).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics:\n{text}"))
}

/// Runs `statement` as root on each of `servers_named` (`master`, `replica-1`, …).
pub async fn on_servers(servers: &DatabaseServers, servers_named: &[&str], statement: &str) {
    use mysql_async::prelude::Queryable;
    for server in servers_named {
        let mut connection = parley_launcher::mariadb_admin::connect_url(&servers.root_url(server))
            .await
            .unwrap_or_else(|error| panic!("connecting to {server}: {error:#}"));
        connection
            .query_drop(statement)
            .await
            .unwrap_or_else(|error| panic!("{statement} on {server}: {error}"));
        parley_launcher::mariadb_admin::close(connection).await;
    }
}
