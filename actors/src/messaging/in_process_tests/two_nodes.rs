//! Two nodes in one process: each with its own session registry, chat actors and
//! `NodeRouter`, joined by an in-process network that carries the same peer messages
//! (through their wire encoding) that ractor_cluster carries between real nodes.

use super::*;
use crate::cluster::node_router::{NodeRouter, NodeRouterArguments};
use protocol::websocket::StatusPayload;

/// Heartbeats between the in-process nodes.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(200);

/// Two nodes on one storage and one network, each seeing the other alive.
pub(super) struct TwoNodes {
    pub storage: Arc<InMemoryStorage>,
    pub network: Arc<InProcessNetwork>,
    pub north: Arc<MessagingServices>,
    pub south: Arc<MessagingServices>,
}

pub(super) async fn two_nodes() -> TwoNodes {
    let storage = Arc::new(InMemoryStorage::default());
    storage.create_chat(CHAT, &["bob", "alice"]);
    let network = InProcessNetwork::new();
    let north = node_on(Arc::clone(&storage), &network);
    let south = node_on(Arc::clone(&storage), &network);
    for services in [&north, &south] {
        let arguments = NodeRouterArguments {
            services: Arc::clone(services),
            heartbeat_interval: HEARTBEAT,
        };
        Actor::spawn(None, NodeRouter, arguments).await.expect("router starts");
    }
    for (node, peer) in [(&north, &south), (&south, &north)] {
        let peer_name = peer.peers.node_name().to_owned();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !node.peers.live_peer_names().contains(&peer_name) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the nodes did not see each other"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    TwoNodes {
        storage,
        network,
        north,
        south,
    }
}

#[tokio::test]
async fn messages_receipts_and_presence_cross_to_the_other_node() {
    let nodes = two_nodes().await;
    let (mut bob, _) = TestSocket::live(&nodes.north, "bob").await;
    let (mut alice, _) = TestSocket::live(&nodes.south, "alice").await;
    let online = bob.payload_of::<PresencePayload>(actions::PRESENCE).await;
    assert_eq!((online.user_id.as_str(), online.online), ("alice", true));

    for batch in 0..10 {
        let texts: Vec<String> = (0..5).map(|index| format!("m{}", batch * 5 + index)).collect();
        bob.send(&texts.iter().map(String::as_str).collect::<Vec<_>>(), None);
    }
    let mut seen = Vec::new();
    while seen.len() < 50 {
        seen.extend(deliveries(&[alice.next().await]));
    }
    let expected: Vec<(u64, String)> = (0..50).map(|index| (index + 1, format!("m{index}"))).collect();
    assert_eq!(seen, expected, "every message once, in seq order, on the other node");

    // Alice's receipt is committed on her node and reaches the sender on his.
    alice
        .session
        .cast(SessionMessage::ClientText(
            Envelope::messenger(
                actions::RECEIVED,
                &protocol::websocket::CursorPayload {
                    chat_id: CHAT.to_owned(),
                    seq: 50,
                },
                None,
            )
            .to_text(),
            FrameInFlight::unbounded(),
        ))
        .unwrap();
    let status: StatusPayload = bob.payload_of(actions::STATUS).await;
    assert_eq!(
        (status.user_id.as_str(), status.status.as_str(), status.seq),
        ("alice", "received", 50)
    );

    alice.session.stop(None);
    let offline = bob.payload_of::<PresencePayload>(actions::PRESENCE).await;
    assert_eq!((offline.user_id.as_str(), offline.online), ("alice", false));
}

#[tokio::test]
async fn a_user_connecting_on_one_node_during_a_stream_from_the_other_gets_every_message_once_in_order() {
    let nodes = two_nodes().await;
    let (bob, _) = TestSocket::live(&nodes.south, "bob").await;
    for index in 0..100 {
        bob.send(&[&format!("m{index}")], None);
    }
    // Alice registers on north while south commits: north must be announced to south
    // before her replay is read, or the commits in between would reach neither.
    let mut alice = TestSocket::open(&nodes.north, "alice", SocketGrant::unlimited()).await;
    for index in 100..200 {
        bob.send(&[&format!("m{index}")], None);
    }
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.extend(deliveries(&[alice.next().await]));
    }
    let expected: Vec<(u64, String)> = (0..200).map(|index| (index + 1, format!("m{index}"))).collect();
    assert_eq!(
        seen, expected,
        "every message once, in seq order, across the replay's seam"
    );
    assert_eq!(nodes.storage.messages(CHAT).len(), 200);
}

#[tokio::test]
async fn a_send_through_both_nodes_at_once_is_stored_once_per_client_id() {
    let nodes = two_nodes().await;
    let (mut bob_north, _) = TestSocket::live(&nodes.north, "bob").await;
    let (mut bob_south, _) = TestSocket::live(&nodes.south, "bob").await;
    // The same client ids through both nodes: each chat actor commits, the database's
    // idempotency decides, and both sockets get the same ack.
    for index in 0..20 {
        let client_id = format!("client-{index}");
        bob_north.send(&[&format!("m{index}")], Some(&client_id));
        bob_south.send(&[&format!("m{index}")], Some(&client_id));
    }
    let acks = |frames: Vec<Envelope>| -> Vec<(String, u64)> {
        frames
            .iter()
            .filter(|frame| frame.action == actions::ACK)
            .flat_map(|frame| frame.decode_payload::<AckPayload>().unwrap().acks)
            .map(|ack| (ack.client_id.unwrap_or_default(), ack.seq))
            .collect()
    };
    let mut north_acks = Vec::new();
    let mut south_acks = Vec::new();
    while north_acks.len() < 20 {
        north_acks.extend(acks(vec![bob_north.next().await]));
    }
    while south_acks.len() < 20 {
        south_acks.extend(acks(vec![bob_south.next().await]));
    }
    north_acks.sort();
    south_acks.sort();
    assert_eq!(
        north_acks, south_acks,
        "one message per client id, acked alike on both nodes"
    );
    assert_eq!(nodes.storage.messages(CHAT).len(), 20);
}
