//! The seed's fault-tolerance experiment as one call: HTTP load like the seed's wrk and
//! websocket chat traffic run against the cluster for a fixed time while scripted faults
//! hit it (by default one replica and one node SIGKILLed at half time); afterwards every
//! failed request, lost and duplicated message is counted.
//!
//! ```text
//! setup: fresh users, chats, every ChatClient live ─┐
//! load:  http loops ─┬─ metronome of sends ─┬─ fault schedule ─┬─ progress line/s
//! then:  wait (bounded) for every ack and delivery ─ close clients ─ report
//! ```

mod experiment_cluster;
mod fault_script;
mod master_watch;
mod report;
mod timeline_plot;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{ensure, Context};
use nix::sys::signal::Signal;
use tokio::time::Instant;

pub use crate::load::chat_load::{ChatPlacement, DuplicateDelivery, LostMessage};
pub use crate::load::http_load::HttpProblem;
pub use experiment_cluster::{attach_or_start_cluster, restart_dead_components, wait_until_mesh_formed, ClusterOrigin};
pub use fault_script::{FaultAction, FaultRecord, FaultSpec, ScriptedFault};
pub use master_watch::MasterChange;
pub use report::{
    ExperimentSettings, FailoverReport, HttpSummary, TimelineSecond, WebsocketSummary, WritesSummary, SEED_CPU_CORES,
    SEED_LATENCY_AVERAGE_MS, SEED_NON_2XX, SEED_REQUESTS, SEED_REQUESTS_PER_SECOND,
};
pub(crate) use timeline_plot::register_font;
pub use timeline_plot::write_timeline_plot;

use crate::load::chat_load::{ChatLoadOutcome, ChatLoadSettings, RunningChatLoad};
use crate::load::http_load::{HttpLoadOutcome, HttpLoadSettings, RunningHttpLoad};
use crate::load::latency_samples::{round_ms, LatencySamples};
use crate::load::load_users;
use parley_client::http::ParleyHttp;
use parley_launcher::LocalCluster;

/// What to run; [`FailoverConfig::seed_experiment`] gives the defaults of the CLI.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// How long the load runs (the seed's wrk: 60 s).
    pub duration: Duration,
    /// Concurrent get-by-email loops (wrk's connections).
    pub http_connections: usize,
    /// Concurrent `POST /messenger/create-chat` loops beside them.
    pub http_post_connections: usize,
    /// Chats, each with a sending and a receiving user.
    pub pairs: usize,
    /// Messages per second each pair's sender sends.
    pub message_rate_per_pair: f64,
    /// Times are from the start of the load.
    pub faults: Vec<ScriptedFault>,
    /// After the load: how long every ack and delivery may take to arrive.
    pub settle_timeout: Duration,
    /// A get-by-email without an answer in this time counts as an error.
    pub http_request_timeout: Duration,
    /// For the mesh to form and every chat client to connect before the load.
    pub startup_timeout: Duration,
    /// One progress line a second on stderr.
    pub progress_on_stderr: bool,
}

impl FailoverConfig {
    /// The seed's experiment: 10 connections, 50 chat pairs at 2 messages a second,
    /// `replica-1` and `node-1` SIGKILLed at half time.
    pub fn seed_experiment(duration: Duration) -> FailoverConfig {
        FailoverConfig {
            duration,
            http_connections: 10,
            http_post_connections: 0,
            pairs: 50,
            message_rate_per_pair: 2.0,
            faults: ScriptedFault::seed_experiment(duration),
            settle_timeout: Duration::from_secs(30),
            http_request_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(30),
            progress_on_stderr: false,
        }
    }
}

/// Runs the experiment against `cluster` and measures it. Components a `stop` left
/// frozen are resumed at the end; killed ones stay dead (the caller decides).
pub async fn run_failover_experiment(
    cluster: &LocalCluster,
    config: &FailoverConfig,
) -> anyhow::Result<FailoverReport> {
    ensure!(!config.duration.is_zero(), "the experiment needs a duration");
    ensure!(
        config.message_rate_per_pair.is_finite() && config.message_rate_per_pair >= 0.0,
        "the message rate must be zero or more"
    );
    let component_names: Vec<String> = cluster.status().into_iter().map(|status| status.name).collect();
    fault_script::validate_schedule(&config.faults, &component_names, config.duration)?;
    let progress = Progress {
        enabled: config.progress_on_stderr,
    };

    wait_until_mesh_formed(cluster, config.startup_timeout).await?;
    let public_url = cluster.app.public_url();
    let http = ParleyHttp::new(&public_url);
    let run_tag = load_users::fresh_run_tag();
    progress.say(&format!(
        "creating {} users, two password hashes each (tag {run_tag})",
        config.pairs * 2 + 2
    ));
    let (http_users, pair_accounts) = tokio::try_join!(
        load_users::create_http_load_users(&http, &run_tag),
        load_users::create_chat_pairs(&http, &run_tag, config.pairs)
    )
    .context("creating the experiment's users")?;
    let chat_load = RunningChatLoad::connect(
        pair_accounts,
        ChatLoadSettings {
            base_url: public_url.clone(),
            message_rate_per_pair: config.message_rate_per_pair,
            first_connect_node_urls: Vec::new(),
            max_in_flight: None,
        },
    );
    let placement = chat_load.wait_all_live(config.startup_timeout).await?;
    let users_by_node: Vec<String> = placement
        .users_by_node
        .iter()
        .map(|(node, users)| format!("{users} on {node}"))
        .collect();
    progress.say(&format!(
        "chat users live ({}); load runs for {} s",
        users_by_node.join(", "),
        config.duration.as_secs_f64()
    ));

    let load_started_at = Instant::now();
    let load_ends_at = load_started_at + config.duration;
    let http_load = RunningHttpLoad::start(
        &HttpLoadSettings {
            base_url: public_url,
            connections: config.http_connections,
            token: http_users.looker.access_token.clone(),
            looked_up_email: http_users.looked_up.email.replace('@', "%40"),
            post_connections: config.http_post_connections,
            companion_id: http_users.looked_up.user_id.clone(),
            request_timeout: config.http_request_timeout,
        },
        load_started_at,
        load_ends_at,
    )?;
    let (fault_records, sending, (), master_changes) = tokio::join!(
        fault_script::run_fault_schedule(cluster, &config.faults, load_started_at),
        chat_load.send_at_steady_rate(load_ends_at),
        report_progress_each_second(&progress, &http_load, &chat_load, load_started_at, load_ends_at),
        master_watch::watch_master_changes(cluster, load_started_at, load_ends_at),
    );
    sending.context("sending chat messages")?;
    let http_outcome = http_load.finish().await?;
    progress.say(&format!(
        "load stopped; waiting up to {:?} for the last acks and deliveries",
        config.settle_timeout
    ));
    let settled = chat_load.settle(config.settle_timeout).await;
    let chat_outcome = chat_load.finish(load_started_at, settled).await?;
    for name in fault_script::components_left_frozen(&config.faults) {
        cluster
            .kill(&name, Signal::SIGCONT)
            .with_context(|| format!("resuming {name}, left frozen by the schedule"))?;
    }
    for name in fault_script::components_left_partitioned(&config.faults) {
        cluster
            .heal(&name)
            .await
            .with_context(|| format!("healing {name}, left partitioned by the schedule"))?;
    }

    let settings = ExperimentSettings {
        duration_s: config.duration.as_secs_f64(),
        http_connections: config.http_connections,
        http_post_connections: config.http_post_connections,
        pairs: config.pairs,
        message_rate_per_pair: config.message_rate_per_pair,
        nodes: cluster.app.node_names(),
        cpu_cores: std::thread::available_parallelism().map_or(0, usize::from),
        run_tag,
        placement,
    };
    Ok(assemble_report(
        settings,
        http_outcome,
        chat_outcome,
        fault_records,
        master_changes,
    ))
}

struct Progress {
    enabled: bool,
}

impl Progress {
    fn say(&self, line: &str) {
        if self.enabled {
            eprintln!("{line}");
        }
    }
}

async fn report_progress_each_second(
    progress: &Progress,
    http_load: &RunningHttpLoad,
    chat_load: &RunningChatLoad,
    load_started_at: Instant,
    load_ends_at: Instant,
) {
    if !progress.enabled {
        return;
    }
    let mut ticks = tokio::time::interval_at(load_started_at + Duration::from_secs(1), Duration::from_secs(1));
    let (mut responses_before, mut delivered_before) = (0, 0);
    loop {
        let tick = ticks.tick().await;
        let responses = http_load.live.responses.load(Ordering::Relaxed);
        let failed = http_load.live.non_2xx.load(Ordering::Relaxed) + http_load.live.errors.load(Ordering::Relaxed);
        let delivered = chat_load.delivered_so_far();
        progress.say(&format!(
            "[{:>4} s] http {:>6} req/s, {} failed so far | ws {:>5} msg/s delivered, {} reconnects",
            tick.duration_since(load_started_at).as_secs(),
            responses - responses_before,
            failed,
            delivered - delivered_before,
            chat_load.reconnects_so_far()
        ));
        (responses_before, delivered_before) = (responses, delivered);
        if tick >= load_ends_at {
            return;
        }
    }
}

fn assemble_report(
    experiment: ExperimentSettings,
    mut http_outcome: HttpLoadOutcome,
    mut chat_outcome: ChatLoadOutcome,
    faults: Vec<FaultRecord>,
    master_changes: Vec<MasterChange>,
) -> FailoverReport {
    let timeline = build_timeline(experiment.duration_s, &mut http_outcome, &chat_outcome);
    let mut all_latencies = LatencySamples::default();
    let (mut non_2xx, mut errors) = (0, 0);
    for second in std::mem::take(&mut http_outcome.seconds) {
        non_2xx += second.non_2xx;
        errors += second.errors;
        all_latencies.merge(second.latencies);
    }
    let requests = all_latencies.len() as u64;
    let load_seconds = http_outcome.elapsed.as_secs_f64().max(experiment.duration_s);
    let http = HttpSummary {
        requests,
        rps: (requests as f64 / load_seconds * 100.0).round() / 100.0,
        avg_ms: round_ms(all_latencies.mean_ms()),
        p50_ms: round_ms(all_latencies.percentile_ms(0.50)),
        p90_ms: round_ms(all_latencies.percentile_ms(0.90)),
        p99_ms: round_ms(all_latencies.percentile_ms(0.99)),
        max_ms: round_ms(all_latencies.max_ms()),
        non_2xx,
        errors,
        responses_by_node: http_outcome.responses_by_node,
        responses_by_request: http_outcome.responses_by_request,
        non_2xx_by_method: http_outcome.non_2xx_by_method,
        problems: http_outcome.problems,
    };
    let ws = WebsocketSummary {
        sent: chat_outcome.sent,
        acked: chat_outcome.acked,
        refused: chat_outcome.refused,
        unacked: chat_outcome
            .sent
            .saturating_sub(chat_outcome.acked + chat_outcome.refused),
        delivered: chat_outcome.delivered,
        lost: chat_outcome.lost_count,
        duplicates: chat_outcome.duplicate_count,
        redeliveries_absorbed: chat_outcome.redeliveries_absorbed,
        sequence_conflicts: chat_outcome.sequence_conflicts,
        reconnects: chat_outcome.reconnects,
        connect_failures: chat_outcome.connect_failures,
        resumes: chat_outcome.resume_times.len() as u64,
        resume_p50_ms: round_ms(chat_outcome.resume_times.percentile_ms(0.50)),
        resume_p99_ms: round_ms(chat_outcome.resume_times.percentile_ms(0.99)),
        resume_max_ms: round_ms(chat_outcome.resume_times.max_ms()),
        delivery_p50_ms: round_ms(chat_outcome.delivery_times.percentile_ms(0.50)),
        delivery_p99_ms: round_ms(chat_outcome.delivery_times.percentile_ms(0.99)),
        delivery_max_ms: round_ms(chat_outcome.delivery_times.max_ms()),
        settled: chat_outcome.settled,
        lost_messages: chat_outcome.lost,
        duplicate_deliveries: chat_outcome.duplicates,
    };
    let failures = FailoverReport::count_failures(&http, &ws, &faults);
    let mut writes = WritesSummary::from_acks(&faults, &chat_outcome.ack_times_s, load_seconds);
    writes.master_changes = master_changes;
    FailoverReport {
        experiment,
        http,
        ws,
        writes,
        faults,
        timeline,
        failures,
    }
}

/// One entry per second of the load, and on through the last straggling delivery.
fn build_timeline(
    duration_s: f64,
    http_outcome: &mut HttpLoadOutcome,
    chat_outcome: &ChatLoadOutcome,
) -> Vec<TimelineSecond> {
    let seconds = (duration_s.ceil() as usize)
        .max(http_outcome.seconds.len())
        .max(chat_outcome.delivered_per_second.len());
    (0..seconds)
        .map(|second| {
            let http_second = http_outcome.seconds.get_mut(second);
            let (responses, errors, non_2xx, p99_ms) = match http_second {
                Some(bucket) => (
                    bucket.responses,
                    bucket.errors,
                    bucket.non_2xx,
                    round_ms(bucket.latencies.percentile_ms(0.99)),
                ),
                None => (0, 0, 0, 0.0),
            };
            TimelineSecond {
                second: second as u64,
                http_rps: responses,
                http_errors: errors,
                http_non_2xx: non_2xx,
                http_p99_ms: p99_ms,
                ws_delivered: chat_outcome.delivered_per_second.get(second).copied().unwrap_or(0),
            }
        })
        .collect()
}
