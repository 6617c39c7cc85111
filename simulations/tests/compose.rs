//! The docker compose deployment end to end, on the real Docker engine:
//!
//! ```text
//! compose/build-images.sh (base by debootstrap when no registry) ─ up -d (one project)
//!  ─ /metrics and /cluster: 404 through nginx, served on each node's own port
//!  ─ the seed's curl commands verbatim, its websocket frames Bob → Alice
//!  ─ safe defaults: generated secrets (a token signed with the old example JWT secret
//!    is refused, the old example database passwords do not log in), X-Real-IP believed
//!    from nginx only
//!  ─ load: get-by-email loops + chat pairs; docker kill node-2 and replica-2 midway
//!    → zero failed reads, every acked message delivered exactly once
//!  ─ the walkthrough again
//!  ─ node-2 and replica-2 started again; load with docker kill of the master midway
//!    → a replica promoted by the nodes, zero failed reads, every message acked and
//!    delivered exactly once; `start master` → it replicates from the new master, read
//!    only, and all three servers reach one GTID position; the walkthrough's history
//!  ─ down -v ─ nothing of the project left
//! ```
//!
//! Needs Docker with docker compose (v2) or docker-compose (v1), debootstrap when the
//! base image must be made (deploy/install.sh installs both), and the `parley` binary
//! next to this test's target dir (`cargo build -p parley-node`) or PARLEY_BIN. Set
//! PARLEY_SKIP_DOCKER_TESTS=1 to skip it on a machine without Docker.

#[path = "compose_support/load_with_kills.rs"]
mod load_with_kills;
#[path = "compose_support/master_kill.rs"]
mod master_kill;
#[path = "compose_support/seed_walkthrough.rs"]
mod seed_walkthrough;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use load_with_kills::{
    assert_node_2_death_reached_its_users, assert_nothing_failed_or_lost, report_load, run_load_with_kills,
    LoadWithKills,
};
use parley_client::http::ParleyHttp;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::compose_stack::{
    build_images, free_application_subnet_prefix, locate_compose_dir, projects_present, ComposeProject, ComposeTool,
};
use parley_launcher::pid_is_alive;
use parley_launcher::ports::pick_free_ports;
use parley_launcher::readiness::{http_get_status, poll_until_ready, Probe};
use protocol::cluster::ClusterView;
use seed_walkthrough::{exchange_seed_frames, run_seed_curl_commands, SignUps, SEED_TEXTS};

/// Images of this test; the base image is shared with `compose/build-images.sh` users.
const IMAGE_TAG: &str = "e2e";
/// Project names are this, the test process's pid, and a random part.
const PROJECT_PREFIX: &str = "parley-e2e-";
const NODES: [&str; 2] = ["node-1", "node-2"];
const KILLED: [&str; 2] = ["node-2", "replica-2"];
const STACK_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Where a node's HTTP API listens inside its container (the node image's PARLEY_LISTEN).
const NODE_HTTP_PORT: u16 = 8080;
/// The examples compose/.env shipped before compose generated its secrets: public, so
/// the running stack must not accept them (the node's config refuses them too).
const OLD_EXAMPLE_JWT_SECRET: &str = "example-jwt-secret-change-me-4f7d0c2a9b8e61d3";
const OLD_EXAMPLE_APP_PASSWORD: &str = "example-app-password-change-me-31c9";
const OLD_EXAMPLE_REPLICATION_PASSWORD: &str = "example-replication-password-change-me-7e02";
/// Sign-ups one address may make at once on a node: a third of the default 60 a minute.
const SIGN_UP_BURST_PER_ADDRESS: usize = 20;

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
    // After the dead runs' networks are gone, so that their subnets are free again.
    let subnet_prefix = free_application_subnet_prefix()?;
    let project_name = format!("{PROJECT_PREFIX}{}-{:08x}", std::process::id(), rand::random::<u32>());
    let environment = [
        ("PARLEY_IMAGE_TAG", IMAGE_TAG.to_owned()),
        ("PARLEY_HTTP_PORT", port.to_string()),
        ("PARLEY_HTTP_BIND", "127.0.0.1".to_owned()),
        // A subnet of its own: the default one may belong to a stack running here.
        ("PARLEY_APPLICATION_SUBNET_PREFIX", subnet_prefix.clone()),
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
    let outcome = run_scenario(&project, port, &subnet_prefix, &mut timer).await;
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

async fn run_scenario(
    project: &ComposeProject,
    port: u16,
    subnet_prefix: &str,
    timer: &mut StepTimer,
) -> anyhow::Result<()> {
    project.up().await?;
    let public_url = format!("http://127.0.0.1:{port}");
    wait_until_ready_through_nginx(&public_url).await?;
    wait_until_mesh_formed(project, &NODES).await?;
    timer.done("up, nodes ready and meshed");
    assert_operator_endpoints_only_on_the_nodes(project, &public_url).await?;
    timer.done("/metrics and /cluster refused through nginx, served by the nodes");

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
    assert_no_published_secret_is_in_use(project, &public_url, &first).await?;
    assert_real_ip_believed_from_nginx_only(project, subnet_prefix).await?;
    timer.done("generated secrets in use, X-Real-IP from nginx only");

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
    assert_node_2_death_reached_its_users(&load)?;
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

    master_kill::master_killed_under_load(project, &public_url, timer).await?;
    let after_failover = run_seed_curl_commands(port, SignUps::AlreadyTaken).await?;
    // The seed's frames went over twice: in the first walkthrough and after the kills.
    let sent_twice: Vec<&str> = SEED_TEXTS.iter().chain(SEED_TEXTS.iter()).copied().collect();
    ensure!(
        after_failover.chat_id == first.chat_id && after_failover.history_texts == sent_twice,
        "after the master's death the pair has chat {} with history {:?}",
        after_failover.chat_id,
        after_failover.history_texts
    );
    timer.done("seed walkthrough after the failover");

    master_kill::whole_stack_started_again(project, &public_url).await?;
    let after_restart = run_seed_curl_commands(port, SignUps::AlreadyTaken).await?;
    ensure!(
        after_restart.chat_id == first.chat_id && after_restart.history_texts == sent_twice,
        "after the whole stack started again the pair has chat {} with history {:?}",
        after_restart.chat_id,
        after_restart.history_texts
    );
    timer.done("stop, up again: every server back, one promoted by the nodes, the walkthrough's history intact");
    Ok(())
}

async fn wait_until_ready_through_nginx(public_url: &str) -> anyhow::Result<()> {
    let ready_url = format!("{public_url}/health/ready");
    poll_until_ready("the stack to answer through nginx", STACK_READY_TIMEOUT, || async {
        Ok(match http_get_status(&ready_url, false).await {
            Ok(200) => Probe::Ready(()),
            Ok(status) => Probe::NotYet(anyhow::anyhow!("{ready_url} answered {status}")),
            Err(error) => Probe::NotYet(error),
        })
    })
    .await
}

/// Each node's own `GET /cluster` must list every node alive. The nodes' ports are not
/// published and nginx refuses `/cluster`, so it is asked inside each node's container.
async fn wait_until_mesh_formed(project: &ComposeProject, nodes: &[&str]) -> anyhow::Result<()> {
    for node in nodes {
        poll_until_ready(&format!("{node} to see every node"), STACK_READY_TIMEOUT, || async {
            let answer = project.http_get_inside(node, NODE_HTTP_PORT, "/cluster").await;
            let alive = match answer.map(|answer| serde_json::from_str::<ClusterView>(&answer.body)) {
                Ok(Ok(view)) => view.members.iter().filter(|member| member.alive).count(),
                Ok(Err(error)) => return Ok(Probe::NotYet(error.into())),
                Err(error) => return Ok(Probe::NotYet(error)),
            };
            Ok(if alive >= nodes.len() {
                Probe::Ready(())
            } else {
                Probe::NotYet(anyhow::anyhow!("{node} sees {alive} nodes alive"))
            })
        })
        .await?;
    }
    Ok(())
}

/// The public port answers `/metrics` and `/cluster`, however spelt, with nginx's own
/// JSON 404; each node still serves both on its own port (where Prometheus scrapes it).
async fn assert_operator_endpoints_only_on_the_nodes(project: &ComposeProject, public_url: &str) -> anyhow::Result<()> {
    let public = ParleyHttp::new(public_url);
    for path in [
        "/metrics",
        "/metrics/",
        "//metrics",
        "/%6detrics",
        "/metrics?name[]=parley_http_requests_total",
        "/cluster",
        "/cluster/",
        "/%63luster",
        "/cluster?x",
    ] {
        let answer = public.request(reqwest::Method::GET, path, None, None).await?;
        ensure!(
            answer.status == 404 && answer.body["code"] == "not_found" && answer.body["message"].is_string(),
            "GET {path} through nginx answered {} {}",
            answer.status,
            answer.body
        );
        ensure!(
            answer.node.is_none(),
            "GET {path} reached {:?}: nginx must answer it itself",
            answer.node
        );
    }
    for node in NODES {
        let metrics = project.http_get_inside(node, NODE_HTTP_PORT, "/metrics").await?;
        ensure!(
            metrics.status == 200 && metrics.body.contains("parley_http_requests_total"),
            "{node}'s own /metrics answered {}: {}",
            metrics.status,
            metrics.body
        );
        let cluster = project.http_get_inside(node, NODE_HTTP_PORT, "/cluster").await?;
        ensure!(
            cluster.status == 200,
            "{node}'s own /cluster answered {}",
            cluster.status
        );
    }
    Ok(())
}

/// The stack runs on secrets it generated: a token signed with the JWT secret that
/// compose/.env once published is refused (while Alice's own token works), and the
/// database users do not take the passwords it published.
async fn assert_no_published_secret_is_in_use(
    project: &ComposeProject,
    public_url: &str,
    walkthrough: &seed_walkthrough::CurlWalkthrough,
) -> anyhow::Result<()> {
    let http = ParleyHttp::new(public_url);
    let now = unix_seconds_now();
    let claims = serde_json::json!({
        "sub": walkthrough.alice_id,
        "typ": "access",
        "jti": format!("forged-{now}"),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(OLD_EXAMPLE_JWT_SECRET.as_bytes()),
    )?;
    for (token, expected, whose) in [
        (walkthrough.alice_token.as_str(), 200, "Alice's own token"),
        (forged.as_str(), 401, "a token signed with the old example JWT secret"),
    ] {
        // Each node holds the secret itself: ask enough times to meet both.
        for _ in 0..4 {
            let answer = http
                .request(reqwest::Method::GET, "/auth/user/get-by-token", Some(token), None)
                .await?;
            ensure!(
                answer.status == expected,
                "{whose} got {} from {:?} (expected {expected}): {}",
                answer.status,
                answer.node,
                answer.body
            );
        }
    }
    for (user, password) in [
        ("parley", OLD_EXAMPLE_APP_PASSWORD),
        ("repl", OLD_EXAMPLE_REPLICATION_PASSWORD),
    ] {
        let login = project
            .exec(
                "master",
                &[
                    "mariadb",
                    "--protocol=tcp",
                    "--host=127.0.0.1",
                    &format!("--user={user}"),
                    &format!("--password={password}"),
                    "--execute=SELECT 1",
                ],
            )
            .await;
        match login {
            Ok(output) => anyhow::bail!("{user} logged in with the old example password: {output}"),
            Err(error) => ensure!(
                format!("{error:#}").contains("Access denied"),
                "{user}'s login with the old example password failed otherwise: {error:#}"
            ),
        }
    }
    Ok(())
}

/// Seconds since the epoch, for the forged token's claims.
fn unix_seconds_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// nginx sits at the address the nodes trust, and another container of the application
/// network cannot choose its address in the per-address limits: sign-ups from node-2
/// straight to node-1, each naming another `X-Real-IP`, all count against node-2's own
/// address, so the burst runs out.
async fn assert_real_ip_believed_from_nginx_only(project: &ComposeProject, subnet_prefix: &str) -> anyhow::Result<()> {
    let nginx_addresses = project.container_addresses("nginx").await?;
    let trusted = format!("{subnet_prefix}.10");
    ensure!(
        nginx_addresses
            .iter()
            .any(|(network, address)| network.ends_with("_application") && *address == trusted),
        "nginx is not at {trusted} on the application network: {nginx_addresses:?}"
    );
    let attempts = SIGN_UP_BURST_PER_ADDRESS + 10;
    // The body and the request head are printf formats: no JSON escaping in bash.
    let script = r#"
        body_format='{"email":"spoofer%s@email.com","password":"1234567890","name":"Spoofer","surname":"Tallor","birthday":"1994-04-10T20:21:25+00:00","sex":"male","city":"New Yourk","interests":"programming"}'
        for attempt in $(seq 1 "$1"); do
            body=$(printf "${body_format}" "${attempt}")
            exec 3<>/dev/tcp/node-1/8080
            printf 'POST /auth/sign-up HTTP/1.0\r\nHost: node-1\r\nContent-Type: application/json\r\nX-Real-IP: 198.51.100.%s\r\nContent-Length: %s\r\n\r\n%s' \
                "${attempt}" "${#body}" "${body}" >&3
            read -r _ status _ <&3
            exec 3<&-
            echo "${status}"
        done
    "#;
    let output = project
        .exec(
            "node-2",
            &["bash", "-c", script, "spoof-sign-ups", &attempts.to_string()],
        )
        .await?;
    let statuses: Vec<&str> = output.lines().map(str::trim).collect();
    ensure!(
        statuses.len() == attempts
            && statuses[..SIGN_UP_BURST_PER_ADDRESS]
                .iter()
                .all(|status| *status == "201")
            && statuses.contains(&"429"),
        "sign-ups from node-2 with a made-up X-Real-IP each: {statuses:?} \
         (the first {SIGN_UP_BURST_PER_ADDRESS} created, then 429: node-2 is no trusted proxy)"
    );
    Ok(())
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
