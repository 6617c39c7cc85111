//! The promotion rules, one situation each.

use super::*;
use crate::database::server_topology::{GtidPosition, ReplicaStatus};

const DELAY: Duration = Duration::from_secs(2);

fn server(name: &str, port: u16, reading: Option<ServerReading>) -> ServerView {
    ServerView {
        name: name.to_owned(),
        host: "127.0.0.1".to_owned(),
        port,
        reading,
    }
}

fn master_reading(position: &str, acknowledging_replicas: u64) -> Option<ServerReading> {
    Some(ServerReading {
        read_only: false,
        applied: GtidPosition::parse(position),
        acknowledging_replicas,
        replication: None,
    })
}

fn replica_reading(of_port: u16, connected: bool, applied: &str, received: &str) -> Option<ServerReading> {
    Some(ServerReading {
        read_only: true,
        applied: GtidPosition::parse(applied),
        acknowledging_replicas: 0,
        replication: Some(ReplicaStatus {
            master_host: "127.0.0.1".to_owned(),
            master_port: of_port,
            io_connected: connected,
            sql_running: true,
            received: GtidPosition::parse(received),
            last_io_errno: 0,
        }),
    })
}

fn healthy() -> Vec<ServerView> {
    vec![
        server("master", 1, master_reading("0-1-10", 2)),
        server("replica-1", 2, replica_reading(1, true, "0-1-10", "0-1-10")),
        server("replica-2", 3, replica_reading(1, true, "0-1-10", "0-1-10")),
    ]
}

fn master_dead(replica_1_received: &str, replica_2_received: &str) -> Vec<ServerView> {
    vec![
        server("master", 1, None),
        server("replica-1", 2, replica_reading(1, false, "0-1-9", replica_1_received)),
        server("replica-2", 3, replica_reading(1, false, "0-1-9", replica_2_received)),
    ]
}

#[test]
fn a_healthy_tier_needs_nothing() {
    let assessment = assess(&healthy(), Duration::ZERO, DELAY);
    assert_eq!(assessment.master.as_deref(), Some("master"));
    assert_eq!(assessment.action, None);
}

#[test]
fn a_dead_master_is_replaced_by_the_replica_that_received_most_but_only_after_the_delay() {
    let servers = master_dead("0-1-10", "0-1-12");
    assert_eq!(assess(&servers, DELAY / 2, DELAY).action, None, "not before the delay");
    assert_eq!(
        assess(&servers, DELAY, DELAY).action,
        Some(TopologyAction::Promote {
            candidate: "replica-2".to_owned()
        })
    );
    let servers = master_dead("0-1-12", "0-1-12");
    assert_eq!(
        assess(&servers, DELAY, DELAY).action,
        Some(TopologyAction::Promote {
            candidate: "replica-1".to_owned()
        }),
        "among equals the first configured, so every node picks the same"
    );
}

#[test]
fn a_node_cut_off_from_a_live_master_does_not_promote() {
    // The node cannot read the master, but the replicas are still connected to it.
    let mut servers = healthy();
    servers[0].reading = None;
    let assessment = assess(&servers, DELAY * 10, DELAY);
    assert_eq!(assessment.master, None);
    assert_eq!(assessment.action, None);
}

#[test]
fn a_master_that_restarted_read_only_is_no_master_and_the_furthest_server_is_promoted() {
    let restarted = Some(ServerReading {
        read_only: true,
        applied: GtidPosition::parse("0-3-20"),
        acknowledging_replicas: 1,
        replication: None,
    });
    let servers = vec![
        server("master", 1, None),
        server("replica-1", 2, replica_reading(3, true, "0-3-20", "0-3-21")),
        server("replica-2", 3, restarted),
    ];
    assert_eq!(
        assess(&servers, DELAY, DELAY).action,
        Some(TopologyAction::Promote {
            candidate: "replica-1".to_owned()
        }),
        "replica-1 received a commit the restarted server dropped"
    );
}

#[test]
fn a_node_that_reads_only_a_minority_of_servers_does_not_promote() {
    let mut servers = master_dead("0-1-10", "0-1-10");
    servers[2].reading = None;
    assert_eq!(assess(&servers, DELAY * 10, DELAY).action, None);
}

#[test]
fn after_a_promotion_the_old_master_restarted_read_only_is_pointed_at_the_new_one() {
    let servers = vec![
        server(
            "master",
            1,
            Some(ServerReading {
                read_only: true,
                applied: GtidPosition::parse("0-1-10"),
                acknowledging_replicas: 0,
                replication: None,
            }),
        ),
        server("replica-1", 2, replica_reading(3, true, "0-3-11", "0-3-11")),
        server("replica-2", 3, master_reading("0-3-11", 1)),
    ];
    let assessment = assess(&servers, Duration::ZERO, DELAY);
    assert_eq!(assessment.master.as_deref(), Some("replica-2"));
    assert_eq!(
        assessment.action,
        Some(TopologyAction::Repoint {
            servers: vec!["master".to_owned()],
            master: "replica-2".to_owned()
        })
    );
}

#[test]
fn a_replica_left_following_the_dead_master_is_repointed() {
    let servers = vec![
        server("master", 1, None),
        server("replica-1", 2, replica_reading(1, false, "0-1-10", "0-1-10")),
        server("replica-2", 3, master_reading("0-3-11", 0)),
    ];
    assert_eq!(
        assess(&servers, Duration::ZERO, DELAY).action,
        Some(TopologyAction::Repoint {
            servers: vec!["replica-1".to_owned()],
            master: "replica-2".to_owned()
        })
    );
}

#[test]
fn after_a_partition_heals_the_old_master_nobody_acknowledges_is_demoted() {
    let servers = vec![
        server("master", 1, master_reading("0-1-10", 0)),
        server("replica-1", 2, replica_reading(3, true, "0-3-14", "0-3-14")),
        server("replica-2", 3, master_reading("0-3-14", 1)),
    ];
    let assessment = assess(&servers, Duration::ZERO, DELAY);
    assert_eq!(assessment.master.as_deref(), Some("replica-2"));
    assert_eq!(
        assessment.action,
        Some(TopologyAction::Demote {
            server: "master".to_owned(),
            master: "replica-2".to_owned()
        })
    );
}

#[test]
fn two_writable_servers_nobody_follows_are_no_master_at_all() {
    let servers = vec![
        server("master", 1, master_reading("0-1-10", 0)),
        server("replica-1", 2, replica_reading(1, false, "0-1-10", "0-1-10")),
        server("replica-2", 3, master_reading("0-3-11", 0)),
    ];
    let assessment = assess(&servers, DELAY * 10, DELAY);
    assert_eq!(assessment.master, None);
    assert_eq!(assessment.action, None, "no promotion while some server is writable");
}

#[test]
fn a_replica_connected_through_a_proxy_is_left_alone() {
    let mut servers = healthy();
    if let Some(reading) = servers[1].reading.as_mut() {
        if let Some(replication) = reading.replication.as_mut() {
            replication.master_host = "haproxy".to_owned();
        }
    }
    assert_eq!(assess(&servers, Duration::ZERO, DELAY).action, None);
}

#[test]
fn majority_means_more_than_half() {
    assert!(is_majority(2, 3));
    assert!(!is_majority(1, 3));
    assert!(!is_majority(2, 4));
    assert!(is_majority(3, 5));
}
