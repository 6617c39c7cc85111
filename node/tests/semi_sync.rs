//! Semi-synchronous replication: a message Parley acks is in a replica's relay log
//! before the master's commit returns, so the master's death cannot take it along.
//! With no replica acknowledging (both replicas' IO threads stopped), every write is
//! refused at once, on every node, and the master never commits without an
//! acknowledgement; once one replica is back, the same resend is acked once.
//! The servers are this binary's own: stopping replication would disturb other tests.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use parley_launcher::DatabaseServers;
use protocol::websocket::{actions, AckPayload, ErrorPayload, OutgoingMessage};
use test_app::{connect_live, node_metric, on_servers, own_servers, Pair, TestApp};
use tokio::time::Instant;

const BINARY: &str = "semi_sync";
const WAIT: Duration = Duration::from_secs(10);

/// One of the master's counters (`SHOW GLOBAL STATUS`, which cannot be prepared).
async fn master_status(servers: &DatabaseServers, variable: &str) -> u64 {
    let mut master = parley_launcher::mariadb_admin::connect_url(&servers.root_url("master"))
        .await
        .unwrap();
    let value: Option<String> = master
        .exec_first(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
            (variable.to_uppercase(),),
        )
        .await
        .unwrap();
    parley_launcher::mariadb_admin::close(master).await;
    value.unwrap_or_else(|| panic!("no status {variable}")).parse().unwrap()
}

/// Rows on the master holding `client_id`.
async fn rows_on_master(servers: &DatabaseServers, database: &str, client_id: &str) -> u64 {
    let mut master = parley_launcher::mariadb_admin::connect_url(&servers.root_url("master"))
        .await
        .unwrap();
    let count: Option<u64> = master
        .exec_first(
            format!("SELECT COUNT(*) FROM `{database}`.messages WHERE client_id = ?"),
            (client_id,),
        )
        .await
        .unwrap();
    parley_launcher::mariadb_admin::close(master).await;
    count.unwrap()
}

/// Waits until `name` reads `expected` on every node.
async fn until_gauge_on_every_node(app: &TestApp, name: &str, expected: i64) {
    let deadline = Instant::now() + WAIT;
    for node in app.app.node_names() {
        let url = app.app.node_url(&node);
        loop {
            let value = node_metric(&url, name).await as i64;
            if value == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} on {node} stayed {value}, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What `GET /cluster` on `node` says of the database: writes accepted, and the
/// acknowledging replicas.
async fn database_view(app: &TestApp, node: &str) -> (bool, u64) {
    let view: protocol::cluster::ClusterView = reqwest::get(format!("{}/cluster", app.app.node_url(node)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let database = view.database.expect("the node reports its database");
    assert_eq!(database.endpoints[0].role, "master", "{database:?}");
    let semi_sync = database.semi_sync.expect("the master's semi-sync was read");
    (database.writes_accepted, semi_sync.acknowledging_replicas)
}

fn message(text: &str, client_id: &str) -> Vec<OutgoingMessage> {
    vec![OutgoingMessage {
        text: text.to_owned(),
        status: None,
        client_id: Some(client_id.to_owned()),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acked_while_no_replica_acknowledges_and_the_resend_is_stored_once_afterwards() {
    let servers = own_servers(BINARY).await;
    let pair = Pair::in_app(TestApp::spawn(&servers, 2).await, "semisync").await;
    let app = &pair.app;
    until_gauge_on_every_node(app, "parley_database_semi_sync_replicas", 2).await;
    until_gauge_on_every_node(app, "parley_database_writes_blocked", 0).await;
    assert_eq!(database_view(app, "node-1").await, (true, 2));
    let mut master = parley_launcher::mariadb_admin::connect_url(&servers.root_url("master"))
        .await
        .unwrap();
    let settings: Option<(String, u64, u64)> = master
        .query_first(
            "SELECT @@rpl_semi_sync_master_wait_point, @@rpl_semi_sync_master_timeout, \
             @@rpl_semi_sync_master_wait_no_slave",
        )
        .await
        .unwrap();
    parley_launcher::mariadb_admin::close(master).await;
    let (wait_point, timeout_ms, wait_no_slave) = settings.unwrap();
    assert_eq!(
        wait_point, "AFTER_SYNC",
        "acks only after a replica has the transaction"
    );
    assert!(
        timeout_ms >= 365 * 24 * 3600 * 1000,
        "no fall-back to asynchronous: {timeout_ms} ms"
    );
    assert_eq!(wait_no_slave, 1);
    let unacknowledged_before = master_status(&servers, "Rpl_semi_sync_master_no_tx").await;
    let acknowledged_before = master_status(&servers, "Rpl_semi_sync_master_yes_tx").await;

    let (mut bob, _, _) = connect_live(app.http.base_url(), &pair.bob).await;
    bob.send_messages(&pair.chat_id, message("before", "semi-1"), None)
        .await
        .unwrap();
    bob.until_action(actions::ACK, WAIT).await.unwrap();
    assert!(
        master_status(&servers, "Rpl_semi_sync_master_yes_tx").await > acknowledged_before,
        "the commit was acknowledged by a replica"
    );

    // No replica receives the binlog any more: nothing can be acknowledged.
    on_servers(&servers, &["replica-1", "replica-2"], "STOP SLAVE IO_THREAD").await;
    until_gauge_on_every_node(app, "parley_database_semi_sync_replicas", 0).await;
    until_gauge_on_every_node(app, "parley_database_writes_blocked", 1).await;
    assert_eq!(database_view(app, "node-2").await, (false, 0));

    let started = Instant::now();
    bob.send_messages(&pair.chat_id, message("during", "semi-2"), None)
        .await
        .unwrap();
    let (_, refusal) = bob.until_action(actions::ERROR, WAIT).await.unwrap();
    let refusal: ErrorPayload = refusal.decode_payload().unwrap();
    assert_eq!(
        (refusal.code.as_str(), refusal.client_ids.as_slice()),
        ("database_unavailable", ["semi-2".to_owned()].as_slice()),
        "{refusal:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        started.elapsed()
    );
    let create_chat = app
        .http
        .request(
            reqwest::Method::POST,
            "/messenger/create-chat",
            Some(&pair.alice),
            Some(&format!(r#"{{"companion_id": "{}"}}"#, pair.bob_id)),
        )
        .await
        .unwrap();
    assert_eq!(create_chat.status, 503, "{}", create_chat.body);
    assert_eq!(rows_on_master(&servers, &app.database, "semi-2").await, 0);

    // One replica back is enough; the resend is stored and acked once.
    on_servers(&servers, &["replica-1"], "START SLAVE IO_THREAD").await;
    until_gauge_on_every_node(app, "parley_database_writes_blocked", 0).await;
    bob.send_messages(&pair.chat_id, message("during", "semi-2"), None)
        .await
        .unwrap();
    let (_, ack) = bob.until_action(actions::ACK, WAIT).await.unwrap();
    let ack: AckPayload = ack.decode_payload().unwrap();
    assert_eq!(ack.acks[0].seq, 2, "{ack:?}");
    assert_eq!(rows_on_master(&servers, &app.database, "semi-2").await, 1);
    assert_eq!(
        master_status(&servers, "Rpl_semi_sync_master_no_tx").await,
        unacknowledged_before,
        "the master never returned a commit without a replica's acknowledgement"
    );
    on_servers(&servers, &["replica-2"], "START SLAVE IO_THREAD").await;
}
