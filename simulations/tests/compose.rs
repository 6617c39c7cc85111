//! The docker compose deployment end to end, on the real Docker engine:
//!
//! ```text
//! compose/build-images.sh (base by debootstrap when no registry) ─ up -d (one project)
//!  ─ the seed's curl commands verbatim, its websocket frames Bob → Alice
//!  ─ load: get-by-email loops + chat pairs; docker kill node-2 and replica-2 midway
//!    → zero failed reads, every acked message delivered exactly once
//!  ─ the walkthrough again ─ down -v ─ nothing of the project left
//! ```
//!
//! Needs Docker with docker compose (v2) or docker-compose (v1), debootstrap when the
//! base image must be made (deploy/install.sh installs both), and the `parley` binary
//! next to this test's target dir (`cargo build -p parley-node`) or PARLEY_BIN. Set
//! PARLEY_SKIP_DOCKER_TESTS=1 to skip it on a machine without Docker.

#[path = "compose_support/load_with_kills.rs"]
mod load_with_kills;
#[path = "compose_support/seed_walkthrough.rs"]
mod seed_walkthrough;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use load_with_kills::{run_load_with_kills, LoadOutcome, LoadWithKills};
use parley_sim::app_tier::resolve_parley_binary;
use parley_sim::compose_stack::{build_images, locate_compose_dir, projects_present, ComposeProject, ComposeTool};
use parley_sim::http_client::ParleyHttp;
use parley_sim::pid_is_alive;
use parley_sim::ports::pick_free_ports;
use parley_sim::readiness::{http_get_status, poll_until_ready, Probe};
use protocol::cluster::ClusterView;
use seed_walkthrough::{exchange_seed_frames, run_seed_curl_commands, SignUps, SEED_TEXTS};

/// Images of this test; the base image is shared with `compose/build-images.sh` users.
const IMAGE_TAG: &str = "e2e";
/// Project names are this, the test process's pid, and a random part.
const PROJECT_PREFIX: &str = "parley-e2e-";
const NODES: [&str; 2] = ["node-1", "node-2"];
const KILLED: [&str; 2] = ["node-2", "replica-2"];
const STACK_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Prints how long each step took, for the CI log.
struct StepTimer {
    started: Instant,
    step_started: Instant,
}

impl StepTimer {
    fn new() -> StepTimer {
        StepTimer {
            started: Instant::now(),
            step_started: Instant::now(),
        }
    }

    fn done(&mut self, step: &str) {
        eprintln!(
            "compose: {step} in {:.1} s (total {:.1} s)",
            self.step_started.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        self.step_started = Instant::now();
    }
}

fn docker_is_skipped() -> bool {
    if std::env::var("PARLEY_SKIP_DOCKER_TESTS").is_ok_and(|value| value == "1") {
        eprintln!("compose: skipped (PARLEY_SKIP_DOCKER_TESTS=1)");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_stack_serves_the_seed_walkthrough_and_survives_docker_kill_under_load() -> anyhow::Result<()> {
    if docker_is_skipped() {
        return Ok(());
    }
    let mut timer = StepTimer::new();
    let compose_dir = locate_compose_dir()?;
    let tool = ComposeTool::detect()?;
    let parley_binary =
        resolve_parley_binary(None).context("build the node first: cargo build -p parley-node, or set PARLEY_BIN")?;
    eprintln!("compose: using {}, binary {}", tool.describe(), parley_binary.display());
    build_images(&compose_dir, &parley_binary, IMAGE_TAG).await?;
    timer.done("images built");

    let port = pick_free_ports(1)?[0];
    remove_projects_of_dead_runs(&tool, &compose_dir)?;
    let project_name = format!("{PROJECT_PREFIX}{}-{:08x}", std::process::id(), rand::random::<u32>());
    let environment = [
        ("PARLEY_IMAGE_TAG", IMAGE_TAG.to_owned()),
        ("PARLEY_HTTP_PORT", port.to_string()),
        ("PARLEY_HTTP_BIND", "127.0.0.1".to_owned()),
        // Sign-ups are setup here, not the subject; the access log would only cost CPU.
        ("PARLEY_SCRYPT_LOG_N", "10".to_owned()),
        ("NGINX_ACCESS_LOG", "off".to_owned()),
    ];
    let project = ComposeProject::new(
        tool,
        &project_name,
        &compose_dir,
        environment
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    );
    let outcome = run_scenario(&project, port, &mut timer).await;
    if outcome.is_err() {
        eprintln!(
            "compose: the scenario failed; last log lines:\n{}",
            project.logs_tail(40).await
        );
    }
    let down = project.down().await;
    timer.done("down -v");
    let leftovers = project.leftovers()?;
    // Dropped here, the guard takes down whatever an error above left running.
    drop(project);
    outcome?;
    down?;
    ensure!(
        leftovers.is_empty(),
        "down -v left {leftovers:?} of project {project_name}"
    );
    Ok(())
}

/// A run killed before its guard could act (a CI timeout, say) leaves its project
/// behind; the pid in the name tells that its test process is gone.
fn remove_projects_of_dead_runs(tool: &ComposeTool, compose_dir: &std::path::Path) -> anyhow::Result<()> {
    for name in projects_present()? {
        let pid = name
            .strip_prefix(PROJECT_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !pid_is_alive(pid)) {
            eprintln!("compose: removing {name}, left behind by a test run that died");
            // Its guard's Drop takes it down and removes whatever carries its label.
            drop(ComposeProject::new(tool.clone(), &name, compose_dir, Vec::new()));
        }
    }
    Ok(())
}

async fn run_scenario(project: &ComposeProject, port: u16, timer: &mut StepTimer) -> anyhow::Result<()> {
    project.up().await?;
    let public_url = format!("http://127.0.0.1:{port}");
    wait_until_ready_through_nginx(&public_url).await?;
    wait_until_mesh_formed(&public_url, &NODES).await?;
    timer.done("up, nodes ready and meshed");

    let first = run_seed_curl_commands(port, SignUps::Created).await?;
    ensure!(
        first.history_texts.is_empty(),
        "a new chat has history: {:?}",
        first.history_texts
    );
    let (alice_node, bob_node) = exchange_seed_frames(&public_url, &first).await?;
    eprintln!("compose: seed frames from Bob on {bob_node} to Alice on {alice_node}");
    assert_replicas_have_user(project, "alice@email.com").await?;
    timer.done("seed walkthrough (curl, websocket) and replication checked");

    let load = run_load_with_kills(
        project,
        &public_url,
        &LoadWithKills {
            http_connections: 4,
            pairs: 10,
            message_rate_per_pair: 4.0,
            duration: Duration::from_secs(16),
            kill_at: Duration::from_secs(6),
            killed_services: KILLED.to_vec(),
            settle_timeout: Duration::from_secs(30),
        },
    )
    .await?;
    report_load(&load);
    assert_nothing_failed_or_lost(&load)?;
    for service in KILLED {
        ensure!(
            !project.is_running(service).await?,
            "{service} is still running after docker kill"
        );
    }
    timer.done("load with docker kill of node-2 and replica-2");

    let again = run_seed_curl_commands(port, SignUps::AlreadyTaken).await?;
    ensure!(
        again.chat_id == first.chat_id,
        "the same pair got another chat: {} then {}",
        first.chat_id,
        again.chat_id
    );
    ensure!(
        again.history_texts == SEED_TEXTS,
        "after the kills the history reads {:?}",
        again.history_texts
    );
    let (alice_node, bob_node) = exchange_seed_frames(&public_url, &again).await?;
    ensure!(
        alice_node == "node-1" && bob_node == "node-1",
        "after node-2's death the sockets landed on {alice_node} and {bob_node}"
    );
    timer.done("seed walkthrough again");
    Ok(())
}

async fn wait_until_ready_through_nginx(public_url: &str) -> anyhow::Result<()> {
    let ready_url = format!("{public_url}/health/ready");
    poll_until_ready("the stack to answer through nginx", STACK_READY_TIMEOUT, || async {
        Ok(match http_get_status(&ready_url).await {
            Ok(200) => Probe::Ready(()),
            Ok(status) => Probe::NotYet(anyhow::anyhow!("{ready_url} answered {status}")),
            Err(error) => Probe::NotYet(error),
        })
    })
    .await
}

/// nginx spreads `GET /cluster` over the nodes; each node's answer must list every
/// node alive (the nodes' ports are not published, so nginx is the only way in).
async fn wait_until_mesh_formed(public_url: &str, nodes: &[&str]) -> anyhow::Result<()> {
    let http = ParleyHttp::new(public_url);
    let alive_seen_by: std::sync::Mutex<BTreeMap<String, usize>> = Default::default();
    poll_until_ready("every node to see every node", STACK_READY_TIMEOUT, || async {
        let answer = http.request(reqwest::Method::GET, "/cluster", None, None).await;
        let mut alive_seen_by = alive_seen_by.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Ok(Ok(view)) = answer.map(|answer| serde_json::from_value::<ClusterView>(answer.body)) {
            let alive = view.members.iter().filter(|member| member.alive).count();
            let node = view.node.split('#').next().unwrap_or_default().to_owned();
            alive_seen_by.insert(node, alive);
        }
        let meshed = nodes
            .iter()
            .all(|node| alive_seen_by.get(*node).is_some_and(|alive| *alive >= nodes.len()));
        Ok(if meshed {
            Probe::Ready(())
        } else {
            Probe::NotYet(anyhow::anyhow!("alive members seen by each node: {alive_seen_by:?}"))
        })
    })
    .await
}

/// The replicas got the user through GTID replication (by way of HAProxy's write
/// frontend, their only way to the master).
async fn assert_replicas_have_user(project: &ComposeProject, email: &str) -> anyhow::Result<()> {
    let query = format!("SELECT COUNT(*) FROM parley.users WHERE email = '{email}'");
    for replica in ["replica-1", "replica-2"] {
        poll_until_ready(
            &format!("{replica} to have {email}"),
            Duration::from_secs(10),
            || async {
                let count = project
                    .exec(replica, &["mariadb", "--batch", "--skip-column-names", "-e", &query])
                    .await?;
                Ok(if count.trim() == "1" {
                    Probe::Ready(())
                } else {
                    Probe::NotYet(anyhow::anyhow!("{replica} has {} such users", count.trim()))
                })
            },
        )
        .await?;
    }
    Ok(())
}

fn report_load(load: &LoadOutcome) {
    let chat = &load.chat;
    eprintln!(
        "compose: load: {} reads ({} non-2xx, {} errors, by node {:?}); \
         killed at {:.1} s; messages sent {} acked {} delivered {} lost {} duplicated {} refused {}; \
         reconnects {}, resume p99 {:.0} ms",
        load.http_responses,
        load.http_non_2xx,
        load.http_errors,
        load.http_responses_by_node,
        load.killed_at.as_secs_f64(),
        chat.sent,
        chat.acked,
        chat.delivered,
        chat.lost_count,
        chat.duplicate_count,
        chat.refused,
        chat.reconnects,
        chat.resume_times.clone().percentile_ms(0.99),
    );
}

fn assert_nothing_failed_or_lost(load: &LoadOutcome) -> anyhow::Result<()> {
    let chat = &load.chat;
    ensure!(
        load.placement.users_by_node.get("node-2").copied().unwrap_or(0) > 0,
        "no chat user was on node-2, so its death tested nothing: {:?}",
        load.placement
    );
    ensure!(load.http_responses > 0, "the read load got no answer at all");
    ensure!(
        load.http_non_2xx == 0 && load.http_errors == 0,
        "failed reads: {:#?}",
        load.http_problems
    );
    ensure!(
        load.http_responses_by_node.contains_key("node-2"),
        "node-2 never served a read before its death: {:?}",
        load.http_responses_by_node
    );
    ensure!(chat.sent > 0, "no message was sent");
    ensure!(
        chat.settled,
        "acks or deliveries still missing after the settle timeout"
    );
    ensure!(
        chat.acked == chat.sent && chat.refused == 0,
        "sent {}, acked {}, refused {}",
        chat.sent,
        chat.acked,
        chat.refused
    );
    ensure!(
        chat.lost_count == 0,
        "{} acked messages never arrived: {:#?}",
        chat.lost_count,
        chat.lost
    );
    ensure!(
        chat.duplicate_count == 0 && chat.delivered == chat.acked,
        "delivered {} for {} acked, duplicates: {:#?}",
        chat.delivered,
        chat.acked,
        chat.duplicates
    );
    ensure!(
        chat.reconnects > 0,
        "no chat client reconnected: the kill of node-2 did not reach them"
    );
    Ok(())
}
