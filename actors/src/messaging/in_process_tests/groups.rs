//! Groups in-process: deliveries follow the members each commit reads (not a cache), and
//! receipts reach senders as coalesced summaries instead of a frame per member.

use super::two_nodes::two_nodes;
use super::*;
use protocol::websocket::{CursorPayload, StatusPayload};

const GROUP: &str = "0b6c1e5e-3f0a-4d7e-8a51-6d2f9b7c4e10";

fn move_cursor(socket: &TestSocket, action: &str, seq: u64) {
    let cursor = CursorPayload {
        chat_id: GROUP.to_owned(),
        seq,
    };
    socket.send_text(Envelope::messenger(action, &cursor, None).to_text());
}

/// Frames until the next delivery, and its texts.
async fn next_delivery(socket: &mut TestSocket) -> Vec<String> {
    let payload: DeliveryPayload = socket.payload_of(actions::SEND_MESSAGE).await;
    payload.messages.into_iter().map(|message| message.text).collect()
}

#[tokio::test]
async fn a_member_removed_elsewhere_gets_nothing_committed_after_on_either_node() {
    let nodes = two_nodes().await;
    nodes.storage.create_group(GROUP, &["ann", "bob", "cid"]);
    let (mut ann, _) = TestSocket::live(&nodes.north, "ann").await;
    let (mut bob, _) = TestSocket::live(&nodes.south, "bob").await;
    let (mut cid, _) = TestSocket::live(&nodes.south, "cid").await;

    ann.send_to(GROUP, &["before"], None);
    assert_eq!(next_delivery(&mut bob).await, ["before"]);
    assert_eq!(next_delivery(&mut cid).await, ["before"]);
    ann.until(actions::ACK).await;

    // The removal is committed outside the chat actor (as the HTTP path does, possibly
    // on another node): the actor's cached roster still lists Cid.
    nodes.storage.remove_member(GROUP, "cid");
    ann.send_to(GROUP, &["after"], None);
    ann.until(actions::ACK).await;
    assert_eq!(next_delivery(&mut bob).await, ["after"]);
    // Cid's socket stays quiet: a frame for him would arrive long before Bob's next.
    bob.send_to(GROUP, &["from bob"], None);
    assert_eq!(next_delivery(&mut ann).await, ["from bob"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), cid.frames.recv())
            .await
            .is_err(),
        "a removed member got a frame"
    );
    // And Cid can no longer write.
    cid.send_to(GROUP, &["let me in"], None);
    let refused: ErrorPayload = cid.payload_of(actions::ERROR).await;
    assert_eq!(refused.code, "chat_not_found", "{refused:?}");
}

#[tokio::test]
async fn group_receipts_reach_only_the_sender_as_one_summary() {
    let nodes = two_nodes().await;
    nodes.storage.create_group(GROUP, &["ann", "bob", "cid", "dan"]);
    let (mut ann, _) = TestSocket::live(&nodes.north, "ann").await;
    let (mut bob, _) = TestSocket::live(&nodes.south, "bob").await;
    let (mut cid, _) = TestSocket::live(&nodes.north, "cid").await;
    let (mut dan, _) = TestSocket::live(&nodes.south, "dan").await;
    ann.send_to(GROUP, &["one", "two"], None);
    ann.until(actions::ACK).await;
    for member in [&mut bob, &mut cid, &mut dan] {
        assert_eq!(next_delivery(member).await, ["one", "two"]);
    }

    // Three cursor moves on two nodes: Ann hears a summary (never a frame per member), and
    // the members hear nothing of each other.
    move_cursor(&bob, actions::READ, 2);
    move_cursor(&cid, actions::RECEIVED, 2);
    move_cursor(&dan, actions::RECEIVED, 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last: Option<StatusPayload> = None;
    let mut summaries = 0;
    while last.as_ref().and_then(|summary| summary.received_by) != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "no full summary: {last:?}");
        last = Some(ann.payload_of(actions::STATUS).await);
        summaries += 1;
    }
    let summary = last.expect("a summary");
    assert_eq!(
        (
            summary.user_id.as_str(),
            summary.seq,
            summary.received_by,
            summary.read_by,
            summary.members,
            summary.status.as_str()
        ),
        ("ann", 2, Some(2), Some(1), Some(3), "created")
    );
    // Two nodes each summarise the moves they handled: at most one summary per node per
    // interval here, not one per move.
    assert!(summaries <= 2, "{summaries} summaries for three moves");
    for member in [&mut bob, &mut cid, &mut dan] {
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(400), member.frames.recv()).await {
            assert_ne!(frame.action, actions::STATUS, "a member got a status frame: {frame:?}");
        }
    }
}
