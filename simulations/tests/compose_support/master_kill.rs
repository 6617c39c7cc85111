//! The compose stack's master killed under load (`docker kill`) and the nodes' failover,
//! then the whole stack stopped and started again; and the database servers as those
//! steps see them: which one takes writes, where each one is in the GTID history,
//! whether a returning old master replicates, and starting containers again until
//! Docker calls them healthy.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use parley_launcher::compose_stack::ComposeProject;
use parley_launcher::readiness::{poll_until_ready, Probe};
use parley_sim::failover::{FaultRecord, WritesSummary};

use super::load_with_kills::{
    assert_nothing_failed_or_lost, report_load, run_load_with_kills, LoadOutcome, LoadWithKills,
};
use super::{wait_until_mesh_formed, wait_until_ready_through_nginx, StepTimer, KILLED, NODES, STACK_READY_TIMEOUT};

/// Every MariaDB service of the stack, master first.
pub const DATABASE_SERVERS: [&str; 3] = ["master", "replica-1", "replica-2"];

/// What one server says of itself (root over its socket, inside its container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub read_only: bool,
    pub gtid_current_pos: String,
    /// Both replication threads run.
    pub replicating: bool,
}

pub async fn server_state(project: &ComposeProject, service: &str) -> anyhow::Result<ServerState> {
    let answer = project
        .exec(
            service,
            &[
                "mariadb",
                "--batch",
                "--skip-column-names",
                "-e",
                "SELECT @@read_only, @@gtid_current_pos",
            ],
        )
        .await?;
    let mut fields = answer.trim().split('\t');
    let (Some(read_only), Some(position)) = (fields.next(), fields.next()) else {
        bail!("{service} answered {answer:?} for its role and position");
    };
    let status = project
        .exec(service, &["mariadb", "-e", "SHOW SLAVE STATUS\\G"])
        .await?;
    Ok(ServerState {
        read_only: read_only.trim() != "0",
        gtid_current_pos: position.trim().to_owned(),
        replicating: status.contains("Slave_IO_Running: Yes") && status.contains("Slave_SQL_Running: Yes"),
    })
}

/// The master's container is SIGKILLed under load: the nodes promote a replica, no read
/// fails and every message is acked and delivered once; the old master, started again,
/// comes back read-only as a replica of the new one, and nothing diverged.
pub async fn master_killed_under_load(
    project: &ComposeProject,
    public_url: &str,
    timer: &mut StepTimer,
) -> anyhow::Result<()> {
    // The failover needs a majority of the servers, and the load both nodes.
    start_until_healthy(project, &KILLED, STACK_READY_TIMEOUT).await?;
    wait_until_mesh_formed(project, &NODES).await?;
    let before = wait_until_converged(project, Duration::from_secs(30)).await?;
    timer.done("node-2 and replica-2 started again, servers converged");

    let load = run_load_with_kills(
        project,
        public_url,
        &LoadWithKills {
            http_connections: 4,
            pairs: 10,
            message_rate_per_pair: 4.0,
            duration: Duration::from_secs(16),
            kill_at: Duration::from_secs(5),
            killed_services: vec!["master"],
            settle_timeout: Duration::from_secs(30),
        },
    )
    .await?;
    report_load(&load);
    assert_nothing_failed_or_lost(&load)?;
    let unavailable_s = writes_unavailable_s(&load);
    ensure!(
        unavailable_s.is_some_and(|seconds| seconds <= 5.0),
        "writes unavailable for {unavailable_s:?} s after docker kill of the master"
    );
    let promoted = wait_for_the_promoted_replica(project, Duration::from_secs(10)).await?;
    timer.done(&format!(
        "load with docker kill of the master: {promoted} promoted, writes unavailable {:.1} s",
        unavailable_s.unwrap_or_default()
    ));

    start_until_healthy(project, &["master"], STACK_READY_TIMEOUT).await?;
    let old_master = server_state(project, "master").await?;
    ensure!(
        old_master.read_only && old_master.replicating,
        "the old master came back as {old_master:?}, not as a read-only replica"
    );
    let after = wait_until_converged(project, Duration::from_secs(30)).await?;
    ensure!(
        after != before,
        "the servers' position did not move under the load: {after}"
    );
    timer.done(&format!("old master back as a replica of {promoted}; all at {after}"));
    Ok(())
}

/// Every container stopped (`stop`: SIGTERM, the grace period) and the stack brought up
/// again (`up -d`). Every server but a first-started master comes up read-only, so none
/// takes writes until the nodes promote the one furthest ahead: exactly one must, and
/// all must converge on it.
pub async fn whole_stack_started_again(project: &ComposeProject, public_url: &str) -> anyhow::Result<()> {
    let before = wait_until_converged(project, Duration::from_secs(30)).await?;
    project.compose(&["stop"]).await?;
    project.up().await?;
    wait_until_ready_through_nginx(public_url).await?;
    wait_until_mesh_formed(project, &NODES).await?;
    let after = wait_until_converged(project, STACK_READY_TIMEOUT).await?;
    ensure!(
        after == before,
        "the servers held {before} before the stop and {after} after the start"
    );
    Ok(())
}

/// From `docker kill` of the master to the first message acked after it (as
/// `parley-sim failover` reports `writes.unavailable_s`); None if none was.
pub fn writes_unavailable_s(load: &LoadOutcome) -> Option<f64> {
    let kill_sent_at = load.kill_sent_at.as_secs_f64();
    let kill = FaultRecord {
        at_s: kill_sent_at,
        action: "kill".to_owned(),
        name: "master".to_owned(),
        executed_at_s: kill_sent_at,
        completed_at_s: load.killed_at.as_secs_f64(),
        error: None,
    };
    let load_s = load.chat.ack_times_s.last().copied().unwrap_or(kill_sent_at);
    let writes = WritesSummary::from_acks(&[kill], &load.chat.ack_times_s, load_s);
    writes.unavailable_s.filter(|_| writes.recovered)
}

/// `start` the services' stopped containers, then wait until Docker's health check
/// passes for each (for a database server: writable, or replicating).
pub async fn start_until_healthy(project: &ComposeProject, services: &[&str], timeout: Duration) -> anyhow::Result<()> {
    let mut arguments = vec!["start"];
    arguments.extend_from_slice(services);
    project.compose(&arguments).await?;
    for service in services {
        poll_until_ready(&format!("{service} to be healthy"), timeout, || async {
            let health = project.health(service).await?;
            Ok(if health == "healthy" {
                Probe::Ready(())
            } else {
                Probe::NotYet(anyhow::anyhow!("{service} is {health}"))
            })
        })
        .await?;
    }
    Ok(())
}

/// The one replica the nodes promoted after the master's death: writable, and the only
/// writable server among the replicas.
pub async fn wait_for_the_promoted_replica(project: &ComposeProject, timeout: Duration) -> anyhow::Result<String> {
    poll_until_ready("a replica to be promoted", timeout, || async {
        let mut writable = Vec::new();
        for replica in &DATABASE_SERVERS[1..] {
            if !server_state(project, replica).await?.read_only {
                writable.push(replica.to_string());
            }
        }
        Ok(match writable.as_slice() {
            [promoted] => Probe::Ready(promoted.clone()),
            [] => Probe::NotYet(anyhow::anyhow!("no replica takes writes")),
            several => Probe::NotYet(anyhow::anyhow!("several replicas take writes: {several:?}")),
        })
    })
    .await
}

/// Every server at one `gtid_current_pos`, exactly one writable, the others replicating:
/// nothing diverged. The common position.
pub async fn wait_until_converged(project: &ComposeProject, timeout: Duration) -> anyhow::Result<String> {
    poll_until_ready("every server at one gtid position", timeout, || async {
        let mut states = Vec::new();
        for server in DATABASE_SERVERS {
            let state = server_state(project, server)
                .await
                .with_context(|| format!("reading {server}"))?;
            states.push((server, state));
        }
        let writable = states.iter().filter(|(_, state)| !state.read_only).count();
        let all_replicating = states.iter().all(|(_, state)| !state.read_only || state.replicating);
        let one_position = states
            .iter()
            .all(|(_, state)| state.gtid_current_pos == states[0].1.gtid_current_pos);
        Ok(if writable == 1 && all_replicating && one_position {
            Probe::Ready(states[0].1.gtid_current_pos.clone())
        } else {
            Probe::NotYet(anyhow::anyhow!("servers: {states:?}"))
        })
    })
    .await
}
