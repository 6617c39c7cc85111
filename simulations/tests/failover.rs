//! `parley-sim failover` as a library call, short, against a fresh two-node cluster: the
//! seed's experiment (replica-1 and node-1 SIGKILLed at half time) and a graceful node
//! shutdown. Each must end with no failed request, no lost and no duplicated message,
//! every send acked, and the users of the dead node back within a second.
//!
//! Needs the `parley` binary next to this test's target dir (`cargo build -p parley-node`
//! into the same CARGO_TARGET_DIR) or PARLEY_BIN.

use std::time::Duration;

use anyhow::Context;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::kept_state_dir::StateDirKeptOnFailure;
use parley_launcher::readiness::{poll_until_ready, Probe};
use parley_launcher::{ClusterSpec, LocalCluster};
use parley_sim::failover::{
    run_failover_experiment, wait_until_mesh_formed, FailoverConfig, FailoverReport, FaultSpec, ScriptedFault,
};

/// Cheap password hashing: sign-ups are setup here, not the subject.
const CHEAP_SCRYPT_ARGS: [&str; 2] = ["--scrypt-log-n", "10"];
const EXPERIMENT_DURATION: Duration = Duration::from_secs(14);
const HALF_TIME: Duration = Duration::from_secs(7);
/// A user of a dead node must be live on the other one within this.
const RESUME_P99_BOUND_MS: f64 = 1000.0;

/// Two experiments at once would share two cores and measure each other.
static ONE_EXPERIMENT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct ExperimentCluster {
    cluster: LocalCluster,
    // Dropped last: the cluster's datadirs and logs live in it.
    state_dir: StateDirKeptOnFailure,
}

async fn start_cluster() -> anyhow::Result<ExperimentCluster> {
    resolve_parley_binary(None).context("build the node first: cargo build -p parley-node, or set PARLEY_BIN")?;
    let state_dir = StateDirKeptOnFailure::new()?;
    let mut spec = ClusterSpec::with_free_ports(state_dir.path().to_path_buf(), 2);
    spec.node_extra_args = CHEAP_SCRYPT_ARGS.iter().map(|arg| arg.to_string()).collect();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    Ok(ExperimentCluster { cluster, state_dir })
}

fn short_experiment(faults: Vec<ScriptedFault>) -> FailoverConfig {
    let mut config = FailoverConfig::seed_experiment(EXPERIMENT_DURATION);
    config.http_connections = 4;
    config.pairs = 10;
    config.message_rate_per_pair = 4.0;
    config.faults = faults;
    config.progress_on_stderr = true;
    config
}

/// Whether the HTTP load may stall for a while. A partitioned node answers nothing, and
/// nginx only learns that from a request that times out (5 s): the requests in flight
/// to it wait that long before nginx retries them elsewhere. Every other fault is seen
/// at once (refused connections, resets), so there every second must have answers.
#[derive(PartialEq)]
enum HttpStalls {
    Never,
    WhileNginxTimesOutASilentNode,
}

/// The figures every scenario must reach, whatever it broke.
fn assert_nothing_failed_or_lost(report: &FailoverReport, logs_in: &std::path::Path, stalls: HttpStalls) {
    let context = format!("node logs in {}; report:\n{}", logs_in.display(), report.render_table());
    assert_eq!(
        report.http.non_2xx, 0,
        "non-2xx answers: {:#?}\n{context}",
        report.http.problems
    );
    assert_eq!(
        report.http.errors, 0,
        "requests without an answer: {:#?}\n{context}",
        report.http.problems
    );
    assert!(
        report.http.requests >= 500,
        "the http load barely ran ({} requests)\n{context}",
        report.http.requests
    );
    let load_seconds = report.experiment.duration_s as usize;
    let silent_seconds: Vec<u64> = report.timeline[..load_seconds]
        .iter()
        .filter(|second| second.http_rps == 0)
        .map(|second| second.second)
        .collect();
    assert!(
        silent_seconds.is_empty() || stalls == HttpStalls::WhileNginxTimesOutASilentNode,
        "seconds without an http answer: {silent_seconds:?}\n{context}"
    );

    let expected_sends = 10.0 * 4.0 * report.experiment.duration_s;
    assert!(
        report.ws.sent as f64 >= expected_sends * 0.9,
        "only {} of about {expected_sends} messages were sent\n{context}",
        report.ws.sent
    );
    assert_eq!(
        report.ws.acked, report.ws.sent,
        "every sent message is acked\n{context}"
    );
    assert_eq!((report.ws.refused, report.ws.unacked), (0, 0), "{context}");
    assert_eq!(report.ws.lost, 0, "lost: {:#?}\n{context}", report.ws.lost_messages);
    assert_eq!(
        report.ws.duplicates, 0,
        "twice: {:#?}\n{context}",
        report.ws.duplicate_deliveries
    );
    assert_eq!(report.ws.sequence_conflicts, 0, "{context}");
    assert_eq!(report.ws.delivered, report.ws.acked, "{context}");
    assert!(report.ws.settled, "{context}");
    assert!(report.passed(), "{context}");
    for fault in &report.faults {
        assert_eq!(fault.error, None, "{context}");
        assert!(
            (fault.executed_at_s - fault.at_s).abs() < 0.5,
            "fault {fault:?} ran late\n{context}"
        );
    }
}

/// The users of the dead node came back, quickly.
fn assert_users_of_the_dead_node_resumed(report: &FailoverReport, dead_node: &str) {
    assert_users_of_the_lost_node_resumed_within(report, dead_node, RESUME_P99_BOUND_MS);
}

/// The users of a node that died or vanished resumed elsewhere, within `p99_bound_ms`
/// of noticing.
fn assert_users_of_the_lost_node_resumed_within(report: &FailoverReport, dead_node: &str, p99_bound_ms: f64) {
    let context = report.render_table();
    let users_there: u64 = report
        .experiment
        .placement
        .users_by_node
        .iter()
        .filter(|(node, _)| node.starts_with(dead_node))
        .map(|(_, users)| users)
        .sum();
    assert!(
        users_there > 0,
        "no chat user was on {dead_node}: the fault proved nothing\n{context}"
    );
    assert!(
        report.ws.resumes >= users_there,
        "{users_there} users were on {dead_node} but only {} resumed\n{context}",
        report.ws.resumes
    );
    assert!(
        report.ws.resume_p99_ms <= p99_bound_ms,
        "resume p99 {} ms\n{context}",
        report.ws.resume_p99_ms
    );
}

async fn wait_until_dead(cluster: &LocalCluster, name: &str) -> anyhow::Result<()> {
    poll_until_ready(&format!("{name} to exit"), Duration::from_secs(15), || async {
        let alive = cluster
            .status()
            .into_iter()
            .any(|status| status.name == name && status.alive);
        Ok(if alive {
            Probe::NotYet(anyhow::anyhow!("{name} still runs"))
        } else {
            Probe::Ready(())
        })
    })
    .await
}

/// How many create-chat POSTs the load got answers to.
fn create_chats_answered(report: &FailoverReport) -> u64 {
    report
        .http
        .responses_by_request
        .get("create-chat")
        .copied()
        .unwrap_or(0)
}

/// The faults the experiment carried out, as (action, component).
fn fault_actions(report: &FailoverReport) -> Vec<(&str, &str)> {
    report
        .faults
        .iter()
        .map(|fault| (fault.action.as_str(), fault.name.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_experiment_loses_no_request_and_no_message() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    let config = short_experiment(ScriptedFault::seed_experiment(EXPERIMENT_DURATION));
    assert_eq!(config.faults.len(), 2);
    assert!(config.faults.iter().all(|fault| fault.at == HALF_TIME));

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    assert_users_of_the_dead_node_resumed(&report, "node-1");
    let actions = fault_actions(&report);
    assert_eq!(actions.len(), 2);
    assert!(actions.contains(&("kill", "replica-1")) && actions.contains(&("kill", "node-1")));
    wait_until_dead(&experiment.cluster, "node-1").await?;
    wait_until_dead(&experiment.cluster, "replica-1").await?;
    experiment.cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shut_down_gracefully_costs_no_request_and_no_message() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    let mut config = short_experiment(vec![format!("{}:term:node-1", HALF_TIME.as_secs()).parse()?]);
    // Writes too: nginx never retries a POST that reached a node, so a node that stops
    // must answer every request it accepted.
    config.http_post_connections = 2;

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    assert_users_of_the_dead_node_resumed(&report, "node-1");
    assert_eq!(report.faults.len(), 1);
    assert_eq!(
        (report.faults[0].action.as_str(), report.faults[0].name.as_str()),
        ("term", "node-1")
    );
    let posts_answered = create_chats_answered(&report);
    assert!(
        posts_answered >= 100,
        "only {posts_answered} create-chat posts were answered\n{}",
        report.render_table()
    );
    wait_until_dead(&experiment.cluster, "node-1").await?;
    experiment.cluster.shutdown().await
}

/// No user ever failed to connect: nginx found a live node for every upgrade.
fn assert_every_connection_attempt_succeeded(report: &FailoverReport) {
    assert_eq!(
        report.ws.connect_failures,
        0,
        "websocket connection attempts failed (nginx's 503 while a node was up?)\n{}",
        report.render_table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_costs_no_request_and_no_message() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    // What every rolling deploy does: node-1 goes and comes back, then node-2. nginx once
    // kept node-1 marked failed for websockets after its restart, and node-2's death then
    // left the users with no node for a minute.
    // GETs only: a POST in flight on a SIGKILLed node cannot be retried safely (the
    // graceful stops of the soak below carry POSTs).
    let faults = ["2:kill:node-1", "4:start:node-1", "8:term:node-2", "11:start:node-2"];
    let config = short_experiment(faults.iter().map(|fault| fault.parse()).collect::<Result<_, _>>()?);

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    assert_users_of_the_dead_node_resumed(&report, "node-2");
    assert_every_connection_attempt_succeeded(&report);
    assert_eq!(
        fault_actions(&report),
        [
            ("kill", "node-1"),
            ("start", "node-1"),
            ("term", "node-2"),
            ("start", "node-2")
        ]
    );
    experiment.cluster.shutdown().await
}

/// SIGTERMs in the soak below, alternating between the two nodes.
const SOAK_SIGTERMS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigterms_under_reads_and_writes_fail_no_request_and_lose_no_message() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    // Every 4 s a node gets SIGTERM and 2.5 s later it starts again (a stopping node
    // needs its lame duck, 1 s, and the close of its sockets first): node-1, node-2,
    // node-1, ... while GETs and POSTs go through nginx all the time.
    let mut faults = Vec::new();
    for stop in 0..SOAK_SIGTERMS {
        let node = format!("node-{}", stop % 2 + 1);
        let at = 2.0 + 4.0 * stop as f64;
        faults.push(format!("{at}:term:{node}").parse()?);
        faults.push(format!("{}:start:{node}", at + 2.5).parse()?);
    }
    let mut config = short_experiment(faults);
    config.duration = Duration::from_secs(4 * SOAK_SIGTERMS as u64 + 4);
    config.http_post_connections = 2;

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    assert_every_connection_attempt_succeeded(&report);
    assert!(
        report.ws.resume_p99_ms <= RESUME_P99_BOUND_MS,
        "resume p99 {} ms\n{}",
        report.ws.resume_p99_ms,
        report.render_table()
    );
    let sigterms = fault_actions(&report)
        .iter()
        .filter(|(action, _)| *action == "term")
        .count();
    assert_eq!(sigterms, SOAK_SIGTERMS);
    let posts_answered = create_chats_answered(&report);
    assert!(
        posts_answered >= 500,
        "only {posts_answered} create-chat posts were answered\n{}",
        report.render_table()
    );
    experiment.cluster.shutdown().await
}

/// How long a user of a frozen node may take to be back: `ChatClient` notices the silence
/// within 10 s, and a reconnect that lands on the frozen node again waits out its 5 s
/// connect timeout before the next try.
const RESUME_AFTER_A_FREEZE_BOUND_MS: f64 = 20_000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_every_kind_of_fault_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    // One after the other: a node killed and restarted, the other stopped gracefully and
    // restarted, a replica killed and restarted, HAProxy killed and restarted, then a
    // node frozen (SIGSTOP) for 14 s and resumed. GETs only: a POST sent to a frozen
    // node is not retried by nginx (it may have been applied), which docs/operations.md states.
    let faults = [
        "2:kill:node-1",
        "4:start:node-1",
        "7:term:node-2",
        "9.5:start:node-2",
        "12:kill:replica-1",
        "14:start:replica-1",
        "16:kill:haproxy",
        "18:start:haproxy",
        "21:stop:node-1",
        "35:cont:node-1",
    ];
    let mut config = short_experiment(faults.iter().map(|fault| fault.parse()).collect::<Result<_, _>>()?);
    config.duration = Duration::from_secs(40);

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    assert_users_of_the_lost_node_resumed_within(&report, "node-1", RESUME_AFTER_A_FREEZE_BOUND_MS);
    assert!(
        report.ws.resume_max_ms <= RESUME_AFTER_A_FREEZE_BOUND_MS,
        "a user took {} ms to resume\n{}",
        report.ws.resume_max_ms,
        report.render_table()
    );
    assert_eq!(fault_actions(&report).len(), faults.len());
    experiment.cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_within_seconds_and_rejoins_as_a_replica() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    // Reads keep going from the replicas; sends are refused with database_unavailable
    // until the nodes have promoted a replica, resent by the clients, and stored once.
    let mut config = short_experiment(vec!["4:kill:master".parse()?, "14:start:master".parse()?]);
    config.duration = Duration::from_secs(20);

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    let actions = fault_actions(&report);
    assert_eq!(actions, [("kill", "master"), ("start", "master")]);
    assert!(report.writes.recovered, "{}", report.render_table());
    let unavailable_s = report.writes.unavailable_s.context("the master was killed")?;
    assert!(
        unavailable_s <= 5.0,
        "writes stopped for {unavailable_s} s (at most 5)\n{}",
        report.render_table()
    );

    // The old master came back as a read-only replica of the new one, with nothing of
    // its own: every server holds the same transactions.
    let servers = experiment.cluster.database_servers();
    let new_master = servers
        .writable_server_other_than("master")
        .await
        .context("a replica was promoted")?;
    let roles = servers.with_roles(servers.status()).await;
    let role_of = |name: &str| {
        roles
            .iter()
            .find(|status| status.name == name)
            .and_then(|status| status.role.clone())
    };
    assert_eq!(role_of("master").as_deref(), Some("replica"), "{roles:?}");
    assert_eq!(role_of(new_master).as_deref(), Some("master"), "{roles:?}");
    servers.wait_all_servers_converge(Duration::from_secs(20)).await?;
    experiment.cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_killed_costs_no_request_reads_fall_back() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    let config = short_experiment(vec!["4:kill:haproxy".parse()?, "10:start:haproxy".parse()?]);

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(&report, experiment.state_dir.path(), HttpStalls::Never);
    let actions = fault_actions(&report);
    assert_eq!(actions, [("kill", "haproxy"), ("start", "haproxy")]);
    experiment.cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_loses_its_users_to_the_other_and_nothing_is_delivered_twice() -> anyhow::Result<()> {
    let _serial = ONE_EXPERIMENT_AT_A_TIME.lock().await;
    let experiment = start_cluster().await?;
    // node-1 keeps running but nothing reaches it and nothing it sends leaves: its users'
    // sockets fall silent, they move to node-2 through nginx and resume there.
    let FaultSpec(faults) = "4:partition=10:node-1".parse()?;
    let mut config = short_experiment(faults);
    config.duration = Duration::from_secs(22);

    let report = run_failover_experiment(&experiment.cluster, &config).await?;
    println!("{}", report.render_table());

    assert_nothing_failed_or_lost(
        &report,
        experiment.state_dir.path(),
        HttpStalls::WhileNginxTimesOutASilentNode,
    );
    // Resuming may first try node-1 through nginx (1 s connect timeout) before node-2.
    assert_users_of_the_lost_node_resumed_within(&report, "node-1", 3000.0);
    assert_eq!(fault_actions(&report), [("partition", "node-1"), ("heal", "node-1")]);
    let by_node = &report.http.responses_by_node;
    assert!(
        by_node.get("node-2").copied().unwrap_or(0) > by_node.get("node-1").copied().unwrap_or(0),
        "node-2 should have carried the load while node-1 was cut off: {by_node:?}"
    );

    // Healed, node-1 is a member again and serves: no node was left believing it alone.
    wait_until_mesh_formed(&experiment.cluster, Duration::from_secs(20)).await?;
    let ready = format!("{}/health/ready", experiment.cluster.app.node_url("node-1"));
    poll_until_ready("node-1 to be ready after the heal", Duration::from_secs(20), || async {
        Ok(match parley_launcher::readiness::http_get_status(&ready, false).await {
            Ok(200) => Probe::Ready(()),
            Ok(status) => Probe::NotYet(anyhow::anyhow!("{ready} answered {status}")),
            Err(error) => Probe::NotYet(error),
        })
    })
    .await?;
    experiment.cluster.shutdown().await
}
