//! Read-your-writes on every node: with both replicas' SQL threads stopped (the replicas
//! receive the master's binlog but apply nothing, as under heavy write lag), every read
//! a user makes through node-2 right after a write through node-1 reflects that write.
//! The servers are this binary's own: stopping replication would disturb other tests.

#[path = "support/test_app.rs"]
mod test_app;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use parley_client::http::seed_person;
use protocol::websocket::{actions, AckPayload, OutgoingMessage};
use reqwest::Method;
use test_app::{connect_live, node_metrics_text, on_servers, own_servers, TestApp};

const BINARY: &str = "read_your_writes";
const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "1234567890";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_through_node_2_reflects_a_write_through_node_1_however_far_the_replicas_lag() {
    let servers = own_servers(BINARY).await;
    let app = TestApp::spawn(&servers, 2).await;
    app.wait_cluster_formed().await;
    let (node_1, node_2) = (app.node("node-1"), app.node("node-2"));
    // Bob and Alice exist and are signed in (through node-1) on every replica; then the
    // replicas stop applying. node-2 has taken no write of theirs, so it knows no
    // position of theirs: only the master can tell it what they did through node-1.
    node_1.sign_up_ok(&seed_person("Bob", "ryw")).await.unwrap();
    let alice_id = node_1.sign_up_ok(&seed_person("Alice", "ryw")).await.unwrap();
    let bob = node_1
        .sign_in("bob.ryw@email.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let alice = node_1
        .sign_in("alice.ryw@email.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    servers.wait_replicas_caught_up(WAIT).await.unwrap();

    // Reads with no write between them: a read connection whose server was seen to hold
    // the master's position answers the next read without waiting for it again (one
    // replica round trip per read instead of two). The connections that know it are
    // then the ones the lagging replicas below must not fool.
    let node_2_url = app.app.node_url("node-2");
    let before = position_waits(&node_2_url).await;
    for _ in 0..20 {
        assert_eq!(
            node_2.user_id_by_email(&bob, "alice.ryw@email.com").await.unwrap(),
            alice_id
        );
    }
    let after = position_waits(&node_2_url).await;
    let (known, waited) = (after.known - before.known, after.waited - before.waited);
    assert!(
        known >= 15 && waited <= 5 && known + waited == 20,
        "20 reads on an unchanged position: {known} skipped the wait, {waited} waited"
    );

    on_servers(&servers, &["replica-1", "replica-2"], "STOP SLAVE SQL_THREAD").await;

    // Carol signs up and in through node-1; what she reads of herself through node-2.
    let carol_id = node_1.sign_up_ok(&seed_person("Carol", "ryw")).await.unwrap();
    let carol = node_1
        .sign_in("carol.ryw@email.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        node_2.user_id_by_email(&carol, "carol.ryw@email.com").await.unwrap(),
        carol_id,
        "get-by-email after sign-up"
    );
    let profile = node_2
        .request(Method::GET, "/auth/user/get-by-token", Some(&carol), None)
        .await
        .unwrap();
    assert_eq!(profile.status, 200, "get-by-token: {}", profile.body);
    assert_eq!(profile.body["user_id"], carol_id);

    // A chat created through node-1 is in Bob's list through node-2.
    let chat_id = node_1.create_chat(&bob, &alice_id).await.unwrap();
    let chats = node_2.chats(&bob).await.unwrap().chats;
    assert_eq!(
        chats.iter().map(|chat| chat.chat_id.as_str()).collect::<Vec<_>>(),
        [chat_id.as_str()],
        "chat list after create-chat"
    );

    // A message acked by node-1 is in the list's last_seq and in the history on node-2.
    let (mut socket, _, _) = connect_live(&app.app.node_url("node-1"), &bob).await;
    let message = OutgoingMessage {
        text: "read me back".to_owned(),
        status: None,
        client_id: Some("ryw-1".to_owned()),
    };
    socket.send_messages(&chat_id, vec![message], None).await.unwrap();
    let (_, ack) = socket.until_action(actions::ACK, WAIT).await.unwrap();
    let ack: AckPayload = ack.decode_payload().unwrap();
    let chats = node_2.chats(&bob).await.unwrap().chats;
    assert_eq!(chats[0].last_seq, ack.acks[0].seq, "last_seq after an ack");
    let history = node_2.messages(&bob, &chat_id, 0, 10).await.unwrap();
    assert_eq!(
        history.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["read me back"],
        "history after an ack"
    );
    // Alice too: her unread count on node-2 already has it.
    assert_eq!(node_2.chats(&alice).await.unwrap().chats[0].unread, 1, "alice's unread");

    // The replicas really had applied none of it: a replica's answer would have missed it.
    let applied: Option<String> = {
        let mut replica = parley_launcher::mariadb_admin::connect_url(&servers.root_url("replica-1"))
            .await
            .unwrap();
        let found = replica
            .exec_first(
                format!("SELECT id FROM `{}`.users WHERE id = ?", app.database),
                (&carol_id,),
            )
            .await
            .unwrap();
        parley_launcher::mariadb_admin::close(replica).await;
        found
    };
    assert_eq!(
        applied, None,
        "replica-1 applied carol's sign-up: the test proves nothing"
    );

    on_servers(&servers, &["replica-1", "replica-2"], "START SLAVE SQL_THREAD").await;
    drop(socket);
}

/// A node's read-your-writes position checks so far, over its read endpoints.
#[derive(Debug, Default, Clone, Copy)]
struct PositionWaits {
    /// Answered on a connection whose server was known to hold the position.
    known: u64,
    /// Waited for with `MASTER_GTID_WAIT` (or asked of a writable server) and held.
    waited: u64,
}

async fn position_waits(node_url: &str) -> PositionWaits {
    let text = node_metrics_text(node_url).await;
    let mut waits = PositionWaits::default();
    for line in text.lines() {
        let Some(labels_and_value) = line.strip_prefix("parley_database_queries_total{") else {
            continue;
        };
        let Some((labels, value)) = labels_and_value.split_once("} ") else {
            continue;
        };
        if !labels.contains("kind=\"position_wait\"") {
            continue;
        }
        let count: u64 = value.trim().parse().unwrap();
        if labels.contains("outcome=\"known\"") {
            waits.known += count;
        } else if labels.contains("outcome=\"waited\"") {
            waits.waited += count;
        }
    }
    waits
}
