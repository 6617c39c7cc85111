//! The seed's experiment against the compose stack: get-by-email loops through nginx
//! (the seed's wrk) and websocket chat pairs on reconnecting `ChatClient`s, while
//! containers are SIGKILLed with `docker kill`. Built from parley-sim's failover load
//! parts; only the way faults land (containers, not local processes) is this file's own.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};
use parley_client::http::ParleyHttp;
use parley_launcher::compose_stack::{docker_kill, ComposeProject};
use parley_sim::failover::{ChatPlacement, HttpProblem};
use parley_sim::load::chat_load::{ChatLoadOutcome, ChatLoadSettings, RunningChatLoad};
use parley_sim::load::http_load::{HttpLoadSettings, RunningHttpLoad};
use parley_sim::load::load_users::{create_chat_pairs, create_http_load_users, fresh_run_tag};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct LoadWithKills {
    pub http_connections: usize,
    pub pairs: usize,
    pub message_rate_per_pair: f64,
    pub duration: Duration,
    /// From the start of the load.
    pub kill_at: Duration,
    /// Services whose containers are killed together at `kill_at`.
    pub killed_services: Vec<&'static str>,
    /// After the load, for the last acks and deliveries.
    pub settle_timeout: Duration,
}

/// What the load measured.
#[derive(Debug)]
pub struct LoadOutcome {
    pub placement: ChatPlacement,
    pub http_responses: u64,
    pub http_non_2xx: u64,
    pub http_errors: u64,
    pub http_problems: Vec<HttpProblem>,
    pub http_responses_by_node: BTreeMap<String, u64>,
    pub chat: ChatLoadOutcome,
    /// When `docker kill` was run, from the start of the load.
    pub kill_sent_at: Duration,
    /// When `docker kill` returned, from the start of the load.
    pub killed_at: Duration,
}

pub async fn run_load_with_kills(
    project: &ComposeProject,
    public_url: &str,
    settings: &LoadWithKills,
) -> anyhow::Result<LoadOutcome> {
    let http = ParleyHttp::new(public_url);
    let run_tag = fresh_run_tag();
    let (http_users, pair_accounts) = tokio::try_join!(
        create_http_load_users(&http, &run_tag),
        create_chat_pairs(&http, &run_tag, settings.pairs)
    )
    .context("creating the load's users")?;
    let chat_load = RunningChatLoad::connect(
        pair_accounts,
        ChatLoadSettings {
            base_url: public_url.to_owned(),
            message_rate_per_pair: settings.message_rate_per_pair,
            first_connect_node_urls: Vec::new(),
            max_in_flight: None,
        },
    );
    let placement = chat_load.wait_all_live(Duration::from_secs(30)).await?;
    eprintln!("compose: chat users placed {:?}", placement.users_by_node);

    let killed_containers = project.container_ids(&settings.killed_services).await?;

    let load_started_at = Instant::now();
    let load_ends_at = load_started_at + settings.duration;
    let http_load = RunningHttpLoad::start(
        &HttpLoadSettings {
            base_url: public_url.to_owned(),
            connections: settings.http_connections,
            token: http_users.looker.access_token.clone(),
            looked_up_email: http_users.looked_up.email.replace('@', "%40"),
            post_connections: 0,
            companion_id: http_users.looked_up.user_id.clone(),
            request_timeout: Duration::from_secs(10),
        },
        load_started_at,
        load_ends_at,
    )?;
    let kill_containers = async {
        tokio::time::sleep_until(load_started_at + settings.kill_at).await;
        eprintln!("compose: docker kill {}", settings.killed_services.join(" "));
        let sent_at = load_started_at.elapsed();
        docker_kill(&killed_containers).await?;
        anyhow::Ok((sent_at, load_started_at.elapsed()))
    };
    let (sending, killed_at) = tokio::join!(chat_load.send_at_steady_rate(load_ends_at), kill_containers);
    sending.context("sending chat messages")?;
    let (kill_sent_at, killed_at) = killed_at?;
    let mut http_outcome = http_load.finish().await?;
    let settled = chat_load.settle(settings.settle_timeout).await;
    let chat = chat_load.finish(load_started_at, settled).await?;

    let (mut http_responses, mut http_non_2xx, mut http_errors) = (0, 0, 0);
    for second in std::mem::take(&mut http_outcome.seconds) {
        http_responses += second.responses;
        http_non_2xx += second.non_2xx;
        http_errors += second.errors;
    }
    Ok(LoadOutcome {
        placement,
        http_responses,
        http_non_2xx,
        http_errors,
        http_problems: http_outcome.problems,
        http_responses_by_node: http_outcome.responses_by_node,
        chat,
        kill_sent_at,
        killed_at,
    })
}

pub fn report_load(load: &LoadOutcome) {
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

pub fn assert_nothing_failed_or_lost(load: &LoadOutcome) -> anyhow::Result<()> {
    let chat = &load.chat;
    ensure!(load.http_responses > 0, "the read load got no answer at all");
    ensure!(
        load.http_non_2xx == 0 && load.http_errors == 0,
        "failed reads: {:#?}",
        load.http_problems
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
    Ok(())
}

/// node-2 served reads and held chat users before its death, and they reconnected.
pub fn assert_node_2_death_reached_its_users(load: &LoadOutcome) -> anyhow::Result<()> {
    ensure!(
        load.placement.users_by_node.get("node-2").copied().unwrap_or(0) > 0,
        "no chat user was on node-2, so its death tested nothing: {:?}",
        load.placement
    );
    ensure!(
        load.http_responses_by_node.contains_key("node-2"),
        "node-2 never served a read before its death: {:?}",
        load.http_responses_by_node
    );
    ensure!(
        load.chat.reconnects > 0,
        "no chat client reconnected: the kill of node-2 did not reach them"
    );
    Ok(())
}
