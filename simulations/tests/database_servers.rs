//! The database half of the launcher on its own: a real master, two GTID replicas and
//! HAProxy, a replica crash and its recovery. Needs mariadb-server and haproxy
//! installed (deploy/install.sh); does not need the `parley` binary.

use std::time::Duration;

use anyhow::{ensure, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
use nix::sys::signal::Signal;
use parley_launcher::{pid_is_alive, process_group_has_live_members, DatabaseServers, DatabaseServersSpec, PortChoice};

const DATABASE: &str = "parley_sim_test";
const REPLICA_1_SERVER_ID: u32 = 2;
const REPLICA_2_SERVER_ID: u32 = 3;
const MASTER_SERVER_ID: u32 = 1;

/// The server HAProxy's write frontend leads to, once `expected` has answered three
/// times in a row (its checks run every 500 ms and need two failures to drop a server).
async fn until_writes_reach(servers: &DatabaseServers, expected: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    let mut last = None;
    while in_a_row < 3 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "writes through haproxy did not move to server {expected} (last: {last:?})"
        );
        last = match connect(&servers.write_via_haproxy_url(DATABASE)).await {
            Ok(mut connection) => {
                let server_id: Option<u32> = connection.query_first("SELECT @@server_id").await.ok().flatten();
                let _ = connection.disconnect().await;
                server_id
            }
            Err(_) => None,
        };
        in_a_row = if last == Some(expected) { in_a_row + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn set_read_only(servers: &DatabaseServers, server: &str, read_only: bool) -> anyhow::Result<()> {
    let mut connection = connect(&servers.root_url(server)).await?;
    connection
        .query_drop(format!("SET GLOBAL read_only = {}", u8::from(read_only)))
        .await?;
    connection.disconnect().await?;
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Conn> {
    let options = Opts::from_url(url)?;
    tokio::time::timeout(Duration::from_secs(3), Conn::new(options))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connecting to {url}"))
}

async fn server_id_and_note(url: &str, id: u32) -> anyhow::Result<(u32, Option<String>)> {
    let mut connection = connect(url).await?;
    let server_id: Option<u32> = connection.query_first("SELECT @@server_id").await?;
    let note: Option<String> = connection
        .exec_first(format!("SELECT note FROM {DATABASE}.probe WHERE id = ?"), (id,))
        .await?;
    connection.disconnect().await?;
    Ok((server_id.context("no server id")?, note))
}

async fn assert_replicating_with_gtid(url: &str, server: &str) -> anyhow::Result<()> {
    let mut connection = connect(url).await?;
    let row: Row = connection
        .query_first("SHOW SLAVE STATUS")
        .await?
        .with_context(|| format!("{server} is not a replica"))?;
    let column = |name: &str| row.get::<Option<String>, _>(name).flatten().unwrap_or_default();
    ensure!(
        column("Slave_IO_Running") == "Yes",
        "{server}: io thread {:?}",
        column("Slave_IO_Running")
    );
    ensure!(
        column("Slave_SQL_Running") == "Yes",
        "{server}: sql thread {:?}",
        column("Slave_SQL_Running")
    );
    ensure!(
        column("Using_Gtid") == "Slave_Pos",
        "{server}: using gtid {:?}",
        column("Using_Gtid")
    );
    let read_only: Option<u32> = connection.query_first("SELECT @@read_only").await?;
    ensure!(read_only == Some(1), "{server} is not read_only");
    connection.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn replicas_follow_the_master_and_haproxy_routes_around_a_dead_replica() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let servers = DatabaseServers::start(DatabaseServersSpec {
        state_dir: state.path().to_path_buf(),
        ports: PortChoice::Free,
        detach: false,
    })
    .await?;
    servers.create_database(DATABASE).await?;

    let mut master = connect(&servers.master_url(DATABASE)).await?;
    master
        .query_drop("CREATE TABLE probe (id INT PRIMARY KEY, note VARCHAR(64) NOT NULL)")
        .await?;
    master
        .query_drop("INSERT INTO probe VALUES (1, 'before the crash')")
        .await?;
    master.disconnect().await?;
    servers.wait_replicas_caught_up(Duration::from_secs(10)).await?;

    for (server, expected_id) in [("replica-1", REPLICA_1_SERVER_ID), ("replica-2", REPLICA_2_SERVER_ID)] {
        let (server_id, note) = server_id_and_note(&servers.root_url(server), 1).await?;
        assert_eq!(server_id, expected_id, "{server} answered with the wrong server id");
        assert_eq!(note.as_deref(), Some("before the crash"), "{server} lacks the row");
        assert_replicating_with_gtid(&servers.root_url(server), server).await?;
    }

    // Reads through HAProxy land on a replica, and read_only binds the app user there.
    let mut read_connection = connect(&servers.read_url(DATABASE)).await?;
    let read_server_id: Option<u32> = read_connection.query_first("SELECT @@server_id").await?;
    assert!(
        matches!(read_server_id, Some(REPLICA_1_SERVER_ID | REPLICA_2_SERVER_ID)),
        "haproxy read went to server {read_server_id:?}"
    );
    let write_on_replica = read_connection
        .query_drop("INSERT INTO probe VALUES (99, 'nope')")
        .await;
    match write_on_replica {
        Err(mysql_async::Error::Server(error)) => {
            assert_eq!(error.code, 1290, "unexpected error {error:?}");
        }
        other => panic!("a write on a read_only replica must fail with 1290, got {other:?}"),
    }
    read_connection.disconnect().await?;

    // Writes through HAProxy go to whichever server takes writes: the master, then a
    // replica made writable (as a promotion does), then the master again.
    until_writes_reach(&servers, MASTER_SERVER_ID).await?;
    set_read_only(&servers, "master", true).await?;
    set_read_only(&servers, "replica-2", false).await?;
    until_writes_reach(&servers, REPLICA_2_SERVER_ID).await?;
    // `parley-sim status` names the server that takes writes now.
    let roles: Vec<(String, Option<String>)> = servers
        .with_roles(servers.status())
        .await
        .into_iter()
        .map(|status| (status.name, status.role))
        .collect();
    let role_of = |name: &str| {
        roles
            .iter()
            .find(|(server, _)| server == name)
            .and_then(|(_, role)| role.clone())
    };
    assert_eq!(
        (role_of("master"), role_of("replica-2"), role_of("haproxy")),
        (Some("replica".to_owned()), Some("master".to_owned()), None),
        "{roles:?}"
    );
    set_read_only(&servers, "replica-2", true).await?;
    set_read_only(&servers, "master", false).await?;
    until_writes_reach(&servers, MASTER_SERVER_ID).await?;

    let pids_before_crash: Vec<u32> = servers.status().iter().map(|status| status.pid).collect();
    servers.kill("replica-1", Signal::SIGKILL)?;
    let replica_1_status = servers
        .status()
        .into_iter()
        .find(|status| status.name == "replica-1")
        .unwrap();
    assert!(!replica_1_status.alive, "replica-1 still alive after SIGKILL");

    // HAProxy needs about a second to mark replica-1 down; until then a read may hit it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut consecutive_good_reads = 0;
    while consecutive_good_reads < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads through haproxy kept failing"
        );
        match server_id_and_note(&servers.read_url(DATABASE), 1).await {
            Ok((server_id, note)) => {
                // The master is only a backup: with replica-2 up it must not serve reads.
                assert_eq!(server_id, REPLICA_2_SERVER_ID, "read answered by server {server_id}");
                assert_eq!(note.as_deref(), Some("before the crash"));
                consecutive_good_reads += 1;
            }
            Err(_) => {
                consecutive_good_reads = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let mut master = connect(&servers.master_url(DATABASE)).await?;
    master
        .query_drop("INSERT INTO probe VALUES (2, 'while replica-1 was down')")
        .await?;
    master.disconnect().await?;

    servers.start_component("replica-1").await?;
    let (_, note) = server_id_and_note(&servers.root_url("replica-1"), 2).await?;
    assert_eq!(
        note.as_deref(),
        Some("while replica-1 was down"),
        "replica-1 did not catch up"
    );
    assert_replicating_with_gtid(&servers.root_url("replica-1"), "replica-1").await?;
    assert!(
        servers.status().iter().all(|status| status.alive),
        "{:?}",
        servers.status()
    );

    let pids: Vec<u32> = servers
        .status()
        .iter()
        .map(|status| status.pid)
        .chain(pids_before_crash)
        .collect();
    drop(servers);
    for pid in pids {
        assert!(!pid_is_alive(pid), "pid {pid} survived the drop");
        assert!(
            !process_group_has_live_members(pid),
            "process group {pid} survived the drop"
        );
    }
    Ok(())
}
