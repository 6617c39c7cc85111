//! Behaviour that takes seconds or minutes on a real node, on a paused tokio clock: the
//! runtime jumps to the next timer whenever every task is idle, so these run in
//! milliseconds and measure time exactly.

use super::two_nodes::{two_nodes, HEARTBEAT};
use super::*;

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_declared_dead_after_the_failure_timeout_and_its_users_go_offline() {
    let nodes = two_nodes().await;
    let (mut bob, _) = TestSocket::live(&nodes.north, "bob").await;
    let (_alice, _) = TestSocket::live(&nodes.south, "alice").await;
    let online: PresencePayload = bob.payload_of(actions::PRESENCE).await;
    assert!(online.online);

    // A frozen or partitioned node closes nothing: only its silence gives it away.
    let silent_since = tokio::time::Instant::now();
    nodes.network.cut_off(nodes.south.peers.node_name());
    let offline: PresencePayload = bob.payload_within(actions::PRESENCE, Duration::from_secs(60)).await;
    let declared_after = silent_since.elapsed();
    assert_eq!((offline.user_id.as_str(), offline.online), ("alice", false));
    // The last heartbeat may have arrived up to one interval before the cut, and the
    // expiry is checked once per interval.
    assert!(
        declared_after >= PEER_FAILURE_TIMEOUT - HEARTBEAT && declared_after <= PEER_FAILURE_TIMEOUT + 2 * HEARTBEAT,
        "declared dead after {declared_after:?}, the failure timeout is {PEER_FAILURE_TIMEOUT:?}"
    );
    assert!(nodes.north.peers.live_peer_names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_idle_chat_actor_stops_after_a_minute_and_the_next_send_continues_the_sequence() {
    let (storage, services) = bob_and_alice();
    let (mut bob, _) = TestSocket::live(&services, "bob").await;
    let (mut alice, _) = TestSocket::live(&services, "alice").await;
    bob.send(&["before the pause"], None);
    bob.until(actions::ACK).await;
    assert_eq!(services.chats.running().await, vec![CHAT.to_owned()]);

    // Still running just before the idle limit...
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(services.chats.running().await, vec![CHAT.to_owned()]);
    // ...and gone once it has passed (checked every 30 s).
    let idle_since = tokio::time::Instant::now();
    while !services.chats.running().await.is_empty() {
        assert!(
            idle_since.elapsed() < Duration::from_secs(60),
            "the idle chat kept running"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    bob.send(&["after the pause"], None);
    bob.until(actions::ACK).await;
    let delivered: Vec<(u64, String)> = deliveries(&alice.until(actions::SEND_MESSAGE).await)
        .into_iter()
        .chain(deliveries(&alice.until(actions::SEND_MESSAGE).await))
        .collect();
    assert_eq!(
        delivered,
        vec![(1, "before the pause".to_owned()), (2, "after the pause".to_owned())]
    );
    assert_eq!(storage.messages(CHAT).len(), 2);
}
