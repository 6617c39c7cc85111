//! A message a node committed and acked but never delivered (it died first) reaches the
//! recipient's live socket on the other node from storage, once, whether the socket knew
//! where the chat stood or met the chat only after the hole.

use super::two_nodes::two_nodes;
use super::*;

/// Deliveries on `socket` until it has `count` messages (other frames skipped).
async fn delivered(socket: &mut TestSocket, count: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        seen.extend(deliveries(&[socket.next().await]));
    }
    seen
}

#[tokio::test]
async fn a_message_acked_by_a_node_cut_off_before_delivering_it_reaches_the_live_socket_on_the_other_node() {
    let nodes = two_nodes().await;
    let (mut alice, _) = TestSocket::live(&nodes.north, "alice").await;
    let (mut bob_south, _) = TestSocket::live(&nodes.south, "bob").await;
    bob_south.send(&["m1"], Some("c1"));
    bob_south.payload_of::<AckPayload>(actions::ACK).await;
    assert_eq!(delivered(&mut alice, 1).await, [(1, "m1".to_owned())]);

    // South commits and acks m2, and nothing it sends reaches north any more.
    nodes.network.cut_off(nodes.south.peers.node_name());
    bob_south.send(&["m2"], Some("c2"));
    let ack: AckPayload = bob_south.payload_of(actions::ACK).await;
    assert_eq!(ack.acks[0].seq, 2);

    // Bob goes on through north; Alice gets m3 live and m2 from storage.
    let (bob_north, _) = TestSocket::live(&nodes.north, "bob").await;
    bob_north.send(&["m3"], Some("c3"));
    assert_eq!(
        delivered(&mut alice, 2).await,
        [(3, "m3".to_owned()), (2, "m2".to_owned())]
    );
    assert_eq!(nodes.north.metrics.delivery_gaps_repaired.get(), 1);
    // Nothing twice: the next delivery is m4 alone.
    bob_north.send(&["m4"], Some("c4"));
    assert_eq!(delivered(&mut alice, 1).await, [(4, "m4".to_owned())]);
}

#[tokio::test]
async fn a_socket_that_meets_a_chat_after_a_hole_reads_it_from_the_users_cursor() {
    let nodes = two_nodes().await;
    // Alice has nothing pending: her socket does not know where the chat stands.
    let (mut alice, _) = TestSocket::live(&nodes.north, "alice").await;
    nodes.network.cut_off(nodes.south.peers.node_name());
    let (mut bob_south, _) = TestSocket::live(&nodes.south, "bob").await;
    bob_south.send(&["lost on the way"], Some("c1"));
    let ack: AckPayload = bob_south.payload_of(actions::ACK).await;
    assert_eq!(ack.acks[0].seq, 1);

    let (bob_north, _) = TestSocket::live(&nodes.north, "bob").await;
    bob_north.send(&["m2"], Some("c2"));
    assert_eq!(
        delivered(&mut alice, 2).await,
        [(2, "m2".to_owned()), (1, "lost on the way".to_owned())]
    );
}
