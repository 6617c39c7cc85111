//! The faults an experiment injects, each at a given second: parsed from `AT:ACTION:NAME`,
//! checked against the cluster's components before the load starts, and carried out while
//! it runs.
//!
//! A fault is an action on one named target. Actions that need more than a signal (a
//! network partition, the master down for N seconds, HAProxy scenarios) become further
//! [`FaultAction`] variants with their own parsing and execution; the schedule, the record
//! and the report stay as they are.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use parley_launcher::LocalCluster;

/// What happens to the target component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// SIGKILL: the process dies without any cleanup.
    Kill,
    /// SIGTERM: a graceful shutdown (a node closes its sockets with 1001).
    Terminate,
    /// Start the component again and wait until it serves (a replica: caught up).
    Start,
    /// SIGSTOP: the process freezes with its sockets open.
    Stop,
    /// SIGCONT: a frozen process resumes.
    Continue,
    /// A node is cut off from its peers, the database and nginx, or a database server
    /// from the nodes, HAProxy and the other servers; it keeps running.
    Partition,
    /// A partitioned node or server is reachable again (a replaced master is fenced and
    /// rejoins as a replica).
    Heal,
}

impl FaultAction {
    /// The word used on the command line and in reports.
    pub fn label(self) -> &'static str {
        match self {
            FaultAction::Kill => "kill",
            FaultAction::Terminate => "term",
            FaultAction::Start => "start",
            FaultAction::Stop => "stop",
            FaultAction::Continue => "cont",
            FaultAction::Partition => "partition",
            FaultAction::Heal => "heal",
        }
    }

    /// Partitions cut a process with a cgroup of its own: a node or a MariaDB server.
    fn is_partition(self) -> bool {
        matches!(self, FaultAction::Partition | FaultAction::Heal)
    }

    fn signal(self) -> Option<Signal> {
        match self {
            FaultAction::Kill => Some(Signal::SIGKILL),
            FaultAction::Terminate => Some(Signal::SIGTERM),
            FaultAction::Stop => Some(Signal::SIGSTOP),
            FaultAction::Continue => Some(Signal::SIGCONT),
            FaultAction::Start | FaultAction::Partition | FaultAction::Heal => None,
        }
    }
}

impl FromStr for FaultAction {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "kill" | "sigkill" => FaultAction::Kill,
            "term" | "sigterm" => FaultAction::Terminate,
            "start" | "restart" => FaultAction::Start,
            "stop" | "sigstop" => FaultAction::Stop,
            "cont" | "sigcont" => FaultAction::Continue,
            "partition" | "cut" => FaultAction::Partition,
            "heal" => FaultAction::Heal,
            other => bail!(
                "unknown fault action {other:?} (known: kill, term, start, stop, cont, partition, heal, \
                 and down=SECONDS or partition=SECONDS for a fault undone after that long)"
            ),
        })
    }
}

impl fmt::Display for FaultAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.label())
    }
}

/// One fault on the experiment's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedFault {
    /// From the start of the load.
    pub at: Duration,
    /// What is done to the component.
    pub action: FaultAction,
    /// A component name: master, replica-1, haproxy, node-2, nginx, …
    pub target: String,
}

impl ScriptedFault {
    /// `action` on `target` at `at` from the start of the load.
    pub fn new(at: Duration, action: FaultAction, target: impl Into<String>) -> ScriptedFault {
        ScriptedFault {
            at,
            action,
            target: target.into(),
        }
    }

    /// The seed's experiment: one replica and one app instance die at half time.
    pub fn seed_experiment(duration: Duration) -> Vec<ScriptedFault> {
        let half_time = duration / 2;
        vec![
            ScriptedFault::new(half_time, FaultAction::Kill, "replica-1"),
            ScriptedFault::new(half_time, FaultAction::Kill, "node-1"),
        ]
    }
}

impl FromStr for ScriptedFault {
    type Err = anyhow::Error;

    /// `AT:ACTION:NAME`, AT in seconds (fractions allowed), e.g. `30:kill:node-1`.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.splitn(3, ':');
        let (Some(at), Some(action), Some(target)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("fault {text:?} is not AT:ACTION:NAME (e.g. 30:kill:node-1)");
        };
        let at = parse_seconds(text, at)?;
        let target = target.trim();
        ensure!(!target.is_empty(), "fault {text:?} names no component");
        Ok(ScriptedFault {
            at,
            action: action.parse().with_context(|| format!("fault {text:?}"))?,
            target: target.to_owned(),
        })
    }
}

/// One `--fault` of the command line: a single fault, or one with a duration that is
/// undone after it (`20:down=10:master` kills the master at 20 s and starts it at 30 s;
/// `20:partition=5:node-1` heals the partition at 25 s).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec(pub Vec<ScriptedFault>);

impl FromStr for FaultSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.splitn(3, ':');
        let (Some(at), Some(action), Some(target)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("fault {text:?} is not AT:ACTION:NAME (e.g. 30:kill:node-1)");
        };
        let Some((timed_action, seconds)) = action.split_once('=') else {
            return Ok(FaultSpec(vec![text.parse()?]));
        };
        let (first, undo) = match timed_action.trim().to_ascii_lowercase().as_str() {
            "down" => (FaultAction::Kill, FaultAction::Start),
            "partition" | "cut" => (FaultAction::Partition, FaultAction::Heal),
            other => bail!("fault {text:?}: only down=SECONDS and partition=SECONDS take a duration, not {other:?}"),
        };
        let lasting = parse_seconds(text, seconds)?;
        let fault: ScriptedFault = format!("{at}:{first}:{target}").parse()?;
        let undone = ScriptedFault::new(fault.at + lasting, undo, fault.target.clone());
        Ok(FaultSpec(vec![fault, undone]))
    }
}

fn parse_seconds(fault_text: &str, seconds: &str) -> anyhow::Result<Duration> {
    let value: f64 = seconds
        .trim()
        .parse()
        .with_context(|| format!("fault {fault_text:?}: {seconds:?} is not a number of seconds"))?;
    ensure!(
        value.is_finite() && value >= 0.0,
        "fault {fault_text:?}: a time must be zero or more seconds"
    );
    Ok(Duration::from_secs_f64(value))
}

/// What became of one scripted fault, for the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultRecord {
    /// When it was scheduled, in seconds from the start of the load.
    pub at_s: f64,
    /// The action as written in the script (`kill`, `start`, ...).
    pub action: String,
    /// The component it was done to.
    pub name: String,
    /// When it was actually carried out.
    pub executed_at_s: f64,
    /// When it was complete: a `start` waits until the component serves again.
    pub completed_at_s: f64,
    /// None: it worked.
    pub error: Option<String>,
}

/// Refuses a schedule that cannot work before any load starts: an unknown component,
/// or a fault after the end of the load.
pub fn validate_schedule(
    faults: &[ScriptedFault],
    component_names: &[String],
    duration: Duration,
) -> anyhow::Result<()> {
    for fault in faults {
        ensure!(
            component_names.contains(&fault.target),
            "fault {}:{}:{} names no component of this cluster (known: {})",
            fault.at.as_secs_f64(),
            fault.action,
            fault.target,
            component_names.join(", ")
        );
        ensure!(
            !fault.action.is_partition() || can_be_partitioned(&fault.target),
            "fault {}:{}:{}: only nodes and database servers can be partitioned",
            fault.at.as_secs_f64(),
            fault.action,
            fault.target
        );
        ensure!(
            fault.at < duration,
            "fault {}:{}:{} falls after the end of the {} s load",
            fault.at.as_secs_f64(),
            fault.action,
            fault.target,
            duration.as_secs_f64()
        );
    }
    Ok(())
}

/// Carries out every fault at its time, relative to `load_started_at`. Each moment of the
/// schedule runs concurrently with the others, so a slow `start` never delays the faults
/// after it.
pub async fn run_fault_schedule(
    cluster: &LocalCluster,
    faults: &[ScriptedFault],
    load_started_at: Instant,
) -> Vec<FaultRecord> {
    let mut moments: Vec<(Duration, Vec<&ScriptedFault>)> = Vec::new();
    for fault in faults {
        match moments.iter_mut().find(|(at, _)| *at == fault.at) {
            Some((_, same_moment)) => same_moment.push(fault),
            None => moments.push((fault.at, vec![fault])),
        }
    }
    let executions = moments
        .iter()
        .map(|(at, same_moment)| execute_moment(cluster, *at, same_moment, load_started_at));
    let mut records: Vec<FaultRecord> = futures::future::join_all(executions)
        .await
        .into_iter()
        .flatten()
        .collect();
    records.sort_by(|left, right| left.executed_at_s.total_cmp(&right.executed_at_s));
    records
}

/// Nodes (`node-N`) and MariaDB servers (`master`, `replica-N`) run in cgroups of their
/// own; HAProxy and nginx do not.
fn can_be_partitioned(target: &str) -> bool {
    target.starts_with("node-") || target == "master" || target.starts_with("replica-")
}

/// The faults scheduled for one moment: the instant ones (signals, partitions) first,
/// all at once, then restarts and heals (a healed master may be fenced and restarted).
async fn execute_moment(
    cluster: &LocalCluster,
    at: Duration,
    same_moment: &[&ScriptedFault],
    load_started_at: Instant,
) -> Vec<FaultRecord> {
    tokio::time::sleep_until(load_started_at + at).await;
    let executed_at_s = load_started_at.elapsed().as_secs_f64();
    for fault in same_moment {
        tracing::info!(at_s = executed_at_s, action = %fault.action, component = %fault.target, "injecting fault");
    }
    let (instant, started): (Vec<&ScriptedFault>, Vec<&ScriptedFault>) = same_moment
        .iter()
        .copied()
        .partition(|fault| !matches!(fault.action, FaultAction::Start | FaultAction::Heal));
    let mut outcomes = inflict_together(cluster, &instant, load_started_at);
    let restarts = started.iter().map(|fault| async move {
        let outcome = match fault.action {
            FaultAction::Heal => heal(cluster, &fault.target).await,
            _ => cluster
                .start_component(&fault.target)
                .await
                .with_context(|| format!("starting {}", fault.target)),
        };
        (*fault, outcome, load_started_at.elapsed().as_secs_f64())
    });
    outcomes.extend(futures::future::join_all(restarts).await);
    outcomes
        .into_iter()
        .map(|(fault, outcome, completed_at_s)| {
            if let Err(error) = &outcome {
                tracing::warn!(action = %fault.action, component = %fault.target, "fault failed: {error:#}");
            }
            FaultRecord {
                at_s: fault.at.as_secs_f64(),
                action: fault.action.label().to_owned(),
                name: fault.target.clone(),
                executed_at_s,
                completed_at_s,
                error: outcome.err().map(|error| format!("{error:#}")),
            }
        })
        .collect()
}

type FaultOutcome<'fault> = (&'fault ScriptedFault, anyhow::Result<()>, f64);

/// After SIGKILL, `kill` blocks until the process group is gone (tens of ms for MariaDB),
/// and a partition runs iptables a few times: each fault gets a thread of its own so the
/// faults of one moment land together, and the runtime's worker hands its other tasks on
/// meanwhile.
fn inflict_together<'fault>(
    cluster: &LocalCluster,
    faults: &[&'fault ScriptedFault],
    load_started_at: Instant,
) -> Vec<FaultOutcome<'fault>> {
    let send_all = || {
        std::thread::scope(|scope| {
            let senders: Vec<_> = faults
                .iter()
                .map(|fault| {
                    let fault: &'fault ScriptedFault = fault;
                    scope.spawn(move || {
                        let outcome = inflict(cluster, fault);
                        (fault, outcome, load_started_at.elapsed().as_secs_f64())
                    })
                })
                .collect();
            senders
                .into_iter()
                .zip(faults)
                .map(|(sender, fault)| {
                    sender.join().unwrap_or_else(|_| {
                        let panicked = Err(anyhow::anyhow!("{} on {} panicked", fault.action, fault.target));
                        (*fault, panicked, load_started_at.elapsed().as_secs_f64())
                    })
                })
                .collect()
        })
    };
    if faults.is_empty() {
        return Vec::new();
    }
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(send_all)
    } else {
        send_all()
    }
}

fn inflict(cluster: &LocalCluster, fault: &ScriptedFault) -> anyhow::Result<()> {
    match (fault.action, fault.action.signal()) {
        (FaultAction::Partition, _) => cluster.partition(&fault.target),
        (_, Some(signal)) => cluster
            .kill(&fault.target, signal)
            .with_context(|| format!("sending {signal} to {}", fault.target)),
        (FaultAction::Start | FaultAction::Heal, None) => unreachable!("starts and heals are not instant"),
        (_, None) => bail!("{} has no way to be inflicted", fault.action),
    }
}

async fn heal(cluster: &LocalCluster, target: &str) -> anyhow::Result<()> {
    let had_partition = cluster
        .heal(target)
        .await
        .with_context(|| format!("healing {target}"))?;
    ensure!(had_partition, "{target} was not partitioned");
    Ok(())
}

/// Components a schedule left partitioned (no later `heal`; a restarted process is born
/// into the same cgroup and ports, so killing it heals nothing): they are healed after
/// the experiment, so the cluster is not left cut.
pub fn components_left_partitioned(faults: &[ScriptedFault]) -> Vec<String> {
    let mut ordered: Vec<&ScriptedFault> = faults.iter().collect();
    ordered.sort_by_key(|fault| fault.at);
    let mut partitioned: Vec<String> = Vec::new();
    for fault in ordered {
        match fault.action {
            FaultAction::Partition if !partitioned.contains(&fault.target) => partitioned.push(fault.target.clone()),
            FaultAction::Heal => partitioned.retain(|name| *name != fault.target),
            _ => {}
        }
    }
    partitioned
}

/// Components a schedule left frozen (a `stop` with no later `cont`): they are resumed
/// after the experiment, so the cluster is not left hanging.
pub fn components_left_frozen(faults: &[ScriptedFault]) -> Vec<String> {
    let mut ordered: Vec<&ScriptedFault> = faults.iter().collect();
    ordered.sort_by_key(|fault| fault.at);
    let mut frozen: Vec<String> = Vec::new();
    for fault in ordered {
        match fault.action {
            FaultAction::Stop => {
                if !frozen.contains(&fault.target) {
                    frozen.push(fault.target.clone());
                }
            }
            FaultAction::Continue | FaultAction::Kill | FaultAction::Terminate | FaultAction::Start => {
                frozen.retain(|name| *name != fault.target);
            }
            FaultAction::Partition | FaultAction::Heal => {}
        }
    }
    frozen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_at_action_name() {
        let fault: ScriptedFault = "12.5:kill:node-1".parse().unwrap();
        assert_eq!(
            fault,
            ScriptedFault::new(Duration::from_millis(12_500), FaultAction::Kill, "node-1")
        );
        let fault: ScriptedFault = "3:TERM:replica-2".parse().unwrap();
        assert_eq!(fault.action, FaultAction::Terminate);
        assert_eq!(
            "0:start:nginx".parse::<ScriptedFault>().unwrap().action,
            FaultAction::Start
        );
        assert_eq!(
            "1:stop:master".parse::<ScriptedFault>().unwrap().action,
            FaultAction::Stop
        );
        assert_eq!(
            "1:cont:master".parse::<ScriptedFault>().unwrap().action,
            FaultAction::Continue
        );
    }

    #[test]
    fn malformed_faults_are_refused_with_the_reason() {
        for bad in [
            "kill:node-1",
            "x:kill:node-1",
            "-1:kill:node-1",
            "3:explode:node-1",
            "3:kill:",
        ] {
            assert!(bad.parse::<ScriptedFault>().is_err(), "{bad} was accepted");
        }
        let error = "3:explode:node-1".parse::<ScriptedFault>().unwrap_err();
        assert!(format!("{error:#}").contains("unknown fault action"), "{error:#}");
    }

    #[test]
    fn the_seed_experiment_kills_a_replica_and_a_node_at_half_time() {
        let faults = ScriptedFault::seed_experiment(Duration::from_secs(60));
        assert_eq!(
            faults,
            [
                ScriptedFault::new(Duration::from_secs(30), FaultAction::Kill, "replica-1"),
                ScriptedFault::new(Duration::from_secs(30), FaultAction::Kill, "node-1"),
            ]
        );
    }

    #[test]
    fn a_schedule_must_name_known_components_within_the_load() {
        let names: Vec<String> = ["master", "node-1"].iter().map(|name| name.to_string()).collect();
        let duration = Duration::from_secs(10);
        let good = [ScriptedFault::new(Duration::from_secs(5), FaultAction::Kill, "node-1")];
        assert!(validate_schedule(&good, &names, duration).is_ok());
        let unknown = [ScriptedFault::new(Duration::from_secs(5), FaultAction::Kill, "node-9")];
        assert!(validate_schedule(&unknown, &names, duration).is_err());
        let too_late = [ScriptedFault::new(Duration::from_secs(10), FaultAction::Kill, "node-1")];
        assert!(validate_schedule(&too_late, &names, duration).is_err());
    }

    #[test]
    fn a_stop_without_a_later_cont_leaves_the_component_frozen() {
        let schedule: Vec<ScriptedFault> = ["2:stop:node-1", "4:cont:node-1", "5:stop:node-2", "3:stop:master"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        assert_eq!(components_left_frozen(&schedule), ["master", "node-2"]);
    }

    #[test]
    fn a_fault_with_a_duration_is_undone_after_it() {
        let FaultSpec(down) = "20:down=10:master".parse().unwrap();
        assert_eq!(
            down,
            [
                ScriptedFault::new(Duration::from_secs(20), FaultAction::Kill, "master"),
                ScriptedFault::new(Duration::from_secs(30), FaultAction::Start, "master"),
            ]
        );
        let FaultSpec(partition) = "4.5:partition=3:node-2".parse().unwrap();
        assert_eq!(
            partition,
            [
                ScriptedFault::new(Duration::from_millis(4_500), FaultAction::Partition, "node-2"),
                ScriptedFault::new(Duration::from_millis(7_500), FaultAction::Heal, "node-2"),
            ]
        );
        let FaultSpec(single) = "3:heal:node-1".parse().unwrap();
        assert_eq!(
            single,
            [ScriptedFault::new(Duration::from_secs(3), FaultAction::Heal, "node-1")]
        );
        for bad in ["3:kill=2:node-1", "3:down=x:master", "3:down=-1:master", "3:down=2"] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn only_nodes_and_database_servers_can_be_partitioned() {
        let names: Vec<String> = ["master", "replica-1", "node-1", "haproxy", "nginx"]
            .iter()
            .map(|name| name.to_string())
            .collect();
        let duration = Duration::from_secs(10);
        let partition = |target: &str| {
            [ScriptedFault::new(
                Duration::from_secs(1),
                FaultAction::Partition,
                target,
            )]
        };
        for cut in ["node-1", "master", "replica-1"] {
            assert!(validate_schedule(&partition(cut), &names, duration).is_ok(), "{cut}");
        }
        for refused in ["haproxy", "nginx"] {
            assert!(
                validate_schedule(&partition(refused), &names, duration).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_partition_without_a_later_heal_is_left_to_heal_afterwards() {
        let schedule: Vec<ScriptedFault> = [
            "1:partition:node-1",
            "2:heal:node-1",
            "3:partition:node-2",
            "4:kill:node-2",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        assert_eq!(components_left_partitioned(&schedule), ["node-2"]);
    }
}
