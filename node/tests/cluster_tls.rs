//! Cluster TLS with real nodes: nodes holding certificates of the cluster's CA form the
//! mesh and carry messages; a node whose certificate another CA issued never joins.

#[path = "support/test_app.rs"]
mod test_app;

use std::path::Path;
use std::time::Duration;

use actors::cluster::tls::{ClusterTls, ClusterTlsFiles, DEFAULT_CLUSTER_SERVER_NAME};
use parley_client::http::ParleyHttp;
use parley_launcher::cluster_certificates::{
    ca_certificate_path, cluster_tls_node_args, node_certificate_path, node_key_path, write_cluster_certificates,
    ClusterCertificateAuthority,
};
use protocol::websocket::{actions, DeliveryPayload, OutgoingMessage};
use test_app::{connect_live, shared_servers, Pair, TestApp};
use tokio::time::Instant;

const BINARY: &str = "cluster_tls";
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for a lone node to start dialling every seed (3 s) and retry (every 1 s).
const NEVER_JOINS_WITHIN: Duration = Duration::from_secs(6);

/// The node flags for certificates written to `directory` for `node_names`.
fn tls_args(directory: &Path, node_names: &[&str]) -> Vec<String> {
    let names: Vec<String> = node_names.iter().map(|name| (*name).to_owned()).collect();
    write_cluster_certificates(directory, &names).unwrap();
    cluster_tls_node_args(directory)
}

/// The names (without incarnation) of the members `node` reports alive.
async fn alive_members(node: &ParleyHttp) -> Vec<String> {
    let view = node
        .request(reqwest::Method::GET, "/cluster", None, None)
        .await
        .unwrap();
    let mut alive: Vec<String> = view.body["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|member| member["alive"] == true)
        .filter_map(|member| member["name"].as_str())
        .map(|name| name.split('#').next().unwrap_or(name).to_owned())
        .collect();
    alive.sort();
    alive
}

#[tokio::test]
async fn nodes_with_the_clusters_certificates_form_the_mesh_and_deliver_across_it() {
    let certificates = tempfile::tempdir().unwrap();
    let args = tls_args(certificates.path(), &["node-1", "node-2"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 2, &args).await;
    app.wait_cluster_formed().await;
    // The mesh is TLS, not plain TCP: node-1's cluster port completes a handshake with
    // node-2's certificate (a plain listener would never answer the ClientHello).
    let node_2_tls = ClusterTls::load(&ClusterTlsFiles {
        certificate: node_certificate_path(certificates.path(), "node-2"),
        private_key: node_key_path(certificates.path(), "node-2"),
        certificate_authority: ca_certificate_path(certificates.path()),
        server_name: DEFAULT_CLUSTER_SERVER_NAME.to_owned(),
    })
    .unwrap();
    let node_1_cluster_port = app.app.record().cluster_ports[0];
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", node_1_cluster_port))
        .await
        .unwrap();
    let handshake = node_2_tls.connector.connect(node_2_tls.server_name.clone(), socket);
    tokio::time::timeout(WAIT, handshake)
        .await
        .expect("node-1's cluster port never finished a TLS handshake")
        .expect("node-1's cluster port refused node-2's certificate");
    let pair = Pair::in_app(app, "tls").await;

    let mut alice = connect_live(&pair.app.app.node_url("node-1"), &pair.alice).await.0;
    let mut bob = connect_live(&pair.app.app.node_url("node-2"), &pair.bob).await.0;
    let message = OutgoingMessage {
        text: "Hello over TLS".to_owned(),
        status: Some("created".into()),
        client_id: Some("bob-tls-1".to_owned()),
    };
    bob.send_messages(&pair.chat_id, vec![message], None).await.unwrap();
    bob.until_action(actions::ACK, WAIT).await.unwrap();
    let (_, delivery) = alice.until_action(actions::SEND_MESSAGE, WAIT).await.unwrap();
    let delivery: DeliveryPayload = delivery.decode_payload().unwrap();
    let received: Vec<_> = delivery
        .messages
        .iter()
        .map(|message| (message.text.as_str(), message.user_id.as_str()))
        .collect();
    assert_eq!(received, [("Hello over TLS", pair.bob_id.as_str())]);
}

#[tokio::test]
async fn a_node_whose_certificate_another_ca_issued_never_joins() {
    let certificates = tempfile::tempdir().unwrap();
    let args = tls_args(certificates.path(), &["node-1", "node-2"]);
    // node-3 trusts the cluster's CA but presents a certificate of its own CA: refused
    // as a client by the members' listeners, and as a server by the members that dial it.
    ClusterCertificateAuthority::generate("rogue CA")
        .unwrap()
        .write_node_certificate(certificates.path(), "node-3")
        .unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 3, &args).await;
    let (node_1, node_2, node_3) = (app.node("node-1"), app.node("node-2"), app.node("node-3"));

    let deadline = Instant::now() + WAIT;
    for (name, node) in [("node-1", &node_1), ("node-2", &node_2)] {
        loop {
            let alive = alive_members(node).await;
            if alive == ["node-1", "node-2"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never saw node-1 and node-2: {alive:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let watched_until = Instant::now() + NEVER_JOINS_WITHIN;
    while Instant::now() < watched_until {
        for (name, node) in [("node-1", &node_1), ("node-2", &node_2)] {
            let alive = alive_members(node).await;
            assert_eq!(alive, ["node-1", "node-2"], "{name} admitted the rogue node");
        }
        let seen_by_rogue = alive_members(&node_3).await;
        assert_eq!(seen_by_rogue, ["node-3"], "the rogue node reached the cluster");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Kept out by the handshake, not by never being dialled: some listener refused it.
    let refused_handshakes = ["node-1", "node-2", "node-3"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(app.app.state_dir().join(name).join("log")).ok())
        .map(|log| log.matches("Error establishing secure socket").count())
        .sum::<usize>();
    assert!(refused_handshakes > 0, "no TLS handshake was refused in any node's log");
}
