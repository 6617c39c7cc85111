//! Backup and restore against the real local cluster: a backup of a replica is taken
//! while a client sends messages, the cluster is restored from it into a fresh state dir
//! on other ports, and every message acknowledged before the backup started is in the
//! restored cluster's history; the restored cluster takes new messages, replicates them
//! and runs semi-synchronous replication.
//!
//! Needs the `parley` binary next to this test's target dir (`cargo build -p parley-node`
//! into the same CARGO_TARGET_DIR) or PARLEY_BIN, and Debian's `mariadb-backup`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context};
use mysql_async::prelude::Queryable;
use parley_client::chat_client::{ChatClient, ChatClientConfig, ChatClientEvent, SentMessageAck};
use parley_client::http::{seed_person, ParleyHttp};
use parley_client::MessengerSocket;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::mariadb_admin;
use parley_launcher::{ClusterSpec, LocalCluster};
use protocol::messenger::MessageView;
use protocol::websocket::{actions, AckPayload, OutgoingMessage};
use tokio::time::Instant;

/// Cheap password hashing and no send rate limit: sign-ups and the pace of sends are
/// set-up here, not the subject.
const NODE_ARGS: [&str; 4] = ["--scrypt-log-n", "10", "--send-messages-per-second", "0"];
const WAIT: Duration = Duration::from_secs(20);
/// Messages acked before the backup starts; more keep coming while it runs.
const ACKED_BEFORE_BACKUP: usize = 40;
const SEND_INTERVAL: Duration = Duration::from_millis(25);
const HISTORY_PAGE: u64 = 100;

/// One node: the subject is the database tier, and two clusters run one after the other.
async fn start_cluster(
    state_dir: std::path::PathBuf,
    restore_from: Option<std::path::PathBuf>,
) -> anyhow::Result<LocalCluster> {
    let mut spec = ClusterSpec::with_free_ports(state_dir, 1);
    spec.node_extra_args = NODE_ARGS.iter().map(|arg| arg.to_string()).collect();
    spec.restore_from = restore_from;
    LocalCluster::start(spec).await
}

/// The whole history of a chat, page by page, in seq order.
async fn whole_history(http: &ParleyHttp, token: &str, chat_id: &str) -> anyhow::Result<Vec<MessageView>> {
    let mut messages = Vec::new();
    loop {
        let page = http
            .messages(token, chat_id, messages.len() as u64, HISTORY_PAGE)
            .await?;
        let page_length = page.messages.len();
        messages.extend(page.messages);
        if (page_length as u64) < HISTORY_PAGE {
            return Ok(messages);
        }
    }
}

/// The sequence number of domain 0's GTID in a position (`0-1-42` → 42).
fn sequence_number(position: &str) -> u64 {
    position
        .split(',')
        .find(|gtid| gtid.starts_with("0-"))
        .and_then(|gtid| gtid.rsplit('-').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_message_acked_before_it() -> anyhow::Result<()> {
    resolve_parley_binary(None).context("build the node first: cargo build -p parley-node, or set PARLEY_BIN")?;
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let root = tempfile::tempdir()?;
    let original = start_cluster(root.path().join("original"), None).await?;
    let http = ParleyHttp::new(original.app.public_url());
    http.sign_up_ok(&seed_person("Bob", "backup")).await?;
    let alice_id = http.sign_up_ok(&seed_person("Alice", "backup")).await?;
    let bob_token = http.sign_in("bob.backup@email.com", "1234567890").await?.access_token;
    let chat_id = http.create_chat(&bob_token, &alice_id).await?;

    // Bob sends a message every SEND_INTERVAL; his acks are collected as they come.
    let (bob, mut bob_events) = ChatClient::start(ChatClientConfig::new(original.app.public_url(), &bob_token));
    bob.wait_until_live(WAIT).await?;
    let acks: Arc<Mutex<Vec<SentMessageAck>>> = Arc::default();
    let collector = {
        let acks = Arc::clone(&acks);
        tokio::spawn(async move {
            while let Some(event) = bob_events.recv().await {
                if let ChatClientEvent::Acked(ack) = event {
                    acks.lock().unwrap().push(ack);
                }
            }
        })
    };
    let acked = || acks.lock().unwrap().clone();
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut send_next = |bob: &ChatClient| -> anyhow::Result<()> {
        let text = format!("message {}", texts.len() + 1);
        let client_id = bob.send(&chat_id, text.as_str())?;
        texts.insert(client_id, text);
        Ok(())
    };
    let mut pace = tokio::time::interval(SEND_INTERVAL);
    let deadline = Instant::now() + WAIT;
    while acked().len() < ACKED_BEFORE_BACKUP {
        ensure!(
            Instant::now() < deadline,
            "only {} acks before the backup",
            acked().len()
        );
        pace.tick().await;
        send_next(&bob)?;
    }

    // Every message acked by now must survive; the sends go on while the backup runs.
    let acked_before_backup = acked();
    let backup_dir = root.path().join("backup");
    let manifest = {
        let backup = original.take_backup("replica-1", &backup_dir);
        tokio::pin!(backup);
        loop {
            tokio::select! {
                taken = &mut backup => break taken?,
                _ = pace.tick() => send_next(&bob)?,
            }
        }
    };
    let acked_by_backup_end = acked().len();
    ensure!(
        acked_by_backup_end > acked_before_backup.len(),
        "no message was acked while the backup ran: writes stalled"
    );
    ensure!(
        manifest.master_position_at_start.is_some() && mariadb_admin::is_gtid_list(&manifest.gtid_position),
        "{manifest:?}"
    );
    bob.wait_all_acked(WAIT).await?;
    bob.shutdown().await?;
    collector.await?;
    let all_acks = acked();
    original.shutdown().await?;

    // A fresh cluster from the backup, in another state dir on other (free) ports.
    let restored = start_cluster(root.path().join("restored"), Some(backup_dir.clone())).await?;
    let restored_http = ParleyHttp::new(restored.app.public_url());
    let bob_token = restored_http
        .sign_in("bob.backup@email.com", "1234567890")
        .await?
        .access_token;
    let history = whole_history(&restored_http, &bob_token, &chat_id).await?;
    let stored: HashMap<u64, &MessageView> = history.iter().map(|message| (message.seq, message)).collect();
    for ack in &acked_before_backup {
        let message = stored
            .get(&ack.seq)
            .with_context(|| format!("message seq {} acked before the backup is not restored", ack.seq))?;
        assert_eq!(message.id, ack.id, "seq {} restored as another message", ack.seq);
        assert_eq!(message.text, texts[&ack.client_id]);
    }
    println!(
        "acked before the backup: {}, by its end: {}, in all: {}; restored: {}; backup position {} (master at start {:?})",
        acked_before_backup.len(),
        acked_by_backup_end,
        all_acks.len(),
        history.len(),
        manifest.gtid_position,
        manifest.master_position_at_start
    );
    // The copy is a consistent prefix of what was acked: seqs 1..=n, each one acked.
    let seqs: Vec<u64> = history.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, (1..=history.len() as u64).collect::<Vec<_>>(), "gap-free seqs");
    let acked_ids: HashMap<&str, u64> = all_acks.iter().map(|ack| (ack.id.as_str(), ack.seq)).collect();
    for message in &history {
        assert_eq!(
            acked_ids.get(message.id.as_str()),
            Some(&message.seq),
            "{message:?} was never acked"
        );
    }

    // The restored cluster takes a new message, after the restored ones.
    let mut socket = MessengerSocket::connect(&restored.app.public_url(), &bob_token).await?;
    socket.until_action(actions::REPLAY_COMPLETE, WAIT).await?;
    let message = OutgoingMessage {
        text: "after the restore".to_owned(),
        status: None,
        client_id: Some("after-restore".to_owned()),
    };
    socket.send_messages(&chat_id, vec![message], None).await?;
    let (_, ack) = socket.until_action(actions::ACK, WAIT).await?;
    let ack: AckPayload = ack.decode_payload()?;
    assert_eq!(ack.acks[0].seq, history.len() as u64 + 1);
    socket.close().await?;

    // Replication runs from the restored master, semi-synchronous: the master numbers
    // its transactions after the backup's position, and both replicas apply them (with
    // gtid_strict_mode a replica stops at a GTID numbered below what it has).
    let mut master = mariadb_admin::connect_url(&restored.servers.root_url("master")).await?;
    let master_position = mariadb_admin::gtid_binlog_position(&mut master).await?;
    mariadb_admin::close(master).await;
    ensure!(
        sequence_number(&master_position) > sequence_number(&manifest.gtid_position),
        "the restored master wrote {master_position}, not after the backup's {}",
        manifest.gtid_position
    );
    restored.servers.wait_replicas_caught_up(WAIT).await?;
    for replica in ["replica-1", "replica-2"] {
        let mut connection = mariadb_admin::connect_url(&restored.servers.root_url(replica)).await?;
        let status = mariadb_admin::replication_status(&mut connection).await?;
        mariadb_admin::close(connection).await;
        let status = status.with_context(|| format!("{replica} is not a replica"))?;
        assert!(status.both_threads_running(), "{replica}: {status:?}");
        let mut connection = mariadb_admin::connect_url(&restored.servers.root_url(replica)).await?;
        let applied: Option<String> = connection.query_first("SELECT @@GLOBAL.gtid_slave_pos").await?;
        mariadb_admin::close(connection).await;
        assert_eq!(
            applied.as_deref(),
            Some(master_position.as_str()),
            "{replica}'s gtid_slave_pos"
        );
        assert_eq!(status.using_gtid, "Slave_Pos", "{replica}");
    }
    let mut master = mariadb_admin::connect_url(&restored.servers.root_url("master")).await?;
    let clients = mariadb_admin::global_status_number(&mut master, "RPL_SEMI_SYNC_MASTER_CLIENTS").await?;
    let status: Option<String> = master
        .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'")
        .await?;
    mariadb_admin::close(master).await;
    assert!(
        clients.unwrap_or(0) >= 1,
        "semi-sync clients on the restored master: {clients:?}"
    );
    assert_eq!(status.as_deref(), Some("ON"), "semi-sync on the restored master");
    restored.shutdown().await?;
    Ok(())
}
