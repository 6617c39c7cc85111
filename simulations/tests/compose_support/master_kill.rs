//! The compose stack's database servers as the master-kill step sees them: which one
//! takes writes, where each one is in the GTID history, whether a returning old master
//! replicates, and starting killed containers again until Docker calls them healthy.

use std::time::Duration;

use anyhow::{bail, Context};
use parley_launcher::compose_stack::ComposeProject;
use parley_launcher::readiness::{poll_until_ready, Probe};
use parley_sim::failover::{FaultRecord, WritesSummary};

use super::load_with_kills::LoadOutcome;

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
